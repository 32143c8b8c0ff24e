"""The daily inspection report: known history and alert episodes in a store → known figures, page, CLI, schedule."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from roomwatch.alerts.store import MIGRATIONS as ALERT_MIGRATIONS
from roomwatch.collector.report.compute import compute_report, hold_segments, report_window, true_intervals
from roomwatch.collector.report.config import ReportConfig
from roomwatch.collector.report.render import duration_text, render_text
from roomwatch.collector.report.sources import SQLiteSource
from roomwatch.collector.store import MIGRATIONS as HISTORY_MIGRATIONS
from roomwatch.core.sqlite import ensure_schema
from tests.conftest import start_collector
from tests.helpers import cli, http_get, run_cli, write_yaml
from tests.peers.webhook_receiver import WebhookReceiver

TZ = ZoneInfo("Asia/Shanghai")

def _last_saturday() -> dt.date:
    """A recent Saturday (so stores that prune old rows keep ours): its report covers Fri 08:00 → Sat 08:00."""
    day = dt.datetime.now(TZ).date() - dt.timedelta(days=1)
    return day - dt.timedelta(days=(day.weekday() - 5) % 7)


DAY = _last_saturday()
START = dt.datetime(DAY.year, DAY.month, DAY.day, 8, 0, tzinfo=TZ).timestamp() - 86400
END = START + 86400
H, MIN = 3600, 60
R1 = {"site": "county-a", "room": "room-1", "agent": "agent-a"}
R2 = {"site": "county-a", "room": "room-2", "agent": "agent-b"}

def _make_schema(conn: sqlite3.Connection) -> None:
    """The real tables: the collector's history store and the alert store through their own migrations."""
    ensure_schema(conn, "ingest", HISTORY_MIGRATIONS)
    ensure_schema(conn, "alerts", ALERT_MIGRATIONS)


class Store:
    def __init__(self, path: Path):
        from roomwatch.core.sqlite import open_db

        self.conn = open_db(path)
        _make_schema(self.conn)

    def series(self, metric: str, labels: dict[str, str], samples: list[tuple[float, float]]) -> None:
        key = json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        sid = self.conn.execute("INSERT INTO history_series (metric, labels) VALUES (?, ?)", (metric, key)).lastrowid
        self.conn.executemany("INSERT INTO history_samples (series, ts, value) VALUES (?, ?, ?)",
                              [(sid, int(ts * 1000), val) for ts, val in samples])

    def episode(self, name: str, severity: str, labels: dict[str, str], active: float, fired: float | None,
                resolved: float | None, ack: float | None = None) -> None:
        self.conn.execute(
            "INSERT INTO alert_episodes (fingerprint, rule, alertname, severity, labels, series_labels, metric, state, "
            "active_since, fired_at, resolved_at, ack_by, ack_at) VALUES (?, ?, ?, ?, ?, '{}', '', ?, ?, ?, ?, ?, ?)",
            (f"fp-{name}-{active}", name, name, severity, json.dumps({"alertname": name, "severity": severity, **labels}),
             "resolved" if resolved else ("firing" if fired else "pending"), active, fired, resolved,
             "duty" if ack else None, ack))


