"""Collector configuration schema (``roomwatch collector -c collector.yaml``), declared once."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from alerts.config import ChannelEntry, RouteConfig, RulesConfig
from roomwatch.configbase import (
    ByteSize,
    ConfigError,
    Duration,
    HostPort,
    Model,
    Problem,
    Secret,
    dotted,
    load_model,
    load_yaml,
    parse_bytes,
)

__all__ = ["AgentEntry", "CollectorConfig", "load_collector_config", "parse_bytes"]


class AgentEntry(Model):
    """An agent allowed to push, with its token (or the token's hash)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
    token: Secret | None = None
    token_hash: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$",
                                   description="sha256:<hex> of the token (roomwatch gen-token prints it)")
    timeout: Duration | None = Field(default=None, gt=0, description="AgentDown after this long without a push")

    @model_validator(mode="after")
    def _one_secret(self) -> AgentEntry:
        if (self.token is None) == (self.token_hash is None):
            raise ValueError("give exactly one of token, token_file or token_hash")
        return self


class ServerTLS(Model):
    """HTTPS for the collector; with ``client_ca_file`` agents must show a certificate."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


class WebUser(Model):
    name: str
    password_hash: str


class WebConfig(Model):
    """Status page settings (login for mutating actions)."""

    language: str = Field(default="zh-CN", pattern=r"^(zh-CN|en)$")
    users: list[WebUser] = Field(default_factory=list)


class CollectorConfig(Model):
    """The whole collector file."""

    listen: HostPort = "127.0.0.1:9640"
    tls: ServerTLS | None = None
    storage: str = "/var/lib/roomwatch/collector.db"
    agents: list[AgentEntry] = Field(default_factory=list)
    agent_timeout: Duration = Field(default=60.0, gt=0, description="AgentDown after this long without a push")
    series_expire: Duration = Field(default=300.0, gt=0, description="drop a series from /metrics after this long")
    max_body: ByteSize = Field(default=8 * 2**20, ge=1024)
    max_body_decompressed: ByteSize = Field(default=64 * 2**20, ge=1024)
    body_timeout: Duration = Field(default=30.0, gt=0, description="a push body must arrive within this time")
    rules: RulesConfig = Field(default_factory=RulesConfig)
    channels: list[ChannelEntry] = Field(default_factory=list)  # type: ignore[valid-type]
    routes: list[RouteConfig] = Field(default_factory=list)
    web: WebConfig = Field(default_factory=WebConfig)
    log_level: str = Field(default="info", pattern=r"^(?i:debug|info|warning|error)$")

    def extra_checks(self) -> list[tuple[tuple[Any, ...], str]]:
        problems: list[tuple[tuple[Any, ...], str]] = []
        seen: set[str] = set()
        for i, a in enumerate(self.agents):
            if a.id in seen:
                problems.append((("agents", i, "id"), f"agent {a.id!r} is listed twice"))
            seen.add(a.id)
        names: set[str] = set()
        for i, c in enumerate(self.channels):
            if c.name in names:
                problems.append((("channels", i, "name"), f"channel {c.name!r} is defined twice"))
            names.add(c.name)
        for i, r in enumerate(self.routes):
            for j, ch in enumerate(r.channels):
                if ch not in names:
                    problems.append((("routes", i, "channels", j), f"no channel named {ch!r} in channels"))
        return problems


def load_collector_config(path: str) -> CollectorConfig:
    """Load and validate a collector file; raise :class:`ConfigError` listing every problem."""
    data, located = load_yaml(path)
    cfg = load_model(path, CollectorConfig, data, located)
    problems = [Problem(located.file, located.line_of(p), dotted(p), m) for p, m in cfg.extra_checks()]
    if problems:
        raise ConfigError(problems)
    return cfg
