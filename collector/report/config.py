"""The ``report:`` section of the collector file (daily inspection report)."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from roomwatch.configbase import Duration, Model, TimeZoneName

__all__ = ["ReportConfig", "parse_hhmm"]

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_hhmm(text: str) -> tuple[int, int]:
    """``"08:30"`` → (8, 30)."""
    m = _HHMM.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a time of day; write HH:MM such as 08:00")
    return int(m.group(1)), int(m.group(2))


class ReportThresholds(Model):
    """Limits the report measures "time outside" against; the default rule pack's values (RULES.md)."""

    temperature_high: float = Field(default=27.0, description="°C; ASHRAE recommended maximum for IT inlet air")
    temperature_critical: float = 32.0
    humidity_low: float = Field(default=0.20, ge=0, le=1)
    humidity_high: float = Field(default=0.80, ge=0, le=1)
    battery_max_age: Duration = Field(default=3 * 365 * 86400.0, gt=0, description="replace VRLA batteries after this")


class ReportConfig(Model):
    """When and where the daily report goes."""

    enabled: bool = True
    time: str = Field(default="08:00", description="local time of day the report is sent (HH:MM)")
    timezone: TimeZoneName = "Asia/Shanghai"
    #: Channel names. Empty: the routes decide, as for an alert labelled alertname=DailyReport, severity=info.
    channels: list[str] = Field(default_factory=list)
    #: zh-CN or en; empty = web.language.
    language: str | None = Field(default=None, pattern=r"^(zh-CN|en)$")
    working_days: list[str] = Field(default_factory=lambda: list(_DAYS[:5]))
    working_hours: str = Field(default="08:30-17:30", description="door openings outside count as out of hours")
    thresholds: ReportThresholds = Field(default_factory=ReportThresholds)
    title: str = Field(default="", description="shown first, e.g. the office's name; default: the sites in the report")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_hhmm(value)
        return value.strip()

    @field_validator("working_days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        for d in value:
            if d.lower() not in _DAYS:
                raise ValueError(f"{d!r} is not a day; use mon, tue, wed, thu, fri, sat, sun")
        return [d.lower() for d in value]

    @field_validator("working_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        start, sep, end = value.partition("-")
        if not sep:
            raise ValueError(f"{value!r}: write the working hours as HH:MM-HH:MM, e.g. 08:30-17:30")
        if parse_hhmm(start) >= parse_hhmm(end):
            raise ValueError(f"{value!r}: the end must come after the start")
        return value.strip()

    def weekdays(self) -> set[int]:
        """Working days as Python weekday numbers (Monday = 0)."""
        return {_DAYS.index(d) for d in self.working_days}

    def hours(self) -> tuple[tuple[int, int], tuple[int, int]]:
        start, _, end = self.working_hours.partition("-")
        return parse_hhmm(start), parse_hhmm(end)

    def zone(self) -> Any:
        return ZoneInfo(self.timezone)
