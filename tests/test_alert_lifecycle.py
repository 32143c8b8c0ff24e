"""Alert lifecycle on a controllable clock: repeat, ack, silence, inhibition, grouping, escalation, restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.alert_harness import Harness, at

LEAK = {"site": "县政务中心", "room": "1号机房", "device": "leak1"}
TH1 = {"site": "县政务中心", "room": "1号机房", "device": "th1"}
TEMP = "roomwatch_temperature_celsius"


def leak(h: Harness, wet: bool, device: str = "leak1", room: str = "1号机房") -> None:
    labels = {**LEAK, "device": device, "room": room}
    h.push([("roomwatch_water_leak_detected", labels, 1.0 if wet else 0.0)])


def names(notifications: list[Any]) -> list[tuple[str, str, list[str]]]:
    return [(n.receiver, n.reason, sorted(a.labels.get("device", a.labels["alertname"]) for a in n.alerts))
            for n in notifications]


def episode_id(item: Any) -> str:
    """The alert id a message's ack link carries (``.../#/alerts/<fingerprint>-<episode>``)."""
    return item.generator_url.rsplit("/", 1)[1]


def test_repeat_until_acknowledged(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=[{"channels": ["duty"], "repeat_interval": "1h"}])
    leak(h, True)
    assert names(h.queued()) == [("duty", "firing", ["leak1"])]
    h.advance(3599)
    assert h.queued() == []
    h.advance(31)  # repeats ride on the group_interval timer (30s)
    [n] = h.queued()
    assert n.reason == "repeat" and "仍未确认" in n.text
    assert h.svc.commands.ack(episode_id(n.alerts[0]), "张三", "已到现场") is not None
    h.advance(5 * 3600)
    assert h.queued() == []  # acknowledged: no more repeats
    assert h.alert("WaterLeak")["ack"]["by"] == "张三"
    leak(h, False)
    h.advance(30)
    [n] = h.queued()
    assert n.reason == "resolved"  # the resolution is still told


