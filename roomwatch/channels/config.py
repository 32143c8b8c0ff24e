"""Config schema of the notification channels: :class:`ChannelBase` and the union of every channel type.

Channel types are a discriminated union on ``type`` built from the channel
registry (:mod:`roomwatch.channels.all` imports every channel module); the union
is built on first use of :data:`ChannelEntry`, so channel modules may import
:class:`ChannelBase` from here without an import cycle. Both the collector's
``channels:`` and the agent's local fallback (``fallback.channels``) use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from roomwatch.core.configbase import Duration, Model

__all__ = ["CHANNEL_MODELS", "ChannelBase", "ChannelEntry", "WebhookChannel"]


class ChannelBase(Model):
    """Options every notification channel has."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    type: str
    send_resolved: bool = True
    timeout: Duration = Field(default=10.0, gt=0)


_UNION: Any = None


def _models() -> tuple[type[ChannelBase], ...]:
    import roomwatch.channels.all  # noqa: F401 - registers the channel types
    from roomwatch.channels.base import channel_types

    return tuple(cls.config_model for _, cls in sorted(channel_types().items()))


def _channel_union() -> Any:
    """The discriminated union of every registered channel's config model (built once)."""
    global _UNION
    if _UNION is None:
        models = _models()
        _UNION = models[0] if len(models) == 1 else Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007
    return _UNION


def __getattr__(name: str) -> Any:  # PEP 562: lazy names that need the channel registry
    if name == "ChannelEntry":
        return _channel_union()
    if name == "CHANNEL_MODELS":
        return _models()
    if name == "WebhookChannel":
        from roomwatch.channels.webhook import WebhookChannel

        return WebhookChannel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    ChannelEntry = ChannelBase
    CHANNEL_MODELS: tuple[type[ChannelBase], ...]
    from roomwatch.channels.webhook import WebhookChannel
