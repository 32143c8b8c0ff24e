"""Recurring time intervals for routes, with Alertmanager's ``time_intervals`` semantics.

A named interval is a list of entries; it holds at a time when any entry does. An entry
holds when every field it sets holds (a field left out holds always):

* ``times``: ``[{start_time: "08:30", end_time: "17:30"}]`` — minutes of the day, start
  included, end excluded, ``end_time`` up to ``"24:00"``;
* ``weekdays``: ``monday``, ``monday:friday`` (inclusive ranges, any case);
* ``days_of_month``: ``1``, ``1:5``, ``-1`` (the last day), ``-7:-1`` (the last week);
* ``months``: ``january:march`` or ``1:3``; ``years``: ``2025``, ``2025:2026``;
* ``location``: the IANA time zone the others are read in — Alertmanager defaults to UTC,
  roomwatch to ``rules.timezone`` (people here think in Beijing time); ``Local`` is the host's.

Routes name intervals in ``mute_time_intervals`` (no notification while one holds) and
``active_time_intervals`` (notifications only while one holds). The name ``working_hours``
is built in: ``rules.working_hours`` with its holidays and 调休 days, unless the file defines
an interval of that name itself. A muted route keeps its alerts and what each channel was told; when
the interval ends, what was held back is sent (Alertmanager does the same).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from roomwatch.alerts.timewindow import WorkingHours
from roomwatch.core.configbase import Model

__all__ = ["BUILTIN", "TimeIntervalConfig", "TimeIntervals", "TimeRange", "TimeSpec", "interval_matcher"]

BUILTIN = "working_hours"
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
_HHMM = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


def _minutes(text: str) -> int:
    m = _HHMM.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a time of day such as \"08:30\" (quote it in YAML)")
    value = int(m.group(1)) * 60 + int(m.group(2))
    if value > 24 * 60:
        raise ValueError(f"{text!r} is past 24:00")
    return value


def _clock_text(value: Any) -> Any:
    # YAML 1.1 reads an unquoted 17:30 as the base-60 integer 1050: take it back.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 24 * 60:
        return f"{value // 60:02d}:{value % 60:02d}"
    return value


class TimeRange(Model):
    start_time: str
    end_time: str

    @model_validator(mode="before")
    @classmethod
    def _yaml_ints(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: _clock_text(v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _order(self) -> TimeRange:
        if _minutes(self.start_time) >= _minutes(self.end_time):
            raise ValueError(f"start_time {self.start_time} must be before end_time {self.end_time}")
        return self


def _range(text: Any, names: list[str] | None, lo: int, hi: int, negative: bool = False) -> tuple[int, int]:
    """``"monday:friday"`` → (1, 5); numbers within lo..hi (and -hi..-1 when ``negative``)."""
    parts = str(text).strip().lower().split(":")
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"{text!r}: write one value or a range like a:b")

    def one(p: str) -> int:
        if names is not None and p in names:
            return names.index(p) + 1
        try:
            n = int(p)
        except ValueError:
            raise ValueError(f"{p!r} is not {'one of ' + ', '.join(names) if names else 'a number'}") from None
        if not (lo <= n <= hi or (negative and -hi <= n <= -1)):
            raise ValueError(f"{n} is out of range {lo}..{hi}" + (f" (or -{hi}..-1)" if negative else ""))
        return n

    a = one(parts[0])
    b = one(parts[-1])
    if (a > 0) == (b > 0) and a > b:
        raise ValueError(f"{text!r}: the range ends before it starts")
    return a, b


class TimeSpec(Model):
    """One entry of a time interval: every field it sets must hold."""

    times: list[TimeRange] = Field(default_factory=list)
    weekdays: list[str] = Field(default_factory=list)
    days_of_month: list[str] = Field(default_factory=list)
    months: list[str] = Field(default_factory=list)
    years: list[str] = Field(default_factory=list)
    location: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _as_text(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("weekdays", "days_of_month", "months", "years"):
                if isinstance(data.get(key), list):
                    data[key] = [str(v) for v in data[key]]
        return data

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v: list[str]) -> list[str]:
        for text in v:
            _range(text, WEEKDAYS, 1, 7)
        return v

    @field_validator("days_of_month")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        for text in v:
            _range(text, None, 1, 31, negative=True)
        return v

    @field_validator("months")
    @classmethod
    def _months(cls, v: list[str]) -> list[str]:
        for text in v:
            _range(text, MONTHS, 1, 12)
        return v

    @field_validator("years")
    @classmethod
    def _years(cls, v: list[str]) -> list[str]:
        for text in v:
            _range(text, None, 1970, 9999)
        return v

    @field_validator("location")
    @classmethod
    def _location(cls, v: str | None) -> str | None:
        if v is not None and v != "Local":
            try:
                ZoneInfo(v)
            except Exception:
                raise ValueError(f"unknown time zone {v!r} (an IANA name such as Asia/Shanghai, or Local)") from None
        return v

    def holds(self, ts: float, default_tz: ZoneInfo) -> bool:
        """True when Unix time ``ts`` falls in this entry."""
        tz: Any = default_tz if self.location is None else (None if self.location == "Local" else ZoneInfo(self.location))
        t = dt.datetime.fromtimestamp(ts, tz) if tz is not None else dt.datetime.fromtimestamp(ts).astimezone()
        if self.times:
            minute = t.hour * 60 + t.minute
            if not any(_minutes(r.start_time) <= minute < _minutes(r.end_time) for r in self.times):
                return False
        if self.weekdays and not any(a <= t.isoweekday() <= b for a, b in (_range(w, WEEKDAYS, 1, 7)
                                                                         for w in self.weekdays)):
            return False
        if self.days_of_month:
            last = calendar.monthrange(t.year, t.month)[1]

            def day(n: int) -> int:
                return n if n > 0 else last + 1 + n

            if not any(day(a) <= t.day <= day(b) for a, b in (_range(d, None, 1, 31, True) for d in self.days_of_month)):
                return False
        if self.months and not any(a <= t.month <= b for a, b in (_range(m, MONTHS, 1, 12) for m in self.months)):
            return False
        return not self.years or any(a <= t.year <= b for a, b in (_range(y, None, 1970, 9999) for y in self.years))


class TimeIntervalConfig(Model):
    """``time_intervals:`` entry: a name and its entries (Alertmanager's keys)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    time_intervals: list[TimeSpec] = Field(min_length=1)


def interval_matcher(cfg: TimeIntervalConfig, tz: ZoneInfo) -> Callable[[float], bool]:
    specs = list(cfg.time_intervals)
    return lambda ts: any(s.holds(ts, tz) for s in specs)


class TimeIntervals:
    """Named intervals of a collector: ``holds(name, ts)``; ``working_hours`` built in."""

    def __init__(self, configs: list[TimeIntervalConfig], timezone: str, hours: WorkingHours | None = None):
        tz = ZoneInfo(timezone)
        self._by_name: dict[str, Callable[[float], bool]] = {}
        if hours is not None:
            self._by_name[BUILTIN] = hours.contains
        for c in configs:
            self._by_name[c.name] = interval_matcher(c, tz)

    def names(self) -> set[str]:
        return set(self._by_name)

    def holds(self, name: str, ts: float) -> bool:
        check = self._by_name.get(name)
        return bool(check and check(ts))

    def muted(self, mute: list[str] | tuple[str, ...], active: list[str] | tuple[str, ...], ts: float) -> bool:
        """A route is muted while a mute interval holds, or while it has active intervals and none holds."""
        if any(self.holds(n, ts) for n in mute):
            return True
        return bool(active) and not any(self.holds(n, ts) for n in active)
