"""Running a real driver once, outside the agent: what ``roomwatch discover`` uses to read a device.

Discover never guesses what a device reports: it builds the device entry it is about to print,
starts the driver that entry names (the same class the agent runs, with the same profile
selection), polls it once — or, for MQTT, hands it the messages heard — and keeps the entry only
when that gave readings. Drivers get this context instead of the agent's: objects they share
(the SNMP engine, one upsd connection, one Modbus line) are shared within the run and closed at
its end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from roomwatch.drivers.base import Event, Reading

__all__ = ["ProbeContext", "Shared"]

T = TypeVar("T")


class Shared:
    """The objects drivers share during one discover run, closed together by :meth:`aclose`."""

    def __init__(self) -> None:
        self.objects: dict[Hashable, Any] = {}

    def get(self, key: Hashable, factory: Callable[[], T]) -> T:
        if key not in self.objects:
            self.objects[key] = factory()
        return self.objects[key]  # type: ignore[no-any-return]

    def put(self, key: Hashable, obj: Any) -> None:
        self.objects[key] = obj

    async def aclose(self) -> None:
        for obj in self.objects.values():
            closer = getattr(obj, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception as exc:  # closing is best effort
                    logging.getLogger("roomwatch.discover").debug("closing %r: %s", obj, exc)
        self.objects.clear()


class ProbeContext:
    """A :class:`roomwatch.drivers.base.Context` for one driver run by discover: emitted readings are collected."""

    def __init__(self, shared: Shared, name: str):
        self._shared = shared
        self.log = logging.getLogger(f"roomwatch.discover.{name}")
        self.readings: list[Reading] = []
        self.events: list[Event] = []

    def emit(self, readings: Sequence[Reading], events: Sequence[Event] = ()) -> None:
        self.readings.extend(readings)
        self.events.extend(events)

    def shared(self, key: Hashable, factory: Callable[[], T]) -> T:
        return self._shared.get(key, factory)
