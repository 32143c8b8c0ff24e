"""The history store's series ids: one row per label set whatever the label order, across restarts and rollbacks."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from roomwatch.collector.store import IngestStore, StoreError
from roomwatch.core.wire import Batch, SampleRecord

NOW = int(time.time() * 1000)


def _batch(seq: int, labels: dict[str, str], value: float, metric: str = "roomwatch_temperature_celsius") -> Batch:
    return Batch("a1", seq, [SampleRecord(metric, labels, value, NOW + seq)], [])


def _rows(path: Path) -> list[tuple[str, str, float]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT h.metric, h.labels, s.value FROM history_samples s JOIN history_series h "
                            "ON h.id = s.series ORDER BY s.ts").fetchall()
    finally:
        conn.close()


def test_label_order_and_restart_share_one_series(tmp_path: Path) -> None:
    path = tmp_path / "c.db"

    async def run() -> None:
        store = IngestStore(str(path))
        try:
            assert await store.commit("a1", _batch(1, {"agent": "a1", "device": "th1"}, 20.0), 0)
            assert await store.commit("a1", _batch(2, {"device": "th1", "agent": "a1"}, 21.0), 0)  # other order
        finally:
            store.close()
        store = IngestStore(str(path))  # a restart: nothing cached, the row is found again
        try:
            assert await store.commit("a1", _batch(3, {"device": "th1", "agent": "a1"}, 22.0), 0)
        finally:
            store.close()

    asyncio.run(run())
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM history_series").fetchone() == (1,)
    conn.close()
    key = '{"agent":"a1","device":"th1"}'
    assert _rows(path) == [("roomwatch_temperature_celsius", key, v) for v in (20.0, 21.0, 22.0)]


def test_a_rolled_back_commit_forgets_the_series_it_created(tmp_path: Path) -> None:
    """After a failed transaction the series row is gone; the next sample of it must create it again,
    not point at the vanished id (its history would be unreachable)."""
    path = tmp_path / "c.db"
    store = IngestStore(str(path))
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER boom BEFORE INSERT ON history_samples WHEN NEW.value = 666 "
                 "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    conn.commit()

    async def run() -> None:
        with pytest.raises(StoreError, match="injected failure"):
            await store.commit("a1", _batch(1, {"agent": "a1", "device": "new"}, 666.0), 0)
        conn.execute("DROP TRIGGER boom")
        conn.commit()
        assert await store.commit("a1", _batch(1, {"agent": "a1", "device": "new"}, 23.0), 0)  # the agent retries

    try:
        asyncio.run(run())
    finally:
        store.close()
        conn.close()
    assert _rows(path) == [("roomwatch_temperature_celsius", '{"agent":"a1","device":"new"}', 23.0)]


def test_one_failing_push_does_not_fail_the_others_in_its_group(tmp_path: Path) -> None:
    """A savepoint per push (issue 12): the push SQLite refuses is refused alone; the group commits the rest."""
    import threading

    path = tmp_path / "c.db"
    store = IngestStore(str(path))
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER boom BEFORE INSERT ON history_samples WHEN NEW.value = 666 "
                 "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    conn.commit()
    gate = threading.Event()

    async def run() -> list[object]:
        blocker = asyncio.ensure_future(store.run(lambda _conn: gate.wait(10)))  # holds the writer: the pushes queue up
        await asyncio.sleep(0.05)
        jobs = [store.commit(agent, Batch(agent, 1, [SampleRecord("roomwatch_temperature_celsius", {"device": "t"},
                                                                  value, NOW)], []), 0)
                for agent, value in (("a1", 20.0), ("bad", 666.0), ("a2", 21.0), ("a3", 22.0))]
        pending = asyncio.gather(*jobs, return_exceptions=True)
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        return list(await pending)

    try:
        results = asyncio.run(run())
    finally:
        store.close()
        conn.close()
    assert results[0] is True and results[2] is True and results[3] is True
    assert isinstance(results[1], StoreError) and results[1].permanent and "injected failure" in str(results[1])
    assert store.stats.largest_group >= 4  # they were one group
    assert sorted(v for _, _, v in _rows(path)) == [20.0, 21.0, 22.0]


def test_pruning_removes_series_left_without_samples(tmp_path: Path) -> None:
    """history_series rows do not pile up: a series whose samples all passed the retention goes too."""
    path = tmp_path / "c.db"
    store = IngestStore(str(path))
    old = NOW - 40 * 86400_000

    async def run() -> int:
        await store.commit("a1", Batch("a1", 1, [SampleRecord("roomwatch_temperature_celsius", {"device": "gone"}, 1.0,
                                                               old)], []), 0)
        await store.commit("a1", Batch("a1", 2, [SampleRecord("roomwatch_temperature_celsius", {"device": "kept"}, 2.0,
                                                               NOW)], []), 0)
        return int(await store.prune_history(30 * 86400))

    try:
        assert asyncio.run(run()) == 1
    finally:
        store.close()
    conn = sqlite3.connect(path)
    labels = [row[0] for row in conn.execute("SELECT labels FROM history_series")]
    conn.close()
    assert labels == ['{"agent":"a1","device":"kept"}'] and store.series_pruned == 1
