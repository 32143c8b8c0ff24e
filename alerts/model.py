"""The alert object and its identity.

One alert identity (``fp``, the fingerprint) per rule and label set: the
same condition on the same series is the same alert across restarts. An
alert goes pending → firing → resolved; each pass is an *episode* (a row in
the store), so history keeps every occurrence. The API, ack links and acks name
one episode (:attr:`Alert.id`, ``<fingerprint>-<episode>``), so acknowledging
from an old message cannot silence a later incident of the same rule and labels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FIRING", "PENDING", "RESOLVED", "Alert", "fingerprint"]

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"


def fingerprint(labels: dict[str, str], salt: str = "") -> str:
    """16 hex digits, stable for a label set (Alertmanager's fingerprints are 64-bit too)."""
    h = hashlib.blake2b(digest_size=8)
    for k in sorted(labels):
        h.update(k.encode())
        h.update(b"\x00")
        h.update(labels[k].encode())
        h.update(b"\x01")
    if salt:
        h.update(b"\x02" + salt.encode())
    return h.hexdigest()


@dataclass(slots=True, eq=False)
class Alert:
    fp: str
    name: str
    rule_uid: str
    severity: str
    labels: dict[str, str]  # series labels + rule labels + alertname + severity
    series_labels: dict[str, str]
    metric: str  # the metric (or event type) whose condition holds
    state: str
    active_since: float  # Unix seconds the condition started to hold (sample time)
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    ack_by: str | None = None
    ack_at: float | None = None
    ack_comment: str = ""
    #: how it was acknowledged: "login" (status page, API), "link" (one-tap link), "sms" (reply), "dingtalk" …
    ack_via: str = ""
    ack_channel: str = ""  # the channel the link or reply came through, where known
    episode: int | None = None  # store row id
    resolve_reason: str = ""  # "", "no data", "rule removed"
    #: set when the agent's local fallback already told people (alerts/fallback.py): channel, channel_type,
    #: firing_at, since, resolved_at, message
    fallback: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fallback_resolved(self) -> bool:
        """The agent's local fallback already sent this episode's resolution."""
        return self.fallback is not None and bool(self.fallback.get("resolved_at"))

    @property
    def id(self) -> str:
        """``<fingerprint>-<episode>``: this episode (the bare fingerprint before it is first stored)."""
        return self.fp if self.episode is None else f"{self.fp}-{self.episode}"

    @property
    def acked(self) -> bool:
        return self.ack_at is not None

    def to_row(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fp, "rule": self.rule_uid, "alertname": self.name, "severity": self.severity,
            "labels": json.dumps(self.labels, sort_keys=True, ensure_ascii=False),
            "series_labels": json.dumps(self.series_labels, sort_keys=True, ensure_ascii=False),
            "metric": self.metric, "state": self.state, "active_since": self.active_since, "fired_at": self.fired_at,
            "resolved_at": self.resolved_at, "value": self.value, "ack_by": self.ack_by, "ack_at": self.ack_at,
            "ack_comment": self.ack_comment, "ack_via": self.ack_via or None, "ack_channel": self.ack_channel or None,
            "resolve_reason": self.resolve_reason,
            "fallback": None if self.fallback is None else json.dumps(self.fallback, sort_keys=True, ensure_ascii=False),
        }

    @classmethod
    def from_row(cls, row: Any) -> Alert:
        return cls(
            fp=row["fingerprint"], name=row["alertname"], rule_uid=row["rule"], severity=row["severity"],
            labels=json.loads(row["labels"]), series_labels=json.loads(row["series_labels"]), metric=row["metric"],
            state=row["state"], active_since=row["active_since"], fired_at=row["fired_at"],
            resolved_at=row["resolved_at"], value=row["value"], ack_by=row["ack_by"], ack_at=row["ack_at"],
            ack_comment=row["ack_comment"] or "", ack_via=row["ack_via"] or "", ack_channel=row["ack_channel"] or "",
            episode=row["id"], resolve_reason=row["resolve_reason"] or "",
            fallback=json.loads(row["fallback"]) if row["fallback"] else None,
        )
