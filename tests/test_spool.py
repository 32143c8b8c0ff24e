"""The agent's spool on its own: order of delivery, persistence, cap policy, pacing, damage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roomwatch.agent.spool import Spool, SpoolError, spool_samples
from roomwatch.agent.spool_hold import Entry, Hold
from roomwatch.core import vocabulary as v
from roomwatch.core.wire import Batch, EventRecord, SampleRecord
from tests.conftest import TOKENS
from tests.helpers import ManualClock, free_port, http_get, http_json, wait_for, write_yaml
from tests.reliability_rig import Proc


def _now() -> int:
    return int(time.time() * 1000)


def _batch(seq: int, age_s: float = 0.0, n: int = 10, events: int = 0, tag: str = "t") -> Batch:
    ts = _now() - int(age_s * 1000)
    samples = [SampleRecord("roomwatch_temperature_celsius", {"device": f"{tag}{i}"}, float(seq), ts) for i in range(n)]
    evs = [EventRecord("door_open", {"device": "door1"}, ts, 1.0) for _ in range(events)]
    return Batch("agent-a", seq, samples, evs)


def _seqs(spool: Spool, limit: int = 100) -> list[int]:
    return [b.seq for b in spool.next_batches(limit)]


def test_events_first_then_fresh_newest_first_then_backlog_oldest_first(tmp_path: Path) -> None:
    s = Spool(str(tmp_path / "s.db"), "agent-a", fresh_window=30)
    for seq, age in ((1, 3600), (2, 3000), (3, 2000), (6, 10), (7, 0)):
        s.put(_batch(seq, age))
    s.put(_batch(4, 1500, events=1))
    s.put(_batch(5, 1000, events=1))
    assert _seqs(s) == [4, 5, 7, 6, 1, 2, 3]
    assert _seqs(s, 3) == [4, 5, 7]
    s.ack(4)
    s.ack(7)
    assert _seqs(s) == [5, 6, 1, 2, 3]
    assert s.depth() == 5
    s.close()


def test_fallback_notices_go_before_the_backlog_that_raises_their_alert(tmp_path: Path) -> None:
    """A local-fallback notice is pushed ahead of older event batches (the leak it reports), in a spool made
    before the priority column existed too, and survives a reopen with its priority."""
    import sqlite3

    from roomwatch.agent.outbox import MemoryOutbox
    from roomwatch.core.notice import notice_event

    path = tmp_path / "s.db"
    old = sqlite3.connect(path)  # the spool table as the first release created it
    old.executescript("CREATE TABLE batches (seq INTEGER PRIMARY KEY, newest_ms INTEGER NOT NULL, oldest_ms INTEGER "
                      "NOT NULL, n_samples INTEGER NOT NULL, n_events INTEGER NOT NULL, size INTEGER NOT NULL, "
                      "body BLOB NOT NULL)")
    old.close()
    s = Spool(str(path), "agent-a", fresh_window=30)
    notice = notice_event("WaterLeak", {"agent": "agent-a", "device": "leak1"}, "firing", "local-sms", "gsm_modem",
                          _now(), _now() / 1000 - 600, "漏水")
    s.put(_batch(1, 600, events=1))  # the leak, spooled while the link was down
    s.put(_batch(2, 500))
    s.put(Batch("agent-a", 3, [], [notice]))
    s.put(_batch(4, 0, events=1))
    assert _seqs(s) == [3, 1, 4, 2]
    s.close()
    s = Spool(str(path), "agent-a", fresh_window=30)
    assert _seqs(s, 1) == [3] and s.next_batches(1)[0].events[0].labels["status"] == "firing"
    s.close()
    m = MemoryOutbox()
    for b in (_batch(1, 600, events=1), Batch("agent-a", 2, [], [notice]), _batch(3, 0)):
        m.put(b)
    assert [b.seq for b in m.next_batches(10)] == [2, 3, 1]


def test_batches_and_seq_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    s = Spool(path, "agent-a")
    t0 = _now()
    for seq in (10, 11, 12):
        s.put(_batch(seq, 100, n=3))
    s.ack(11)
    s.close()
    s = Spool(path, "agent-a")
    assert s.depth() == 2 and s.last_seq == 12
    got = s.next_batches(10)
    assert [b.seq for b in got] == [10, 12]
    # samples come back exactly as stored: names, labels, values, original timestamps
    first = got[0].samples[0]
    assert (first.metric, first.labels, first.value) == ("roomwatch_temperature_celsius", {"device": "t0"}, 10.0)
    assert abs(first.ts - (t0 - 100_000)) < 1000 and all(s.ts == first.ts for s in got[0].samples)
    assert s.integrity_check() == "ok"
    s.close()


def test_restarted_pusher_never_reuses_a_seq_even_with_the_clock_set_back(tmp_path: Path) -> None:
    from roomwatch.agent.config import CollectorTarget
    from roomwatch.agent.push import Pusher

    path = str(tmp_path / "s.db")
    s = Spool(path, "agent-a")
    future_seq = (time.time_ns() // 1000) + 10**12  # as if the clock had been a week ahead at the last run
    s.put(_batch(future_seq, n=1))
    s.close()
    s = Spool(path, "agent-a")
    pusher = Pusher("agent-a", CollectorTarget(urls=["http://127.0.0.1:9"], token="x" * 16), outbox=s)
    assert pusher.next_seq() > future_seq
    s.close()


def test_a_spool_is_owned_by_one_agent_process(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    s = Spool(path, "agent-a")
    with pytest.raises(SpoolError, match="in use by another agent"):
        Spool(path, "agent-b")
    s.close()
    Spool(path, "agent-b").close()  # free again once closed
    with pytest.raises(SpoolError, match="does not exist"):
        Spool(str(tmp_path / "missing" / "s.db"), "agent-a")


def test_cap_drops_oldest_plain_samples_first_then_strips_event_batches(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    s = Spool(str(tmp_path / "s.db"), "agent-a", max_bytes=10**9)
    s.put(_batch(1, 900, n=200, events=1, tag="a"))
    for seq in range(2, 12):
        s.put(_batch(seq, 900 - seq, n=200, tag=f"b{seq}"))
    size_each = s.stats()["bytes"] // 11
    s.max_bytes = size_each * 8  # room for about 8 of the 11 batches
    caplog.set_level(logging.WARNING, "roomwatch.agent.spool")
    s.put(_batch(12, 0, n=200, tag="c"))
    st = s.stats()
    assert st["bytes"] <= s.max_bytes
    kept = _seqs(s)
    # the event batch survives, the newest survives, the oldest plain batches went first
    assert kept[0] == 1 and 12 in kept
    dropped = sorted(set(range(2, 12)) - set(kept))
    assert dropped == list(range(2, 2 + len(dropped))) and len(dropped) >= 3
    assert s.dropped_samples == 200 * len(dropped) and s.dropped_events == 0
    assert "spool full" in caplog.text and "dropped the oldest" in caplog.text
    # Squeeze until only the event batch and the newest are left: the event batch sheds its samples, keeps its event.
    s.max_bytes = 400
    s.put(_batch(13, 0, n=1, tag="d"))
    got = {b.seq: b for b in s.next_batches(10)}
    assert set(got) == {1, 13}
    assert got[1].samples == [] and len(got[1].events) == 1
    assert s.dropped_events == 0 and s.dropped_samples == 200 * 12  # 11 plain batches + the event batch's samples
    # Events go last, but they do go when nothing else is left; counted as well.
    s.max_bytes = 1
    s.put(_batch(14, 0, n=1, tag="e"))
    assert _seqs(s) == [14] and s.dropped_events == 1
    # counters survive a restart (they are Prometheus counters of the spool, not of the process)
    dropped_before = s.dropped_samples
    s.close()
    s = Spool(str(tmp_path / "s.db"), "agent-a")
    assert s.dropped_samples == dropped_before
    s.close()


def test_backlog_is_paced_but_fresh_data_is_not(tmp_path: Path) -> None:
    clock = ManualClock(time.time())  # the batches' stamps are real time; pacing reads this clock
    s = Spool(str(tmp_path / "s.db"), "agent-a", backlog_rate=100.0, fresh_window=30, clock=clock)
    for seq in range(1, 6):
        s.put(_batch(seq, 3600 - seq, n=100))
    first = s.next_batches(1)[0]
    s.ack(first.seq)  # 100 samples: the one-second budget is spent
    assert s.next_batches(1) == []
    assert s.ready_in() == 1.0
    s.put(_batch(9, 0, n=100))  # a fresh batch goes now, budget or not
    assert s.ready_in() == 0
    assert _seqs(s, 1) == [9]
    s.ack(9)
    clock.advance(0.99)
    assert _seqs(s, 1) == [] and abs(s.ready_in() - 0.01) < 1e-9  # not a moment before the tokens are there
    clock.advance(0.01)
    assert _seqs(s, 1) == [2]
    s.close()


def test_an_event_batch_with_old_samples_waits_for_the_backlog_tokens_fresh_data_does_not(tmp_path: Path) -> None:
    """A spool written by an agent that still packed the interval's samples into event batches: such a batch
    with old samples goes in event order but pays for its samples like backlog; later events wait behind it
    (their order matters: a clear after its alarm), fresh data does not."""
    clock = ManualClock(time.time())
    s = Spool(str(tmp_path / "s.db"), "agent-a", backlog_rate=100.0, fresh_window=30, clock=clock)
    s.put(_batch(1, 3600, n=100))
    s.ack(s.next_batches(1)[0].seq)  # a second's worth of backlog went: the bucket is empty
    s.put(_batch(2, 3500, n=100, events=1))  # old samples riding with an event
    s.put(_batch(3, 3400, n=0, events=1))
    s.put(_batch(4, 0, n=10))
    assert _seqs(s) == [4] and s.ready_in() == 0
    s.ack(4)
    assert _seqs(s) == [] and s.ready_in() == 1.0
    clock.advance(1.0)
    assert _seqs(s) == [2, 3]
    s.ack(2)  # pays for its 100 samples
    s.put(_batch(5, 3000, n=100))
    assert _seqs(s) == [3] and s.ready_in() == 0  # an events-only batch is never held back
    s.ack(3)
    assert _seqs(s) == [] and s.ready_in() == 1.0  # the backlog waits for the tokens batch 2 spent
    s.close()


def test_after_an_outage_with_many_events_fresh_data_beats_the_paced_backlog(tmp_path: Path, collector: Any) -> None:
    """A real Pusher seals an outage's worth of door events and samples, then drains them to a real collector:
    the events go first in the order they happened, then the fresh reading, then the old samples, no faster
    than backlog_rate (a token bucket of one second's worth); each batch once."""
    from roomwatch.agent.config import CollectorTarget
    from roomwatch.agent.push import Pusher

    rate = 200.0
    s = Spool(str(tmp_path / "s.db"), "agent-a", backlog_rate=rate, fresh_window=30)
    pusher = Pusher("agent-a", CollectorTarget(urls=[collector.url], token=TOKENS["agent-a"], push_interval="1h"),
                    outbox=s)
    start = _now() - 3_600_000
    for i in range(20):  # an hour without the collector: a door opened and closed 20 times
        ts = start + i * 60_000
        pusher.add([SampleRecord("roomwatch_temperature_celsius", {"device": f"th{k}"}, 20 + i / 10, ts)
                    for k in range(50)])
        pusher.add_events([EventRecord("door_close" if i % 2 else "door_open", {"device": "door1"}, ts,
                                       float(i % 2 == 0))])
        pusher.seal()
    pusher.add([SampleRecord("roomwatch_temperature_celsius", {"device": "th0"}, 30.0, _now())])  # the link is back
    pusher.seal()
    accepted: list[tuple[float, Batch]] = []
    pusher.on_accepted.append(lambda b: accepted.append((time.monotonic(), b)))

    async def drain() -> float:
        began = time.monotonic()
        task = asyncio.create_task(pusher.run())
        while s.depth() and time.monotonic() - began < 60:
            await asyncio.sleep(0.05)
        pusher.stop()
        await task
        return began

    began = asyncio.run(drain())
    pusher.close()
    assert s.depth() == 0
    batches = [b for _, b in accepted]
    old = [i for i, b in enumerate(batches) if any(x.ts < _now() - 600_000 for x in b.samples)]
    fresh = next(i for i, b in enumerate(batches) if any(x.value == 30.0 for x in b.samples))
    assert len(old) == 20 and fresh < old[0]
    events = [e for b in batches[:fresh] for e in b.events]
    assert [e.ts for e in events] == [start + i * 60_000 for i in range(20)]  # all before the fresh reading, in order
    for k in old:  # the bucket held at most one second's worth when the drain began, and refills at `rate`
        spent = sum(len(batches[j].samples) for j in old if j < k)
        assert spent <= rate * (1 + accepted[k][0] - began), (k, spent, accepted[k][0] - began)
    agent = next(a for a in http_json(collector.url + "/api/v1/agents")["agents"] if a["id"] == "agent-a")
    assert (agent["pushes"], agent["samples"], agent["events"]) == (len(batches), 20 * 50 + 1, 20)


def test_memory_mode_caps_by_samples(tmp_path: Path) -> None:
    s = Spool(":memory:", "agent-a", max_samples=250)
    for seq in range(1, 6):
        s.put(_batch(seq, 100 - seq, n=100))
    assert s.stats()["samples"] <= 250 and s.dropped_samples == 300
    assert _seqs(s) == [4, 5]
    s.close()


@contextlib.contextmanager
def _writes_fail_beyond(limit: int) -> Iterator[None]:
    """The kernel refuses to grow any file of this process past ``limit`` bytes (RLIMIT_FSIZE: write(2) fails
    with EFBIG). For SQLite a genuine write error from the OS, as from a full disk, without root or a tiny
    filesystem (and chmod does not stop root, nor an already open file)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead of failing the write
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def test_disk_write_errors_hold_batches_in_memory_bounded_counted_then_back_on_disk(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite cannot write (the OS refuses): batches wait in RAM up to fallback_max_records samples+events; beyond,
    the oldest plain batch goes, counted as reason unwritable and logged. Deliveries go on meanwhile. Once the disk
    takes writes again, the next put moves everything held onto it (it then survives a restart)."""
    path = tmp_path / "s.db"
    s = Spool(str(path), "agent-a", fallback_max_records=100)
    s.put(_batch(1, 600))
    s.put(_batch(2, 500))
    caplog.set_level(logging.INFO, "roomwatch.agent.spool")
    with _writes_fail_beyond(Path(f"{path}-wal").stat().st_size):
        s.put(_batch(3, 400, events=1))
        assert "cannot write the spool" in caplog.text and s.depth() == 3
        s.ack(1)  # delivered, but the disk refuses the DELETE: it must not be offered again
        look = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        assert [r[0] for r in look.execute("SELECT seq FROM batches ORDER BY seq")] == [1, 2]  # the file as it was
        look.close()
        for seq in range(4, 12):
            s.put(_batch(seq, 400 - seq))
        assert _seqs(s) == [3, 2, *range(4, 12)]  # same order as on disk: events, then the backlog oldest first
        s.ack(11)  # a held batch the collector has leaves RAM without the disk
        s.put(_batch(12, 0))
        assert s.dropped["unwritable"] == [0, 0] and s.depth() == 10
        assert s.stats()["samples"] == 100  # 2 on disk, 3..10 and 12 in RAM; 1 and 11 were delivered
        s.put(_batch(13, 0))  # 3 (11 records) + 4..10 + 12 + 13 = 101 > 100: the oldest plain held batch goes
        assert s.dropped["unwritable"] == [10, 0] and s.dropped_samples == 10
        assert _seqs(s) == [3, 13, 12, 2, *range(5, 11)]
        assert _drop_metrics(s)[("unwritable", "samples")] == 10
        assert "fallback in memory full" in caplog.text and "dropped the oldest 10 samples and 0 events" in caplog.text
        s.put(_batch(14, 0, n=6))  # 97 records
        s.put(_batch(15, 0, n=6))  # 103: the next oldest plain batch (5) goes, logged with the next minute's line
        assert s.dropped["unwritable"] == [20, 0]
    assert caplog.text.count("cannot write the spool") == 1  # said once, not per batch
    assert caplog.text.count("fallback in memory full") == 1  # then at most once a minute
    s.put(_batch(16, 0, n=1))  # the disk works again: everything held moves onto it
    assert "writable again: moved 10 batches" in caplog.text
    s.close()
    s = Spool(str(path), "agent-a")  # on disk now: it survives a restart, and so do the counters
    assert _seqs(s) == [3, 16, 15, 14, 13, 12, 2, *range(6, 11)]
    assert s.dropped["unwritable"] == [20, 0] and s.depth() == 12
    assert s.integrity_check() == "ok"
    s.close()


def test_memory_hold_drops_like_the_cap_plain_batches_first_events_last() -> None:
    def entry(seq: int, n: int, events: int = 0) -> Entry:
        return Entry.of(_batch(seq, 100 - seq, n=n, events=events))

    h = Hold(max_records=15)
    assert h.add(entry(1, 10, events=1)) == (0, 0, None)
    dropped = h.add(entry(2, 5))  # 16 > 15, and the newest stays: the event batch sheds its samples
    assert dropped[:2] == (10, 0) and [(e.seq, e.n_samples, e.n_events) for e in h.entries] == [(1, 0, 1), (2, 5, 0)]
    dropped = h.add(entry(3, 0, events=10))  # 16 again: the plain batch goes before any event
    assert dropped[:2] == (5, 0) and [e.seq for e in h.entries] == [1, 3] and h.records == 11
    dropped = h.add(entry(4, 0, events=5))  # only events left: the oldest go
    assert dropped[:2] == (0, 1) and [e.seq for e in h.entries] == [3, 4] and h.records == 15


def test_damaged_spool_is_moved_aside_and_the_agent_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not an SQLite database" * 100)
    s = Spool(str(path), "agent-a")
    s.put(_batch(1))
    assert s.depth() == 1
    assert any(p.name.startswith("s.db.corrupt-") for p in tmp_path.iterdir())
    assert "damaged" in caplog.text
    s.close()


def test_a_renamed_agent_keeps_the_old_backlog_apart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After a change of agent.id the old id's batches are never sent as the new agent: moved aside, kept."""
    path = str(tmp_path / "s.db")
    s = Spool(path, "old-name")
    s.put(Batch("old-name", 5, [SampleRecord("roomwatch_door_open", {}, 1.0, _now())], []))
    s.close()
    s = Spool(path, "new-name")
    assert s.next_batches(1) == [] and s.depth() == 0
    s.put(Batch("new-name", 6, [SampleRecord("roomwatch_door_open", {}, 0.0, _now())], []))
    assert [b.agent for b in s.next_batches(5)] == ["new-name"]
    s.close()
    assert "written by agent 'old-name'" in caplog.text
    kept = Spool(path + ".agent-old-name", "old-name")  # delivered by an agent running as old-name
    assert [(b.agent, b.seq) for b in kept.next_batches(5)] == [("old-name", 5)]
    kept.close()


def test_a_spool_copied_from_another_host_is_not_sent_as_this_agent(tmp_path: Path) -> None:
    """A spool file of a release that did not record its owner: the writer is read from its batches."""
    path = str(tmp_path / "s.db")
    s = Spool(path, "room-7")
    s.put(Batch("room-7", 9, [SampleRecord("roomwatch_door_open", {}, 1.0, _now())], []))
    s.conn.execute("DROP TABLE owner")  # as an older release left it
    s.close()
    s = Spool(path, "room-8")
    assert s.depth() == 0 and (tmp_path / "s.db.agent-room-7").exists()
    s.close()
    s = Spool(path, "room-8")  # its own file now: reopened as it is
    assert s.depth() == 0 and not (tmp_path / "s.db.agent-room-8").exists()
    s.close()


# A collector of an (imagined) older release that allowed at most 8 labels per sample: the same code as
# `roomwatch collector`, with the wire format's limit lowered before the app is built.
_OLD_COLLECTOR = ("import sys, roomwatch.core.wire as wire; wire.MAX_LABELS = 8; from roomwatch.cli import main; "
                  "sys.exit(main(sys.argv[1:]))")


def _older_collector(tmp_path: Path) -> tuple[Proc, str]:
    port = free_port()
    conf = write_yaml(tmp_path / "old-collector.yaml", {
        "listen": f"127.0.0.1:{port}", "storage": str(tmp_path / "old-collector.db"),
        "agents": [{"id": aid, "token": tok} for aid, tok in TOKENS.items()]})
    proc = Proc([sys.executable, "-c", _OLD_COLLECTOR, "collector", "-c", str(conf)], tmp_path / "old-collector.log")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_get(url + "/readyz", timeout=1)[0] == 200, proc=proc.proc, what="collector /readyz")
    return proc, url


