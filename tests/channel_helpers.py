"""Helpers shared by the channel tests: a notification as the alerting core renders it, the no-leak check."""

from __future__ import annotations

import datetime as dt

import pytest

from roomwatch.channels.base import AlertItem, Notification, SendResult

START = dt.datetime(2024, 7, 1, 2, 30, tzinfo=dt.UTC)  # 10:30 in Beijing


def alert(name: str = "RoomTemperatureHigh", value: float = 31.5, status: str = "firing", **labels: str) -> AlertItem:
    base = {"alertname": name, "severity": "critical", "site": "县政府", "room": "一号机房", "device": "env1"}
    return AlertItem(id=f"fp-{name}", status=status, labels={**base, **labels},
                     annotations={"summary": "机房温度过高", "threshold": "30"}, starts_at=START, value=value)


def notification(text: str = "", *, status: str = "firing", alerts: list[AlertItem] | None = None,
                 markdown: str | None = None, title: str = "【严重】机房温度过高") -> Notification:
    """A rendered group as the core hands it to a channel (Simplified Chinese)."""
    alerts = alerts or [alert(status=status)]
    text = text or ("一号机房 env1 温度 31.5°C，超过阈值 30°C\n开始于 07-01 10:30\n"
                    "确认：roomwatch ack fp-RoomTemperatureHigh")
    md = markdown if markdown is not None else f"### {title}\n> {text}"
    return Notification(group_key="g1", status=status, receiver="test", alerts=alerts, title=title, text=text,
                        markdown=md, common_labels=dict(alerts[0].labels))


def assert_no_leak(secrets: list[str], results: list[SendResult], caplog: pytest.LogCaptureFixture) -> None:
    """No secret in any detail or captured log line (also percent-encoded)."""
    from urllib.parse import quote

    texts = [r.detail for r in results] + [rec.getMessage() for rec in caplog.records]
    for secret in secrets:
        for form in {secret, quote(secret, safe="")}:
            for t in texts:
                assert form not in t, f"secret leaked into {t!r}"
