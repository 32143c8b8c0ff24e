"""What every notification channel shares: the message handed to it, its outcome, its registry.

A channel module defines a config model (subclass of
:class:`roomwatch.channels.config.ChannelBase` with ``type: Literal["name"]``) and a
:class:`Channel` subclass with one ``async send``. Retry with backoff, the
persistent outbox, grouping and templating live in shared code, not in channels;
a channel only says what the service answered: delivered, retry later, or give up
(Alertmanager's (retry, error) pair).
"""

from __future__ import annotations

import abc
import builtins
import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from roomwatch.channels.config import ChannelBase

__all__ = ["PROGRESS", "AlertItem", "Channel", "Notification", "Outcome", "SendResult", "channel_types",
           "get_channel_type", "register_channel", "remember_progress"]

#: Key of ``Notification.extra`` under which a retried notification carries what earlier attempts achieved.
PROGRESS = "progress"


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    #: Delivered to some recipients; the others can never get it (unknown member, invalid or blacklisted number):
    #: not retried, but not a success either, so it is counted apart and the channel logs who was missed.
    PARTIAL = "partial"
    RETRY = "retry"  # 5xx, timeout, connection error, rate limited, token expired (after one refresh)
    GIVE_UP = "give_up"  # 4xx, bad signature, bad config: retrying will not help


@dataclass(slots=True)
class SendResult:
    outcome: Outcome
    detail: str = ""  # the service's reply, secrets removed; shown by `roomwatch test-alert`
    retry_after: float | None = None  # seconds, when the service said
    #: With RETRY: what this notification's next attempt must know (e.g. the recipients who already got it and
    #: those still to reach), JSON-able. The sender keeps it with the queued notification (Notification.extra
    #: [PROGRESS], see :func:`remember_progress`), so a retry, even after a restart, sends only what is missing.
    #: A non-empty list under ``"reached"`` (who got it) tells the outbox the channel works and only some
    #: recipients wait: their retries are no failure streak and do not hold back later notifications.
    progress: dict[str, Any] | None = None


@dataclass(slots=True)
class AlertItem:
    """One alert inside a notification (Alertmanager's alert object)."""

    id: str  # fingerprint: stable for rule + label set
    status: str  # firing | resolved
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime | None = None
    value: float | None = None
    generator_url: str = ""


@dataclass(slots=True)
class Notification:
    """What a channel sends: a group of alerts plus the text already rendered for people."""

    group_key: str
    status: str  # firing | resolved (firing if any alert of the group fires)
    receiver: str  # channel name
    alerts: list[AlertItem]
    title: str  # short line (SMS first line, e-mail subject, markdown title)
    text: str  # plain text for SMS/WeChat text messages, in the configured language
    markdown: str = ""  # for channels that render markdown (WeCom, DingTalk, Feishu post)
    group_labels: Mapping[str, str] = field(default_factory=dict)
    common_labels: Mapping[str, str] = field(default_factory=dict)
    common_annotations: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    reason: str = "firing"  # firing | resolved | repeat | escalation | test
    level: int = 0  # escalation level that produced it
    extra: dict[str, Any] = field(default_factory=dict)


def remember_progress(n: Notification, result: SendResult) -> bool:
    """Keep a RETRY's progress with ``n`` for its next attempt; True when ``n`` changed (store it again)."""
    if result.outcome is not Outcome.RETRY or result.progress is None:
        return False
    n.extra[PROGRESS] = result.progress
    return True


class Channel(abc.ABC):
    """Base of every channel type."""

    type: ClassVar[str]
    config_model: ClassVar[builtins.type[ChannelBase]]  # builtins: `type` here is the ClassVar above
    #: Default service limit: (messages, per seconds); the shared sender keeps to it as a sliding window.
    rate_limit: ClassVar[tuple[int, float] | None] = None
    #: Longer windows the service enforces at the same time (e.g. 1000 per hour besides 30 per minute);
    #: the sender keeps to every one of them and to ``rate_limit``.
    more_rate_limits: ClassVar[tuple[tuple[int, float], ...]] = ()
    #: Largest message body the service accepts, in bytes of UTF-8 (texts are cut to fit).
    max_bytes: ClassVar[int | None] = None
    #: Re-send the firing alerts of a group this often even when nothing changed and they are
    #: acknowledged (a receiver that expires alerts, such as Alertmanager's API); None = never.
    resend_interval: float | None = None
    #: Which id of a person on duty this channel addresses when a rota target names one (``phone``, ``wecom``,
    #: ``dingtalk``, ``email``, or ``"phone|dingtalk"`` for either; docs/oncall.md); None: it cannot (a webhook).
    person_key: ClassVar[str | None] = None
    #: It rings a phone: not used for a resolution, and a queued call for alerts acknowledged meanwhile is dropped.
    calls: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config
        self.name: str = config.name

    @abc.abstractmethod
    async def send(self, notification: Notification) -> SendResult:
        """Deliver one notification; never raise for service errors, return the outcome."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions, serial ports."""


_TYPES: dict[str, type[Channel]] = {}


def register_channel(cls: type[Channel]) -> type[Channel]:
    """Class decorator: make a channel type available by its ``type`` name; duplicates are a bug."""
    if cls.type in _TYPES and _TYPES[cls.type] is not cls:
        raise ValueError(f"channel type {cls.type!r} registered twice")
    field = cls.config_model.model_fields.get("type")
    if field is None or getattr(field.annotation, "__args__", None) != (cls.type,):
        raise ValueError(f"{cls.__name__}.config_model must declare type: Literal[{cls.type!r}]")
    _TYPES[cls.type] = cls
    return cls


def _load_builtin() -> None:
    import roomwatch.channels.all  # noqa: F401 - registers every built-in type (cheap: no service library is imported)


def get_channel_type(name: str) -> type[Channel]:
    _load_builtin()
    return _TYPES[name]


def channel_types() -> dict[str, type[Channel]]:
    """Every registered channel type (the built-in modules are imported first)."""
    _load_builtin()
    return dict(_TYPES)
