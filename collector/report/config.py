"""The ``report:`` section of the collector file (daily inspection report).

Working hours and the temperature/humidity limits come from the rules
(``rules.working_hours`` with its holidays and make-up workdays, and the default
pack's ``RoomTemperatureHigh``, ``RoomTemperatureCritical`` and
``RoomHumidityOutOfRange`` after ``rules.overrides``), so the report measures
what the alerts watch; the report's own keys only override them when set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from roomwatch.alerts.timewindow import WorkingHours
from roomwatch.core.configbase import Duration, Model, TimeZoneName

if TYPE_CHECKING:
    from roomwatch.alerts.config import RulesConfig

__all__ = ["ReportConfig", "ReportLimits", "parse_hhmm"]

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_hhmm(text: str) -> tuple[int, int]:
    """``"08:30"`` → (8, 30)."""
    m = _HHMM.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a time of day; write HH:MM such as 08:00")
    return int(m.group(1)), int(m.group(2))


#: The default pack's limits (alerts/defaults.yaml), used when a rule is disabled or its ``when``
#: has no plain threshold of that side (an ``any_of`` rule, ``== 1`` …).
_PACK_LIMITS = {"temperature_high": 27.0, "temperature_critical": 32.0, "humidity_low": 0.20, "humidity_high": 0.80}


class ReportThresholds(Model):
    """Limits the report measures "time outside" against; unset: the rules' limits."""

    temperature_high: float | None = Field(default=None, description="°C; default: RoomTemperatureHigh's threshold")
    temperature_critical: float | None = Field(default=None, description="°C; default: RoomTemperatureCritical's")
    humidity_low: float | None = Field(default=None, ge=0, le=1, description="default: RoomHumidityOutOfRange's low side")
    humidity_high: float | None = Field(default=None, ge=0, le=1, description="default: its high side")
    battery_max_age: Duration = Field(default=3 * 365 * 86400.0, gt=0, description="replace VRLA batteries after this")


@dataclasses.dataclass(frozen=True, slots=True)
class ReportLimits:
    """What the report measures against, resolved from the rules and the report's overrides."""

    hours: WorkingHours
    temperature_high: float
    temperature_critical: float
    humidity_low: float
    humidity_high: float
    battery_max_age: float


def _rule_limits(rules: RulesConfig) -> dict[str, float]:
    """Thresholds of the default pack's temperature and humidity rules, after ``rules.overrides``."""
    from roomwatch.alerts.conditions import parse_expr
    from roomwatch.alerts.rules import rule_configs

    found: dict[str, float] = {}
    by_uid = dict(rule_configs(rules))  # enabled rules only

    def sides(name: str) -> dict[str, float]:
        r = by_uid.get(f"defaults:{name}")
        out: dict[str, float] = {}
        if r is None or not r.when:
            return out
        for group in parse_expr(r.when).groups:
            if len(group) == 1:  # "> 27", "< 0.2 or > 0.8": one comparison per alternative
                op, number = group[0]
                side = "high" if op in (">", ">=") else "low" if op in ("<", "<=") else ""
                if side:
                    out.setdefault(side, number)
        return out

    if "high" in (s := sides("RoomTemperatureHigh")):
        found["temperature_high"] = s["high"]
    if "high" in (s := sides("RoomTemperatureCritical")):
        found["temperature_critical"] = s["high"]
    s = sides("RoomHumidityOutOfRange")
    for side in ("low", "high"):
        if side in s:
            found[f"humidity_{side}"] = s[side]
    return found


class ReportConfig(Model):
    """When and where the daily report goes."""

    enabled: bool = True
    time: str = Field(default="08:00", description="local time of day the report is sent (HH:MM)")
    timezone: TimeZoneName = "Asia/Shanghai"
    #: Channel names. Empty: the routes decide, as for an alert labelled alertname=DailyReport, severity=info.
    channels: list[str] = Field(default_factory=list)
    #: zh-CN or en; empty = web.language.
    language: str | None = Field(default=None, pattern=r"^(zh-CN|en)$")
    working_days: list[str] | None = Field(default=None, description="default: rules.working_hours.days")
    working_hours: str | None = Field(default=None, description="HH:MM-HH:MM; default: rules.working_hours start-end")
    thresholds: ReportThresholds = Field(default_factory=ReportThresholds)
    title: str = Field(default="", description="shown first, e.g. the office's name; default: the sites in the report")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_hhmm(value)
        return value.strip()

    @field_validator("working_days")
    @classmethod
    def _days(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for d in value:
            if d.lower() not in _DAYS:
                raise ValueError(f"{d!r} is not a day; use mon, tue, wed, thu, fri, sat, sun")
        return [d.lower() for d in value]

    @field_validator("working_hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is None:
            return None
        start, sep, end = value.partition("-")
        if not sep:
            raise ValueError(f"{value!r}: write the working hours as HH:MM-HH:MM, e.g. 08:30-17:30")
        if parse_hhmm(start) >= parse_hhmm(end):
            raise ValueError(f"{value!r}: the end must come after the start")
        return value.strip()

    def limits(self, rules: RulesConfig | None = None) -> ReportLimits:
        """Working hours and limits: the rules' (``RulesConfig()`` when None), with this section's overrides.

        Working hours keep the rules' time zone, holidays and make-up workdays even when
        ``working_days``/``working_hours`` override the days or the times.
        """
        if rules is None:
            from roomwatch.alerts.config import RulesConfig

            rules = RulesConfig()
        hours = WorkingHours.from_config(rules.working_hours, rules.timezone)
        if self.working_days is not None:
            hours = dataclasses.replace(hours, days=frozenset(_DAYS.index(d) for d in self.working_days))
        if self.working_hours is not None:
            start, _, end = self.working_hours.partition("-")
            hours = dataclasses.replace(hours, start=dt.time(*parse_hhmm(start)), end=dt.time(*parse_hhmm(end)))
        values = {**_PACK_LIMITS, **_rule_limits(rules)}
        th = self.thresholds
        for key in _PACK_LIMITS:
            if getattr(th, key) is not None:
                values[key] = getattr(th, key)
        return ReportLimits(hours, battery_max_age=th.battery_max_age, **values)

    def zone(self) -> Any:
        return ZoneInfo(self.timezone)