def test_silence_keeps_alert_visible_but_quiet(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    s = h.svc.commands.add_silence({"matchers": ['room="1号机房"', 'alertname=~"Water.*"'], "duration": "2h",
                           "comment": "地板下管道检修"}, "李四")
    leak(h, True)
    a = h.alert("WaterLeak")
    assert a["state"] == "firing" and a["silencedBy"] == [s.id]
    assert h.queued() == []
    h.push([("roomwatch_water_leak_detected", {**LEAK, "room": "2号机房"}, 1.0)])  # not in the window
    [n] = h.queued()
    assert n.alerts[0].labels["room"] == "2号机房"
    h.advance(2 * 3600 + 30)  # the window ends while the pipe still leaks: now it is told
    [n] = h.queued()
    assert n.reason == "firing" and n.alerts[0].labels["room"] == "1号机房"


def test_expired_silence_and_bad_silences(tmp_path: Path) -> None:
    import pytest

    from roomwatch.alerts.silences import SilenceError

    h = Harness(tmp_path)
    with pytest.raises(SilenceError, match="must not cover everything"):
        h.svc.commands.add_silence({"matchers": ['room=~".*"'], "duration": "1h", "comment": "x"}, "a")
    with pytest.raises(SilenceError, match="comment is required"):
        h.svc.commands.add_silence({"matchers": ['room="A"'], "duration": "1h"}, "a")
    with pytest.raises(SilenceError, match=r"endsAt .* or duration"):
        h.svc.commands.add_silence({"matchers": ['room="A"'], "comment": "x"}, "a")
    with pytest.raises(SilenceError, match="not a matcher"):
        h.svc.commands.add_silence({"matchers": ["room is A"], "duration": "1h", "comment": "x"}, "a")
    # The real reason, not "value must be quoted": a broken regex, a missing quote, text after the quote.
    for matcher, reason in (("device=~(ups1,ups2", "bad regular expression '(ups1,ups2': missing )"),
                            ('device=~"(ups1|ups2"', "bad regular expression '(ups1|ups2'"),
                            ('alertname=~"Door.*', "has no closing"),
                            ('room="A" or room="B"', "unexpected ' or room=\"B\"' after the quoted value"),
                            ("device=~ups{1,2}", 'must be quoted: write device=~"ups{1,2}"')):
        with pytest.raises(SilenceError) as err:
            h.svc.commands.add_silence({"matchers": [matcher], "duration": "1h", "comment": "x"}, "a")
        assert reason in str(err.value), (matcher, str(err.value))
    # A regex keeps its escapes, as in Alertmanager: \. is a dot, not any character.
    s = h.svc.commands.add_silence({"matchers": ['instance=~"10\\.0\\.0\\.1"'], "duration": "1h", "comment": "x"}, "a")
    assert s.matchers[0].value == "10\\.0\\.0\\.1" and not s.matchers[0].matches({"instance": "10a0b0c1"})
    h.svc.commands.expire_silence(s.id)
    s = h.svc.commands.add_silence({"matchers": ['device="leak1"'], "duration": "1h", "comment": "测试"}, "a")
    h.svc.commands.expire_silence(s.id)
    leak(h, True)
    assert len(h.queued()) == 1


def test_inhibition_critical_hides_high(tmp_path: Path) -> None:
    h = Harness(tmp_path, rules={"overrides": {"RoomTemperatureHigh": {"for": "0s"},
                                               "RoomTemperatureCritical": {"for": "0s"}}})
    h.push([(TEMP, TH1, 28.0)])
    assert [n.alerts[0].labels["alertname"] for n in h.queued()] == ["RoomTemperatureHigh"]
    h.advance(30)
    h.push([(TEMP, TH1, 33.0)])
    h.advance(30)
    [n] = h.queued()
    assert [a.labels["alertname"] for a in n.alerts] == ["RoomTemperatureCritical"]  # High is hidden, not resolved
    assert h.alert("RoomTemperatureHigh")["inhibitedBy"] == [h.alert("RoomTemperatureCritical")["id"]]
    h.push([(TEMP, TH1, 29.0)])  # below 30: Critical resolves, High (still > 26) shows again
    h.advance(30)
    [n] = h.queued()
    assert sorted((a.labels["alertname"], a.status) for a in n.alerts) == [
        ("RoomTemperatureCritical", "resolved"), ("RoomTemperatureHigh", "firing")]


def test_power_cut_is_one_message(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    samples = [("roomwatch_water_leak_detected", {**LEAK, "device": f"leak{i}"}, 1.0) for i in range(10)]
    h.push(samples)
    [n] = h.queued()  # ten alerts in one step, one group (site, room): one message
    assert len(n.alerts) == 10 and n.title.endswith("10 条告警")
    # more alerts of the room within group_interval wait and go together
    h.advance(5)
    h.push([("roomwatch_smoke_detected", {**LEAK, "device": "smoke1"}, 1.0)])
    h.advance(5)
    h.push([("roomwatch_ups_battery_low", {**LEAK, "device": "ups1"}, 1.0)])
    assert h.queued() == []
    h.advance(20)
    [n] = h.queued()
    assert len(n.alerts) == 12 and n.reason == "firing"
    # another room is another group
    h.push([("roomwatch_water_leak_detected", {**LEAK, "room": "2号机房"}, 1.0)])
    [n] = h.queued()
    assert [a.labels["room"] for a in n.alerts] == ["2号机房"]


def test_group_wait_collects_alerts_arriving_close_together(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=[{"channels": ["duty"], "group_wait": "5s"}])
    leak(h, True, "leak1")
    h.advance(2)
    leak(h, True, "leak2")
    assert h.queued() == []
    h.advance(3)
    [n] = h.queued()
    assert sorted(a.labels["device"] for a in n.alerts) == ["leak1", "leak2"]


DUTY_ROUTES = [{"matchers": ['severity="critical"'], "channels": ["duty"], "repeat_interval": "2h",
                "levels": [{"after": "15m", "channels": ["chief"]}]}]


def test_escalation_to_the_supervisor(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=DUTY_ROUTES)
    leak(h, True)
    assert names(h.queued()) == [("duty", "firing", ["leak1"])]
    h.advance(899)
    assert h.queued() == []
    h.advance(1)  # 15 minutes without acknowledgement: the chief is told, on the second (not the group timer)
    [n] = h.queued()
    assert (n.receiver, n.reason, n.level) == ("chief", "escalation", 1)
    assert "15 分钟内无人确认" in n.text
    h.svc.commands.ack(episode_id(n.alerts[0]), "王科长")
    h.advance(3 * 3600)
    assert h.queued() == []  # acknowledged: no repeats to either level
    leak(h, False)
    h.advance(30)
    assert sorted((n.receiver, n.reason) for n in h.queued()) == [("chief", "resolved"), ("duty", "resolved")]


def test_acknowledged_in_time_never_escalates(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=DUTY_ROUTES)
    leak(h, True)
    [n] = h.queued()
    h.advance(600)
    h.svc.commands.ack(episode_id(n.alerts[0]), "值班员")
    h.advance(3600)
    assert h.queued() == []
    leak(h, True, "leak2")  # a new, unacknowledged alert restarts the clock for itself only
    h.advance(30)  # the group's next interval
    assert names(h.queued()) == [("duty", "firing", ["leak1", "leak2"])]
    h.advance(899)
    assert h.queued() == []
    h.advance(1)
    [n] = h.queued()
    # the chief hears of what nobody acknowledged, not of leak1 the duty officer took
    assert (n.receiver, n.reason) == ("chief", "escalation") and [a.labels["device"] for a in n.alerts] == ["leak2"]


def test_new_alert_in_an_escalated_group_starts_its_own_clock(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=DUTY_ROUTES)
    leak(h, True)
    h.advance(900)  # leak1 unacknowledged for 15 min: escalated
    assert [(n.receiver, n.reason) for n in h.queued()] == [("duty", "firing"), ("chief", "escalation")]
    h.advance(60)
    leak(h, True, "leak2")
    h.advance(30)  # the group's next interval: the duty officer hears of leak2 first, the chief not yet
    assert names(h.queued()) == [("duty", "firing", ["leak1", "leak2"])]
    h.advance(870)
    assert h.queued() == []
    h.advance(30)  # 15 min after leak2 was first told: now the chief
    [n] = h.queued()
    assert (n.receiver, n.reason) == ("chief", "escalation")
    assert sorted(a.labels["device"] for a in n.alerts) == ["leak1", "leak2"]  # leak1 already his, still firing


def test_warning_route_and_continue(tmp_path: Path) -> None:
    routes = [{"match": {"severity": "warning"}, "channels": ["duty"], "continue": True},
              {"matchers": ['alertname=~"Door.*"'], "channels": ["chief"]}]
    h = Harness(tmp_path, t0=at("2024-12-03 03:00"), routes=routes)
    h.push([("roomwatch_door_open", {**LEAK, "device": "door1"}, 1.0)])  # 03:00: out of hours, warning
    assert sorted(n.receiver for n in h.queued()) == ["chief", "duty"]
    leak(h, True)  # critical: matches neither route → shown, sent nowhere
    assert h.queued() == [] and h.alert("WaterLeak")["state"] == "firing"


def test_send_resolved_false(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=[{"name": "duty", "type": "webhook", "url": "http://127.0.0.1:9/", "send_resolved": False}])
    leak(h, True)
    leak(h, False)
    h.advance(60)
    assert [n.reason for n in h.queued()] == ["firing"]


def test_state_acks_silences_survive_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=[{"channels": ["duty"], "repeat_interval": "1h"}],
                rules={"overrides": {"RoomTemperatureHigh": {"for": "5m"}}})
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0), ("roomwatch_water_leak_detected", {**LEAK, "device": "leak2"}, 1.0),
            (TEMP, TH1, 29.0)])  # two leaks fire, the temperature is pending for 5m
    [n] = h.queued()
    fp = {a.labels["device"]: episode_id(a) for a in n.alerts}
    h.svc.commands.ack(fp["leak1"], "张三")
    s = h.svc.commands.add_silence({"matchers": ['device="leak3"'], "duration": "1d", "comment": "传感器更换"}, "李四")
    h.advance(120)
    h.restart()
    assert h.states() == {"WaterLeak": "firing", "RoomTemperatureHigh": "pending"}
    assert h.alert("WaterLeak") is not None
    assert {a["labels"]["device"]: a["acknowledged"] for a in h.svc.presenter.list_alerts() if a["alertname"] == "WaterLeak"} == {
        "leak1": True, "leak2": False}
    assert [x.id for x in h.svc.silences.listing(h.now)] == [s.id]
    h.advance(5)
    assert h.queued() == []  # nothing re-sent: the channels were told before the restart
    h.push([(TEMP, TH1, 29.0)])
    h.advance(180)  # the pending for: kept its start time across the restart (5m from the first sample)
    h.push([(TEMP, TH1, 29.0)])
    assert h.alert("RoomTemperatureHigh")["state"] == "firing"
    leak(h, False)
    h.advance(30)
    fired, resolved = h.queued()  # the temperature alert fired, then leak1 resolved; leak2 is in both, told once
    assert fired.reason == "firing" and {a.labels["device"] for a in fired.alerts} == {"leak1", "leak2", "th1"}
    assert resolved.reason == "resolved"
    assert sorted(f"{a.labels['device']}:{a.status}" for a in resolved.alerts) == [
        "leak1:resolved", "leak2:firing", "th1:firing"]
    h.advance(4000)  # th1 goes quiet ("no data" resolution), then 1h later leak2 is repeated once
    repeats = [n for n in h.queued() if n.reason == "repeat"]
    assert len(repeats) == 1 and "leak2" in {a.labels.get("device") for a in repeats[0].alerts}


