"""Truth files of device recordings, with the quantities the shared format does not record.

A truth file (``<fixtures>/devices/truth/<name>.json``, or a hand-written
``tests/data/<protocol>/<name>.json``) says what a correct monitor reports for
one recording. The shared files have no key for some quantities roomwatch
reads (UPS output voltage, battery install date); ``tests/data/truth-supplement.json``
gives those, read by hand from the same recordings in the same entry format,
so the recording tests can hold every reading a driver emits against a truth
value (a reading with no truth entry counts as invented).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

SUPPLEMENT = Path(__file__).parent / "data" / "truth-supplement.json"

#: The supplement's key for the battery's install date; roomwatch_ups_battery_age_seconds is the time since.
BATTERY_INSTALLED = "battery_installed_date"
#: Keys only the supplement (or a hand-written truth file) has: the shared format cannot say them.
SUPPLEMENT_KEYS = ("output_voltage_v", BATTERY_INSTALLED)
#: Tolerance of the battery age: the driver counts from midnight UTC of the date, the test reads the clock later.
BATTERY_AGE_TOLERANCE_S = 86_400.0


def _supplement() -> dict[str, dict[str, Any]]:
    return dict(json.loads(SUPPLEMENT.read_text(encoding="utf-8"))["devices"])


def load_truth(path: Path) -> dict[str, Any]:
    """The truth file at ``path`` with the supplement's entries for its recording added to ``metrics``.

    A key both have must agree (a stale supplement entry is an error, not silently shadowed)."""
    truth: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    metrics = truth.setdefault("metrics", {})
    extra = _supplement().get(path.stem)
    truth["supplemented"] = extra is not None
    for key, entry in (extra or {}).items():
        own = metrics.get(key)
        if own is not None and own.get("value") != entry.get("value"):
            raise AssertionError(f"{path.name}: {key} is {own.get('value')!r} there but {entry.get('value')!r} in "
                                 f"{SUPPLEMENT.name}; fix or drop the supplement entry")
        metrics.setdefault(key, entry)
    return truth


def judges(truth: dict[str, Any], key: str) -> bool:
    """Whether ``truth`` can say anything about ``key``.

    A supplement-only key is judged for a recording the supplement (or its own truth file)
    covers. A recording added to the shared folder later has no such entry yet: its output
    voltage or battery age is then neither confirmed nor called invented, so a new recording
    is still tested without code changes (every key of the shared format stays strict)."""
    return key not in SUPPLEMENT_KEYS or key in truth.get("metrics", {}) or truth.get("supplemented", False)


def battery_age_seconds(entry: dict[str, Any], now: dt.datetime | None = None) -> float:
    """Expected battery age for a ``battery_installed_date`` entry: seconds since that date's midnight UTC."""
    installed = dt.date.fromisoformat(str(entry["value"]))
    start = dt.datetime.combine(installed, dt.time(0, 0), tzinfo=dt.UTC)
    return ((now or dt.datetime.now(dt.UTC)) - start).total_seconds()
