"""systemd units (verify, sandbox exposure score), the install script, and sd_notify from real processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, RoomwatchProcess, free_port, http_get, require_binary, wait_for, write_yaml

UNITS = ["roomwatch-agent.service", "roomwatch-collector.service"]

#: `systemd-analyze security --offline=true` exposure (0 safest … 10) as recorded on systemd 252.
#: Lower it when you tighten a unit; the test fails when a change makes a unit more exposed.
RECORDED_EXPOSURE = {"roomwatch-agent.service": 1.5, "roomwatch-collector.service": 1.3}


def _unit_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here (verify insists on it)."""
    text = (ROOT / "systemd" / unit).read_text()
    assert "ExecStart=/opt/roomwatch/bin/roomwatch " in text
    out = tmp_path / unit
    out.write_text(text.replace("ExecStart=/opt/roomwatch/bin/roomwatch ", "ExecStart=/bin/true "))
    return out


@pytest.mark.peer
@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_clean(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit with no warning at all (unknown keys only warn)."""
    analyze = require_binary("systemd-analyze")
    r = subprocess.run([analyze, "verify", str(_unit_copy(unit, tmp_path))], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr


def _exposure(path: Path) -> float:
    analyze = require_binary("systemd-analyze")
    r = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(path)], capture_output=True,
                       text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    return float(m.group(1))


@pytest.mark.peer
@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_does_not_regress(unit: str, tmp_path: Path) -> None:
    score = _exposure(_unit_copy(unit, tmp_path))
    assert score <= RECORDED_EXPOSURE[unit], f"{unit}: exposure {score} rose above the recorded {RECORDED_EXPOSURE[unit]}"
    assert score <= 2.0  # the project's goal ("OK")


@pytest.mark.peer
def test_trap_drop_in_grants_port_162_and_nothing_else(tmp_path: Path) -> None:
    """systemd/roomwatch-agent-traps.conf (docs/snmp.md, "Traps"): verifies clean on top of the agent unit,
    grants CAP_NET_BIND_SERVICE only, and keeps the unit's exposure within the project's goal."""
    analyze = require_binary("systemd-analyze")
    unit = _unit_copy("roomwatch-agent.service", tmp_path)
    drop = (ROOT / "systemd" / "roomwatch-agent-traps.conf").read_text()
    caps = re.findall(r"^(AmbientCapabilities|CapabilityBoundingSet)=(.*)$", drop, re.M)
    assert caps == [("AmbientCapabilities", "CAP_NET_BIND_SERVICE"), ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE")]
    (tmp_path / "roomwatch-agent.service.d").mkdir()
    (tmp_path / "roomwatch-agent.service.d" / "traps.conf").write_text(drop)
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    with_drop_in = _exposure(unit)
    assert RECORDED_EXPOSURE["roomwatch-agent.service"] < with_drop_in <= 2.0  # the drop-in is seen, and stays "OK"


def test_units_keep_the_device_exceptions_narrow() -> None:
    """Only serial ports (and GPIO chips for the agent) get through the device cgroup."""
    agent = (ROOT / "systemd" / "roomwatch-agent.service").read_text()
    coll = (ROOT / "systemd" / "roomwatch-collector.service").read_text()
    for text in (agent, coll):
        assert "DevicePolicy=closed" in text
        assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=on-failure" in text
        assert "StateDirectory=roomwatch" in text and "NoNewPrivileges=yes" in text
    allowed = sorted(re.findall(r"^DeviceAllow=(\S+)", agent, re.M))
    assert allowed == ["char-gpiochip", "char-ttyACM", "char-ttyS", "char-ttyUSB"]
    assert sorted(re.findall(r"^DeviceAllow=(\S+)", coll, re.M)) == ["char-ttyACM", "char-ttyS", "char-ttyUSB"]
    assert "LoadCredential=agent-token:/etc/roomwatch/agent-token" in agent


def test_units_set_the_open_files_limit() -> None:
    """LimitNOFILE is explicit (issue 12): the collector's connections fit, an fd flood meets the limit, not alerting."""
    limits = {unit: re.findall(r"^LimitNOFILE=(\d+)$", (ROOT / "systemd" / unit).read_text(), re.M) for unit in UNITS}
    assert limits == {"roomwatch-agent.service": ["4096"], "roomwatch-collector.service": ["65536"]}


@pytest.mark.peer
def test_install_script_stages_files_that_work(tmp_path: Path) -> None:
    """`install.sh --root` lays out units, rules and configs; the installed agent config reads the credential."""
    root = tmp_path / "root"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--root", str(root)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    for rel in ("etc/systemd/system/roomwatch-agent.service", "etc/systemd/system/roomwatch-collector.service",
                "etc/polkit-1/rules.d/50-roomwatch-poweroff.rules", "etc/udev/rules.d/60-roomwatch-gpio.rules",
                "etc/roomwatch/agent.yaml", "etc/roomwatch/collector.yaml"):
        assert (root / rel).is_file(), rel
    token_file = root / "etc/roomwatch/agent-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    agent_yaml = (root / "etc/roomwatch/agent.yaml").read_text()
    assert "token_file: ${CREDENTIALS_DIRECTORY:-/etc/roomwatch}/agent-token" in agent_yaml
    # systemd hands the credential over in $CREDENTIALS_DIRECTORY: the config must expand it.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "agent-token").write_text("a-token-from-a-credential\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CREDENTIALS_DIRECTORY": str(creds)}
    check = subprocess.run([sys.executable, "-m", "roomwatch", "check-config", str(root / "etc/roomwatch/agent.yaml"),
                            str(root / "etc/roomwatch/collector.yaml")], capture_output=True, text=True, env=env,
                           timeout=60, check=False, cwd=ROOT)
    assert check.returncode == 0, check.stdout + check.stderr
    from roomwatch.agent.config import load_agent_config

    old = os.environ.get("CREDENTIALS_DIRECTORY")
    os.environ["CREDENTIALS_DIRECTORY"] = str(creds)
    try:
        cfg = load_agent_config(str(root / "etc/roomwatch/agent.yaml"))
    finally:
        if old is None:
            del os.environ["CREDENTIALS_DIRECTORY"]
        else:
            os.environ["CREDENTIALS_DIRECTORY"] = old
    assert cfg.collector is not None
    assert cfg.collector.token.get_secret_value() == "a-token-from-a-credential"
    # A second run keeps the admin's edits.
    (root / "etc/roomwatch/agent.yaml").write_text(agent_yaml + "# edited\n")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--root", str(root)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0 and (root / "etc/roomwatch/agent.yaml").read_text().endswith("# edited\n")


