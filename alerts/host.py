"""What the alert service needs of the collector that hosts it, as Protocols.

The alerts package imports nothing of the collector (tests/test_layers.py checks
it); the collector's composition root hands a :class:`Host` in. These Protocols
say exactly what that object must offer: the config sections alerting reads,
and the agent registry, read for ``roomwatch_agent_up`` (is an agent pushing, is
this collector only its standby). ``roomwatch.collector.core.Collector`` fits
them structurally; the type checker verifies it at ``build_alert_service``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from roomwatch.alerts.config import AlertsConfig, RouteConfig, RulesConfig
from roomwatch.alerts.heartbeat import HeartbeatConfig
from roomwatch.alerts.rota import OncallConfig
from roomwatch.alerts.timeintervals import TimeIntervalConfig
from roomwatch.channels.config import ChannelBase

__all__ = ["Host", "HostAgent", "HostAgents", "HostConfig", "WebSection"]


class HostAgent(Protocol):
    """One configured agent as the collector tracks it."""

    @property
    def id(self) -> str: ...

    @property
    def timeout(self) -> float:
        """Seconds without a push before the agent counts as down."""

    @property
    def standby(self) -> bool:
        """This collector is only the agent's failover: its silence here is not AgentDown."""

    @property
    def last_push(self) -> float | None:
        """Unix seconds of the last accepted push (None: none since the start)."""

    @property
    def role(self) -> str:
        """"agent", or "collector" for another collector that pushes heartbeats here (CollectorDown)."""

    @property
    def clock_skew_ms(self) -> int:
        """How far the agent's clock is ahead of the collector's (ms), as the last push measured it."""

    def up(self, now: float) -> bool:
        """Pushed within its timeout."""


class HostAgents(Protocol):
    """The collector's agent registry."""

    @property
    def agents(self) -> Mapping[str, HostAgent]:
        """Every configured agent by id."""


class WebSection(Protocol):
    @property
    def language(self) -> str:
        """The web pages' language: the default of ``alerts.language``."""


class HostConfig(Protocol):
    """The sections of the collector's config alerting reads."""

    @property
    def listen(self) -> str: ...

    @property
    def tls(self) -> object | None:
        """Set when the collector serves HTTPS (links in messages then say https)."""

    @property
    def storage(self) -> str:
        """The SQLite file alerts, silences and the outbox are kept in."""

    @property
    def series_expire(self) -> float: ...

    @property
    def rules(self) -> RulesConfig: ...

    @property
    def channels(self) -> Sequence[ChannelBase]: ...

    @property
    def routes(self) -> list[RouteConfig]: ...

    @property
    def alerts(self) -> AlertsConfig: ...

    @property
    def web(self) -> WebSection: ...

    @property
    def time_intervals(self) -> list[TimeIntervalConfig]: ...

    @property
    def oncall(self) -> OncallConfig: ...

    @property
    def heartbeat(self) -> HeartbeatConfig: ...


class Host(Protocol):
    """The collector as the alert service sees it."""

    @property
    def config(self) -> HostConfig: ...

    @property
    def agents(self) -> HostAgents: ...