def build_history(path: Path) -> None:
    """A day with known events (see the expected figures in the tests below)."""
    s = Store(path)
    every5 = [START + i * 300 for i in range(288)]  # one sample every 5 minutes across the window

    def temp(ts: float) -> float:
        if START + 2 * H <= ts < START + 2 * H + 30 * MIN:
            return 28.0  # 30 min above 27 °C
        if START + 3 * H <= ts < START + 3 * H + 10 * MIN:
            return 33.0  # 10 min above 32 °C
        return 22.0

    s.series("roomwatch_temperature_celsius", {**R1, "device": "th1", "sensor": "inlet"}, [(t, temp(t)) for t in every5])
    s.series("roomwatch_humidity_ratio", {**R1, "device": "th1", "sensor": "inlet"},
             [(t, 0.85 if START + 10 * H <= t < START + 11 * H else 0.45) for t in every5])
    # Door contact reporting on change only: closed since yesterday; 09:00 (2 min), 22:00 (20 min), 07:50 (still open).
    s.series("roomwatch_door_open", {**R1, "device": "door1"}, [
        (START - H, 0), (START + 1 * H, 1), (START + 1 * H + 2 * MIN, 0), (START + 14 * H, 1), (START + 14 * H + 20 * MIN, 0),
        (START + 23 * H + 50 * MIN, 1)])
    ups1 = {**R1, "device": "ups1"}
    s.series("roomwatch_ups_on_battery", ups1, [(START - MIN, 0), (START + 5 * H, 1), (START + 5 * H + 4 * MIN, 0)])
    s.series("roomwatch_ups_battery_charge_ratio", ups1, [(START, 1.0), (START + 5 * H + 4 * MIN, 0.82), (START + 6 * H, 0.9)])
    s.series("roomwatch_ups_battery_runtime_seconds", ups1,
             [(START, 2400), (START + 5 * H, 1800), (START + 5 * H + 3 * MIN, 900)])
    s.series("roomwatch_ups_battery_age_seconds", ups1, [(START, 100_000_000), (END - H, 100_086_400)])
    ups2 = {**R1, "device": "ups2"}
    s.series("roomwatch_ups_on_battery", ups2, [(START, 0)])
    s.series("roomwatch_ups_battery_age_seconds", ups2, [(START, 31_536_000)])
    s.series("roomwatch_device_up", {**R1, "device": "th1"}, [(START - MIN, 1)])
    s.series("roomwatch_device_up", {**R1, "device": "leak1"},
             [(START - MIN, 1), (START + 8 * H, 0), (START + 8 * H + 15 * MIN, 1)])
    s.series("roomwatch_temperature_celsius", {**R2, "device": "th9"}, [(START + 12 * H, 20.0)])
    # Alerts: four raised in room-1 (three acknowledged after 6, 14 and 4 minutes), one AgentDown in room-2.
    s.episode("RoomTemperatureHigh", "warning", {**R1, "device": "th1", "sensor": "inlet"},
              START + 2 * H, START + 2 * H + 5 * MIN, START + 2 * H + 30 * MIN, ack=START + 2 * H + 11 * MIN)
    s.episode("DoorOpenedOutOfHours", "warning", {**R1, "device": "door1"},
              START + 14 * H, START + 14 * H, START + 14 * H + 20 * MIN, ack=START + 14 * H + 14 * MIN)
    s.episode("UPSOnBattery", "warning", ups1, START + 5 * H, START + 5 * H + 30, START + 5 * H + 4 * MIN)
    s.episode("DeviceDown", "warning", {**R1, "device": "leak1"}, START + 8 * H, START + 8 * H + 2 * MIN,
              START + 8 * H + 15 * MIN, ack=START + 8 * H + 6 * MIN)
    s.episode("RoomTemperatureHigh", "warning", {**R1, "device": "th1", "sensor": "inlet"},  # pending only: not raised
              START + 4 * H, None, START + 4 * H + MIN)
    s.episode("DoorOpenTooLong", "warning", {**R1, "device": "door1"},  # the day before: not in this report
              START - 5 * H, START - 5 * H + 10 * MIN, START - 4 * H)
    s.episode("AgentDown", "critical", {"agent": "agent-b"}, START + 20 * H, START + 20 * H, START + 20 * H + 10 * MIN)
    s.conn.close()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "collector.db"
    build_history(path)
    return path


def _report(path: Path) -> Any:
    cfg = ReportConfig()
    start, end = report_window(cfg, DAY)
    assert (start, end) == (START, END)
    src = SQLiteSource(path)
    try:
        return compute_report(src, src, cfg, start, end)
    finally:
        src.close()


def test_known_history_gives_known_figures(store_path: Path) -> None:
    rep = _report(store_path)
    assert rep.history_available and rep.alerts_available
    assert [(r.site, r.room) for r in rep.rooms] == [("county-a", "room-1"), ("county-a", "room-2")]
    r1, r2 = rep.rooms
    [t] = r1.temperature
    assert (t.device, t.sensor, t.min, t.max) == ("th1", "inlet", 22.0, 33.0)
    assert t.seconds_outside == 40 * MIN and t.seconds_critical == 10 * MIN
    assert t.avg == pytest.approx(22 + (6 * 30 * MIN + 11 * 10 * MIN) / 86400, abs=1e-3)
    [hum] = r1.humidity
    assert (hum.min, hum.max, hum.seconds_outside) == (0.45, 0.85, 1 * H)
    [door] = r1.doors
    assert (door.openings, door.longest_seconds, door.out_of_hours, door.open_at_end) == (3, 20 * MIN, 2, True)
    assert door.open_seconds == 2 * MIN + 20 * MIN + 10 * MIN
    assert [dt.datetime.fromtimestamp(x, TZ).strftime("%a %H:%M") for x in door.out_of_hours_times] == ["Fri 22:00", "Sat 07:50"]
    u1, u2 = r1.ups
    assert (u1.device, u1.on_battery_count, u1.on_battery_seconds, u1.lowest_charge, u1.lowest_runtime_seconds) == (
        "ups1", 1, 4 * MIN, 0.82, 900)
    assert u1.battery_age_seconds == 100_086_400 and u1.replace_due is True
    assert (u2.device, u2.on_battery_count, u2.replace_due) == ("ups2", 0, False)
    [down] = r1.devices_down
    assert (down.device, down.episodes, down.seconds, down.down_at_end) == ("leak1", 1, 15 * MIN, False)
    a = r1.alerts
    assert (a.raised, a.acknowledged, a.unacknowledged, a.critical) == (4, 3, 1, 0)
    assert a.by_name == {"RoomTemperatureHigh": 1, "DoorOpenedOutOfHours": 1, "UPSOnBattery": 1, "DeviceDown": 1}
    assert (a.ack_median_seconds, a.ack_max_seconds) == (6 * MIN, 14 * MIN)
    assert r2.agents == ["agent-b"]
    [agent_down] = r2.agents_down
    assert (agent_down.agent, agent_down.episodes, agent_down.seconds) == ("agent-b", 1, 10 * MIN)
    assert (r2.alerts.raised, r2.alerts.critical, r2.alerts.unacknowledged) == (1, 1, 1)