# ------------------------------------------------------------------ sd_notify

class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str | bytes):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []

    def pump(self, seconds: float) -> list[tuple[float, str]]:
        """Collect what arrives during ``seconds``; return it."""
        got: list[tuple[float, str]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            got.append((time.monotonic(), data.decode()))
        self.messages.extend(got)
        return got

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in m for _, m in self.messages):
                return
            self.pump(0.2)
        raise AssertionError(f"no {needle!r} within {timeout}s; got {self.messages[-5:]}")

    def wait_count(self, text: str, n: int, since: int = 0, timeout: float = 30.0) -> None:
        """Until ``n`` messages equal to ``text`` arrived after the first ``since`` messages."""
        deadline = time.monotonic() + timeout
        while sum(m == text for _, m in self.messages[since:]) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {n} {text!r} within {timeout}s; got {self.messages[since:][-5:]}")
            self.pump(0.2)

    def close(self) -> None:
        self.sock.close()


#: A test-only interpreter hook (outside roomwatch's code): SIGUSR1 blocks the main thread —
#: the asyncio loop — for HANG_SECONDS, as a deadlocked or CPU-stuck loop would. It tells the notify
#: socket when the hang begins and ends, so the test knows which pings fell inside it.
_HANG_HOOK = """
import os, signal, socket, time
def _notify(text):
    addr = os.environ["NOTIFY_SOCKET"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(text.encode(), "\\0" + addr[1:] if addr.startswith("@") else addr)
    s.close()
def _hang(signum, frame):
    _notify("STATUS=test-hang-begins")
    time.sleep(float(os.environ.get("HANG_SECONDS", "3")))
    _notify("STATUS=test-hang-ends")
signal.signal(signal.SIGUSR1, _hang)
"""

#: Refuse writable+executable memory for the whole process, as MemoryDenyWriteExecute=yes does
#: (PR_SET_MDWE, Linux 6.3+; inherited by the interpreter's later mmaps).
_MDWE_HOOK = """
import ctypes
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    raise SystemExit("PR_SET_MDWE not supported: errno %d" % ctypes.get_errno())
"""


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[NotifySocket, str]]:
    """An abstract-namespace notify socket (``@name``), as systemd uses for most services."""
    name = f"roomwatch-test-{os.getpid()}-{time.monotonic_ns()}"
    s = NotifySocket(b"\0" + name.encode())
    yield s, "@" + name
    s.close()


def _hook_dir(tmp_path: Path, code: str) -> str:
    d = tmp_path / "hook"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(code)
    return f"{d}:{ROOT}"


