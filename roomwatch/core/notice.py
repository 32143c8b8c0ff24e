"""The ``fallback_notified`` event: the one interface between the agent's local fallback alerting and the
collector's alert engine, defined here once for both sides.

When the agent has reached no collector for ``fallback.after`` it sends critical conditions itself
(``agent/fallback.py``) and records each delivered message as an event in its push::

    {"type": "fallback_notified", "ts": <ms when the channel confirmed>,
     "value": <seconds from the condition's first sample to ts>,
     "labels": {<the condition's series labels: agent, site, room, device, sensor ...>,
                "alertname": "WaterLeak", "status": "firing" | "resolved",
                "channel": "local-sms", "channel_type": "gsm_modem"},
     "message": "<the text that was sent>"}

(``value`` is a duration rather than a time so that the collector's clock-skew correction of
``ts`` corrects the condition's start too.)

**Matching rule** — the one both sides implement through this module:

* *Same alert* (:func:`identity`): the same ``alertname`` and the same *series labels* — the
  event's labels less :data:`META_LABELS`, with ``agent`` set to the pushing agent (an agent
  speaks only for its own alerts). These are exactly the labels the collector's rule engine keys
  an alert on (``alerts/engine.py``: sample labels plus ``agent``), so ``WaterLeak`` of
  ``{agent, site, room, device}`` here is ``WaterLeak`` of the same device there. The agent's
  condition names are the default rule pack's alert names (``UPSOnBattery``, ``UPSBatteryLow``,
  ``WaterLeak``, ``SmokeDetected``, ``RoomTemperatureCritical``).
* *Same episode* (:func:`covers`): the agent's condition begins at the timestamp of the first
  sample showing it (``since``), which is where the collector's alert begins too
  (``active_since``). A ``firing`` notice covers the episode with ``active_since`` from
  ``since - EPISODE_SLACK`` up to :data:`GRACE` after the notice reached the collector (fresh
  samples overtake the spooled backlog, so a temperature alert may begin at the collector only
  when the link returns); an episode that began earlier is another one, which nobody was told
  about. A ``resolved`` notice covers the end of the episode its ``firing`` notice covered.

The agent pushes notices ahead of its other spooled batches (``agent/spool.py``), so the collector
knows before the backlog that would raise the alert arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from roomwatch.core.wire import Batch, EventRecord

__all__ = ["EPISODE_SLACK", "EVENT_TYPE", "GRACE", "META_LABELS", "Notice", "carries_notice", "covers", "identity",
           "notice_event", "parse_notice"]

EVENT_TYPE = "fallback_notified"
#: Labels that describe the notice, not the alert's series.
META_LABELS = ("alertname", "status", "channel", "channel_type")
#: Seconds two starts of one episode may differ (batches get separately measured clock-skew corrections,
#: which the collector applies only beyond 5 s).
EPISODE_SLACK = 6.0
#: Seconds after a notice reached the collector in which an episode may still begin and be covered by it.
GRACE = 120.0

Identity = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class Notice:
    """A parsed ``fallback_notified`` event."""

    alertname: str
    labels: dict[str, str]  # the alert's series labels (agent included)
    status: str  # firing | resolved
    channel: str
    channel_type: str
    ts: float  # Unix seconds the channel confirmed delivery
    since: float  # Unix seconds of the condition's first sample
    message: str = ""

    @property
    def key(self) -> Identity:
        return identity(self.alertname, self.labels)


def identity(alertname: str, series_labels: dict[str, str]) -> Identity:
    """What a notice and an alert must share to be the same alert."""
    return alertname, tuple(sorted(series_labels.items()))


def notice_event(alertname: str, series_labels: dict[str, str], status: str, channel: str, channel_type: str,
                 ts_ms: int, since: float, message: str) -> EventRecord:
    """The event the agent pushes after its own channel delivered a message (``since``: Unix seconds)."""
    labels = {k: v for k, v in series_labels.items() if k not in META_LABELS}
    labels.update(alertname=alertname, status=status, channel=channel, channel_type=channel_type)
    return EventRecord(EVENT_TYPE, labels, ts_ms, round(max(0.0, ts_ms / 1000 - since), 3), message)


def parse_notice(agent_id: str, ev: EventRecord) -> Notice | None:
    """The notice in ``ev`` as pushed by ``agent_id``; None if it is not one or lacks what identifies it."""
    if ev.type != EVENT_TYPE:
        return None
    alertname, status = ev.labels.get("alertname", ""), ev.labels.get("status", "")
    if not alertname or status not in ("firing", "resolved"):
        return None
    labels = {k: v for k, v in ev.labels.items() if k not in META_LABELS}
    if agent_id:
        labels["agent"] = agent_id
    ts = ev.ts / 1000.0
    lasted = ev.value if ev.value is not None and 0 <= ev.value < 10 * 365 * 86400 else 0.0
    return Notice(alertname, labels, status, ev.labels.get("channel", ""), ev.labels.get("channel_type", ""),
                  ts, ts - lasted, ev.message)


def covers(notice: Notice, alertname: str, series_labels: dict[str, str], active_since: float,
           received_at: float) -> bool:
    """Is the alert episode (``alertname``, ``series_labels``, beginning ``active_since``) the one a firing
    ``notice`` that reached the collector at ``received_at`` speaks of?"""
    return (identity(alertname, series_labels) == notice.key
            and notice.since - EPISODE_SLACK <= active_since <= max(notice.ts, received_at) + GRACE)


def carries_notice(batch: Batch) -> bool:
    """True for a batch the agent's outbox should send before everything else."""
    return any(e.type == EVENT_TYPE for e in batch.events)
