"""Demo plug-in: a Modbus TCP temperature/humidity module (XY-MD02 map) and a Huawei UPS2000 on 127.0.0.1.

Starts :mod:`roomwatch.demo.sims.modbus_server` in its own process and returns the
two agent device entries that read it through the shipped profiles.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

from roomwatch.demo.context import DemoContext, Simulator, free_port


def _wait_listening(port: int, proc: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"modbus demo server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"modbus demo server did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def start(ctx: DemoContext) -> list[dict[str, Any]]:
    """Start the server; return the agent's ``devices:`` entries for it."""
    port = free_port()
    proc = ctx.spawn([sys.executable, "-m", "roomwatch.demo.sims.modbus_server", "--port", str(port)], "modbus-server")
    _wait_listening(port, proc)
    ctx.notes.append(f"Modbus TCP 127.0.0.1:{port}: unit 1 XY-MD02 temperature/humidity, unit 2 Huawei UPS2000")
    common = {"driver": "modbus", "transport": "tcp", "host": "127.0.0.1", "port": port}
    return [
        {"name": "th-modbus", **common, "unit": 1, "profile": "xy-md02", "labels": {"location": "rack-a-inlet"}},
        {"name": "ups-modbus", **common, "unit": 2, "profile": "huawei-ups2000", "battery_installed": "2023-03-01"},
    ]


SIMULATOR = Simulator("modbus", start)
