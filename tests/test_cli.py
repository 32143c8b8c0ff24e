"""The roomwatch command: --version, --help everywhere, exit codes, and the demo."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roomwatch import __version__
from tests.helpers import ROOT, http_json, run_cli, wait_for

pytestmark = pytest.mark.peer  # every test here starts a process


def test_version() -> None:
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"roomwatch {__version__}"


@pytest.mark.parametrize("command", ["agent", "collector", "demo", "check-config", "discover", "gen-token", "test-alert",
                                     "report", "hash-password"])
def test_every_command_has_help(command: str) -> None:
    res = run_cli(command, "--help")
    assert res.returncode == 0, res.stderr
    assert f"usage: roomwatch {command}" in res.stdout


def test_no_command_is_usage_error() -> None:
    assert run_cli().returncode == 2
    assert run_cli("nonsense").returncode == 2


def test_bad_config_is_exit_2_for_agent_and_collector(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  idd: x\n")
    res = run_cli("agent", "-c", str(bad))
    assert res.returncode == 2 and "bad.yaml:2: agent.idd: unknown key" in res.stderr
    bad.write_text("listen: nowhere\n")
    res = run_cli("collector", "-c", str(bad))
    assert res.returncode == 2 and "bad.yaml:1: listen:" in res.stderr


def test_gen_token_hash_matches() -> None:
    from roomwatch.collector.agents import hash_token

    res = run_cli("gen-token")
    token = re.search(r"token:\s+(\S+)", res.stdout).group(1)
    digest = re.search(r"token_hash:\s+(\S+)", res.stdout).group(1)
    assert len(token) >= 40 and digest == hash_token(token)


def test_demo_runs_and_stops_on_ctrl_c(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "roomwatch", "demo", "--collector-port", "0", "--agent-port", "0",
                             "--dir", str(tmp_path / "demo")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        out = "".join(lines)
        m = re.search(r"agents \(JSON\)\s+(http://127\.0\.0\.1:\d+)/api/v1/agents", out)
        assert m, out
        url = m.group(1)
        wait_for(lambda: http_json(url + "/api/v1/agents")["agents"][0]["up"], timeout=30, what="demo agent up")
        assert re.search(r"agent metrics\s+http://127\.0\.0\.1:\d+/metrics", out)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "demo stopped." in rest


def test_demo_help_says_where_logs_go_and_door_every_is_checked() -> None:
    res = run_cli("demo", "--help")
    text = " ".join(res.stdout.split())
    assert "--dir DIR put configs, state and logs here and keep them" in text
    assert "deleted on exit (kept, and its path printed, when something failed)" in text
    assert "--door-every DURATION" in text
    for bad in ("20", "fast", "1s"):  # no unit, not a duration, too short
        res = run_cli("demo", "--door-every", bad)
        assert res.returncode == 2 and "--door-every" in res.stderr, (bad, res.stderr)


def _demo(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``roomwatch demo --duration 1`` to completion, its temporary directory under ``tmp_path``."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), **(env or {})}
    return subprocess.run([sys.executable, "-m", "roomwatch", "demo", "--collector-port", "0", "--agent-port", "0",
                           "--duration", "1", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=150,
                          check=False)


def test_demo_deletes_its_directory_after_a_clean_run(tmp_path) -> None:
    res = _demo(tmp_path, "--no-devices")
    assert res.returncode == 0 and "demo stopped." in res.stdout, res.stdout + res.stderr
    made = re.search(r"files and logs in (\S+)\)", res.stdout).group(1)
    assert made.startswith(str(tmp_path)) and not os.path.exists(made)
    assert "logs kept" not in res.stderr
    # The tour's pieces are printed: a login made up for this run, the notification sink, the demo rule.
    password = re.search(r"login\s+user demo, password (\S+)", res.stdout).group(1)
    assert len(password) >= 12 and password not in _demo(tmp_path, "--no-devices").stdout
    assert "notifications " in res.stdout and "DemoDoorOpened (info)" in res.stdout


def test_demo_keeps_and_names_its_logs_when_something_failed(tmp_path) -> None:
    # NUT "not installed": the demo goes on without that UPS, but says where the logs are and keeps them.
    res = _demo(tmp_path, env={"ROOMWATCH_NUT_BIN": str(tmp_path / "no-nut")})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "simulated NUT UPS (dummy-ups + upsd) not started" in res.stderr
    kept = re.search(r"logs kept in (\S+) \(", res.stderr)
    assert kept and kept.group(1).startswith(str(tmp_path)), res.stderr
    logs = {p.name for p in Path(kept.group(1)).iterdir()}
    assert {"collector.log", "agent.log", "collector.yaml", "demo-rules.yaml"} <= logs, logs