def test_resolved_while_down_is_told_after_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    leak(h, True)
    assert len(h.queued()) == 1
    leak(h, False)  # resolved; the message waits for group_interval …
    h.restart()  # … and the process restarts before it
    h.advance(1)
    [n] = h.queued()
    assert n.reason == "resolved" and n.alerts[0].status == "resolved"


def test_failing_channel_raises_its_own_alert_elsewhere(tmp_path: Path) -> None:
    h = Harness(tmp_path, routes=[{"channels": ["duty", "chief"]}])
    leak(h, True)
    assert sorted(n.receiver for n in h.queued()) == ["chief", "duty"]
    h.svc.outbox.status["duty"].failing_since = h.now
    h.advance(59)
    assert h.alert("NotificationChannelFailing") is None
    h.advance(2)  # alerts.channel_failing_after: 1m
    a = h.alert("NotificationChannelFailing")
    assert a["state"] == "firing" and a["labels"]["channel"] == "duty"
    h.advance(30)
    sent = h.queued()
    assert [(n.receiver, n.alerts[0].labels["alertname"]) for n in sent] == [("chief", "NotificationChannelFailing")]
    assert "duty" in sent[0].text


def test_alert_of_an_agent_removed_from_the_config_resolves(tmp_path: Path) -> None:
    h = Harness(tmp_path, agents=[{"id": "a1", "token": "t" * 20}, {"id": "old", "token": "o" * 20}])
    h.advance(61, keep_alive=("a1",))
    assert h.alert("AgentDown")["labels"]["agent"] == "old"
    h.config_data["agents"] = [{"id": "a1", "token": "t" * 20}]
    h.restart()
    assert h.states() == {"AgentDown": "firing"}
    h.advance(1)
    assert h.states() == {}


