"""Readings that are not believed: the drop counter and its log-once rule, shared by every driver.

A device value that lies outside its quantity's physical range (the table
``RANGES`` in :mod:`roomwatch.core.vocabulary`), equals a "no reading" sentinel its
profile declares (−273, 65535, 9999 minutes …) or is not a number at all is
*absent*: never 0, never clamped. Each such drop is counted per device,
metric and reason — ``roomwatch_device_readings_dropped_total`` — and logged
once per device and metric, so a card that sends tenths of volts in a volts
object says so in the log the first time instead of at every poll.

Drivers that choose among several objects for one quantity (SNMP profiles,
NUT's variables) check the range themselves, so that a later object can stand
in for an implausible earlier one. The agent checks every reading of every
driver once more (:func:`screen`), so a driver that forgets cannot let a
2313 V input voltage through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import Reading

__all__ = ["REASONS", "Drops", "screen"]

#: Why a reading was left out (the ``reason`` label).
REASONS = ("out_of_range", "sentinel", "invalid")

_log = logging.getLogger("roomwatch.drivers.plausible")


class Drops:
    """The dropped readings of one device: counts by (metric, reason), and which ones were logged."""

    __slots__ = ("_logged", "counts", "device", "log")

    def __init__(self, device: str, log: logging.Logger | None = None):
        self.device = device
        self.log = log or _log
        self.counts: dict[tuple[str, str], int] = {}
        self._logged: set[str] = set()

    def add(self, metric: str, reason: str, raw: Any = None, detail: str = "") -> None:
        """Count one dropped reading; the first drop of ``metric`` on this device is logged."""
        assert reason in REASONS, reason
        key = (metric, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        if metric in self._logged:
            return
        self._logged.add(metric)
        bounds = v.RANGES.get(metric)
        why = {"out_of_range": f"outside {bounds[0]:g}..{bounds[1]:g}" if bounds else "out of range",
               "sentinel": "the device's value for \"no reading\"",
               "invalid": "not a number"}[reason]
        shown = f"{raw!r}"[:60] if raw is not None else "?"
        # A sentinel is the device saying "I have no such probe": expected, so only INFO.
        level = logging.INFO if reason == "sentinel" else logging.WARNING
        self.log.log(level, "device %s: %s = %s left out (%s%s); later ones are only counted in "
                     "roomwatch_device_readings_dropped_total", self.device, metric, shown, why,
                     f"; {detail}" if detail else "")

    def readings(self) -> list[Reading]:
        """The counters as readings (the agent sends them with the device's health series)."""
        return [Reading(v.DEVICE_READINGS_DROPPED, float(n), {"metric": m, "reason": r})
                for (m, r), n in sorted(self.counts.items())]


def screen(readings: Iterable[Reading], drops: Drops) -> list[Reading]:
    """``readings`` without those outside their metric's physical range (each counted in ``drops``).

    Cost: one dict lookup per reading, two comparisons for the metrics that have a range.
    """
    ranges = v.RANGES
    out: list[Reading] = []
    for r in readings:
        bounds = ranges.get(r.metric)
        if bounds is not None and not bounds[0] <= r.value <= bounds[1]:
            drops.add(r.metric, "out_of_range", r.value)
            continue
        out.append(r)
    return out
