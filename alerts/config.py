"""Config schema of the alerting side of the collector: rules, channels, routes.

Channel types are a discriminated union on ``type``; each channel module
contributes its model to :data:`CHANNEL_MODELS`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field

from roomwatch.configbase import Duration, Model

__all__ = ["ChannelBase", "ChannelEntry", "RouteConfig", "RulesConfig", "WebhookChannel"]


class ChannelBase(Model):
    """Options every notification channel has."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    type: str
    send_resolved: bool = True
    timeout: Duration = Field(default=10.0, gt=0)


class WebhookChannel(ChannelBase):
    """Alertmanager webhook JSON (version 4) POSTed to ``url``."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    max_alerts: int = Field(default=0, ge=0, description="0 = all alerts of a group in one message")


def _channel_models() -> tuple[type[ChannelBase], ...]:
    """Webhook plus the model of every registered channel type (channel modules register when imported)."""
    from alerts.channels import all as _builtin  # noqa: F401 - registers the built-in channel types
    from alerts.channels.base import channel_types

    models: list[type[ChannelBase]] = [WebhookChannel]
    models += [cls.config_model for cls in channel_types().values() if cls.config_model not in models]
    return tuple(models)


CHANNEL_MODELS: tuple[type[ChannelBase], ...] = _channel_models()


def _channel_union() -> Any:
    if len(CHANNEL_MODELS) == 1:
        return CHANNEL_MODELS[0]
    return Annotated[Union[CHANNEL_MODELS], Field(discriminator="type")]  # noqa: UP007


ChannelEntry = _channel_union()


class RouteConfig(Model):
    """Which alerts go to which channels: every label in ``match`` must equal the alert's."""

    match: dict[str, str] = Field(default_factory=dict)
    channels: list[str] = Field(min_length=1)


class RulesConfig(Model):
    """The default rule pack on/off and extra rule files."""

    defaults: bool = True
    files: list[str] = Field(default_factory=list)