def test_an_ack_names_one_episode(tmp_path: Path) -> None:
    """An ack link from an earlier episode never acknowledges a new incident of the same rule and labels."""
    from roomwatch.alerts.commands import AckError

    h = Harness(tmp_path, routes=[{"channels": ["duty"], "repeat_interval": "1h"}])
    leak(h, True)
    [first] = h.queued()
    old_id = episode_id(first.alerts[0])
    fp, _, episode = old_id.partition("-")
    assert episode and h.alert("WaterLeak")["id"] == old_id and h.alert("WaterLeak")["fingerprint"] == fp
    assert old_id in first.text  # the link people get
    leak(h, False)
    h.advance(30)
    leak(h, True)  # a new incident: same rule, same labels, same fingerprint
    h.advance(30)
    assert [n.reason for n in h.queued()] == ["resolved", "firing"]
    new_id = h.alert("WaterLeak")["id"]
    assert new_id.startswith(fp + "-") and new_id != old_id
    for stale, status, words in ((old_id, 409, "has resolved"), (fp, 409, "names one episode")):
        try:
            h.svc.commands.ack(stale, "张三")
        except AckError as exc:
            assert exc.status == status and words in str(exc) and new_id in str(exc)
        else:
            raise AssertionError(f"{stale} acknowledged the new episode")
    assert h.alert("WaterLeak")["acknowledged"] is False
    h.advance(3600)
    assert [n.reason for n in h.queued()] == ["repeat"]  # still reminded: nobody acknowledged it
    try:
        h.svc.commands.ack("0123456789abcdef-1", "张三")
    except AckError as exc:
        assert exc.status == 404
    else:
        raise AssertionError("an unknown alert was acknowledged")
    assert h.svc.commands.ack(new_id, "张三").ack_by == "张三"
