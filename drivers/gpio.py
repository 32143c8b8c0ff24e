"""``gpio`` driver: a dry contact (door reed switch, leak probe, smoke relay) on a GPIO line.

Edges come from the kernel through libgpiod v2 (the ``gpiod`` package, an
optional extra: ``pip install roomwatch[gpio]``) behind the small
:class:`LineSource` protocol, so the event logic here — debounce, active-low,
initial state, transition times — is tested without a GPIO chip.

Debounce: a burst of edges settles when no edge came for ``debounce``; the line
is then read, and if its state differs from the last settled one that is a
transition, stamped with the kernel time of the *first* edge of the burst
(when the door moved, not when the bouncing stopped). A burst that ends where
it started (a knock on the door) is no transition. The line is also re-read
every ``interval`` in case an edge was lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import Field

from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import Duration
from roomwatch.drivers.base import DeviceConfig, DeviceError, Driver, Event, Reading
from roomwatch.drivers.registry import register

__all__ = ["Contact", "Edge", "GpioConfig", "GpioDriver", "GpiodLineSource", "LineSource"]

#: kind → (metric, event when it becomes active, event when it returns to inactive)
KINDS: dict[str, tuple[str, str, str]] = {
    "door": (v.DOOR_OPEN, "door_open", "door_close"),
    "leak": (v.WATER_LEAK, "water_leak", "water_leak_clear"),
    "smoke": (v.SMOKE, "smoke", "smoke_clear"),
}


class GpioConfig(DeviceConfig):
    """Options of one GPIO contact."""

    driver: Literal["gpio"] = "gpio"
    chip: str = Field(default="gpiochip0", min_length=1, description="gpiochipN or /dev/gpiochipN")
    line: int | str = Field(description="line offset on the chip (17) or line name (GPIO17)")
    active_low: bool = Field(default=False, description="the contact is active (door open, wet, smoke) when the line is low")
    kind: Literal["door", "leak", "smoke"] = "door"
    debounce: Duration = Field(default=0.05, ge=0, le=10, description="edges closer than this are one movement")
    bias: Literal["as_is", "pull_up", "pull_down", "disabled"] = Field(
        default="as_is", description="pull resistor: pull_up for a contact switching the line to ground")


@dataclass(frozen=True, slots=True)
class Edge:
    """One edge seen by the kernel: the physical level after it, and when (Unix seconds)."""

    high: bool
    ts: float


class LineSource(Protocol):
    """Where edges come from: libgpiod on a real chip, or a fake in tests."""

    def open(self, on_edges: Callable[[list[Edge]], None]) -> None:
        """Request the line and start calling ``on_edges`` on the event loop."""

    def level(self) -> bool:
        """The physical level now (True = high)."""

    def close(self) -> None:
        """Release the line."""


class Contact:
    """Debounce and polarity of one contact; reports settled states through ``report``.

    ``report(active, ts, transition)``: ``transition`` is False for the initial state and for a
    re-read that only confirms the state.
    """

    def __init__(self, source: LineSource, active_low: bool, debounce: float,
                 report: Callable[[bool, float, bool], None]):
        self.source = source
        self.active_low = active_low
        self.debounce = debounce
        self.report = report
        self.state: bool | None = None
        self._burst_start: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _active(self) -> bool:
        return self.source.level() != self.active_low

    def start(self) -> None:
        """Read the initial state (reported, but not as a transition) and listen to edges."""
        self.source.open(self.on_edges)
        self.state = self._active()
        self.report(self.state, time.time(), False)

    def on_edges(self, edges: list[Edge]) -> None:
        if not edges:
            return
        if self._burst_start is None:
            self._burst_start = edges[0].ts
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.debounce, self._settle)

    def _settle(self) -> None:
        self._timer = None
        started, self._burst_start = self._burst_start, None
        active = self._active()
        if active != self.state:
            self.state = active
            self.report(active, started if started is not None else time.time(), True)

    def recheck(self) -> None:
        """Re-read the line (an edge may have been lost); a difference is a transition now."""
        if self._timer is None and self.state is not None:
            active = self._active()
            if active != self.state:
                self.state = active
                self.report(active, time.time(), True)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.source.close()


class GpiodLineSource:
    """A line requested through libgpiod v2 with edge detection on both edges."""

    def __init__(self, chip: str, line: int | str, bias: str = "as_is"):
        self.path = chip if chip.startswith("/") else f"/dev/{chip}"
        self.line: int | str = int(line) if isinstance(line, str) and line.isdigit() else line
        self.bias = bias
        self._req: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, on_edges: Callable[[list[Edge]], None]) -> None:
        import gpiod
        from gpiod.line import Bias, Direction
        from gpiod.line import Edge as GEdge

        biases = {"as_is": Bias.AS_IS, "pull_up": Bias.PULL_UP, "pull_down": Bias.PULL_DOWN, "disabled": Bias.DISABLED}
        # Polarity and debounce stay ours (tested here); the kernel just timestamps edges.
        settings = gpiod.LineSettings(direction=Direction.INPUT, edge_detection=GEdge.BOTH, bias=biases[self.bias])
        self._req = gpiod.request_lines(self.path, consumer="roomwatch", config={self.line: settings})
        rising = gpiod.EdgeEvent.Type.RISING_EDGE
        loop = self._loop = asyncio.get_running_loop()

        def readable() -> None:
            events = self._req.read_edge_events()
            # Kernel timestamps are CLOCK_MONOTONIC (the default event clock): convert to wall time.
            offset = time.time() - time.monotonic_ns() / 1e9
            on_edges([Edge(ev.event_type == rising, offset + ev.timestamp_ns / 1e9) for ev in events])

        loop.add_reader(self._req.fd, readable)

    def level(self) -> bool:
        from gpiod.line import Value

        return bool(self._req.get_value(self.line) == Value.ACTIVE)

    def close(self) -> None:
        if self._req is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._req.fd)
            self._req.release()
            self._req = None


@register
class GpioDriver(Driver):
    """A contact on a GPIO line: its state as door/leak/smoke, transitions as events."""

    name = "gpio"
    config_model = GpioConfig
    mode = "listen"
    requires = ("gpiod",)
    #: Seam for tests: makes the line source (default: libgpiod).
    source_factory: Callable[[GpioConfig], LineSource] | None = None

    def __init__(self, config: GpioConfig, context: Any):
        super().__init__(config, context)
        self.metric, self.on_event, self.off_event = KINDS[config.kind]
        self.contact: Contact | None = None
        self._recheck: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        cfg = self.config
        factory = self.source_factory or type(self).source_factory
        if factory is None:
            try:
                import gpiod  # noqa: F401
            except ImportError as exc:
                raise DeviceError("the gpiod package (libgpiod v2) is not installed: pip install 'roomwatch[gpio]'") from exc
            source: LineSource = GpiodLineSource(cfg.chip, cfg.line, cfg.bias)
        else:
            source = factory(cfg)
        self.contact = Contact(source, cfg.active_low, cfg.debounce, self._report)
        try:
            self.contact.start()
        except (OSError, ValueError) as exc:  # no such chip or line, line busy, permission denied
            raise DeviceError(f"cannot request {cfg.chip} line {cfg.line}: {exc}") from exc
        self._schedule_recheck()

    def _schedule_recheck(self) -> None:
        interval = max(1.0, float(self.config.interval or 10.0))
        self._recheck = asyncio.get_running_loop().call_later(interval, self._do_recheck)

    def _do_recheck(self) -> None:
        if self.contact is not None:
            try:
                self.contact.recheck()
            except OSError as exc:
                self.log.warning("cannot read %s line %s: %s", self.config.chip, self.config.line, exc)
            self._schedule_recheck()

    def _report(self, active: bool, ts: float, transition: bool) -> None:
        value = 1.0 if active else 0.0
        events = [Event(self.on_event if active else self.off_event, value, None, ts)] if transition else []
        self.context.emit([Reading(self.metric, value, None, time.time())], events)

    async def stop(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        if self.contact is not None:
            self.contact.stop()
            self.contact = None
