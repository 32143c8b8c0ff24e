"""``webhook``: the Alertmanager webhook JSON (version "4") POSTed to a URL.

Any receiver written for Alertmanager's ``webhook_configs`` works unchanged
(the body has exactly Alertmanager 0.25's fields; CHANNELS.md §10). 2xx is
delivered, 5xx/429/timeouts are retried, other statuses are given up.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Literal

from pydantic import Field

from roomwatch.channels.base import AlertItem, Channel, Notification, SendResult, register_channel
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.httputil import HTTPSession

__all__ = ["WebhookChannel", "WebhookSender", "rfc3339", "webhook_body"]

#: Alertmanager writes the zero time.Time for a firing alert's endsAt.
ZERO_TIME = "0001-01-01T00:00:00Z"


class WebhookChannel(ChannelBase):
    """Alertmanager webhook JSON (version 4) POSTed to ``url``."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    max_alerts: int = Field(default=0, ge=0, description="0 = all alerts of a group in one message")


def rfc3339(value: dt.datetime | None) -> str:
    if value is None:
        return ZERO_TIME
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _alert(a: AlertItem) -> dict[str, Any]:
    return {
        "status": a.status,
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": rfc3339(a.starts_at),
        "endsAt": rfc3339(a.ends_at) if a.status == "resolved" else ZERO_TIME,
        "generatorURL": a.generator_url,
        "fingerprint": a.id,
    }


def webhook_body(n: Notification, max_alerts: int = 0) -> dict[str, Any]:
    """The version 4 body; ``max_alerts`` > 0 keeps that many and counts the rest in ``truncatedAlerts``."""
    alerts = list(n.alerts)
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "receiver": n.receiver,
        "status": n.status,
        "alerts": [_alert(a) for a in alerts],
        "groupLabels": dict(n.group_labels),
        "commonLabels": dict(n.common_labels),
        "commonAnnotations": dict(n.common_annotations),
        "externalURL": n.external_url,
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": truncated,
    }


@register_channel
class WebhookSender(Channel):
    type: ClassVar[str] = "webhook"
    config_model = WebhookChannel

    def __init__(self, config: WebhookChannel):
        super().__init__(config)
        self.http = HTTPSession(config.timeout)

    async def send(self, notification: Notification) -> SendResult:
        cfg = self.config
        result, _, _ = await self.http.post_json(cfg.url, webhook_body(notification, cfg.max_alerts))
        return result

    async def close(self) -> None:
        await self.http.close()
