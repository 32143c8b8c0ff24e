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
