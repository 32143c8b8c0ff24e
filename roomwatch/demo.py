"""``roomwatch demo``: a collector, an agent and simulated devices on 127.0.0.1.

Everything talks over its real protocol on loopback. Simulated devices are
plug-ins (:data:`SIMULATORS`): each starts a real server (snmpsim, upsd,
mosquitto, a pymodbus server …) and returns the agent ``devices`` entries
that read it. Ctrl-C stops every process the demo started, and only those.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SIMULATORS", "DemoContext", "Simulator", "free_port", "run_demo"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is not "busy"
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class DemoContext:
    """Where a simulator may put files and what it started (to stop it later)."""

    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
        self.processes.append(proc)
        self.cleanups.append(log.close)
        return proc


@dataclass
class Simulator:
    """One simulated device family: ``start`` returns agent device entries (dicts)."""

    name: str
    start: Callable[[DemoContext], list[dict[str, Any]]]


#: Simulated devices, in start order. Later modules append to this list.
SIMULATORS: list[Simulator] = []


def _load_simulators() -> None:
    import importlib
    import pkgutil

    import roomwatch.sims

    for info in sorted(pkgutil.iter_modules(roomwatch.sims.__path__), key=lambda m: m.name):
        importlib.import_module(f"roomwatch.sims.{info.name}")


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop in reverse start order, one at a time: the agent flushes to a collector still up."""
    for proc in reversed(procs):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def build_configs(ctx: DemoContext, collector_port: int, agent_port: int, devices: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write the demo's collector and agent files; return their paths."""
    token = secrets.token_urlsafe(24)
    collector = {
        "listen": f"127.0.0.1:{collector_port}",
        "storage": str(ctx.workdir / "collector.db"),
        "agent_timeout": "15s",
        "agents": [{"id": "demo-agent", "token": token}],
    }
    agent = {
        "agent": {"id": "demo-agent", "site": "demo-county", "room": "server-room-1",
                  "listen": f"127.0.0.1:{agent_port}", "interval": "5s",
                  "spool": str(ctx.workdir / "agent-spool.db")},
        "collector": {"urls": [f"http://127.0.0.1:{collector_port}"], "token": token, "push_interval": "2s"},
        "host": {"interval": "5s"},
        "devices": devices,
    }
    cpath, apath = ctx.workdir / "collector.yaml", ctx.workdir / "agent.yaml"
    cpath.write_text(yaml.safe_dump(collector, sort_keys=False, allow_unicode=True))
    apath.write_text(yaml.safe_dump(agent, sort_keys=False, allow_unicode=True))
    return cpath, apath


def run_demo(args: argparse.Namespace) -> int:
    """Start everything, print the URLs, wait for Ctrl-C (or ``--duration``), stop everything."""
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="roomwatch-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(workdir)
    cport = args.collector_port or free_port()
    aport = args.agent_port or free_port()
    if not _port_free(cport):
        print(f"port {cport} is busy; using a free one", file=sys.stderr)
        cport = free_port()
    if not _port_free(aport):
        print(f"port {aport} is busy; using a free one", file=sys.stderr)
        aport = free_port()
    stop_now = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop_now
        stop_now = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        devices: list[dict[str, Any]] = []
        if not args.no_devices:
            _load_simulators()
            for sim in SIMULATORS:
                try:
                    devices.extend(sim.start(ctx))
                except Exception as exc:  # one missing peer must not stop the demo
                    print(f"simulated {sim.name} not started: {exc}", file=sys.stderr)
        cpath, apath = build_configs(ctx, cport, aport, devices)
        me = [sys.executable, "-m", "roomwatch"]
        collector = ctx.spawn(me + ["collector", "-c", str(cpath)], "collector")
        _wait_http(f"http://127.0.0.1:{cport}/readyz", collector)
        agent = ctx.spawn(me + ["agent", "-c", str(apath)], "agent")
        _wait_http(f"http://127.0.0.1:{aport}/healthz", agent)
        print(f"""
roomwatch demo is running (files and logs in {workdir})

  status page        http://127.0.0.1:{cport}/
  collector metrics  http://127.0.0.1:{cport}/metrics
  agents (JSON)      http://127.0.0.1:{cport}/api/v1/agents
  agent metrics      http://127.0.0.1:{aport}/metrics
  agent health       http://127.0.0.1:{aport}/healthz
""")
        for device in devices:
            print(f"  device {device['name']:<16} {device['driver']}")
        for note in ctx.notes:
            print(f"  {note}")
        print("\nPress Ctrl-C to stop.", flush=True)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop_now and (deadline is None or time.monotonic() < deadline):
            for proc, name in ((collector, "collector"), (agent, "agent")):
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; see {workdir / (name + '.log')}", file=sys.stderr)
                    stop_now, code = True, 1
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"demo failed: {exc}; logs in {workdir}", file=sys.stderr)
        code = 1
    finally:
        _stop(ctx.processes)
        for cleanup in reversed(ctx.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        if not args.dir and code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        print("demo stopped.")
    return code

