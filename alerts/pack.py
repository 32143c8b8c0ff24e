"""The default rule pack (``alerts/defaults.yaml``) as plain data, for the agent's local fallback.

The collector compiles the pack with its config models (:mod:`roomwatch.alerts.rules`).
The agent's local fallback alerting (``agent/fallback.py``) sends a few of the same
alerts itself while its link is down; it reads them from the same file through this
module, so names, thresholds, ``for`` durations and the zh-CN/en summaries have one
source. Which alerts it sends is the pack's ``local_fallback:`` list.

Kept small on purpose: this module imports YAML, the threshold expressions
(:mod:`roomwatch.alerts.conditions`, standard library only) and the duration parser
the agent's config already loaded — no pydantic model of the rules, no engine — so
an agent does not pay the alert engine's memory (``bench agent_footprint``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from roomwatch.alerts.conditions import Expr, parse_expr
from roomwatch.core.configbase import parse_duration

__all__ = ["DEFAULTS_FILE", "LOCAL_FALLBACK_KEY", "PackRule", "local_fallback_rules"]

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
#: The pack's top-level list of the alerts an agent sends itself while it reaches no collector.
LOCAL_FALLBACK_KEY = "local_fallback"


@dataclass(frozen=True, slots=True)
class PackRule:
    """One single-condition rule of the pack."""

    alert: str
    severity: str
    metric: str
    when: Expr
    clear: Expr | None
    for_: float
    summary: Mapping[str, str]  # language → text

    def active(self, value: float, was_active: bool) -> bool:
        """The condition holds for ``value``: ``when`` is true, or it was active and ``clear`` is not yet."""
        if self.when.test(value):
            return True
        return was_active and self.clear is not None and not self.clear.test(value)


@functools.cache
def _pack() -> dict[str, Any]:
    with DEFAULTS_FILE.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{DEFAULTS_FILE}: not a mapping")
    return data


def _rule(r: Mapping[str, Any]) -> PackRule:
    if "metric" not in r:
        raise ValueError(f"{DEFAULTS_FILE}: {r.get('alert')} has no single metric; the local fallback cannot send it")
    clear = r.get("clear")
    summary = (r.get("annotations") or {}).get("summary") or {}
    return PackRule(str(r["alert"]), str(r.get("severity", "warning")), str(r["metric"]), parse_expr(r["when"]),
                    parse_expr(clear) if clear is not None else None, parse_duration(r.get("for", "0s")),
                    {str(k): str(text) for k, text in summary.items()})


def local_fallback_rules() -> list[PackRule]:
    """The rules named in the pack's ``local_fallback:`` list, in its order."""
    data = _pack()
    by_name = {r["alert"]: r for r in data.get("rules", [])}
    names = data.get(LOCAL_FALLBACK_KEY, [])
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"{DEFAULTS_FILE}: {LOCAL_FALLBACK_KEY} names no rule {', '.join(missing)}")
    return [_rule(by_name[name]) for name in names]
