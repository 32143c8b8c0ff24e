"""Agent configuration schema (``roomwatch agent -c agent.yaml``), declared once."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PlainValidator, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from roomwatch import drivers
from roomwatch.agent.actions import ActionEntry, check_actions
from roomwatch.agent.fallback import FallbackConfig
from roomwatch.agent.nut_server import NutServerConfig
from roomwatch.agent.traps import TrapsConfig
from roomwatch.core.configbase import (
    ByteSize,
    Duration,
    HostPort,
    Labels,
    Model,
    Secret,
    load_model,
)
from roomwatch.core.tls import ClientTLS
from roomwatch.drivers.base import DeviceConfig
from roomwatch.drivers.host import HostConfig

__all__ = ["AgentConfig", "load_agent_config"]


def _validate_device(value: Any) -> Any:
    """Validate one ``devices:`` entry with its own driver's model, chosen by ``driver:``.

    Dispatching by hand (instead of a discriminated union of every driver's model)
    means pydantic builds only the models of drivers this agent uses: every model
    built costs the agent memory, and the agent's budget is tight.
    """
    if isinstance(value, DeviceConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError("a device must be a mapping with at least name: and driver:")
    name = value.get("driver")
    known = drivers.names()
    if name not in known:
        message = "driver is required" if name is None else f"unknown driver {name!r}; expected one of {known}"
        raise ValidationError.from_exception_data("device", [InitErrorDetails(
            type=PydanticCustomError("unknown_driver", message), loc=("driver",), input=name)])
    return drivers.get(name).config_model.model_validate(value)


DeviceEntry = Annotated[DeviceConfig, PlainValidator(_validate_device)]


def default_spool_path() -> str:
    """``$STATE_DIRECTORY/agent-spool.db`` under systemd (its first entry), else ``/var/lib/roomwatch/agent-spool.db``."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/roomwatch"
    return str(Path(state) / "agent-spool.db")


def _default_agent_id() -> str:
    return socket.gethostname().split(".")[0] or "agent"


class AgentSection(Model):
    """Who this agent is and where it listens."""

    id: str = Field(default_factory=_default_agent_id, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
    site: str = ""
    room: str = ""
    labels: Labels = Field(default_factory=dict, description="extra labels on every series")
    listen: HostPort | None = "127.0.0.1:9641"
    interval: Duration = Field(default=10.0, gt=0, description="default poll interval of devices")
    spool: str | None = Field(default_factory=default_spool_path,
                              description="SQLite file of batches not yet accepted by the collector; null = memory only")
    spool_max_bytes: ByteSize = Field(default=100 * 2**20, ge=64 * 1024,
                                      description="cap of the spool; beyond it the oldest samples are dropped (counted)")
    log_level: str = Field(default="info", pattern=r"^(?i:debug|info|warning|error)$")


class CollectorTarget(Model):
    """Where and how the agent pushes."""

    urls: list[str] = Field(min_length=1)
    token: Secret
    push_interval: Duration = Field(default=10.0, gt=0)
    timeout: Duration = Field(default=10.0, gt=0)
    max_batch_samples: int = Field(default=5000, ge=1, le=100_000)
    queue_max_samples: int = Field(default=500_000, ge=1000, description="memory bound of unsent samples")
    backlog_rate: float = Field(default=2000.0, ge=0, description="samples/s of backlog sent after an outage; 0 = no limit")
    backoff_max: Duration = Field(default=60.0, gt=0, description="longest wait between push retries")
    failback_after: Duration = Field(default=300.0, gt=0, description="on a fallback URL, try the first one again after")
    compress: bool = True
    tls: ClientTLS = Field(default_factory=ClientTLS)

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must start with http:// or https://")
            if "@" in url.split("://", 1)[1].split("/", 1)[0]:
                # It would be logged with the URL and is never used: the agent authenticates with its token.
                raise ValueError("a collector URL must not carry a user or password; the agent uses collector.token")
        return [u.rstrip("/") for u in urls]


class HostSection(HostConfig):
    """The built-in ``host`` device; on unless ``enabled: false``."""

    enabled: bool = True


class AgentConfig(Model):
    """The whole agent file."""

    agent: AgentSection = Field(default_factory=AgentSection)
    collector: CollectorTarget | None = None
    host: HostSection = Field(default_factory=HostSection)
    devices: list[DeviceEntry] = Field(default_factory=list)
    actions: list[ActionEntry] = Field(default_factory=list)
    fallback: FallbackConfig | None = None
    nut_server: NutServerConfig | None = Field(default=None, description="serve the UPS readings to NUT clients")
    traps: TrapsConfig | None = None

    def extra_checks(self) -> list[tuple[tuple[Any, ...], str]]:
        """Cross-field checks pydantic cannot locate: (path, message)."""
        problems: list[tuple[tuple[Any, ...], str]] = []
        seen: dict[str, int] = {}
        if self.host.enabled:
            seen[self.host.name] = -1
        for i, dev in enumerate(self.devices):
            if dev.name in seen:
                other = "the host section" if seen[dev.name] < 0 else f"devices[{seen[dev.name]}]"
                problems.append((("devices", i, "name"), f"device name {dev.name!r} is already used by {other}"))
            else:
                seen[dev.name] = i
        if self.fallback is not None:
            if self.collector is None:
                problems.append((("fallback",), "local fallback alerting needs a collector section (it alerts when "
                                 "the collector cannot be reached)"))
            problems.extend(self.fallback.extra_checks())
        if self.traps is not None and not any(d.driver == "snmp" for d in self.devices):
            problems.append((("traps",), "the trap listener matches senders to snmp devices, and this agent has none"))
        problems.extend(check_actions(self.actions, self.all_devices(), self.nut_server))
        return problems

    def all_devices(self) -> list[Any]:
        """Device configs to run, the host section first when enabled."""
        out: list[Any] = []
        if self.host.enabled:
            out.append(HostConfig.model_validate(self.host.model_dump(exclude={"enabled"})))
        out.extend(self.devices)
        return out


def load_agent_config(path: str) -> AgentConfig:
    """Load and validate an agent file; raise :class:`ConfigError` listing every problem."""
    return load_model(path, AgentConfig)
