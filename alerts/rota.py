"""Duty rotas (值班表): who is on duty at a given time, and the next handover.

``oncall:`` in the collector file lists the people (with their phone, WeCom, DingTalk and
e-mail ids) and the rotas. A rota hands over daily or weekly at a local time in its time
zone, going round its people from ``start``; with ``calendar: working_days`` (daily only) a
shift begins only on a working day of ``rules.working_hours`` — its weekdays, ``holidays``
and ``extra_workdays`` (调休) — so the person on duty the last working day before a holiday
keeps it until the first working day after it, unless ``off_day_people`` take the
non-working days in a rotation of their own. ``overrides`` (a swap, a sick day) name a
person for a stretch of time and win over the rotation.

A route names ``oncall:ROTA`` among its channels (or a level's): each of the rota's
``channels`` then tells the person on duty at the moment a message goes out (see
:class:`roomwatch.channels.recipients` ``PERSON``), so a repeat after a handover reaches the
new person. ``roomwatch oncall -c FILE [--at TIME]`` prints the schedule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from roomwatch.alerts.config import Clock
from roomwatch.alerts.timewindow import DAY_NAMES, WorkingHours
from roomwatch.core.configbase import Model, TimeZoneName

__all__ = ["ONCALL_PREFIX", "OncallConfig", "Person", "Rota", "RotaConfig", "Shift", "build_rotas", "person_ids",
           "split_target"]

#: A route target naming a rota: ``oncall:<rota name>``.
ONCALL_PREFIX = "oncall:"
#: Longest stretch a schedule is computed over (a rota whose start is further back is refused).
MAX_DAYS = 366 * 30
_NAME = r"^[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9_.\-\u4e00-\u9fff]{0,63}$"


class Person(Model):
    """Somebody on a rota and how to reach them."""

    name: str = Field(min_length=1, max_length=64)
    phone: str = Field(default="", pattern=r"^(\+?\d{5,15})?$", description="for calls and SMS; also SMS replies")
    wecom: str = Field(default="", max_length=64, description="WeCom member id (wecom_app, wecom_robot mentions)")
    dingtalk: str = Field(default="", max_length=64, description="DingTalk user id (robot mentions, callbacks)")
    email: str = Field(default="", max_length=254)


def _parse_local(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a local time such as \"2025-10-01 08:30\"") from None
    return value


class Override(Model):
    """``person`` is on duty from ``start`` to ``end`` (local times of the rota), whatever the rotation says."""

    start: dt.datetime
    end: dt.datetime
    person: str
    reason: str = ""

    @model_validator(mode="before")
    @classmethod
    def _times(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {**data, **{k: _parse_local(data[k]) for k in ("start", "end") if k in data}}
        return data

    @model_validator(mode="after")
    def _order(self) -> Override:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("write start and end as local times of the rota's time zone, without an offset")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class RotaConfig(Model):
    """One duty rota."""

    name: str = Field(pattern=_NAME)
    rotation: Literal["daily", "weekly"] = "daily"
    handover: Clock = dt.time(8, 30)
    handover_day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"
    timezone: TimeZoneName | None = Field(default=None, description="default rules.timezone")
    start: dt.date = Field(description="the first shift (the first person) begins on this day at the handover")
    people: list[str] = Field(min_length=1)
    calendar: Literal["every_day", "working_days"] = "every_day"
    off_day_people: list[str] = Field(default_factory=list, description="calendar working_days: their own rotation")
    channels: list[str] = Field(min_length=1, description="how the person on duty is reached")
    overrides: list[Override] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> RotaConfig:
        if self.rotation == "weekly" and self.calendar != "every_day":
            raise ValueError("calendar: working_days applies to daily rotations")
        if self.off_day_people and self.calendar != "working_days":
            raise ValueError("off_day_people needs calendar: working_days")
        return self


class OncallConfig(Model):
    """``oncall:`` — people and rotas (docs/oncall.md)."""

    people: list[Person] = Field(default_factory=list)
    rotas: list[RotaConfig] = Field(default_factory=list)

    def person(self, name: str) -> Person | None:
        return next((p for p in self.people if p.name == name), None)

    def problems(self, channel_keys: dict[str, str | None]) -> list[tuple[tuple[Any, ...], str]]:
        """Cross checks: known people and channels, channels that can address a person, ids people lack.

        ``channel_keys``: channel name → the person ids it uses (``"phone"``, ``"phone|dingtalk"``), None: none.
        """
        out: list[tuple[tuple[Any, ...], str]] = []
        names = [p.name for p in self.people]
        for i, name in enumerate(names):
            if name in names[:i]:
                out.append((("oncall", "people", i, "name"), f"{name!r} is listed twice"))
        rotas = [r.name for r in self.rotas]
        for i, r in enumerate(self.rotas):
            where = ("oncall", "rotas", i)
            if r.name in rotas[:i]:
                out.append(((*where, "name"), f"rota {r.name!r} is defined twice"))
            if (dt.date.today() - r.start).days > MAX_DAYS:
                out.append(((*where, "start"), "start is more than 30 years back: move it forward"))
            for key in ("people", "off_day_people"):
                for j, who in enumerate(getattr(r, key)):
                    if who not in names:
                        out.append(((*where, key, j), f"no person named {who!r} in oncall.people"))
            for j, ov in enumerate(r.overrides):
                if ov.person not in names:
                    out.append(((*where, "overrides", j, "person"), f"no person named {ov.person!r} in oncall.people"))
            for j, ch in enumerate(r.channels):
                if ch not in channel_keys:
                    out.append(((*where, "channels", j), f"no channel named {ch!r} in channels"))
                    continue
                found = channel_keys[ch]
                if found is None:
                    out.append(((*where, "channels", j), f"channel {ch!r} cannot address one person (a webhook, an "
                                 "Alertmanager or a channel without recipients of its own); use a voice, SMS, "
                                 "WeCom, DingTalk or e-mail channel"))
                    continue
                for who in dict.fromkeys(r.people + r.off_day_people + [o.person for o in r.overrides]):
                    p = self.person(who)
                    if p is not None and not any(person_ids(p).get(k) for k in found.split("|")):
                        out.append(((*where, "channels", j), f"{who} has no {found.replace('|', ' or ')} for channel "
                                     f"{ch!r}: add it to the person in oncall.people"))
        return out


def person_ids(p: Person) -> dict[str, str]:
    """The person as a notification carries it (``Notification.extra[PERSON]``): name and the ids set."""
    return {k: v for k, v in {"name": p.name, "phone": p.phone, "wecom": p.wecom, "dingtalk": p.dingtalk,
                              "email": p.email}.items() if v}


def split_target(target: str) -> tuple[str, str | None]:
    """``"voice@duty"`` → (``"voice"``, ``"duty"``); a plain channel name → (name, None)."""
    channel, sep, rota = target.partition("@")
    return (channel, rota) if sep else (target, None)


@dataclass(frozen=True, slots=True)
class Shift:
    """Who is on duty from ``start`` to ``end`` (Unix seconds), and why (rotation or an override)."""

    person: str
    start: float
    end: float
    source: str  # "rotation", "off days", "override: <reason>"


class Rota:
    """A rota's schedule, computed (never stored): :meth:`at` a time, :meth:`next_handover` after it."""

    def __init__(self, cfg: RotaConfig, tz: str, hours: WorkingHours):
        self.cfg = cfg
        self.name = cfg.name
        self.tz = ZoneInfo(cfg.timezone or tz)
        self.hours = hours

    # -- rotation ---------------------------------------------------------------------
    def _handover_at(self, day: dt.date) -> float:
        return dt.datetime.combine(day, self.cfg.handover, self.tz).timestamp()

    def _shift_day(self, ts: float) -> dt.date:
        """The day whose handover began the (daily) shift holding ``ts``."""
        local = dt.datetime.fromtimestamp(ts, self.tz)
        day = local.date()
        return day if ts >= self._handover_at(day) else day - dt.timedelta(days=1)

    def _rotation(self, ts: float) -> Shift:
        c = self.cfg
        if c.rotation == "weekly":
            anchor = c.start + dt.timedelta(days=(DAY_NAMES.index(c.handover_day) - c.start.weekday()) % 7)
            day = self._shift_day(ts)
            week = (day - anchor).days // 7
            begin = anchor + dt.timedelta(weeks=week)
            return Shift(c.people[week % len(c.people)], self._handover_at(begin),
                         self._handover_at(begin + dt.timedelta(weeks=1)), "rotation")
        day = self._shift_day(ts)
        if c.calendar == "every_day":
            k = (day - c.start).days
            return Shift(c.people[k % len(c.people)], self._handover_at(day),
                         self._handover_at(day + dt.timedelta(days=1)), "rotation")
        return self._calendar_shift(day)

    def _calendar_shift(self, day: dt.date) -> Shift:
        """calendar: working_days. A working day begins a shift; a non-working day belongs to the last working
        day's shift, or begins an off-day shift of its own when ``off_day_people`` are set."""
        c = self.cfg
        workday = self.hours.is_workday
        if c.off_day_people:
            working = workday(day)
            people = c.people if working else c.off_day_people
            return Shift(people[self._count(day, working) % len(people)], self._handover_at(day),
                         self._handover_at(day + dt.timedelta(days=1)), "rotation" if working else "off days")
        begin = day
        while not workday(begin) and (day - begin).days < 400:
            begin -= dt.timedelta(days=1)
        end = day + dt.timedelta(days=1)
        while not workday(end) and (end - day).days < 400:
            end += dt.timedelta(days=1)
        return Shift(c.people[self._count(begin, True) % len(c.people)], self._handover_at(begin),
                     self._handover_at(end), "rotation")

    def _count(self, day: dt.date, workdays: bool) -> int:
        """Working (or non-working) days from ``start`` up to ``day`` excluded; negative, counting ``day``, before it."""
        start = self.cfg.start
        if day >= start:
            return self._between(start, day, workdays)
        return -self._between(day, start, workdays)

    def _between(self, lo: dt.date, hi: dt.date, workdays: bool) -> int:
        """Working (or non-working) days in [lo, hi): whole weeks by the weekday pattern, then the calendar's
        exceptions in the range (a loop over days would cost a millisecond a lookup five years after start)."""
        h = self.hours
        n = (hi - lo).days
        weeks, rest = divmod(n, 7)
        work = weeks * len(h.days) + sum(1 for k in range(rest) if (lo.weekday() + k) % 7 in h.days)
        work -= sum(1 for d in h.holidays if lo <= d < hi and d.weekday() in h.days)
        work += sum(1 for d in h.extra_workdays if lo <= d < hi and d.weekday() not in h.days and d not in h.holidays)
        return work if workdays else n - work

    # -- public -----------------------------------------------------------------------
    def at(self, ts: float) -> Shift:
        """The shift holding ``ts`` (an override wins over the rotation, the last listed first)."""
        for ov in reversed(self.cfg.overrides):
            start = ov.start.replace(tzinfo=self.tz).timestamp()
            end = ov.end.replace(tzinfo=self.tz).timestamp()
            if start <= ts < end:
                return Shift(ov.person, start, end, "override" + (f": {ov.reason}" if ov.reason else ""))
        shift = self._rotation(ts)
        # an override cutting into this shift ends it early, or one that ended inside it starts it late
        start, end = shift.start, shift.end
        for ov in self.cfg.overrides:
            o_start = ov.start.replace(tzinfo=self.tz).timestamp()
            o_end = ov.end.replace(tzinfo=self.tz).timestamp()
            if ts < o_start < end:
                end = o_start
            if start < o_end <= ts:
                start = o_end
        return Shift(shift.person, start, end, shift.source)

    def next_handover(self, ts: float) -> tuple[float, Shift]:
        """When the person on duty at ``ts`` changes next, and the shift that begins then."""
        current = self.at(ts)
        t = current.end
        for _ in range(60):  # the same person may follow themselves (one-person rota, an override)
            nxt = self.at(t)
            if nxt.person != current.person:
                return t, nxt
            t = nxt.end
        return current.end, self.at(current.end)


def build_rotas(cfg: OncallConfig, tz: str, hours: WorkingHours) -> dict[str, Rota]:
    return {r.name: Rota(r, tz, hours) for r in cfg.rotas}
