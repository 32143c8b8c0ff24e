"""Shared test helpers: ports, waiting, running roomwatch as a real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """An ephemeral 127.0.0.1 port (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_binary(path: str) -> str:
    """Path of a peer program; skip (or fail under ROOMWATCH_REQUIRE_PEERS=1, as in CI) when missing."""
    found = path if os.path.isabs(path) and os.access(path, os.X_OK) else shutil.which(path)
    if not found:
        msg = f"{path} is not installed (./dev test installs the peers with apt-get)"
        if os.environ.get("ROOMWATCH_REQUIRE_PEERS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return found


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             proc: subprocess.Popen[Any] | None = None, what: str = "condition") -> Any:
    """Poll ``check`` until it returns a truthy value; fail early if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {what}")
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # keep polling; report the last error on timeout
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


async def async_wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """:func:`wait_for` inside an event loop: yields to it between checks (the agent's tasks run meanwhile)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def alerting_settled(db: str | Path, since: float) -> bool:
    """The collector's alerting has nothing more to say: every notification group was flushed at or after
    ``since`` and nothing queued is unsent. ``since`` must be a time after the collector processed the last
    change the test caused (a flush after it decides every message that change calls for, a duplicate too).

    Read from the collector's store, so a test asserts "nothing more comes" on this evidence, not after a sleep.
    """
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
        flushed = [json.loads(data).get("last_flush") or 0.0 for (data,) in conn.execute("SELECT data FROM notify_groups")]
    finally:
        conn.close()
    return pending == 0 and all(t >= since for t in flushed)


class ManualClock:
    """A :class:`roomwatch.core.clock.Clock` that moves only when a test says so."""

    def __init__(self, t: float = 1_733_000_000.0):
        self.t = t
        self.m = 1_000.0

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.m

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.m += seconds


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(url: str, timeout: float = 5.0) -> Any:
    status, body = http_get(url, timeout)
    assert status == 200, (status, body[:500])
    return json.loads(body)


def http_post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """Value of the first sample of ``name`` whose labels include ``labels`` in exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


#: Every child process a test started (RoomwatchProcess, reliability_rig.Proc); conftest's
#: ``_stop_leftover_processes`` stops what a failed test left running, and only that.
STARTED: list[Any] = []


class RoomwatchProcess:
    """``python -m roomwatch ARGS`` as a real child process with its log captured to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("JOURNAL_STREAM", None)  # log lines keep their time stamps (tests read them)
        self.proc = subprocess.Popen([sys.executable, "-m", "roomwatch", *args], cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
        STARTED.append(self)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
        self.proc.wait(15)

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m roomwatch ARGS`` to completion."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "roomwatch", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``roomwatch ARGS`` in this process (a unit test: no interpreter to start), output captured.

    Same code path as ``python -m roomwatch`` (:func:`roomwatch.cli.main`); :func:`run_cli` starts the
    real process where the entry point itself is under test (those tests carry the ``peer`` marker).
    """
    import contextlib
    import io
    import logging

    from roomwatch.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:  # a command that configured logging must not leave a handler on the captured stream behind
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    return subprocess.CompletedProcess(["roomwatch", *args], code, out.getvalue(), err.getvalue())


def documented_files() -> dict[str, str]:
    """The files docs/api.md shows as "the smallest valid pair", by the name in their first comment line."""
    import re

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return dict(re.findall(r"```yaml\n# (\S+)\n(.*?)```", text, re.S))


def documented_alert_names() -> set[str]:
    """The default alert names docs/api.md promises (between its alert-names markers)."""
    import re

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    block = text.split("<!-- alert-names -->", 1)[1].split("<!-- /alert-names -->", 1)[0]
    return set(re.findall(r"`(\w+)`", block))


def fixtures_dir() -> Path | None:
    """Recordings of real devices (never copied into the repo): $ROOMWATCH_FIXTURES, ../shared/fixtures, /work/shared/fixtures."""
    candidates = [os.environ.get("ROOMWATCH_FIXTURES"), str(ROOT.parent / "shared" / "fixtures"), "/work/shared/fixtures"]
    for c in candidates:
        if c and (Path(c) / "devices").is_dir():
            return Path(c)
    return None


def require_fixtures() -> Path:
    """The fixtures folder, or skip saying where it was looked for (CI always has it)."""
    found = fixtures_dir()
    if found is None:
        pytest.skip("device recordings not found: set ROOMWATCH_FIXTURES or put them in ../shared/fixtures")
    return found
