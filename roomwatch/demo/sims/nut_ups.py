"""Demo: a simulated UPS behind a private NUT ``upsd`` with the ``dummy-ups`` driver.

dummy-ups replays a ``.seq`` file that loops: on mains for a while, then a
mains failure (on battery, charge and runtime falling), then low battery, then
mains back. The agent reads it with the ``nut`` driver over NUT's real TCP
protocol on 127.0.0.1. Without NUT installed (Debian: ``nut-server``) the
simulator raises a clear error and the demo goes on without it.

The helpers here (:func:`write_nut_config`, :func:`start_nut`) also serve the
test fixture ``tests/peers/nut.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from roomwatch.demo.context import DemoContext, Simulator, free_port

__all__ = ["NUT_BIN", "NutMissing", "start_nut", "upsd_ready", "write_nut_config"]

#: Debian/Ubuntu put the daemons here; /usr/sbin/upsd is a wrapper that needs /etc/nut/nut.conf.
NUT_BIN = Path(os.environ.get("ROOMWATCH_NUT_BIN", "/lib/nut"))


class NutMissing(RuntimeError):
    """NUT's dummy-ups or upsd is not installed."""


def nut_binaries() -> tuple[Path, Path]:
    """Paths of dummy-ups and upsd, or :class:`NutMissing` saying what to install."""
    dummy, upsd = NUT_BIN / "dummy-ups", NUT_BIN / "upsd"
    for path in (dummy, upsd):
        if not os.access(path, os.X_OK):
            raise NutMissing(f"{path} not found: install NUT (Debian: apt-get install nut-server)")
    return dummy, upsd


