"""Collector side of local fallback alerting, on a controllable clock: a ``fallback_notified`` notice marks the
matching alert episode as already notified (roomwatch/core/notice.py has the matching rule), so no channel sends it
again, while it stays visible with a note. Real processes: tests/test_fallback.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roomwatch.core.notice import notice_event
from roomwatch.core.wire import Batch, EventRecord, SampleRecord
from tests.alert_harness import Harness

LEAK = {"agent": "a1", "site": "县政务中心", "room": "1号机房", "device": "leak1"}
TH1 = {"agent": "a1", "site": "县政务中心", "room": "1号机房", "device": "th1", "sensor": "inlet"}
WET = "roomwatch_water_leak_detected"
TEMP = "roomwatch_temperature_celsius"


def ingest(h: Harness, samples: list[tuple[str, dict[str, str], float, float]] = (),
           events: list[EventRecord] = (), agent: str = "a1") -> None:
    """One accepted batch with samples stamped at their own (past) times, as a drained spool sends them."""
    h.seq += 1
    batch = Batch(agent, h.seq, [SampleRecord(m, dict(lb), v, int(ts * 1000)) for m, lb, v, ts in samples],
                  list(events), int(h.now * 1000))
    h.collector.ingest(h.collector.agents.agents[agent], batch, now=h.now)


def notice(status: str, labels: dict[str, str], since: float, ts: float, name: str = "WaterLeak") -> EventRecord:
    return notice_event(name, labels, status, "local-sms", "gsm_modem", int(ts * 1000), since,
                        "【机房本地告警】县政务中心 1号机房\nleak1: 漏水")


def told(h: Harness) -> list[tuple[str, str, list[str]]]:
    return [(n.receiver, n.reason, [a.labels["alertname"] for a in n.alerts]) for n in h.queued()]


def leak_alert(h: Harness) -> dict[str, Any]:
    a = h.alert("WaterLeak")
    assert a is not None
    return a


def test_notices_before_the_backlog_mark_the_episode_as_told_firing_and_resolved(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    t1 = h.now - 900  # the leak began 15 min ago while the link was down
    # The agent pushes its notices first (the spool sends them ahead of the backlog) ...
    ingest(h, events=[notice("firing", LEAK, t1, t1 + 300)])
    ingest(h, events=[notice("resolved", LEAK, t1, t1 + 700)])
    assert h.states() == {} and told(h) == []
    # ... then the backlog: the leak, its clearing.
    ingest(h, [(WET, LEAK, 1.0, t1)], [EventRecord("water_leak", LEAK, int(t1 * 1000), 1.0)])
    a = leak_alert(h)
    assert a["state"] == "firing" and a["activeSince"] == t1
    fb = a["fallback"]
    assert (fb["channel"], fb["channelType"], fb["firingAt"], fb["resolvedAt"]) == ("local-sms", "gsm_modem", t1 + 300,
                                                                                    t1 + 700)
    assert fb["note"].startswith("已由机房代理本地兜底通道（短信）于 2024-12-02 09:50:00 通知") and "恢复通知于" in fb["note"]
    assert "漏水" in fb["message"]
    ingest(h, [(WET, LEAK, 0.0, t1 + 650)], [EventRecord("water_leak_clear", LEAK, int((t1 + 650) * 1000), 0.0)])
    h.advance(60)
    assert told(h) == []  # neither the firing nor the resolution is sent again
    assert h.states() == {}
    [past] = h.svc.store.history(t1 - 1, h.now)
    assert past.fallback is not None and past.fallback["resolved_at"] == t1 + 700  # visible in the history too
    assert h.svc.store.conn.execute("SELECT COUNT(*) FROM fallback_notices").fetchone()[0] == 0
    # A new leak after the link is back is notified as usual.
    ingest(h, [(WET, LEAK, 1.0, h.now)])
    assert told(h) == [("duty", "firing", ["WaterLeak"])]
    assert leak_alert(h)["fallback"] is None


def test_resolution_after_the_link_returns_is_told_and_repeats_count_from_the_sms(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=[{"channels": ["duty"], "repeat_interval": "1h",
                                   "levels": [{"after": "30m", "channels": ["chief"]}]}])
    t1 = h.now - 600
    ingest(h, events=[notice("firing", LEAK, t1, t1 + 120)])
    ingest(h, [(WET, LEAK, 1.0, t1)])
    assert told(h) == []
    h.advance(60 * 60 - (600 - 120) - 60)  # 59 min after the SMS: no repeat yet, the chief was told at 30 min
    assert told(h) == [("chief", "escalation", ["WaterLeak"])]  # not acknowledged 30 min after the SMS
    h.advance(90)
    assert told(h) == [("duty", "repeat", ["WaterLeak"])]  # an hour after the SMS
    ingest(h, [(WET, LEAK, 0.0, h.now)])
    h.advance(30)
    # the agent did not send the end (the link was back): the collector's channels tell it
    assert sorted(told(h)) == [("chief", "resolved", ["WaterLeak"]), ("duty", "resolved", ["WaterLeak"])]


def test_a_notice_for_an_active_alert_before_its_group_is_flushed(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=[{"channels": ["duty"], "group_wait": "30s"}])
    t1 = h.now - 5
    ingest(h, [(WET, LEAK, 1.0, t1)])
    assert leak_alert(h)["state"] == "firing" and told(h) == []
    ingest(h, events=[notice("firing", LEAK, t1, h.now)])
    assert leak_alert(h)["fallback"]["firingAt"] == h.now
    h.advance(60)
    assert told(h) == []


def test_only_the_episode_the_agent_notified_is_marked(tmp_path: Path) -> None:
    """An earlier episode in the backlog (cleared before the agent's fallback began) is another alert: sent."""
    h = Harness(tmp_path)
    t0 = h.now - 1200
    t2 = h.now - 600
    ingest(h, events=[notice("firing", LEAK, t2, t2 + 300)])
    ingest(h, [(WET, LEAK, 1.0, t0)])
    assert told(h) == [("duty", "firing", ["WaterLeak"])]
    assert leak_alert(h)["fallback"] is None
    ingest(h, [(WET, LEAK, 0.0, t0 + 60)])
    h.advance(30)
    assert told(h) == [("duty", "resolved", ["WaterLeak"])]
    ingest(h, [(WET, LEAK, 1.0, t2)])  # the episode the SMS was about
    assert leak_alert(h)["fallback"]["firingAt"] == t2 + 300
    h.advance(30)
    assert told(h) == []


def test_an_agent_speaks_only_for_its_own_alerts(tmp_path: Path) -> None:
    h = Harness(tmp_path, agents=[{"id": "a1", "token": "t" * 20}, {"id": "a2", "token": "u" * 20}])
    t1 = h.now - 60
    ingest(h, events=[notice("firing", LEAK, t1, t1 + 30)], agent="a2")  # a2 claims a1's leak
    ingest(h, [(WET, LEAK, 1.0, t1)])
    assert told(h) == [("duty", "firing", ["WaterLeak"])]
    assert leak_alert(h)["fallback"] is None


def test_temperature_alert_that_begins_when_fresh_data_overtakes_the_backlog(tmp_path: Path) -> None:
    """Fresh samples arrive before the backlog: the collector's RoomTemperatureCritical begins only now, after the
    agent's condition began; it is still the episode the SMS was about (roomwatch.notice.GRACE)."""
    h = Harness(tmp_path)
    t1 = h.now - 900
    ingest(h, events=[notice("firing", TH1, t1, t1 + 120, name="RoomTemperatureCritical")])
    h.advance(5)
    ingest(h, [(TEMP, TH1, 33.5, h.now)])  # fresh
    ingest(h, [(TEMP, TH1, 33.0, t1)])  # backlog: late, ignored by alerting
    assert h.alert("RoomTemperatureCritical")["state"] == "pending"
    h.advance(130, keep_alive=("a1",))
    ingest(h, [(TEMP, TH1, 33.4, h.now)])
    a = h.alert("RoomTemperatureCritical")
    assert a["state"] == "firing" and a["fallback"]["firingAt"] == t1 + 120
    assert [x for x in told(h) if "RoomTemperatureCritical" in x[2]] == []


def test_waiting_notices_and_marks_survive_a_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    t1 = h.now - 300
    ingest(h, events=[notice("firing", LEAK, t1, t1 + 100), notice("resolved", LEAK, t1, t1 + 200)])
    h.restart()
    ingest(h, [(WET, LEAK, 1.0, t1)])
    assert told(h) == [] and leak_alert(h)["fallback"]["resolvedAt"] == t1 + 200
    h.restart()
    assert leak_alert(h)["fallback"]["firingAt"] == t1 + 100
    ingest(h, [(WET, LEAK, 0.0, t1 + 150)])
    h.advance(60)
    assert told(h) == []


def test_a_notice_whose_alert_never_comes_is_forgotten_after_a_day(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    ingest(h, events=[notice("firing", {**LEAK, "device": "leak9"}, h.now - 100, h.now - 50)])
    assert h.svc.store.conn.execute("SELECT COUNT(*) FROM fallback_notices").fetchone()[0] == 1
    h.advance(86400 + 3600, step=600)
    assert h.svc.notices.waiting == {}
    assert h.svc.store.conn.execute("SELECT COUNT(*) FROM fallback_notices").fetchone()[0] == 0


def test_a_new_episode_right_after_one_the_fallback_told_is_notified(tmp_path: Path) -> None:
    """The backlog brings an episode the agent's fallback already told (firing and resolved) and, before the
    group's next flush, the same leak begins again: that new episode is news to the channel (same fingerprint,
    but the people were told the first one ended)."""
    h = Harness(tmp_path, routes=[{"channels": ["duty"], "group_interval": "30s"}])
    t1 = h.now - 60
    ingest(h, events=[notice("firing", LEAK, t1, t1 + 5)])
    ingest(h, events=[notice("resolved", LEAK, t1, t1 + 20)])
    ingest(h, [(WET, LEAK, 1.0, t1)], [EventRecord("water_leak", LEAK, int(t1 * 1000), 1.0)])
    ingest(h, [(WET, LEAK, 0.0, t1 + 15)], [EventRecord("water_leak_clear", LEAK, int((t1 + 15) * 1000), 0.0)])
    assert told(h) == []
    ingest(h, [(WET, LEAK, 1.0, h.now)], [EventRecord("water_leak", LEAK, int(h.now * 1000), 1.0)])  # again
    h.advance(31)
    assert told(h) == [("duty", "firing", ["WaterLeak"])]
    assert leak_alert(h)["fallback"] is None
