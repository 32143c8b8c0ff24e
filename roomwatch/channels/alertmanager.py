"""``alertmanager``: push alerts to Alertmanager's API v2 (``POST /api/v2/alerts``), as Prometheus does.

For users who already route with an Alertmanager cluster: roomwatch evaluates,
Alertmanager groups, silences and notifies. Firing alerts are re-sent every
``resend_interval`` with ``endsAt`` = now + 4 × that interval (Prometheus'
rule), so Alertmanager resolves them by itself if the collector dies; a
resolved alert is sent with its real ``endsAt``. With several ``urls`` (an
Alertmanager cluster) every one is sent to; delivered when any accepted.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from roomwatch.channels.base import AlertItem, Channel, Notification, Outcome, SendResult, register_channel
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.httputil import HTTPSession
from roomwatch.channels.webhook import rfc3339
from roomwatch.core.configbase import Duration

__all__ = ["AlertmanagerChannel", "AlertmanagerSender", "api_alerts"]


class AlertmanagerChannel(ChannelBase):
    """Alertmanager base URLs (``http://alertmanager:9093``); every one receives every alert."""

    type: Literal["alertmanager"]
    urls: list[str] = Field(min_length=1)
    resend_interval: Duration = Field(default=60.0, ge=1, description="re-send firing alerts this often")

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"{u!r} must start with http:// or https://")
        return [u.rstrip("/") for u in urls]


def api_alerts(n: Notification, resend_interval: float, now: float | None = None) -> list[dict[str, Any]]:
    """The API v2 ``postableAlerts`` body for a notification."""
    now = time.time() if now is None else now
    horizon = dt.datetime.fromtimestamp(now + 4 * resend_interval, dt.UTC)
    out = []
    for a in n.alerts:
        out.append(_alert(a, horizon))
    return out


def _alert(a: AlertItem, horizon: dt.datetime) -> dict[str, Any]:
    ends = a.ends_at if a.status == "resolved" and a.ends_at is not None else horizon
    item: dict[str, Any] = {
        "labels": {k: str(v) for k, v in a.labels.items() if v != ""},
        "annotations": dict(a.annotations),
        "startsAt": rfc3339(a.starts_at),
        "endsAt": rfc3339(ends),
    }
    if a.generator_url:
        item["generatorURL"] = a.generator_url
    return item


@register_channel
class AlertmanagerSender(Channel):
    type: ClassVar[str] = "alertmanager"
    config_model = AlertmanagerChannel

    def __init__(self, config: AlertmanagerChannel):
        super().__init__(config)
        self.http = HTTPSession(config.timeout)
        self.resend_interval = config.resend_interval

    async def send(self, notification: Notification) -> SendResult:
        cfg = self.config
        body = api_alerts(notification, cfg.resend_interval)
        results = []
        for i, base in enumerate(cfg.urls):
            result, _, _ = await self.http.post_json(f"{base}/api/v2/alerts", body, what=f"alertmanager[{i}]")
            results.append(result)
        details = "; ".join(r.detail for r in results)
        if any(r.outcome is Outcome.DELIVERED for r in results):
            return SendResult(Outcome.DELIVERED, details)
        if any(r.outcome is Outcome.RETRY for r in results):
            return SendResult(Outcome.RETRY, details)
        return SendResult(Outcome.GIVE_UP, details)

    async def close(self) -> None:
        await self.http.close()
