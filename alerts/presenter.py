"""The alerting API's JSON: alerts (active and past) and silences as ``/api/v1/alerts*`` and ``/api/v1/silences`` answer.

:class:`AlertPresenter` reads the engine's active alerts, the store's history,
the silences and the inhibitions, and writes them in the shape docs/api.md
describes; it changes nothing (the commands are :mod:`roomwatch.alerts.commands`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from roomwatch.alerts.engine import RuleEngine
from roomwatch.alerts.fallback import note
from roomwatch.alerts.inhibit import Inhibitor
from roomwatch.alerts.model import FIRING, Alert
from roomwatch.alerts.render import Renderer
from roomwatch.alerts.silences import SilenceStore
from roomwatch.alerts.store import AlertStore
from roomwatch.alerts.templates import ack_url

__all__ = ["AlertPresenter"]

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


class AlertPresenter:
    """Alert and silence JSON for the API and the status page."""

    def __init__(self, engine: RuleEngine, store: AlertStore, silences: SilenceStore, inhibitor: Inhibitor,
                 renderer: Renderer, clock: Callable[[], float]):
        self.engine = engine
        self.store = store
        self.silences = silences
        self.inhibitor = inhibitor
        self.renderer = renderer
        self.clock = clock

    def inhibited(self) -> dict[str, str]:
        """Fingerprint of each inhibited active alert → the fingerprint of the alert inhibiting it."""
        return self.inhibitor.compute(self.engine.active.values(), self.engine.version)

    def alert_json(self, a: Alert, now: float, inhibited: dict[str, str], lang: str | None = None) -> dict[str, Any]:
        """One alert for the API; annotations and notes in ``lang`` (default: the configured language)."""
        silenced = self.silences.silenced_by(a.labels, now)
        return {
            "id": a.id,
            "fingerprint": a.fp,
            "alertname": a.name,
            "state": a.state,
            "severity": a.severity,
            "labels": a.labels,
            "annotations": self.renderer.annotations(a, lang),
            "value": a.value,
            "activeSince": a.active_since,
            "firedAt": a.fired_at,
            "acknowledged": a.ack_at is not None,
            "ack": _ack_json(a),
            "silencedBy": silenced,
            "inhibitedBy": [self._id_of(inhibited[a.fp])] if a.fp in inhibited else [],
            "url": ack_url(self.renderer.external_url, a.id),
            "fallback": self.fallback_json(a, lang),
        }

    def alert(self, a: Alert) -> dict[str, Any]:
        """One alert as it is now (e.g. the answer to an acknowledgement)."""
        return self.alert_json(a, self.clock(), self.inhibited())

    def fallback_json(self, a: Alert, lang: str | None = None) -> dict[str, Any] | None:
        """What the agent's local fallback already sent for ``a`` (None: nothing), with a note for people."""
        fb = a.fallback
        if fb is None:
            return None
        return {"channel": fb.get("channel", ""), "channelType": fb.get("channel_type", ""),
                "firingAt": fb["firing_at"], "resolvedAt": fb.get("resolved_at"), "message": fb.get("message", ""),
                "note": note(fb, lang or self.renderer.lang, self.renderer.tz)}

    def list_alerts(self, now: float | None = None, lang: str | None = None) -> list[dict[str, Any]]:
        """Active alerts, firing before pending, then by severity, newest first."""
        now = self.clock() if now is None else now
        inhibited = self.inhibited()
        alerts = sorted(self.engine.active.values(),
                        key=lambda a: (a.state != FIRING, _SEVERITY_ORDER.get(a.severity, 3), -a.active_since))
        return [self.alert_json(a, now, inhibited, lang) for a in alerts]

    def history(self, since: float, until: float) -> list[dict[str, Any]]:
        """Past and present episodes active between ``since`` and ``until`` (``/api/v1/alerts/history``)."""
        return [{"id": a.id, "fingerprint": a.fp, "alertname": a.name, "severity": a.severity, "labels": a.labels,
                 "state": a.state,
                 "activeSince": a.active_since, "firedAt": a.fired_at, "resolvedAt": a.resolved_at,
                 "ack": _ack_json(a), "fallback": self.fallback_json(a)}
                for a in self.store.history(since, until)]

    def silences_json(self, now: float | None = None) -> list[dict[str, Any]]:
        """Active, pending and recently expired silences."""
        now = self.clock() if now is None else now
        return [s.to_json(now) for s in self.silences.listing(now)]

    def _id_of(self, fp: str) -> str:
        a = self.engine.active.get(fp)
        return a.id if a is not None else fp


def _ack_json(a: Alert) -> dict[str, Any] | None:
    if a.ack_at is None:
        return None
    return {"by": a.ack_by, "at": a.ack_at, "comment": a.ack_comment, "via": a.ack_via or "login",
            "channel": a.ack_channel or None}