def test_report_text_in_both_languages(store_path: Path) -> None:
    rep = _report(store_path)
    zh = render_text(rep, "zh-CN")
    assert zh.splitlines()[0] == f"【巡检日报】 {DAY.isoformat()} county-a"
    assert "最低 22.0°C 平均 22.2°C 最高 33.0°C，高于 27°C 共 40分钟，其中高于 32°C 共 10分钟" in zh
    assert "开启 3 次，最长 20分钟，非工作时间 2 次（22:00、07:50），目前仍开着" in zh
    assert "应更换电池" in zh and "设备 leak1（agent-a）离线 1 次共 15分钟" in zh
    assert "已确认 3 条，确认用时中位数 6分钟、最长 14分钟，未确认 1 条" in zh
    en = render_text(rep, "en")
    assert "opened 3 times, longest 20 min, 2 out of hours (22:00, 07:50), still open" in en
    assert "agent agent-b down for 10 min" in en


def test_helpers_on_edges() -> None:
    assert duration_text(3725, "zh-CN") == "1小时2分钟" and duration_text(3725, "en") == "1 h 2 min"
    assert duration_text(42, "en") == "42 s"
    # A value holds until the next sample, at most max_hold; nothing outside the window counts.
    assert hold_segments([(0, 1), (100, 2)], 50, 400, max_hold=60) == [(50, 60, 1), (100, 160, 2)]
    # Open before the window and closed inside: an interval, not an opening; opened inside and never closed: to the end.
    assert true_intervals([(0, 1), (100, 0), (200, 1)], 50, 400) == [(50, 100, False), (200, 400, True)]


def test_missing_tables_say_not_available(tmp_path: Path) -> None:
    from roomwatch.core.sqlite import open_db

    open_db(tmp_path / "empty.db").close()
    src = SQLiteSource(tmp_path / "empty.db")
    rep = compute_report(src, src, ReportConfig(), START, END)
    assert (rep.history_available, rep.alerts_available, rep.rooms) == (False, False, [])
    assert "历史数据不可用" in render_text(rep) and "告警记录不可用" in render_text(rep)


def _collector_file(tmp_path: Path, store: Path, **extra: Any) -> Path:
    return write_yaml(tmp_path / "c.yaml", {"listen": "127.0.0.1:9640", "storage": str(store), **extra})


