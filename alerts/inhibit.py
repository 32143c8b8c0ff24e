"""Inhibition: a firing source alert hides matching target alerts with equal labels.

Like Alertmanager's ``inhibit_rules``: ``AgentDown`` hides the ``DeviceDown``
alerts of the same agent, ``UPSOnBattery`` hides input-voltage alerts of the
same UPS, ``RoomTemperatureCritical`` hides ``RoomTemperatureHigh`` of the
same sensor. A hidden alert stays visible in the API (with ``inhibitedBy``)
but is not notified. A label missing on both sides counts as equal.
"""

from __future__ import annotations

from collections.abc import Iterable

from alerts.model import FIRING, Alert
from alerts.rules import InhibitRule

__all__ = ["Inhibitor"]


class Inhibitor:
    """Computes, for a set of active alerts, which are inhibited and by whom (cached per engine version)."""

    def __init__(self, rules: list[InhibitRule]):
        self.rules = rules
        self._cache_key: object = None
        self._cache: dict[str, str] = {}

    def compute(self, alerts: Iterable[Alert], version: object = None) -> dict[str, str]:
        """fp of each inhibited alert → fp of the alert that inhibits it."""
        if version is not None and version == self._cache_key:
            return self._cache
        alerts = list(alerts)
        out: dict[str, str] = {}
        for rule in self.rules:
            sources: dict[tuple[str, ...], str] = {}
            for a in alerts:
                if a.state == FIRING and all(m.matches(a.labels) for m in rule.source):
                    sources.setdefault(tuple(a.labels.get(k, "") for k in rule.equal), a.fp)
            if not sources:
                continue
            for a in alerts:
                if a.fp in out or not all(m.matches(a.labels) for m in rule.target):
                    continue
                src = sources.get(tuple(a.labels.get(k, "") for k in rule.equal))
                if src is not None and src != a.fp:
                    out[a.fp] = src
        self._cache_key, self._cache = version, out
        return out
