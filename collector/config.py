"""Collector configuration schema (``roomwatch collector -c collector.yaml``), declared once."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from roomwatch.alerts.config import AlertsConfig, RouteConfig, RulesConfig, alerting_checks
from roomwatch.alerts.heartbeat import HeartbeatConfig
from roomwatch.alerts.rota import OncallConfig
from roomwatch.alerts.timeintervals import TimeIntervalConfig
from roomwatch.channels.config import ChannelEntry
from roomwatch.collector.report.config import ReportConfig
from roomwatch.core.configbase import (
    ByteSize,
    Duration,
    HostPort,
    Model,
    Secret,
    load_model,
    parse_bytes,
)
from roomwatch.core.tls import ClientTLS

__all__ = ["AgentEntry", "CollectorConfig", "acknowledge_paths", "config_warnings", "load_collector_config", "parse_bytes"]


def hash_token(token: str) -> str:
    """``sha256:<hex>``: tokens are long random strings, so a plain hash is enough to store."""
    # surrogateescape: a header token with non-UTF-8 bytes hashes to "unknown", never raises
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class AgentEntry(Model):
    """An agent allowed to push, with its token (or the token's hash)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
    token: Secret | None = None
    token_hash: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$",
                                   description="sha256:<hex> of the token (roomwatch gen-token prints it)")
    timeout: Duration | None = Field(default=None, gt=0, description="AgentDown after this long without a push")
    # Scale-out (docs/scaling.md): an agent whose home is another collector pushes here only while
    # its home is unreachable; its silence here is normal, so it must not raise AgentDown here.
    standby: bool = Field(default=False, description="this collector is the agent's failover, not its home")
    #: collector: another roomwatch collector pushing heartbeats here (heartbeat.collector there); its silence
    #: raises CollectorDown instead of AgentDown (docs/alerting.md, "Watching the alert path").
    role: Literal["agent", "collector"] = "agent"
    # Where the agent's readings may come from (docs/security.md): samples or events labelled with another
    # site or room are refused with 400; unlabelled ones get these values.
    site: str | None = Field(default=None, min_length=1, max_length=1024, description="the only site label allowed")
    room: str | None = Field(default=None, min_length=1, max_length=1024, description="the only room label allowed")
    rooms: list[str] | None = Field(default=None, min_length=1, description="the room labels allowed (several rooms)")
    max_series: int | None = Field(default=None, ge=1, le=10_000_000,
                                   description="series this agent may hold at once (default limits.series_per_agent)")

    @model_validator(mode="after")
    def _one_secret(self) -> AgentEntry:
        if (self.token is None) == (self.token_hash is None):
            raise ValueError("give exactly one of token, token_file or token_hash")
        if self.room is not None and self.rooms is not None:
            raise ValueError("give room or rooms, not both")
        return self

    def digest(self) -> str:
        """``token_hash``, or the hash of ``token`` (the validator made sure one of them is there)."""
        if self.token_hash is not None:
            return self.token_hash
        assert self.token is not None
        return hash_token(self.token.get_secret_value())

    def bound_rooms(self) -> frozenset[str] | None:
        """The room labels this agent may write, or None (any)."""
        if self.room is not None:
            return frozenset({self.room})
        return frozenset(self.rooms) if self.rooms is not None else None


class ServerTLS(Model):
    """HTTPS for the collector; with ``client_ca_file`` agents must show a certificate."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


class WebUser(Model):
    """A person who may log in to acknowledge and silence (``roomwatch hash-password`` makes the hash)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[^:\s]+$")
    password_hash: str

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        from roomwatch.collector.webauth import check_hash

        return check_hash(value)


class WebConfig(Model):
    """Status page settings (login for mutating actions; optionally for reading too)."""

    language: str = Field(default="zh-CN", pattern=r"^(zh-CN|en)$")
    users: list[WebUser] = Field(default_factory=list)
    # anonymous: anyone who reaches the port reads the status page data, the read APIs and /metrics
    # (docs/security.md lists what); login: every read needs a session or HTTP Basic of a web user.
    read_access: str = Field(default="anonymous", pattern=r"^(anonymous|login)$")


class HistoryConfig(Model):
    """Samples kept in the embedded store (so an outage's backfilled data is not lost)."""

    enabled: bool = True
    retention: Duration = Field(default=30 * 86400.0, gt=0, description="how long samples are kept")
    exclude: list[str] = Field(default_factory=list, description="metric name patterns (globs) not stored")
    max_samples: int = Field(default=200_000, ge=100, le=10_000_000, description="largest /api/v1/history answer")


#: How the collector checks a remote-write endpoint's certificate (verification is on by default).
ClientTLSOptions = ClientTLS


class BasicAuth(Model):
    username: str
    password: Secret


class RemoteWriteTarget(Model):
    """A Prometheus remote-write 1.0 endpoint (Prometheus, VictoriaMetrics, Mimir, Thanos receive …)."""

    name: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$", description="default: the URL's host:port")
    url: str = Field(pattern=r"^https?://")
    timeout: Duration = Field(default=30.0, gt=0)
    bearer_token: Secret | None = None
    basic_auth: BasicAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tls: ClientTLSOptions = Field(default_factory=ClientTLSOptions)
    batch_samples: int = Field(default=2000, ge=1, le=100_000, description="samples per request")
    queue_max_samples: int = Field(default=5_000_000, ge=1000, description="oldest queued samples are dropped beyond it")
    min_backoff: Duration = Field(default=1.0, gt=0)
    max_backoff: Duration = Field(default=300.0, gt=0)