def test_cli_prints_the_report(store_path: Path, tmp_path: Path) -> None:
    conf = _collector_file(tmp_path, store_path)
    r = cli("report", "-c", str(conf), "--date", DAY.isoformat(), "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["rooms"][0]["doors"][0]["openings"] == 3
    r = cli("report", "-c", str(conf), "--date", DAY.isoformat(), "--lang", "en")
    assert r.returncode == 0 and "Daily inspection report" in r.stdout
    r = cli("report", "-c", str(conf), "--date", DAY.isoformat(), "--language", "en")  # as test-alert spells it
    assert r.returncode == 0 and "Daily inspection report" in r.stdout
    r = cli("report", "-c", str(conf), "--date", "28/11/2026")
    assert r.returncode == 2 and "YYYY-MM-DD" in r.stderr


def test_the_report_measures_against_the_rules(store_path: Path, tmp_path: Path) -> None:
    """rules.overrides and rules.working_hours (holidays, make-up days) change the report; report keys still win."""
    friday, saturday = DAY - dt.timedelta(days=1), DAY
    rules = {"overrides": {"RoomTemperatureHigh": {"when": "> 30", "clear": "< 29"},
                           "RoomHumidityOutOfRange": {"when": "< 0.3 or > 0.9", "clear": ">= 0.35 and <= 0.85"}},
             # Friday is a public holiday, Saturday a make-up workday (调休) starting at 07:00.
             "working_hours": {"start": "07:00", "end": "17:30", "holidays": [friday.isoformat()],
                               "extra_workdays": [saturday.isoformat()]}}
    conf = _collector_file(tmp_path, store_path, rules=rules)
    r = cli("report", "-c", str(conf), "--date", DAY.isoformat(), "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    room = doc["rooms"][0]
    t, hum, door = room["temperature"][0], room["humidity"][0], room["doors"][0]
    # 30 min at 28 °C are no longer outside; the 10 min at 33 °C are (and still critical, above 32).
    assert (t["seconds_outside"], t["seconds_critical"]) == (10 * MIN, 10 * MIN)
    assert hum["seconds_outside"] == 0  # 85 % is inside 30–90 %
    assert doc["thresholds"]["temperature_high"] == 30 and doc["thresholds"]["humidity_low"] == 0.3
    # Fri 09:00 (a holiday) and 22:00 are out of hours; Sat 07:50 (a make-up workday from 07:00) is not.
    assert door["out_of_hours"] == 2
    assert [dt.datetime.fromtimestamp(x, TZ).strftime("%a %H:%M") for x in door["out_of_hours_times"]] == [
        "Fri 09:00", "Fri 22:00"]
    r = cli("report", "-c", str(conf), "--date", DAY.isoformat())
    assert "高于 30°C 共 10分钟" in r.stdout
    # Report-level keys are explicit overrides of the rules' values.
    conf = _collector_file(tmp_path, store_path, rules=rules,
                           report={"thresholds": {"temperature_high": 27}, "working_hours": "08:30-17:30"})
    doc = json.loads(cli("report", "-c", str(conf), "--date", DAY.isoformat(), "--format", "json").stdout)
    room = doc["rooms"][0]
    assert room["temperature"][0]["seconds_outside"] == 40 * MIN
    assert room["doors"][0]["out_of_hours"] == 3  # the holiday still counts; Sat 07:50 is now before 08:30


@pytest.mark.peer
def test_report_from_a_running_collectors_api(store_path: Path, tmp_path: Path) -> None:
    """``roomwatch report --url``: the same figures through /api/v1/history and /api/v1/alerts/history."""
    c = start_collector(tmp_path, storage=str(store_path))
    try:
        conf = _collector_file(tmp_path, store_path)
        r = run_cli("report", "-c", str(conf), "--url", c.url, "--date", DAY.isoformat(), "--format", "json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["history_available"] is True and doc["alerts_available"] is True
        assert http_get(c.url + "/api/v1/history?metric=roomwatch_door_open")[0] == 200
        assert http_get(c.url + "/api/v1/alerts/history")[0] == 200
        # The same figures as from the file (test_known_history_gives_known_figures), through the API.
        assert [(x["site"], x["room"]) for x in doc["rooms"]] == [("county-a", "room-1"), ("county-a", "room-2")]
        room, room2 = doc["rooms"]
        t = room["temperature"][0]
        assert (t["device"], t["min"], t["max"], t["seconds_outside"], t["seconds_critical"]) == ("th1", 22.0, 33.0,
                                                                                                 2400, 600)
        door = room["doors"][0]
        assert (door["openings"], door["longest_seconds"], door["out_of_hours"], door["open_at_end"]) == (3, 1200, 2, True)
        assert room["ups"][0]["lowest_charge"] == 0.82 and room["ups"][0]["on_battery_seconds"] == 240
        assert room["devices_down"][0]["device"] == "leak1" and room["devices_down"][0]["seconds"] == 900
        a = room["alerts"]
        assert (a["raised"], a["acknowledged"], a["unacknowledged"], a["ack_median_seconds"], a["ack_max_seconds"]) == (
            4, 3, 1, 360, 840)
        assert (room2["alerts"]["raised"], room2["alerts"]["critical"]) == (1, 1)
        assert room2["agents_down"][0]["seconds"] == 600
    finally:
        c.proc.stop()


@pytest.mark.peer
def test_report_page_and_json_from_a_running_collector(store_path: Path, tmp_path: Path) -> None:
    c = start_collector(tmp_path, storage=str(store_path))
    try:
        status, body = http_get(c.url + f"/report?date={DAY.isoformat()}")
        assert status == 200
        page = body.decode()
        assert "巡检日报" in page and 'data-room="county-a/room-1"' in page and "非工作时间 2 次" in page
        status, body = http_get(c.url + f"/api/v1/report?date={DAY.isoformat()}")
        assert status == 200 and json.loads(body)["rooms"][0]["ups"][0]["lowest_charge"] == 0.82
        assert http_get(c.url + "/report?date=yesterday")[0] == 400
    finally:
        c.proc.stop()


def test_schedule_sends_once_and_catches_up_after_a_restart(tmp_path: Path) -> None:
    from roomwatch.collector.config import CollectorConfig
    from roomwatch.collector.report.service import CATCH_UP, ReportScheduler

    cfg = CollectorConfig.model_validate({"storage": str(tmp_path / "c.db")})

    class FakeCollector:
        config = cfg

    s = ReportScheduler(FakeCollector())
    s.started_at = END - 600  # running before 08:00
    assert s.due(END - 1) is None  # not yet
    assert s.due(END + 5) == (DAY.isoformat(), END)
    s.mark(DAY.isoformat(), {"hook": "delivered"})
    assert s.due(END + 60) is None  # sent once
    restarted = ReportScheduler(FakeCollector())
    restarted.started_at = END + 2 * H  # restarted after the time: the next day's report is caught up
    next_end = END + 86400
    assert restarted.due(next_end + 2 * H) == ((DAY + dt.timedelta(days=1)).isoformat(), next_end)
    assert restarted.due(next_end + CATCH_UP + 1) is None  # too late to be useful
    fresh = ReportScheduler(type("C", (), {"config": CollectorConfig.model_validate({"storage": str(tmp_path / "n.db")})})())
    fresh.started_at = END + 60
    assert fresh.due(END + 120) is None  # a new installation sends nothing for a day it did not watch
    s.close()
    restarted.close()
    fresh.close()


@pytest.mark.peer
def test_report_is_sent_through_a_configured_webhook(store_path: Path, tmp_path: Path,
                                                     webhook_receiver: WebhookReceiver) -> None:
    """Through the real webhook channel to a receiver that accepts only Alertmanager's v4 body."""
    conf = _collector_file(tmp_path, store_path,
                           channels=[{"name": "hook", "type": "webhook", "url": webhook_receiver.url + "/hook"}],
                           routes=[{"match": {"severity": "critical"}, "channels": ["hook"]}],
                           report={"channels": ["hook"]})
    r = run_cli("report", "-c", str(conf), "--date", DAY.isoformat(), "--send")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hook: delivered" in r.stderr
    [got] = webhook_receiver.received
    [alert] = got.body["alerts"]
    assert alert["labels"]["alertname"] == "DailyReport" and got.path == "/hook"
    assert "巡检日报" in json.dumps(got.body, ensure_ascii=False)


def test_battery_health_age_and_last_test_are_reported(tmp_path: Path) -> None:
    """A UPS whose last outage measured 62 % of the predicted runtime, tested (passed) on the morning of the day:
    the report shows health, measured runtime and the test, and asks for a new battery (health under 80 %)."""
    path = tmp_path / "collector.db"
    s = Store(path)
    ups = {**R1, "device": "ups3"}
    s.series("roomwatch_ups_on_battery", ups, [(START, 0)])
    s.series("roomwatch_ups_battery_age_seconds", ups, [(START, 40_000_000)])
    s.series("roomwatch_ups_battery_health_ratio", ups, [(START, 0.62)])
    s.series("roomwatch_ups_measured_runtime_seconds", ups, [(START, 1490.0)])
    s.series("roomwatch_ups_last_self_test_timestamp_seconds", ups, [(START + H, START + H)])
    s.series("roomwatch_ups_self_test_failed", ups, [(START + H, 0.0)])
    s.conn.close()
    rep = _report(path)
    [u] = rep.rooms[0].ups
    assert (u.health_ratio, u.measured_runtime_seconds, u.self_test_failed, u.replace_due) == (0.62, 1490.0, False, True)
    zh = render_text(rep, "zh-CN")
    assert "电池健康 62%（实测满电续航 25分钟）" in zh and f"上次自检 {DAY - dt.timedelta(days=1):%Y-%m-%d} 通过" in zh
    en = render_text(rep, "en")
    assert "battery health 62% (measured full runtime 25 min)" in en and "REPLACE THE BATTERY" in en
