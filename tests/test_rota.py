"""Duty rotas: daily and weekly rotation, handover across a holiday (working-days calendar with 调休), off-day
rotations, overrides, the next handover, and ``roomwatch oncall``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from roomwatch.alerts.rota import OncallConfig, Rota, RotaConfig
from roomwatch.alerts.timewindow import WorkingHours
from roomwatch.collector.config import CollectorConfig
from roomwatch.commands.oncall import schedule_lines
from tests.alert_harness import at
from tests.helpers import run_cli, write_yaml

# National Day 2025 as the State Council published it: 10-01..10-08 off, Sunday 09-28 and Saturday 10-11 worked.
HOLIDAYS = [dt.date(2025, 10, d) for d in (1, 2, 3, 6, 7, 8)]
WORKDAYS = [dt.date(2025, 9, 28), dt.date(2025, 10, 11)]
HOURS = WorkingHours.from_config(type("H", (), {"days": ["mon", "tue", "wed", "thu", "fri"], "start": dt.time(8, 30),
                                               "end": dt.time(17, 30), "holidays": HOLIDAYS,
                                               "extra_workdays": WORKDAYS})(), "Asia/Shanghai")
PEOPLE = ["张伟", "李娜", "王强"]


def rota(**over: Any) -> Rota:
    conf = {"name": "duty", "start": "2025-09-01", "people": PEOPLE, "channels": ["call"], **over}
    return Rota(RotaConfig.model_validate(conf), "Asia/Shanghai", HOURS)


def test_daily_rotation_hands_over_at_the_handover_time() -> None:
    r = rota()
    assert r.at(at("2025-09-01 08:30")).person == "张伟"
    assert r.at(at("2025-09-02 08:29")).person == "张伟"  # still Monday's shift
    assert r.at(at("2025-09-02 08:30")).person == "李娜"
    assert r.at(at("2025-09-04 03:00")).person == "王强"  # Wednesday's shift, in the night
    assert r.at(at("2025-09-04 08:30")).person == "张伟"  # round again
    before = r.at(at("2025-08-31 12:00"))  # before start: the rotation runs backwards too
    assert before.person == "王强"
    shift = r.at(at("2025-09-02 12:00"))
    assert (shift.start, shift.end, shift.source) == (at("2025-09-02 08:30"), at("2025-09-03 08:30"), "rotation")


def test_weekly_rotation_on_its_handover_day() -> None:
    r = rota(rotation="weekly", handover="09:00", handover_day="wed")
    assert r.at(at("2025-09-03 09:00")).person == "张伟"  # the first Wednesday on or after start
    assert r.at(at("2025-09-10 08:59")).person == "张伟"
    assert r.at(at("2025-09-10 09:00")).person == "李娜"
    assert r.at(at("2025-09-02 12:00")).person == "王强"  # the week before the first handover
    when, nxt = r.next_handover(at("2025-09-11 12:00"))
    assert (when, nxt.person) == (at("2025-09-17 09:00"), "王强")


def test_handover_across_a_holiday_follows_the_working_days_calendar() -> None:
    """calendar: working_days — Tuesday 09-30's person keeps the duty through the eight days of National Day until
    the first working day's handover; the 调休 Saturday 10-11 is a working day with a handover of its own."""
    r = rota(calendar="working_days")
    # Counting working days from Monday 09-01: 09-26 (Fri) is the 20th, 09-28 (Sun, 调休) the 21st,
    # 09-29 the 22nd, 09-30 the 23rd (index 22 → 李娜).
    assert r.at(at("2025-09-27 10:00")).person == r.at(at("2025-09-26 10:00")).person  # a plain Saturday
    sat = r.at(at("2025-09-27 10:00"))
    assert (sat.start, sat.end) == (at("2025-09-26 08:30"), at("2025-09-28 08:30"))  # Friday → 调休 Sunday
    assert r.at(at("2025-09-28 09:00")).source == "rotation" and r.at(at("2025-09-28 09:00")).start == at("2025-09-28 08:30")
    holiday = r.at(at("2025-10-05 03:00"))
    assert holiday.person == r.at(at("2025-09-30 20:00")).person == "李娜"
    assert (holiday.start, holiday.end) == (at("2025-09-30 08:30"), at("2025-10-09 08:30"))
    when, nxt = r.next_handover(at("2025-10-01 00:00"))
    assert (when, nxt.person) == (at("2025-10-09 08:30"), "王强")
    sat_work = r.at(at("2025-10-11 09:00"))  # 调休: worked, so a shift begins
    assert (sat_work.person, sat_work.start, sat_work.end) == ("李娜", at("2025-10-11 08:30"), at("2025-10-13 08:30"))


def test_off_day_people_take_the_holidays_in_their_own_rotation() -> None:
    r = rota(calendar="working_days", off_day_people=["刘主任", "陈科长"])
    days = [r.at(at(f"2025-10-0{d} 12:00")) for d in (1, 2, 3, 4)]
    assert [s.source for s in days] == ["off days"] * 4
    # seven non-working days since 09-01 before 10-01 (the weekends but 调休 Sunday 09-28): index 7 → the second
    assert [s.person for s in days] == ["陈科长", "刘主任", "陈科长", "刘主任"]
    assert days[0].end == at("2025-10-02 08:30")  # each off day is its own shift
    assert r.at(at("2025-10-09 12:00")).source == "rotation"


