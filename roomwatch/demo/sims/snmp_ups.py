"""Demo: a UPS served over real SNMP by snmpsim on 127.0.0.1 (UPS-MIB recording shipped in ``data/``).

The recording (``data/demo-ups.snmprec``) uses snmpsim's ``numeric`` variation
module: every 5 minutes, starting about 40 s after the demo starts, mains
"fails" for about 70 s — upsOutputSource goes to battery(5), input voltage to
0, charge and runtime fall — and for the ~20 s at the bottom of the outage the
UPS also reports batteryLow(3). So the demo shows ``UPSOnBattery`` and
``UPSBatteryLow`` coming and going without anyone pulling a plug.

snmpsim is an optional dependency: ``pip install 'roomwatch[demo]'`` (``./dev demo`` does it).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from roomwatch.demo.context import DemoContext, Simulator, free_port

RECORDING = Path(__file__).with_name("data") / "demo-ups.snmprec"
COMMUNITY = "demo-ups"  # snmpsim serves a recording under its file name


def _ber(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + body


def snmp_ping(port: int, community: str, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """True when an SNMPv2c GET of sysObjectID.0 to host:port gets any answer (a readiness check, no library)."""
    oid = bytes([0x2B, 6, 1, 2, 1, 1, 2, 0])  # 1.3.6.1.2.1.1.2.0, BER-encoded
    varbinds = _ber(0x30, _ber(0x30, _ber(0x06, oid) + b"\x05\x00"))
    pdu = _ber(0xA0, _ber(0x02, b"\x01") + _ber(0x02, b"\x00") + _ber(0x02, b"\x00") + varbinds)
    message = _ber(0x30, _ber(0x02, b"\x01") + _ber(0x04, community.encode()) + pdu)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(message, (host, port))
            return bool(s.recv(65535))
        except OSError:
            return False


def snmpsim_command() -> str | None:
    """snmpsim's responder next to this interpreter (a venv) or on PATH."""
    local = Path(sys.executable).with_name("snmpsim-command-responder")
    return str(local) if local.exists() else shutil.which("snmpsim-command-responder")


def start(ctx: DemoContext) -> list[dict[str, Any]]:
    """Start snmpsim with the demo UPS and return the agent's device entry for it."""
    command = snmpsim_command()
    if command is None:
        raise RuntimeError("snmpsim is not installed (pip install 'roomwatch[demo]', or run ./dev demo)")
    base = ctx.workdir / "snmpsim"
    (base / "data").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RECORDING, base / "data" / f"{COMMUNITY}.snmprec")
    port = free_port(socket.SOCK_DGRAM)
    # As root snmpsim wants to drop privileges, which fails under a 0700 home directory.
    env = {"SNMPSIM_ALLOW_ROOT": "true"} if os.geteuid() == 0 else {}
    proc = ctx.spawn([command, f"--data-dir={base / 'data'}", f"--cache-dir={base / 'cache'}",
                      f"--agent-udpv4-endpoint=127.0.0.1:{port}", "--logging-method=stderr", "--log-level=error"],
                     "snmpsim", env=env)
    deadline = time.monotonic() + 30
    while not snmp_ping(port, COMMUNITY):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"snmpsim did not start; see {ctx.workdir / 'snmpsim.log'}")
        time.sleep(0.1)
    ctx.notes.append(f"SNMP agent 127.0.0.1:{port} (snmpsim, UPS-MIB, community {COMMUNITY}; mains fails for ~70 s "
                     f"every 5 min): snmpwalk -v2c -c {COMMUNITY} 127.0.0.1:{port} 1.3.6.1.2.1.33")
    return [{"name": "ups-snmp", "driver": "snmp", "host": "127.0.0.1", "port": port, "version": "2c",
             "community": COMMUNITY, "timeout": "1s", "battery_installed": "2023-03-01",
             "labels": {"rack": "A1"}}]


SIMULATOR = Simulator("snmp-ups", start)
