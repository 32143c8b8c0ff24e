"""Fixtures shared by many tests: a running collector process and an agent process factory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RoomwatchProcess, free_port, http_get, wait_for, write_yaml

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
