"""A real mosquitto broker on ephemeral 127.0.0.1 ports, and a paho publisher for tests.

``mosquitto`` fixture: a plain anonymous listener. ``mosquitto_tls`` adds a
second listener with TLS (a CA and server certificate made here with
``cryptography``) and a password file. Both can be restarted on the same
ports mid-test (``restart()``) to check that clients reconnect.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, require_binary
from tests.peers.process import PeerProcess

USER, PASSWORD = "roomwatch", "s3cret-mqtt-pass"


@dataclass
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def make_tls_files(workdir: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def write_key(key: Any, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roomwatch test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(workdir / "ca.pem", workdir / "ca.key", workdir / "server.pem", workdir / "server.key")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write_key(ca_key, files.ca_key)
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(key, files.server_key)
    return files


class Mosquitto:
    """One mosquitto process; ``restart()`` brings it back on the same ports."""

    def __init__(self, workdir: Path, tls: bool = False, extra: tuple[str, ...] = ()):
        self.binary = require_binary("/usr/sbin/mosquitto")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.tls_port: int | None = None
        self.tls: TlsFiles | None = None
        lines = ["per_listener_settings true", f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if tls:
            self.tls = make_tls_files(workdir)
            self.tls_port = free_port()
            passwd = workdir / "passwd"
            passwd.write_text("")
            subprocess.run([require_binary("/usr/bin/mosquitto_passwd"), "-b", str(passwd), USER, PASSWORD],
                           check=True, capture_output=True, timeout=30)
            lines += [f"listener {self.tls_port} 127.0.0.1", "allow_anonymous false", f"password_file {passwd}",
                      f"cafile {self.tls.ca_cert}", f"certfile {self.tls.server_cert}", f"keyfile {self.tls.server_key}"]
        lines += ["persistence false", "log_dest stderr", "log_type error", "log_type warning", "user root", *extra]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: PeerProcess | None = None
        self.starts = 0
        self.start()

    @property
    def tls_url(self) -> str:
        assert self.tls_port is not None
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def start(self) -> None:
        self.starts += 1
        self.proc = PeerProcess(f"mosquitto{self.starts}", [self.binary, "-c", str(self.conf)], self.workdir)
        self.proc.wait_ready(self._listening)

    def _listening(self) -> bool:
        for port in (self.port, self.tls_port):
            if port is None:
                continue
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Publisher:
    """A paho client that publishes for a test (QoS 1 publishes wait for the broker's ack)."""

    def __init__(self, broker: Mosquitto, protocol: str = "3.1.1"):
        import paho.mqtt.client as mqtt

        self._connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{broker.port}-{id(self)}",
                                  protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self._connected.wait(15):
            raise AssertionError("test publisher could not connect to mosquitto")

    def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(10)
            assert info.is_published(), f"publish to {topic} was not acknowledged"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto with one anonymous listener on an ephemeral port."""
    broker = Mosquitto(tmp_path / "mosquitto")
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[Mosquitto]:
    """mosquitto with an anonymous plain listener and a TLS + password listener (USER/PASSWORD)."""
    broker = Mosquitto(tmp_path / "mosquitto-tls", tls=True)
    yield broker
    broker.stop()


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    """Publishes to the ``mosquitto`` fixture's broker."""
    pub = Publisher(mosquitto)
    yield pub
    pub.close()