def write_nut_config(workdir: Path, port: int, devices: Mapping[str, Path], users: Mapping[str, Mapping[str, str]],
                     pollinterval: int = 1) -> None:
    """Write ups.conf (one dummy-ups section per device), upsd.conf and upsd.users in ``workdir``."""
    sections = []
    for name, path in devices.items():
        sections.append(f'[{name}]\n  driver = dummy-ups\n  port = {path}\n  pollinterval = {pollinterval}\n'
                        f'  desc = "simulated {name}"\n')
    (workdir / "ups.conf").write_text("".join(sections))
    (workdir / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {port}\n")
    lines = []
    for user, settings in users.items():
        lines.append(f"[{user}]")
        # "upsmon = x" also works but upsd first warns "Unknown upsmon type ="; the bare form is the documented one.
        lines.extend(f"  {key} {value}" if key == "upsmon" else f"  {key} = {value}" for key, value in settings.items())
    users_file = workdir / "upsd.users"
    users_file.write_text("\n".join(lines) + "\n")
    users_file.chmod(0o600)  # upsd warns about (and some builds refuse) a readable users file
    (workdir / "state").mkdir(mode=0o700, exist_ok=True)


def nut_env(workdir: Path) -> dict[str, str]:
    return {"NUT_CONFPATH": str(workdir), "NUT_STATEPATH": str(workdir / "state")}


def upsd_ready(port: int, names: list[str]) -> bool:
    """True when upsd answers and every UPS has data (not WAIT, stale or driver-less)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            f = s.makefile("rwb")
            for name in names:
                f.write(f"GET VAR {name} ups.status\n".encode())
                f.flush()
                line = f.readline().decode()
                if not line.startswith("VAR ") or '"WAIT"' in line:
                    return False
    except OSError:
        return False
    return True


def start_nut(workdir: Path, port: int, names: list[str],
              spawn: Callable[[list[str], str, dict[str, str]], subprocess.Popen[bytes]],
              timeout: float = 30.0) -> list[subprocess.Popen[bytes]]:
    """Start one dummy-ups per UPS, then upsd; wait until all answer. ``spawn(argv, name, env)`` starts a process."""
    dummy, upsd = nut_binaries()
    env = nut_env(workdir)
    procs = [spawn([str(dummy), "-a", name, "-F", "-u", "root"], f"dummy-ups-{name}", env) for name in names]
    deadline = time.monotonic() + timeout
    sockets = [workdir / "state" / f"dummy-ups-{name}" for name in names]
    while not all(s.exists() for s in sockets):
        _check_alive(procs, workdir)
        if time.monotonic() > deadline:
            raise RuntimeError(f"dummy-ups did not create its sockets within {timeout:.0f}s (logs in {workdir})")
        time.sleep(0.05)
    procs.append(spawn([str(upsd), "-F", "-u", "root"], "upsd", env))
    while not upsd_ready(port, names):
        _check_alive(procs, workdir)
        if time.monotonic() > deadline:
            raise RuntimeError(f"upsd did not serve {', '.join(names)} within {timeout:.0f}s (logs in {workdir})")
        time.sleep(0.1)
    return procs


def _check_alive(procs: list[subprocess.Popen[bytes]], workdir: Path) -> None:
    for proc in procs:
        if proc.poll() is not None:
            program = proc.args[0] if isinstance(proc.args, (list, tuple)) else proc.args
            raise RuntimeError(f"{program!s} exited with code {proc.returncode} (logs in {workdir})")


# A UPS in a small county server room: mains, a 90 s outage draining the battery, low battery, mains back.
_ONLINE = {"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1500", "input.voltage": "228.5",
           "output.voltage": "229.0", "ups.load": "34", "battery.voltage": "27.1", "battery.temperature": "26.5"}
_STEPS: list[tuple[int, dict[str, str]]] = [
    (60, _ONLINE),
    (30, {"ups.status": "OB DISCHRG", "input.voltage": "0.0", "battery.charge": "80", "battery.runtime": "1100",
          "battery.voltage": "25.2"}),
    (30, {"battery.charge": "45", "battery.runtime": "600", "battery.voltage": "24.3"}),
    (30, {"ups.status": "OB DISCHRG LB", "battery.charge": "18", "battery.runtime": "200", "battery.voltage": "23.1"}),
    (60, {"ups.status": "OL CHRG", "input.voltage": "229.1", "battery.charge": "30", "battery.runtime": "400",
          "battery.voltage": "26.0"}),
]
_STATIC = {"ups.mfr": "Simulated Power Co.", "ups.model": "SimUPS 1500", "ups.serial": "SIM0001",
           "ups.firmware": "1.0.0", "battery.date": "2023/04/01", "device.type": "ups"}


def demo_sequence() -> str:
    """The dummy-ups ``.seq`` text: static identity, then steps separated by ``TIMER <s>``."""
    lines = [f"{k}: {v}" for k, v in {**_STATIC, **_ONLINE}.items()]
    for seconds, values in _STEPS:
        lines.append(f"TIMER {seconds}")
        lines.extend(f"{k}: {v}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def start(ctx: DemoContext) -> list[dict[str, Any]]:
    """Start dummy-ups + upsd on a free loopback port; return the agent's device entry."""
    nut_binaries()
    workdir = ctx.workdir / "nut"
    workdir.mkdir(exist_ok=True)
    port = free_port()
    seq = workdir / "demo-ups.seq"
    seq.write_text(demo_sequence())
    write_nut_config(workdir, port, {"demo-ups": seq}, {"roomwatch": {"password": "demo-only", "upsmon": "secondary"}})
    start_nut(workdir, port, ["demo-ups"], lambda argv, name, env: ctx.spawn(argv, f"nut-{name}", env))
    ctx.notes.append(f"NUT upsd 127.0.0.1:{port} (UPS demo-ups; mains fails for 90 s every 3.5 min): "
                     f"upsc demo-ups@127.0.0.1:{port}")
    return [{"name": "ups-nut", "driver": "nut", "host": "127.0.0.1", "port": port, "ups": "demo-ups",
             "username": "roomwatch", "password": "demo-only", "battery_installed": "2023-04-01"}]


SIMULATOR = Simulator("NUT UPS (dummy-ups + upsd)", start)
