"""roomwatch's bundled Python: find the host's CA certificates (scripts/pyruntime.py ships this file).

The bundled OpenSSL (Debian's) looks for trusted certificates in /usr/lib/ssl, which only Debian-family
systems have. On openEuler, Kylin server, RHEL and the like the bundle lives in /etc/pki/…: without this,
every HTTPS notification (WeCom, DingTalk, SMS APIs) would fail certificate verification. An explicit
SSL_CERT_FILE / SSL_CERT_DIR is left alone. Only file checks here: no import of ssl at every start.
"""

import os

_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, UOS, Kylin desktop
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, CentOS, Rocky, Alma, openEuler, Kylin server
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # the same, newer layout
    "/etc/ssl/ca-bundle.pem",  # SUSE
    "/etc/ssl/cert.pem",  # Alpine
)

if not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")
        or os.path.exists("/usr/lib/ssl/cert.pem") or os.path.isdir("/usr/lib/ssl/certs")):
    for _path in _CANDIDATES:
        if os.path.isfile(_path):
            os.environ["SSL_CERT_FILE"] = _path
            break
