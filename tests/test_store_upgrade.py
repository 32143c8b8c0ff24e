"""Upgrades: the previous release's stores open with the current code, data kept; downgrades are refused.

tests/data/stores/ holds a collector store and an agent spool written by the previous release's
own code (tests/data/stores/make_stores.py says how to write them again). The tests check the
mechanism — every migration applied, nothing lost, a newer file refused untouched — not a
particular schema version, so adding a migration keeps them passing.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import ROOT, RoomwatchProcess, free_port, write_yaml

STORES = ROOT / "tests" / "data" / "stores"
RELEASE = "0.1.0"  # the release (commit 89887b6) that wrote the fixtures
AGENT = "room1-agent"


def _copy(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copy2(STORES / f"{name.split('.')[0]}-{RELEASE}.db", dest)
    return dest


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ agent spool

def test_previous_release_spool_opens_with_its_batches(tmp_path: Path) -> None:
    from roomwatch.agent.spool import Spool
    from roomwatch.agent.spool_store import MIGRATIONS

    path = _copy("agent-spool.db", tmp_path)
    s = Spool(str(path), AGENT)
    try:
        assert s.last_seq == 4  # seq goes on above what the release sent
        batches = {b.seq: b for b in s.next_batches(10)}
        assert sorted(batches) == [1, 3, 4]  # 2 was acknowledged by the collector
        assert [e.type for e in batches[3].events] == ["door_open"]
        assert {(x.metric, x.value) for x in batches[4].samples} == {("roomwatch_temperature_celsius", 24.0),
                                                                     ("roomwatch_ups_on_battery", 0.0)}
        assert s.integrity_check() == "ok"
    finally:
        s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()
    s = Spool(str(path), AGENT)  # and again: a migrated file opens as it is
    assert s.depth() == 3
    s.close()


def test_spool_of_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    from roomwatch.agent.spool import Spool, SpoolError
    from roomwatch.agent.spool_store import MIGRATIONS

    path = tmp_path / "spool.db"
    Spool(str(path), AGENT).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    before = _digest(path)
    with pytest.raises(SpoolError, match=r"written by a newer roomwatch \(schema version \d+; this roomwatch knows up to"):
        Spool(str(path), AGENT)
    assert _digest(path) == before
    assert not list(tmp_path.glob("*.corrupt-*")), "a newer spool must not be moved aside as damaged"
    Spool(str(tmp_path / "other.db"), AGENT).close()  # the lock was released with the refusal


# ------------------------------------------------------------------ collector store

def test_previous_release_collector_store_opens_with_its_data(tmp_path: Path) -> None:
    from roomwatch.alerts.store import AlertStore
    from roomwatch.collector.store import IngestStore
    from roomwatch.core.wire import Batch

    path = _copy("collector.db", tmp_path)

    async def ingest() -> tuple[bool, bool]:
        store = IngestStore(str(path))
        try:
            assert store.seq_ranges() == {AGENT: [(1, 3)]}
            replay = await store.commit(AGENT, Batch(AGENT, 2), 0)  # already counted by the release: a duplicate
            fresh = await store.commit(AGENT, Batch(AGENT, 4), 0)
            rows = store.reader().execute("SELECT COUNT(*) FROM history_samples").fetchone()[0]
            assert rows == 6
            return replay, fresh
        finally:
            store.close()

    replay, fresh = asyncio.run(ingest())
    assert (replay, fresh) == (False, True)
    alerts = AlertStore(str(path))
    try:
        open_alerts = alerts.open_alerts()
        assert [(a.fp, a.name, a.state) for a in open_alerts] == [("fixture-fp-1", "UPSOnBattery", "firing")]
    finally:
        alerts.close()


def _bump(path: Path, component: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_versions SET version = version + 100 WHERE component = ?", (component,))
    conn.commit()
    conn.close()


def test_collector_store_of_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    from roomwatch.collector.store import IngestStore
    from roomwatch.core.sqlite import StoreTooNew

    path = _copy("collector.db", tmp_path)
    IngestStore(str(path)).close()  # migrated to the current version first
    _bump(path, "ingest")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = _digest(path)
    with pytest.raises(StoreTooNew, match=r"'ingest' part of the store was written by a newer roomwatch"):
        IngestStore(str(path))
    assert _digest(path) == before


@pytest.mark.peer
def test_collector_process_refuses_a_newer_store_with_a_clear_line(tmp_path: Path) -> None:
    """`roomwatch collector` on a store from a newer release exits 1 and says what to do; the file stays."""
    from roomwatch.alerts.store import AlertStore

    path = _copy("collector.db", tmp_path)
    AlertStore(str(path)).close()
    _bump(path, "alerts")
    conf = write_yaml(tmp_path / "collector.yaml", {"listen": f"127.0.0.1:{free_port()}", "storage": str(path),
                                                   "agents": [{"id": AGENT, "token": "t" * 32}]})
    proc = RoomwatchProcess(["collector", "-c", str(conf)], tmp_path / "collector.log")
    try:
        assert proc.proc.wait(timeout=60) == 1
    finally:
        proc.stop()
    log = proc.log()
    assert "written by a newer roomwatch" in log and "docs/install.md" in log, log
    assert "Traceback" not in log
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_versions WHERE component = 'alerts'").fetchone()[0] > 100
    conn.close()
