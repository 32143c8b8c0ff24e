"""The driver interface every device type implements.

A driver is one module: a config model (subclass of :class:`DeviceConfig` with
``driver: Literal["name"]``), a point table, and a :class:`Driver` subclass.

* **polled** drivers (SNMP, NUT, Modbus, host) implement :meth:`Driver.poll`,
  which the agent calls on the device's interval under a timeout;
* **listening** drivers (MQTT, GPIO) set ``mode = "listen"``, start their
  subscriptions in :meth:`Driver.start` and hand readings to
  :meth:`Context.emit` whenever the device speaks.

Drivers know nothing of the agent or the collector: they get a :class:`Context`.
Blocking libraries run in an executor, never on the event loop.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import Field

from roomwatch.core.configbase import Duration, Labels, Model

__all__ = ["Context", "DeviceConfig", "DeviceError", "Driver", "Event", "Reading"]

T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class Reading:
    """One value read from a device, already in the vocabulary's name and base unit."""

    metric: str
    value: float
    labels: Mapping[str, str] | None = None
    ts: float | None = None  # Unix seconds; None = time of the poll


@dataclass(slots=True, frozen=True)
class Event:
    """Something that happened and must reach the collector at once (door opened, on battery)."""

    type: str  # e.g. door_open, door_close, ups_on_battery, ups_on_mains, water_leak, smoke
    value: float | None = None
    labels: Mapping[str, str] | None = None
    ts: float | None = None  # Unix seconds of the transition
    message: str = ""


class DeviceError(Exception):
    """A device could not be read; the message is the reason shown once in the log."""


class DeviceConfig(Model):
    """Options shared by every device entry in the agent config."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    driver: str
    interval: Duration | None = None  # default: the agent's default interval
    timeout: Duration | None = None  # default: min(10s, interval)
    labels: Labels = Field(default_factory=dict)


class Context(Protocol):
    """What the agent offers a driver."""

    log: logging.Logger

    def emit(self, readings: Sequence[Reading], events: Sequence[Event] = ()) -> None:
        """Hand over readings/events from a listening driver (call on the event loop)."""

    def shared(self, key: Hashable, factory: Callable[[], T]) -> T:
        """One object per key for all devices (one MQTT connection per broker, one serial bus owner)."""


class Driver(abc.ABC):
    """Base class; subclasses set ``name`` and ``config_model`` and register themselves."""

    name: ClassVar[str]
    config_model: ClassVar[type[DeviceConfig]]
    mode: ClassVar[Literal["poll", "listen"]] = "poll"
    default_interval: ClassVar[float] = 10.0
    #: Python modules this driver imports lazily, so `check-config` can say what is missing.
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, context: Context):
        self.config = config
        self.context = context
        self.log = context.log

    def poll_timeout(self, default: float) -> float:
        """How long the agent lets one poll run; ``default`` comes from the device's ``timeout`` option.

        Drivers whose ``timeout`` option means something narrower (SNMP: one request attempt) override this.
        """
        return default

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections or subscriptions; called once before the first poll."""

    async def poll(self) -> Sequence[Reading]:
        """Read the device once; raise :class:`DeviceError` (or any exception) when it fails."""
        raise DeviceError(f"driver {self.name} does not poll")

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close connections; called once at shutdown."""

    def health(self) -> Sequence[Reading]:
        """The driver's own link statistics (bad messages by reason …), sent with ``device_up``.

        Their metrics must be marked ``health=True`` in the vocabulary, so they stay visible
        while the device is down.
        """
        return ()

    def problem(self) -> str | None:
        """Listening drivers: why the device cannot be heard right now (broker unreachable), else None.

        The agent asks every second; a reason marks the device down until it speaks again.
        """
        return None

    def max_age(self) -> float | None:
        """Listening drivers: how long the device may stay silent before it is down (None: no limit).

        The agent asks every second. It also stops re-sending a measurement (not a door/leak/smoke
        state) that was not refreshed for this long. Default: the device's ``max_age`` option, if any.
        """
        return getattr(self.config, "max_age", None) or None
