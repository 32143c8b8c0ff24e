"""Inhibition: a firing source alert hides matching target alerts with equal labels.

Like Alertmanager's ``inhibit_rules``: ``AgentDown`` hides the ``DeviceDown``
alerts of the same agent, ``UPSOnBattery`` hides input-voltage alerts of the
same UPS, ``RoomTemperatureCritical`` hides ``RoomTemperatureHigh`` of the
same sensor. A hidden alert stays visible in the API (with ``inhibitedBy``)
but is not notified. A label missing on both sides counts as equal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from roomwatch.alerts.model import FIRING, Alert
from roomwatch.alerts.rules import InhibitRule

__all__ = ["Inhibitor"]


class _Match(NamedTuple):
    """What one alert is to the rules: source of rule i?, target of rule i?, its ``equal`` labels for rule i."""

    source: tuple[bool, ...]
    target: tuple[bool, ...]
    keys: tuple[tuple[str, ...], ...]


class Inhibitor:
    """Computes, for a set of active alerts, which are inhibited and by whom (cached per engine version).

    An alert's labels never change (its fingerprint is made of them), so whether it is a source or a
    target of each rule is matched once and remembered while it stays active; a recomputation (on every
    alert transition) then walks only the alerts some rule concerns, with no matcher calls. With a
    thousand active alerts that no rule concerns (doors open in many rooms), a recomputation went from
    ~5 ms to a dict lookup per alert (bench/fleet.py profile, BENCHMARKS.md "Profiles").
    """

    def __init__(self, rules: list[InhibitRule]):
        self.rules = rules
        self._cache_key: object = None
        self._cache: dict[str, str] = {}
        self._matches: dict[str, _Match | None] = {}

    def _match(self, a: Alert) -> _Match | None:
        labels = a.labels
        source = tuple(all(m.matches(labels) for m in r.source) for r in self.rules)
        target = tuple(all(m.matches(labels) for m in r.target) for r in self.rules)
        if not any(source) and not any(target):
            return None
        return _Match(source, target, tuple(tuple(labels.get(k, "") for k in r.equal) for r in self.rules))

    def compute(self, alerts: Iterable[Alert], version: object = None) -> dict[str, str]:
        """fp of each inhibited alert → fp of the alert that inhibits it."""
        if version is not None and version == self._cache_key:
            return self._cache
        known = self._matches
        matches: dict[str, _Match | None] = {}  # only the alerts active now: the others are forgotten
        relevant: list[tuple[Alert, _Match]] = []
        for a in alerts:
            m = known[a.fp] if a.fp in known else self._match(a)
            matches[a.fp] = m
            if m is not None:
                relevant.append((a, m))
        self._matches = matches
        out: dict[str, str] = {}
        for i in range(len(self.rules)):
            sources: dict[tuple[str, ...], str] = {}
            for a, m in relevant:
                if a.state == FIRING and m.source[i]:
                    sources.setdefault(m.keys[i], a.fp)
            if not sources:
                continue
            for a, m in relevant:
                if a.fp in out or not m.target[i]:
                    continue
                src = sources.get(m.keys[i])
                if src is not None and src != a.fp:
                    out[a.fp] = src
        self._cache_key, self._cache = version, out
        return out
