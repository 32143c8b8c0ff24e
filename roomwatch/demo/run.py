"""``roomwatch demo``: a collector, an agent and simulated devices on 127.0.0.1.

Everything talks over its real protocol on loopback. Simulated devices are
listed in :func:`simulators` (one module each in :mod:`roomwatch.demo.sims`): each
starts a real server (snmpsim, upsd, mosquitto, a pymodbus server …) and returns
the agent ``devices`` entries that read it. Ctrl-C stops every process the demo started, and only those.

So that the demo shows the whole path, the collector also gets: a login for the
status page (user ``demo``, a password made up for this run and printed with the
URLs), a demo rule ``DemoDoorOpened`` (severity info) that fires as soon as the
door opens, and a ``webhook`` channel to a receiver in this process
(:mod:`roomwatch.demo.sink`) that prints every notification.

The directory (configs, databases, logs) is temporary and deleted on a clean
exit; it is kept — and its path printed — when anything failed, or given with ``--dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from roomwatch.demo.context import DOOR_EVERY_DEFAULT, DemoContext, Simulator, free_port

__all__ = ["DEMO_USER", "DemoContext", "Simulator", "build_configs", "free_port", "run_demo", "simulators",
           "write_demo_rules"]

#: The status page login the demo creates (its password is random per run).
DEMO_USER = "demo"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is not "busy"
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def simulators() -> list[Simulator]:
    """The simulated device families, in start order."""
    from roomwatch.demo.sims import modbus_th, mqtt_room, nut_ups, snmp_ups

    return [modbus_th.SIMULATOR, mqtt_room.SIMULATOR, nut_ups.SIMULATOR, snmp_ups.SIMULATOR]


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


#: The demo's own rule: the default pack waits 10 minutes before DoorOpenTooLong, so without it a
#: visitor would not see an alert (nor try acknowledging one) while the demo's door is open.
DEMO_RULES = """\
# Written by `roomwatch demo` for the demo only (not part of the default rule pack):
# an alert as soon as the demo's door opens, so the status page and the notification
# sink show the whole path at once. It resolves 2 minutes after the last opening.
rules:
  - alert: DemoDoorOpened
    severity: info
    event: door_open
    for: 0s
    resolve_after: 2m
    annotations:
      summary: {zh-CN: "演示：机房门被打开", en: "Demo: the door was opened"}
      description:
        zh-CN: "演示规则：门一打开就告警（默认规则 DoorOpenTooLong 要等 10 分钟）。"
        en: "Demo rule: an alert as soon as the door opens (the default DoorOpenTooLong waits 10 minutes)."
"""


def write_demo_rules(workdir: Path) -> Path:
    """Write the demo's rule file (``DemoDoorOpened``) into ``workdir``; return its path."""
    path = workdir / "demo-rules.yaml"
    path.write_text(DEMO_RULES, encoding="utf-8")
    return path


def build_configs(ctx: DemoContext, collector_port: int, agent_port: int, devices: list[dict[str, Any]],
                  password_hash: str | None = None, sink_url: str | None = None) -> tuple[Path, Path]:
    """Write the demo's collector and agent files; return their paths.

    ``password_hash`` adds the status page user :data:`DEMO_USER`; ``sink_url`` routes every
    alert to a ``webhook`` channel there. The demo rule file is always included.
    """
    token = secrets.token_urlsafe(24)
    collector: dict[str, Any] = {
        "listen": f"127.0.0.1:{collector_port}",
        "storage": str(ctx.workdir / "collector.db"),
        "agent_timeout": "15s",
        "agents": [{"id": "demo-agent", "token": token}],
        "rules": {"files": [str(write_demo_rules(ctx.workdir))]},
        "alerts": {"external_url": f"http://127.0.0.1:{collector_port}/"},
    }
    if sink_url:
        collector["channels"] = [{"name": "demo-terminal", "type": "webhook", "url": sink_url}]
        # group_by "...": one message per alert, so the terminal shows each alert's own firing/resolved line.
        collector["routes"] = [{"channels": ["demo-terminal"], "group_by": ["..."]}]
    if password_hash:
        collector["web"] = {"users": [{"name": DEMO_USER, "password_hash": password_hash}]}
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
    from roomwatch.collector.webauth import hash_password
    from roomwatch.demo.sink import NotificationSink

    workdir = (Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="roomwatch-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(workdir, door_every=getattr(args, "door_every", None) or DOOR_EVERY_DEFAULT)
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
    failed: list[str] = []  # what went wrong; any entry keeps the directory and its logs
    sink: NotificationSink | None = None
    try:
        devices: list[dict[str, Any]] = []
        if not args.no_devices:
            for sim in simulators():
                try:
                    devices.extend(sim.start(ctx))
                except Exception as exc:  # one missing peer must not stop the demo
                    print(f"simulated {sim.name} not started: {exc}", file=sys.stderr)
                    failed.append(f"simulated {sim.name} not started")
        # A password for this run only, never a fixed one: anyone on this machine can reach 127.0.0.1.
        password = secrets.token_urlsafe(12)
        sink = NotificationSink(workdir / "notifications.log").start()
        cpath, apath = build_configs(ctx, cport, aport, devices, hash_password(password), sink.url)
        me = [sys.executable, "-m", "roomwatch"]
        collector = ctx.spawn(me + ["collector", "-c", str(cpath)], "collector")
        _wait_http(f"http://127.0.0.1:{cport}/readyz", collector)
        agent = ctx.spawn(me + ["agent", "-c", str(apath)], "agent")
        _wait_http(f"http://127.0.0.1:{aport}/healthz", agent)
        print(f"""
roomwatch demo is running (files and logs in {workdir})

  status page        http://127.0.0.1:{cport}/
  login              user {DEMO_USER}, password {password}  (made up for this run)
  collector metrics  http://127.0.0.1:{cport}/metrics
  agents (JSON)      http://127.0.0.1:{cport}/api/v1/agents
  alerts (JSON)      http://127.0.0.1:{cport}/api/v1/alerts
  agent metrics      http://127.0.0.1:{aport}/metrics
  agent health       http://127.0.0.1:{aport}/healthz
  notifications      printed below as they arrive (webhook channel "demo-terminal" → {sink.url};
                     also in {workdir / 'notifications.log'})
  demo rule          DemoDoorOpened (info): an alert as soon as the door opens ({workdir / 'demo-rules.yaml'})
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
                    failed.append(f"{name} exited")
                    stop_now, code = True, 1
            time.sleep(0.2)
    except Exception as exc:  # anything at all: say so, stop what started, keep the logs
        if not isinstance(exc, RuntimeError):  # RuntimeError: a startup problem we described; else a bug
            traceback.print_exc()
        print(f"demo failed: {exc}", file=sys.stderr)
        failed.append("demo failed")
        code = 1
    finally:
        _stop(ctx.processes)
        if sink is not None:
            sink.stop()
        for cleanup in reversed(ctx.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        if failed:
            print(f"logs kept in {workdir} ({'; '.join(failed)})", file=sys.stderr)
        elif not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
        print("demo stopped.", flush=True)
    return code
