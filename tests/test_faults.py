"""Faults injected into real agent and collector processes: outage, lossy link, kill -9, full spool.

Every test counts: the counter device logs each value it produced; the collector's
store holds what was delivered. Delivered must equal produced (a kill -9 of the
agent may lose only the tail of that run not yet sealed into a batch), each value
once, with its original timestamp.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKENS, start_collector
from tests.helpers import http_get, metric_value, wait_for
from tests.reliability_rig import (
    CounterAgent,
    LossyProxy,
    check_runs_are_prefixes,
    delivered,
    integrity,
    produced,
)

pytestmark = pytest.mark.peer  # every test here starts a process

TOKEN = TOKENS["agent-a"]


def _ledger(db: Path, agent: str = "agent-a") -> tuple[int, int, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT batches, samples, events FROM ingest_agents WHERE agent = ?",
                           (agent,)).fetchone() or (0, 0, 0)
        rows = conn.execute("SELECT COUNT(*) FROM history_samples s JOIN history_series h ON h.id = s.series "
                            "WHERE json_extract(h.labels, '$.agent') = ?", (agent,)).fetchone()[0]
    finally:
        conn.close()
    return row[1], rows, row[2]


def assert_each_batch_accepted_once(db: Path, agent: str = "agent-a") -> None:
    """The collector's ledger (samples of every batch it accepted) equals the rows its history holds.

    History rows are keyed (series, ts) and written with INSERT OR IGNORE, so a batch accepted twice
    leaves no second row behind: the history alone cannot show it, but the ledger counts it twice."""
    accepted, stored, _ = _ledger(db, agent)
    assert accepted == stored, (
        f"a batch was accepted twice: the ledger counts {accepted} samples, the history holds {stored} rows")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_long_collector_outage_is_bridged_fresh_first(tmp_path: Path) -> None:
    """Collector down 60 s while the agent polls every second: afterwards every value is in the
    history exactly once with its own timestamp, and the present reached /metrics before the backlog."""
    db = tmp_path / "collector.db"
    c = start_collector(tmp_path, name="c0", storage=str(db))
    port = c.port
    # backlog_rate 40 samples/s: ~60 batches of ~20 samples take about 30 s to drain, long enough to
    # see that fresh batches overtake them.
    agent = CounterAgent(tmp_path, [c.url], TOKEN, interval="1s", push_interval="1s",
                         collector={"backlog_rate": 40})
    agent.start()
    try:
        wait_for(lambda: metric_value(c.metrics(), "roomwatch_test_counter") is not None, timeout=20,
                 what="first counter value at the collector")
        c.proc.kill()
        c.proc.stop()
        # the outage lasts until the agent has spooled a minute of batches (its own figures say when)
        wait_for(lambda: (agent.metric("roomwatch_agent_spool_batches") or 0) >= 50
                 and (agent.metric("roomwatch_agent_spool_oldest_age_seconds") or 0) >= 55, timeout=180,
                 what="a minute of backlog in the agent's spool")
        c = start_collector(tmp_path, name="c1", storage=str(db), listen=f"127.0.0.1:{port}")
        restarted = len(produced(agent.produced_log))

        def current() -> float | None:
            return metric_value(c.metrics(), "roomwatch_test_counter")

        first = wait_for(current, timeout=20, what="a counter value after the restart")
        # The first value shown after the outage is the present, not the backlog's oldest.
        assert first % 1_000_000 >= restarted - 3, (first, restarted)
        _status, body = http_get(c.url + "/api/v1/history?metric=roomwatch_test_counter&start=0")
        in_history = sum(len(s["samples"]) for s in json.loads(body)["series"])
        assert in_history < restarted - 20, "the backlog should still be draining (paced) when fresh data is shown"
        agent.wait_drained(timeout=150)
    finally:
        agent.proc.stop()
        c.proc.stop()
    lost = check_runs_are_prefixes(produced(agent.produced_log), delivered(db), complete_runs={1})
    assert lost == {1: 0}
    # exactly once: the backlog and the fresh batches that overtook it were each accepted once
    assert_each_batch_accepted_once(db)
    assert "collector reachable again" in agent.proc.log()


@pytest.mark.timeout(180)
def test_lossy_link_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    c = start_collector(tmp_path, storage=str(db))
    proxy = LossyProxy(c.port, seed=20240611).start()
    agent = CounterAgent(tmp_path, [f"http://127.0.0.1:{proxy.port}"], TOKEN, interval="100ms",
                         push_interval="200ms", fanout=20, collector={"timeout": "1s"})
    agent.start()
    try:
        # the link misbehaves until it has cut and stalled enough requests to matter
        wait_for(lambda: proxy.stats["cut_up"] + proxy.stats["cut_down"] >= 10 and proxy.stats["stall"] >= 3,
                 timeout=120, interval=0.5, what="cuts and stalls on the lossy link")
        proxy.heal()
        agent.wait_drained(timeout=60)
    finally:
        agent.proc.stop()
        proxy.stop()
        c.proc.stop()
    assert proxy.stats["cut_up"] + proxy.stats["cut_down"] >= 10 and proxy.stats["stall"] >= 3, proxy.stats
    prod = produced(agent.produced_log)
    assert len(prod) > 100
    check_runs_are_prefixes(prod, delivered(db), complete_runs={1})
    assert_each_batch_accepted_once(db)
    assert integrity(db) == "ok"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_9_agent_and_collector_at_random_points(tmp_path: Path) -> None:
    rng = random.Random(7)
    db = tmp_path / "collector.db"
    c = start_collector(tmp_path, name="c0", storage=str(db))
    port = c.port
    # fanout 300: each poll commits a few hundred rows, so kills land inside SQLite writes.
    agent = CounterAgent(tmp_path, [c.url], TOKEN, interval="100ms", push_interval="250ms", fanout=300)
    agent.start()
    kills = {"agent": 0, "collector": 0}
    try:
        for i in range(12):
            time.sleep(rng.uniform(0.3, 1.5))
            victim = rng.choice(["agent", "collector", "both"])
            if victim in ("agent", "both"):
                agent.proc.kill()
                kills["agent"] += 1
                assert integrity(agent.spool) == "ok"
            if victim in ("collector", "both"):
                c.proc.kill()
                c.proc.stop()
                kills["collector"] += 1
                assert integrity(db) == "ok"
            time.sleep(rng.uniform(0, 0.5))
            if victim in ("collector", "both"):
                c = start_collector(tmp_path, name=f"c{i + 1}", storage=str(db), listen=f"127.0.0.1:{port}")
            if victim in ("agent", "both"):
                agent.start()
        agent.wait_drained(timeout=90)
    finally:
        agent.proc.stop()
        c.proc.stop()
    assert kills["agent"] >= 3 and kills["collector"] >= 3, kills
    assert integrity(db) == "ok" and integrity(agent.spool) == "ok"
    lost = check_runs_are_prefixes(produced(agent.produced_log), delivered(db), complete_runs={agent.run})
    # a kill -9 loses at most what was polled but not yet sealed: a push interval of polls (plus scheduling slack)
    assert all(n <= 6 for n in lost.values()), lost
    assert_each_batch_accepted_once(db)


@pytest.mark.timeout(180)
def test_full_spool_drops_oldest_plain_samples_keeps_events(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    c = start_collector(tmp_path, storage=str(db))
    port = c.port
    c.proc.stop()  # the collector is away from the start
    agent = CounterAgent(tmp_path, [f"http://127.0.0.1:{port}"], TOKEN, interval="100ms", push_interval="300ms",
                         fanout=100, door_every=15, agent={"spool_max_bytes": "64KiB"})
    agent.start()
    try:
        wait_for(lambda: (agent.metric("roomwatch_agent_spool_dropped_total", kind="samples", reason="cap") or 0) > 2000,
                 timeout=60, what="the spool cap to drop samples")
        assert agent.metric("roomwatch_agent_spool_bytes") <= 64 * 1024
        c = start_collector(tmp_path, name="c1", storage=str(db), listen=f"127.0.0.1:{port}")
        agent.wait_drained(timeout=60)
        dropped = agent.metric("roomwatch_agent_spool_dropped_total", kind="samples", reason="cap")
        assert agent.metric("roomwatch_agent_spool_dropped_total", kind="events", reason="cap") == 0
    finally:
        agent.proc.stop()
        c.proc.stop()
    assert "spool full" in agent.proc.log()
    prod = produced(agent.produced_log)
    got = dict(delivered(db))
    missing = [v for v, _, _ in prod if v not in got]
    assert missing and dropped >= len(missing)
    # Policy: the oldest go. Past the last dropped value everything arrived.
    last_missing = max(missing)
    assert all(v in got for v, _, _ in prod if v > last_missing)
    # Every door transition reached the collector as an event, none was dropped.
    doors = [d for _, _, d in prod]
    transitions = sum(1 for a, b in itertools.pairwise(doors) if a != b)
    assert _ledger(db)[2] == transitions > 3


@pytest.mark.timeout(180)
def test_failover_to_the_second_collector_and_back(tmp_path: Path) -> None:
    """Two collector URLs: the agent moves to the second when the first dies and returns after failback_after.
    Nothing is lost: every value is in one collector's history or the other's. Each collector accepted
    each batch once (its ledger equals its history), and only a batch in flight when the first
    collector was killed may have reached both."""
    db_a, db_b = tmp_path / "a.db", tmp_path / "b.db"
    a = start_collector(tmp_path, name="a0", storage=str(db_a))
    b = start_collector(tmp_path, name="b", storage=str(db_b))
    port_a = a.port
    agent = CounterAgent(tmp_path, [a.url, b.url], TOKEN, interval="200ms", push_interval="300ms",
                         collector={"failback_after": "4s"})
    agent.start()

    def newest(c: Any) -> float:
        return metric_value(c.metrics(), "roomwatch_test_counter") or 0

    try:
        # a dozen polls on the first collector, so a re-send of what it acknowledged would show below
        wait_for(lambda: newest(a) >= 1_000_012, timeout=20, what="pushes to the first collector")
        killed_ms = int(time.time() * 1000)
        a.proc.kill()
        a.proc.stop()
        wait_for(lambda: newest(b) > 0, timeout=20, what="failover to the second collector")
        a = start_collector(tmp_path, name="a1", storage=str(db_a), listen=f"127.0.0.1:{port_a}")
        wait_for(lambda: newest(a) > 0, timeout=20, what="failback to the first collector")  # bounded by the wait
        # once back, the second collector gets nothing new: after a few more pushes to the first (a push to
        # the second still in flight has ended by then), the second's newest value stays while the first's grows
        back = newest(a)
        wait_for(lambda: newest(a) >= back + 2, timeout=20, what="pushes to the first collector again")
        on_b = newest(b)
        wait_for(lambda: newest(a) >= back + 5, timeout=20, what="more pushes to the first collector")
        assert newest(b) == on_b and newest(a) > on_b
        agent.wait_drained()
    finally:  # a failed wait must not leave the collectors running (stop only what this test started)
        agent.proc.stop()
        a.proc.stop()
        b.proc.stop()
    got_a, got_b = delivered(db_a), delivered(db_b)
    assert got_a and got_b
    # each collector holds each value at most once; together they hold every value
    check_runs_are_prefixes(produced(agent.produced_log), sorted(set(got_a) | set(got_b), key=lambda x: x[1]),
                            complete_runs={1})
    assert len({v for v, _ in got_a}) == len(got_a) and len({v for v, _ in got_b}) == len(got_b)
    # neither collector accepted a batch twice (its history alone could not show that)
    assert_each_batch_accepted_once(db_a)
    assert_each_batch_accepted_once(db_b)
    # A value in both histories can only come from the one push the first collector committed but could
    # not answer before its kill -9 (one batch: at most 2 polls of 200 ms in a 300 ms push interval, plus
    # one of slack); every other batch went to exactly one collector.
    in_both = sorted(set(got_a) & set(got_b))
    assert len(in_both) <= 3 and all(ts <= killed_ms for _, ts in in_both), f"sent to both collectors: {in_both}"