def test_overrides_win_and_cut_the_shifts_around_them() -> None:
    r = rota(overrides=[{"start": "2025-09-02 20:00", "end": "2025-09-03 08:30", "person": "王强", "reason": "换班"}])
    assert r.at(at("2025-09-02 19:59")).person == "李娜"
    cut = r.at(at("2025-09-02 12:00"))
    assert cut.end == at("2025-09-02 20:00")  # 李娜's shift ends when the swap begins
    swap = r.at(at("2025-09-02 23:00"))
    assert (swap.person, swap.source) == ("王强", "override: 换班")
    when, nxt = r.next_handover(at("2025-09-02 12:00"))
    assert (when, nxt.person) == (at("2025-09-02 20:00"), "王强")


def test_rota_config_mistakes() -> None:
    with pytest.raises(ValidationError, match="daily"):
        RotaConfig.model_validate({"name": "x", "start": "2025-01-01", "people": ["a"], "channels": ["c"],
                                   "rotation": "weekly", "calendar": "working_days"})
    with pytest.raises(ValidationError, match="end must be after start"):
        RotaConfig.model_validate({"name": "x", "start": "2025-01-01", "people": ["a"], "channels": ["c"],
                                   "overrides": [{"start": "2025-01-02 08:00", "end": "2025-01-01 08:00", "person": "a"}]})
    cfg = OncallConfig.model_validate({"people": [{"name": "a", "phone": "13800000001"}, {"name": "b"}],
                                       "rotas": [{"name": "x", "start": "2025-01-01", "people": ["a", "b", "c"],
                                                  "channels": ["call", "hook", "nope"]}]})
    problems = {".".join(map(str, k)): m for k, m in cfg.problems({"call": "phone", "hook": None})}
    assert "no person named 'c'" in problems["oncall.rotas.0.people.2"]
    assert "cannot address one person" in problems["oncall.rotas.0.channels.1"]
    assert "no channel named 'nope'" in problems["oncall.rotas.0.channels.2"]
    assert "b has no phone" in problems["oncall.rotas.0.channels.0"]


COLLECTOR: dict[str, Any] = {
    "agents": [{"id": "room1", "token": "t" * 20}],
    "rules": {"working_hours": {"holidays": [str(d) for d in HOLIDAYS], "extra_workdays": [str(d) for d in WORKDAYS]}},
    "channels": [{"name": "group", "type": "webhook", "url": "http://127.0.0.1:9/g"},
                 {"name": "call", "type": "aliyun_voice", "access_key_id": "a", "access_key_secret": "b",
                  "tts_code": "TTS_1"}],
    "oncall": {"people": [{"name": n, "phone": f"1380000000{i}"} for i, n in enumerate([*PEOPLE, "刘主任"], 1)],
               "rotas": [{"name": "duty", "start": "2025-09-01", "calendar": "working_days", "people": PEOPLE,
                          "channels": ["call"]},
                         {"name": "chief", "rotation": "weekly", "start": "2025-09-01", "people": ["刘主任"],
                          "channels": ["call"]}]},
    "routes": [{"matchers": ['severity="critical"'], "channels": ["group", "oncall:duty"],
                "levels": [{"after": "15m", "channels": ["oncall:chief"]}]}],
}


def test_schedule_lists_every_route_level_and_the_next_handover() -> None:
    cfg = CollectorConfig.model_validate(COLLECTOR)
    lines = schedule_lines(cfg, at("2025-10-05 03:00"), handovers=1)
    text = "\n".join(lines)
    assert "level 0 (at once): group (webhook: http://127.0.0.1:9/g); oncall:duty: 李娜 (rotation, until 2025-10-09 08:30" \
        in text
    assert "level 1 (not acknowledged within 15 min): oncall:chief: 刘主任" in text
    assert "next handover 2025-10-09 08:30 Thu: 王强" in text


@pytest.mark.peer
def test_oncall_command(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {**COLLECTOR, "storage": str(tmp_path / "c.db")})
    res = run_cli("oncall", "-c", str(path), "--at", "2025-10-05 03:00")
    assert res.returncode == 0, res.stderr
    assert "oncall:duty: 李娜" in res.stdout and "next handover 2025-10-09 08:30" in res.stdout
    bad = run_cli("oncall", "-c", str(path), "--at", "tomorrow")
    assert bad.returncode == 2 and "--at" in bad.stderr
    broken = write_yaml(tmp_path / "b.yaml", {**COLLECTOR, "routes": [{"channels": ["oncall:nobody"]}]})
    res = run_cli("oncall", "-c", str(broken))
    assert res.returncode == 2 and "no rota named 'nobody'" in res.stderr


@given(st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31)), st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31)),
       st.booleans())
@settings(max_examples=300, deadline=None)
def test_working_day_count_equals_walking_the_days(day: dt.date, start: dt.date, workdays: bool) -> None:
    """The week arithmetic with the calendar's exceptions counts what a walk over every day counts."""
    r = rota(calendar="working_days", start=str(start))
    lo, hi = min(day, start), max(day, start)
    walked = sum(1 for k in range((hi - lo).days) if HOURS.is_workday(lo + dt.timedelta(days=k)) == workdays)
    assert r._between(lo, hi, workdays) == walked
