"""Working hours in a time zone, for rules such as ``DoorOpenedOutOfHours``.

Working days are weekdays by default; ``holidays`` turn a working day off and
``extra_workdays`` turn a weekend day on — China moves working days around
public holidays (调休), so both are lists of dates the office publishes yearly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

__all__ = ["DAY_NAMES", "WorkingHours", "format_time"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class HoursConfig(Protocol):
    """What :meth:`WorkingHours.from_config` reads (:class:`roomwatch.alerts.config.WorkingHoursConfig` has it)."""

    @property
    def days(self) -> Iterable[str]: ...

    @property
    def start(self) -> dt.time: ...

    @property
    def end(self) -> dt.time: ...

    @property
    def holidays(self) -> Iterable[dt.date]: ...

    @property
    def extra_workdays(self) -> Iterable[dt.date]: ...


@dataclass(frozen=True, slots=True)
class WorkingHours:
    tz: ZoneInfo
    days: frozenset[int]  # 0 = Monday
    start: dt.time
    end: dt.time
    holidays: frozenset[dt.date] = frozenset()
    extra_workdays: frozenset[dt.date] = frozenset()

    @classmethod
    def from_config(cls, cfg: HoursConfig, timezone: str) -> WorkingHours:
        """Build from :class:`roomwatch.alerts.config.WorkingHoursConfig`."""
        return cls(ZoneInfo(timezone), frozenset(DAY_NAMES.index(d) for d in cfg.days), cfg.start, cfg.end,
                   frozenset(cfg.holidays), frozenset(cfg.extra_workdays))

    def is_workday(self, day: dt.date) -> bool:
        if day in self.holidays:
            return False
        return day.weekday() in self.days or day in self.extra_workdays

    def contains(self, ts: float) -> bool:
        """True when Unix time ``ts`` falls inside working hours (local time of ``tz``)."""
        local = dt.datetime.fromtimestamp(ts, self.tz)
        return self.is_workday(local.date()) and self.start <= local.time().replace(tzinfo=None) < self.end


def format_time(ts: float, tz: ZoneInfo) -> str:
    """``2024-11-29 14:03:05`` in the rule time zone (what people on duty read)."""
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")
