"""Write the store fixtures of a roomwatch release: its collector store and its agent spool.

Run with the RELEASE's code on the path, not the current code, e.g. for release 0.1.0 (commit 89887b6):

    git worktree add /tmp/rel 89887b6
    PYTHONPATH=/tmp/rel .venv/bin/python tests/data/stores/make_stores.py tests/data/stores 0.1.0
    git worktree remove /tmp/rel

tests/test_store_upgrade.py opens these files with the current code: everything written here must
still be there after the migration. Keep the values below in step with that test (EXPECTED).
It uses only the release's public classes (no SQL), so the files are what that release writes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

AGENT = "room1-agent"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms: fixed, so the files do not change from run to run


def _samples(seq: int) -> list:
    from roomwatch.core.wire import SampleRecord

    return [SampleRecord("roomwatch_temperature_celsius", {"device": "th1", "sensor": "inlet"}, 20.0 + seq, T0 + seq * 10_000),
            SampleRecord("roomwatch_ups_on_battery", {"device": "ups1"}, float(seq % 2), T0 + seq * 10_000)]


def write_spool(path: Path) -> None:
    """Batches 1..4 spooled (2 delivered and acked), one with a door event."""
    from roomwatch.agent.spool import Spool
    from roomwatch.core.wire import Batch, EventRecord

    s = Spool(str(path), AGENT)
    for seq in (1, 2, 3, 4):
        events = [EventRecord("door_open", {"device": "door1"}, T0 + seq * 10_000, 1.0)] if seq == 3 else []
        s.put(Batch(AGENT, seq, _samples(seq), events))
    s.ack(2)
    s.close()


def write_collector(path: Path) -> None:
    """Pushes 1..3 committed (dedup ledger and history), one open alert, a web session table."""
    from roomwatch.alerts.model import Alert
    from roomwatch.alerts.store import AlertStore
    from roomwatch.collector.store import IngestStore
    from roomwatch.collector.webauth import MIGRATIONS as WEB_MIGRATIONS
    from roomwatch.core.sqlite import ensure_schema, open_db
    from roomwatch.core.wire import Batch

    async def ingest() -> None:
        store = IngestStore(str(path))
        for seq in (1, 2, 3):
            await store.commit(AGENT, Batch(AGENT, seq, _samples(seq)), 0)
        store.close()

    asyncio.run(ingest())
    alerts = AlertStore(str(path))
    alerts.save_alert(Alert(fp="fixture-fp-1", name="UPSOnBattery", rule_uid="UPSOnBattery", severity="critical",
                            labels={"alertname": "UPSOnBattery", "severity": "critical", "agent": AGENT, "device": "ups1"},
                            series_labels={"agent": AGENT, "device": "ups1"}, metric="roomwatch_ups_on_battery",
                            state="firing", active_since=T0 / 1000, fired_at=T0 / 1000 + 1, value=1.0))
    alerts.close()
    conn = open_db(path)
    ensure_schema(conn, "webauth", WEB_MIGRATIONS)
    conn.close()


def _compact(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("VACUUM")
    conn.close()
    for suffix in ("-wal", "-shm", ".lock"):
        if os.path.exists(str(path) + suffix):
            os.unlink(str(path) + suffix)


def main() -> int:
    out, release = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    for name, write in ((f"agent-spool-{release}.db", write_spool), (f"collector-{release}.db", write_collector)):
        target = out / name
        if target.exists():
            target.unlink()
        write(target)
        _compact(target)
        print(f"wrote {target} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
