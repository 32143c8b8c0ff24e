"""What every UPS driver (SNMP, NUT, Modbus) shares: the battery-age option and its reading.

Lead-acid (VRLA) batteries in a warm room last 3–5 years; few UPS units
know when theirs were installed, so the config can say it and the agent
turns it into ``roomwatch_ups_battery_age_seconds`` for a rule to warn on.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import DeviceConfig, Reading

__all__ = ["UpsDeviceConfig", "battery_age_reading"]


class UpsDeviceConfig(DeviceConfig):
    """Options common to UPS devices, whatever the protocol."""

    battery_installed: dt.date | None = Field(
        default=None, description="date the battery was installed or last replaced (YYYY-MM-DD)")


def battery_age_reading(installed: dt.date | None, now: dt.datetime | None = None) -> Reading | None:
    """Age of the battery as a reading, or None when the install date is unknown (never a made-up 0)."""
    if installed is None:
        return None
    now = now or dt.datetime.now(dt.UTC)
    start = dt.datetime.combine(installed, dt.time(0, 0), tzinfo=dt.UTC)
    return Reading(v.UPS_BATTERY_AGE, max(0.0, (now - start).total_seconds()))
