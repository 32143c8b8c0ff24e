"""A real net-snmp ``snmpd`` on 127.0.0.1 with SNMPv3 users and UPS-MIB values set by ``override``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, require_binary
from tests.peers.process import PeerProcess
from tests.peers.snmpsim import snmp_ping

#: (user, snmpd auth protocol, auth key, priv protocol or None, priv key)
SNMPD_USERS = (
    ("monitor", "SHA", "authpass123", "AES", "privpass123"),
    ("md5des", "MD5", "authpass123", "DES", "privpass123"),
    ("sha256", "SHA-256", "authpass123", "AES", "privpass123"),
    ("authonly", "SHA", "authpass123", None, ""),
)

#: UPS-MIB objects snmpd publishes (net-snmp has no UPS-MIB; `override` pins fixed values).
UPS_VALUES = (
    (".1.3.6.1.2.1.33.1.1.1.0", "octet_str", '"net-snmp test UPS"'),  # upsIdentManufacturer
    (".1.3.6.1.2.1.33.1.2.1.0", "integer", "3"),  # upsBatteryStatus batteryLow(3)
    (".1.3.6.1.2.1.33.1.2.3.0", "integer", "7"),  # upsEstimatedMinutesRemaining
    (".1.3.6.1.2.1.33.1.2.4.0", "integer", "18"),  # upsEstimatedChargeRemaining, %
    (".1.3.6.1.2.1.33.1.4.1.0", "integer", "5"),  # upsOutputSource battery(5)
)


class Snmpd:
    def __init__(self, proc: PeerProcess, port: int):
        self.proc = proc
        self.port = port


def start_snmpd(workdir: Path) -> Snmpd:
    """snmpd in the foreground on an ephemeral loopback UDP port, state kept in ``workdir``."""
    binary = require_binary("/usr/sbin/snmpd")
    port = free_port(socket.SOCK_DGRAM)
    lines = [f"agentAddress udp:127.0.0.1:{port}", "rocommunity public 127.0.0.1", "dontLogTCPWrappersConnects yes"]
    for user, auth, akey, priv, pkey in SNMPD_USERS:
        lines.append(f"createUser {user} {auth} {akey}" + (f" {priv} {pkey}" if priv else ""))
        lines.append(f"rouser {user} {'authpriv' if priv else 'authnopriv'}")
    lines += [f"override {oid} {kind} {value}" for oid, kind, value in UPS_VALUES]
    (workdir / "snmpd.conf").write_text("\n".join(lines) + "\n")
    (workdir / "state").mkdir()
    # -C: only our config; -I -smux: no SMUX listener on TCP 0.0.0.0:199; -M /dev/null: no MIB files (PEERS.md).
    proc = PeerProcess("snmpd", [binary, "-f", "-C", "-c", str(workdir / "snmpd.conf"), "-Lo", "-M", "/dev/null",
                                 "-I", "-smux"], workdir,
                       env={"SNMP_PERSISTENT_DIR": str(workdir / "state"), "MIBS": ""})
    try:
        proc.wait_ready(lambda: snmp_ping(port, "public"))
    except BaseException:
        proc.stop()
        raise
    return Snmpd(proc, port)


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[Any]:
    """A running snmpd; stopped after the test."""
    d = tmp_path / "snmpd"
    d.mkdir()
    daemon = start_snmpd(d)
    yield daemon
    daemon.proc.stop()
