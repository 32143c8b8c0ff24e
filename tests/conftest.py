"""Fixtures shared by many tests: a running collector process and an agent process factory; the peers.

Every peer fixture (mosquitto, snmpsim, upsd, Prometheus …) comes from its module in
``tests/peers`` through :data:`pytest_plugins`, so a test just names it as an argument.

The ``peer`` marker: a test that starts a process (a peer program, or roomwatch itself)
carries it, so ``./dev test -m "not peer"`` is the fast unit subset. Tests using a
process-starting fixture get it automatically; any other test that starts a process
without it fails, naming itself (see :func:`_processes_need_the_peer_marker`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RoomwatchProcess, free_port, http_get, wait_for, write_yaml

pytest_plugins = [
    "tests.peers.alertmanager",
    "tests.peers.chromium",
    "tests.peers.dist",
    "tests.peers.modbus",
    "tests.peers.mosquitto",
    "tests.peers.nut",
    "tests.peers.nut_clients",
    "tests.peers.prometheus",
    "tests.peers.snmpsim",  # before snmpd, which imports it (a plugin must be loaded as one to be assert-rewritten)
    "tests.peers.snmpd",
    "tests.peers.webhook_receiver",
    "tests.discover_rig",  # cards_factory: snmpsim cards on their own loopback addresses
]

#: Fixtures that start a process: a test using one (directly or through another fixture) is a ``peer`` test.
PROCESS_FIXTURES = frozenset({"alertmanager", "browser_page", "mosquitto", "mosquitto_tls", "publisher", "nut_factory",
                              "nut_clients", "prometheus_factory", "snmpd", "snmpsim_factory", "cards_factory", "serial_pair",
                              "collector",
                              "agent_factory", "dist",
                              # module-scoped ones of single test modules (set up before the guard could see them)
                              "sim", "fuzz_collector", "nut_all"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peer)
    # Another architecture under qemu-user (the arm64 bundle in Debian 11): 75 s with the root cached, about 8
    # minutes the first time (debootstrap under emulation) — more than CI's budget allows on a fresh machine.
    # Deselected unless ROOMWATCH_FOREIGN_ARCH=1 (README, "Tests"); the arm64 bundle's contents are still tested.
    if os.environ.get("ROOMWATCH_FOREIGN_ARCH") != "1":
        foreign = [i for i in items if i.get_closest_marker("foreign_arch") is not None]
        if foreign:
            config.hook.pytest_deselected(items=foreign)
            items[:] = [i for i in items if i.get_closest_marker("foreign_arch") is None]


@pytest.fixture(autouse=True)
def _processes_need_the_peer_marker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the ``peer`` marker may not start a process: the unit subset must stay fast and self-contained.

    ``ROOMWATCH_PEER_AUDIT=FILE`` lists such tests in FILE instead of failing them (for marking a suite).
    """
    if request.node.get_closest_marker("peer") is not None:
        return
    real_init = subprocess.Popen.__init__
    audit = os.environ.get("ROOMWATCH_PEER_AUDIT")
    nodeid = request.node.nodeid

    def guarded(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        if not audit:
            raise AssertionError(f"{nodeid} starts a process ({args!r:.120}) without the peer marker: "
                                 f"add @pytest.mark.peer (or use a peer fixture)")
        with open(audit, "a", encoding="utf-8") as f:
            f.write(nodeid + "\n")
        real_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


TOKENS = {"agent-a": "token-aaaaaaaaaaaaaaaa", "agent-b": "token-bbbbbbbbbbbbbbbb"}


@pytest.fixture(autouse=True)
def _stop_leftover_processes() -> Iterator[None]:
    """A test that fails between starting a process and stopping it must not leave it running:
    stop, after the test and its own fixtures, what the test started and left alive."""
    from tests.helpers import STARTED

    first = len(STARTED)
    yield
    for p in STARTED[first:]:
        if p.alive():
            p.stop()
    del STARTED[first:]


class CollectorHandle:
    def __init__(self, proc: RoomwatchProcess, port: int, config: Path):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.config = config

    def metrics(self) -> str:
        status, body = http_get(self.url + "/metrics")
        assert status == 200
        return body.decode()


def start_collector(tmp_path: Path, name: str = "collector", **overrides: Any) -> CollectorHandle:
    port = int(str(overrides["listen"]).rsplit(":", 1)[1]) if "listen" in overrides else free_port()
    conf = {
        "listen": f"127.0.0.1:{port}",
        "storage": str(tmp_path / f"{name}.db"),
        "agents": [{"id": aid, "token": tok} for aid, tok in TOKENS.items()],
        "agent_timeout": "3s",
        **overrides,
    }
    path = write_yaml(tmp_path / f"{name}.yaml", conf)
    proc = RoomwatchProcess(["collector", "-c", str(path)], tmp_path / f"{name}.log")
    handle = CollectorHandle(proc, port, path)
    try:
        wait_for(lambda: http_get(handle.url + "/readyz", timeout=1)[0] == 200, proc=proc.proc, what="collector /readyz")
    except AssertionError as exc:
        proc.stop()
        raise AssertionError(f"{exc}\n{proc.log()}") from None
    return handle


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorHandle]:
    """A real ``roomwatch collector`` process on an ephemeral port, agents agent-a and agent-b."""
    handle = start_collector(tmp_path)
    yield handle
    handle.proc.stop()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Any]:
    """Start ``roomwatch agent`` processes; each call returns (process, metrics URL)."""
    started: list[RoomwatchProcess] = []

    def make(collector_url: str | None, agent_id: str = "agent-a", **sections: Any) -> tuple[RoomwatchProcess, str]:
        port = free_port()
        n = len(started)
        conf: dict[str, Any] = {
            "agent": {"id": agent_id, "site": "test-site", "room": "room-1", "listen": f"127.0.0.1:{port}",
                      "spool": str(tmp_path / f"agent{n}-spool.db"), **sections.pop("agent", {})},
            "host": {"interval": "1s", **sections.pop("host", {})},
        }
        if collector_url:
            conf["collector"] = {"urls": [collector_url], "token": TOKENS.get(agent_id, "x" * 20),
                                 "push_interval": "1s", **sections.pop("collector", {})}
        conf.update(sections)
        path = write_yaml(tmp_path / f"agent{n}.yaml", conf)
        proc = RoomwatchProcess(["agent", "-c", str(path)], tmp_path / f"agent{n}.log")
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(url + "/healthz", timeout=1)[0] == 200, proc=proc.proc, what="agent /healthz")
        return proc, url

    yield make
    for p in started:
        p.stop()
