"""TLS client settings shared by every outgoing connection (agent push, MQTT brokers, remote write).

Verification is on by default; ``insecure_skip_verify`` exists for labs only.
"""

from __future__ import annotations

import ssl

from pydantic import Field

from roomwatch.core.configbase import Model

__all__ = ["ClientTLS", "ServerTLS", "client_context", "server_context"]


class ClientTLS(Model):
    """How a peer's certificate is checked, and the client certificate to show when asked."""

    ca_file: str | None = Field(default=None, description="CA that signed the peer's certificate (default: system store)")
    cert_file: str | None = Field(default=None, description="client certificate, when the peer asks for one")
    key_file: str | None = None
    insecure_skip_verify: bool = Field(default=False, description="accept any certificate (lab only)")


def client_context(ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                   insecure_skip_verify: bool = False) -> ssl.SSLContext:
    """An SSL context for a client: system or given CA, optional client certificate."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    if insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ServerTLS(Model):
    """TLS for a service roomwatch offers (the agent's NUT server); with ``client_ca_file`` clients must show a certificate."""

    cert_file: str = Field(description="PEM certificate (chain) the service presents")
    key_file: str = Field(description="its private key")
    client_ca_file: str | None = Field(default=None, description="CA that signed the client certificates to require")


def server_context(tls: ServerTLS) -> ssl.SSLContext:
    """An SSL context for a server from :class:`ServerTLS`; OSError/SSLError when the files are unusable."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        ctx.load_verify_locations(tls.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
