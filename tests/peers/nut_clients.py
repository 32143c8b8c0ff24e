"""Debian's real NUT clients (nut-client): ``upsc``, ``upslog`` and ``upsmon``, run against a NUT server.

``upsmon`` runs in the foreground (``-F``), privileged in one process (``-p``, so
stopping it stops all of it), with its own temp config and state directory
(``NUT_CONFPATH``/``NUT_STATEPATH``): its ``SHUTDOWNCMD`` appends a line to
``shutdown.log`` in that directory instead of powering off. As root, upsmon and
upslog 2.8.0 write their pid to the compiled-in ``/run/nut/`` whatever the environment
says, and upsmon refuses to start while that pid runs: each client therefore gets a
private ``/run`` in its own mount namespace (``unshare -m``; ``-r`` too when not root).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import require_binary
from tests.peers.process import PeerProcess

UPSMON = "/lib/nut/upsmon"  # /sbin/upsmon is a wrapper that does nothing unless /etc/nut/nut.conf sets MODE


def upsc(*args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run ``upsc ARGS``; its stderr carries NSS's "Init SSL without certificate database" notice."""
    return subprocess.run([require_binary("upsc"), *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def upsc_vars(target: str) -> dict[str, str]:
    """``upsc NAME@HOST:PORT`` as a dict; empty when upsc fails."""
    out = upsc(target)
    if out.returncode != 0:
        return {}
    return dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)


def private_run() -> list[str]:
    """argv prefix running a NUT client with its own empty ``/run`` (its pid file, not the host's)."""
    return [require_binary("unshare"), "-m", *([] if os.geteuid() == 0 else ["-r"]), "sh", "-c",
            'mount -t tmpfs tmpfs /run && mkdir -p /run/nut && exec "$@"', "nut-client"]


class Upsmon:
    """A real upsmon monitoring ``target`` (``ups@host:port``) as ``role``, in ``workdir``."""

    def __init__(self, workdir: Path, target: str, user: str, password: str, role: str, extra: str = ""):
        binary = require_binary(UPSMON)
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.shutdown_log = workdir / "shutdown.log"
        script = workdir / "shutdown.sh"
        script.write_text(f'#!/bin/sh\necho "{role} $(date +%s.%N)" >> {self.shutdown_log}\n')
        script.chmod(0o755)
        conf = workdir / "upsmon.conf"
        conf.write_text(
            f"MONITOR {target} 1 {user} {password} {role}\n"
            "MINSUPPLIES 1\n"
            f'SHUTDOWNCMD "{script}"\n'
            "POLLFREQ 1\nPOLLFREQALERT 1\n"
            "FINALDELAY 0\n"  # run the command at once (the default waits 5 s)
            "HOSTSYNC 20\n"  # a primary waits up to this long for its secondaries to log out
            "DEADTIME 15\n"
            f"POWERDOWNFLAG {workdir / 'killpower'}\n"
            "RUN_AS_USER root\n" + extra)
        conf.chmod(0o600)
        (workdir / "state").mkdir(mode=0o700, exist_ok=True)
        env = {"NUT_CONFPATH": str(workdir), "NUT_STATEPATH": str(workdir / "state"), "NUT_ALTPIDPATH": str(workdir)}
        self.proc = PeerProcess(f"upsmon-{role}", [*private_run(), binary, "-F", "-D", "-p"], workdir, env)

    def log(self) -> str:
        return self.proc.log()

    def shutdowns(self) -> list[str]:
        """Lines the SHUTDOWNCMD wrote: ``<role> <unix time>``."""
        return self.shutdown_log.read_text().splitlines() if self.shutdown_log.exists() else []

    def stop(self) -> None:
        self.proc.stop()


class Upslog:
    """``upslog -F`` writing one line a second for ``target`` into ``log.txt``."""

    def __init__(self, workdir: Path, target: str, interval: int = 1):
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / "upslog.txt"
        env = {"NUT_STATEPATH": str(workdir), "NUT_ALTPIDPATH": str(workdir)}
        argv = [*private_run(), require_binary("upslog"), "-F", "-s", target, "-l", str(self.path), "-i", str(interval)]
        self.proc = PeerProcess("upslog", argv, workdir, env)

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def nut_clients(tmp_path: Path) -> Iterator[Any]:
    """``nut_clients.upsmon(...)`` / ``nut_clients.upslog(...)``; every client started is stopped after the test."""
    started: list[Any] = []

    class Factory:
        @staticmethod
        def upsmon(target: str, user: str, password: str, role: str, extra: str = "") -> Upsmon:
            mon = Upsmon(tmp_path / f"upsmon{len(started)}", target, user, password, role, extra)
            started.append(mon)
            return mon

        @staticmethod
        def upslog(target: str, interval: int = 1) -> Upslog:
            log = Upslog(tmp_path / f"upslog{len(started)}", target, interval)
            started.append(log)
            return log

    yield Factory()
    for client in started:
        client.stop()


def wait_lines(get: Any, n: int, timeout: float = 30.0) -> list[str]:
    """Poll ``get()`` until it returns at least ``n`` lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = get()
        if len(lines) >= n:
            return list(lines)
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {n} lines (have {get()!r})")


__all__ = ["UPSMON", "Upslog", "Upsmon", "nut_clients", "upsc", "upsc_vars", "wait_lines"]