@pytest.mark.peer
def test_agent_notifies_ready_watchdog_and_stops_pinging_when_its_loop_hangs(
        tmp_path: Path, notify_socket: tuple[NotifySocket, str]) -> None:
    sock, address = notify_socket
    port = free_port()
    conf = write_yaml(tmp_path / "agent.yaml", {"agent": {"id": "agent-a", "listen": f"127.0.0.1:{port}"},
                                               "host": {"interval": "1s"}})
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000", "HANG_SECONDS": "3",
           "PYTHONPATH": _hook_dir(tmp_path, _HANG_HOOK)}
    proc = RoomwatchProcess(["agent", "-c", str(conf)], tmp_path / "agent.log", env=env)
    try:
        sock.wait_for("READY=1")
        ready = next(m for _, m in sock.messages if "READY=1" in m)
        assert f"MAINPID={proc.proc.pid}" in ready and "STATUS=agent agent-a" in ready
        sock.wait_count("WATCHDOG=1", 4)  # every 0.2 s (half of WATCHDOG_USEC)
        proc.proc.send_signal(signal.SIGUSR1)  # the loop gets stuck for 3 s
        sock.wait_for("STATUS=test-hang-begins", timeout=10)
        sock.wait_for("STATUS=test-hang-ends", timeout=30)
        texts = [m for _, m in sock.messages]
        during = texts[texts.index("STATUS=test-hang-begins") + 1:texts.index("STATUS=test-hang-ends")]
        assert "WATCHDOG=1" not in during, "pings went on while the event loop was blocked"
        assert http_get(f"http://127.0.0.1:{port}/healthz", timeout=5)[0] == 200  # the process itself is alive
        sock.wait_count("WATCHDOG=1", 2, since=texts.index("STATUS=test-hang-ends"))  # the loop is back, the pings too
        assert proc.stop() == 0
        sock.wait_for("STOPPING=1", timeout=10)
    finally:
        proc.stop()


@pytest.mark.peer
def test_collector_notifies_ready_and_watchdog_on_a_filesystem_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = NotifySocket(str(path))
    port = free_port()
    conf = write_yaml(tmp_path / "collector.yaml", {"listen": f"127.0.0.1:{port}", "storage": str(tmp_path / "c.db")})
    proc = RoomwatchProcess(["collector", "-c", str(conf)], tmp_path / "collector.log",
                            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "500000"})
    try:
        sock.wait_for("READY=1")
        # READY comes only once the API answers (Type=notify orders dependent units after it).
        assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        sock.wait_count("WATCHDOG=1", 2)
        assert proc.stop() == 0
    finally:
        proc.stop()
        sock.close()


def test_no_notify_socket_means_no_notify(tmp_path: Path) -> None:
    from roomwatch.core.sdnotify import notify, watchdog_interval

    assert notify("READY=1", "") is False
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # meant for another pid
    assert watchdog_interval({}) is None


@pytest.mark.peer
def test_agent_and_collector_run_with_memory_deny_write_execute(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes is safe: both processes work when W+X memory is refused."""
    r = subprocess.run(["python3", "-c", _MDWE_HOOK], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"kernel lacks PR_SET_MDWE: {r.stderr.strip()}")
    hook = _hook_dir(tmp_path, _MDWE_HOOK)
    port, aport = free_port(), free_port()
    cconf = write_yaml(tmp_path / "c2.yaml", {"listen": f"127.0.0.1:{port}", "storage": str(tmp_path / "c2.db"),
                                            "agents": [{"id": "agent-a", "token": "token-aaaaaaaaaaaaaaaa"}]})
    aconf = write_yaml(tmp_path / "a2.yaml", {
        "agent": {"id": "agent-a", "listen": f"127.0.0.1:{aport}"}, "host": {"interval": "1s"},
        "collector": {"urls": [f"http://127.0.0.1:{port}"], "token": "token-aaaaaaaaaaaaaaaa", "push_interval": "1s"}})
    c = RoomwatchProcess(["collector", "-c", str(cconf)], tmp_path / "c2.log", env={"PYTHONPATH": hook})
    a = RoomwatchProcess(["agent", "-c", str(aconf)], tmp_path / "a2.log", env={"PYTHONPATH": hook})
    try:
        def pushed() -> bool:
            status, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)
            return status == 200 and b"roomwatch_host_load1{" in body

        wait_for(pushed, timeout=60, proc=a.proc, what="host metrics pushed under MDWE")
        assert c.alive() and a.alive()
    finally:
        a.stop()
        c.stop()
    assert "Traceback" not in a.log() + c.log()