def _drop_metrics(spool: Spool) -> dict[tuple[str, str], float]:
    return {(r.labels["reason"], r.labels["kind"]): r.value for r in spool_samples(spool.stats(), {}, _now())
            if r.metric == v.AGENT_SPOOL_DROPPED}


@pytest.mark.peer
def test_a_batch_the_collector_refuses_with_400_is_dropped_counted_and_logged(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """The documented exception to "nothing leaves the spool without a 200": a batch a real collector answers
    400 would be refused forever, so it is dropped so as not to block the rest, but counted (reason rejected,
    persisted) and logged as an error with the collector's reason. The batches around it are delivered."""
    from roomwatch.agent.config import CollectorTarget
    from roomwatch.agent.push import Pusher

    proc, url = _older_collector(tmp_path)
    try:
        s = Spool(str(tmp_path / "s.db"), "agent-a")
        pusher = Pusher("agent-a", CollectorTarget(urls=[url], token=TOKENS["agent-a"]), outbox=s)
        accepted: list[int] = []
        pusher.on_accepted.append(lambda b: accepted.append(b.seq))
        # 11 labels: within this agent's wire limit (32), beyond the older collector's (8).
        wide = {f"l{i}": "x" for i in range(10)}
        ts = _now() - 50_000
        s.put(_batch(1, 60, n=2))
        s.put(Batch("agent-a", 2, [SampleRecord("roomwatch_temperature_celsius", {**wide, "device": f"d{i}"}, 21.5, ts)
                                   for i in range(3)], [EventRecord("door_open", {**wide, "device": "door1"}, ts, 1.0)]))
        s.put(_batch(3, 40, n=2))
        caplog.set_level(logging.ERROR, "roomwatch.agent.push")
        assert asyncio.run(pusher.drain())
        pusher.close()
        assert accepted == [1, 3] and s.depth() == 0
        assert s.dropped["rejected"] == [3, 1] and pusher.stats["rejected"] == 1
        assert s.dropped_samples == 0  # not a "spool full" drop (roomwatch_agent_push_dropped_samples_total)
        line = next(r.getMessage() for r in caplog.records if "seq=2" in r.getMessage())
        assert "HTTP 400" in line and "samples[0].labels has more than 8 labels" in line and "DROPPED" in line
        drops = _drop_metrics(s)
        assert drops[("rejected", "samples")] == 3 and drops[("rejected", "events")] == 1
        assert drops[("cap", "samples")] == 0 and len(drops) == 8  # every reason and kind, 0 included
        s.close()
        s = Spool(str(tmp_path / "s.db"), "agent-a")
        assert s.dropped["rejected"] == [3, 1]  # a counter of the spool: it survives an agent restart
        s.close()
    finally:
        proc.stop()
    conn = sqlite3.connect(tmp_path / "old-collector.db")
    try:
        assert conn.execute("SELECT batches, samples, events FROM ingest_agents WHERE agent = 'agent-a'").fetchone() \
            == (2, 4, 0)
    finally:
        conn.close()


def test_a_400_from_something_that_is_not_the_collector_keeps_the_batch(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A proxy's HTML 400 (or http:// sent to an https:// port) says nothing about the batch: it stays in the
    spool and is retried with backoff; only the collector's own JSON 400 drops a batch."""
    import http.server
    import threading

    from roomwatch.agent.config import CollectorTarget
    from roomwatch.agent.push import Pusher

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b"<html><body><h1>400 Bad Request</h1>The plain HTTP request was sent to HTTPS port</body></html>"
            self.send_response(400)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s = Spool(str(tmp_path / "s.db"), "agent-a")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        pusher = Pusher("agent-a", CollectorTarget(urls=[url], token=TOKENS["agent-a"]), outbox=s)
        s.put(_batch(1, 60, n=2))
        assert asyncio.run(pusher.drain()) is False
        pusher.close()
        assert s.depth() == 1 and s.dropped["rejected"] == [0, 0] and pusher.stats["rejected"] == 0
        assert "not a roomwatch collector" in caplog.text
        s.close()
    finally:
        server.shutdown()
        server.server_close()


def test_an_agent_booted_with_its_clock_at_1970_numbers_batches_apart_from_earlier_boots(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a persistent spool, seq starts at the clock; a clock at 1970 would restart in the range an
    earlier boot used and the collector would drop the new batches as duplicates."""
    from roomwatch.agent import push

    monkeypatch.setattr(time, "time_ns", lambda: 90 * 10**9)  # 90 s after 1970-01-01
    starts = {push._seq_start() for _ in range(3)}
    assert len(starts) == 3 and all(s > 2**61 for s in starts) and all(s < 2**63 - 2**40 for s in starts)
    monkeypatch.undo()
    assert push._seq_start() < 2**61  # a set clock: its µs, as before