class RateLimit(Model):
    """Push requests allowed per second (token bucket) per agent and per source address; 0 = no limit."""

    per_agent: float = Field(default=20.0, ge=0)
    per_agent_burst: int = Field(default=60, ge=1)
    per_address: float = Field(default=50.0, ge=0)
    per_address_burst: int = Field(default=150, ge=1)


class Limits(Model):
    """Series an agent may create, connections a client may hold (docs/security.md)."""

    series_per_agent: int = Field(default=10_000, ge=1, le=10_000_000,
                                  description="series one agent may hold at once; agents[].max_series overrides it")
    new_series_per_push: int = Field(default=10_000, ge=1, le=10_000_000, description="new series in one push")
    connections_per_address: int = Field(default=128, ge=1, le=100_000,
                                         description="connections open at once from one client address (IPv6: its "
                                                     "/64); more are closed at once. Raise it behind a reverse proxy")


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
    idle_timeout: Duration = Field(default=60.0, gt=0, description="close connections idle or sending headers this long")
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    limits: Limits = Field(default_factory=Limits)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    remote_write: list[RemoteWriteTarget] = Field(default_factory=list)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    channels: list[ChannelEntry] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    time_intervals: list[TimeIntervalConfig] = Field(default_factory=list, description="named recurring intervals")
    oncall: OncallConfig = Field(default_factory=OncallConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)
    log_level: str = Field(default="info", pattern=r"^(?i:debug|info|warning|error)$")

    def extra_checks(self) -> list[tuple[tuple[Any, ...], str]]:
        problems: list[tuple[tuple[Any, ...], str]] = []
        channel_names = {c.name for c in self.channels}
        for j, ch in enumerate(self.report.channels):
            if ch not in channel_names:
                problems.append((("report", "channels", j), f"no channel named {ch!r} in channels"))

        seen: set[str] = set()
        tokens: dict[str, str] = {}
        for i, a in enumerate(self.agents):
            if a.id in seen:
                problems.append((("agents", i, "id"), f"agent {a.id!r} is listed twice"))
            seen.add(a.id)
            # a token names its agent: shared, every push would be taken for one of them (403 for the other)
            digest = a.digest()
            if digest in tokens and tokens[digest] != a.id:
                key = "token_hash" if a.token_hash else "token"
                problems.append((("agents", i, key), f"agent {a.id!r} has the same token as agent {tokens[digest]!r}; "
                                 "give each agent its own (roomwatch gen-token)"))
            tokens.setdefault(digest, a.id)
        names: set[str] = set()
        for i, c in enumerate(self.channels):
            if c.name in names:
                problems.append((("channels", i, "name"), f"channel {c.name!r} is defined twice"))
            names.add(c.name)
        rw_names: set[str] = set()
        for i, rw in enumerate(self.remote_write):
            name = rw.name or rw.url.split("/")[2]
            if name in rw_names:
                problems.append((("remote_write", i, "name"), f"remote_write {name!r} is listed twice (give each a name)"))
            rw_names.add(name)
            if rw.bearer_token is not None and rw.basic_auth is not None:
                problems.append((("remote_write", i), "give bearer_token or basic_auth, not both"))
        if self.web.read_access == "login" and not self.web.users:
            problems.append((("web", "read_access"), "read_access: login needs at least one user in web.users "
                             "(roomwatch hash-password makes the hash)"))
        problems.extend(alerting_checks(self))
        return problems


def acknowledge_paths(cfg: CollectorConfig) -> list[str]:
    """The ways someone can acknowledge an alert with this config (empty: nobody can)."""
    paths = []
    if cfg.web.users:
        paths.append("web.users (status page, API)")
    if cfg.alerts.ack_links.enabled and cfg.alerts.external_url:
        paths.append("one-tap links under alerts.external_url")
    if any(c.type == "gsm_modem" and getattr(c, "replies", False) for c in cfg.channels):
        paths.append("SMS replies to the modem")
    if cfg.alerts.callbacks.dingtalk is not None:
        paths.append("DingTalk robot callback")
    return paths


def config_warnings(cfg: CollectorConfig) -> list[tuple[tuple[Any, ...], str]]:
    """Valid but probably not what is meant: (key path, warning) pairs for ``check-config`` (exit 0)."""
    out: list[tuple[tuple[Any, ...], str]] = []
    escalating = [i for i, r in enumerate(cfg.routes) if r.levels]
    if escalating and not acknowledge_paths(cfg):
        out.append((("routes", escalating[0], "levels"),
                    "this route escalates, but nobody can acknowledge (无人能确认告警, every alert will reach the last "
                    "level): no web.users, no alerts.external_url for one-tap acknowledge links, no SMS reply path "
                    "(gsm_modem replies: true). Set alerts.external_url (an address phones can open), or add a user "
                    "(roomwatch hash-password)"))
    elif escalating and cfg.alerts.ack_links.enabled and not cfg.alerts.external_url and not cfg.web.users:
        out.append((("alerts", "external_url"), "acknowledge links point at the listen address; set alerts.external_url "
                    "to an address the on-call phones can open"))
    return out


def load_collector_config(path: str) -> CollectorConfig:
    """Load and validate a collector file; raise :class:`ConfigError` listing every problem."""
    return load_model(path, CollectorConfig)
