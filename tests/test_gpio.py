"""GPIO contact logic with a fake line source: debounce, active-low, initial state, transition times.

No GPIO chip is needed (nor the gpiod package): the fake produces edges the way
libgpiod reports them (level after the edge, kernel timestamp).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from roomwatch.drivers.gpio import Contact, Edge, GpioConfig, GpioDriver
from tests.helpers import async_wait_for
from tests.mqtt_helpers import current, make_agent, until

DOOR = "roomwatch_door_open"


class FakeLine:
    """A line whose level the test sets; each change is an edge, as the kernel would report it."""

    def __init__(self, high: bool = False):
        self.high = high
        self.on_edges: Callable[[list[Edge]], None] | None = None
        self.closed = False

    def open(self, on_edges: Callable[[list[Edge]], None]) -> None:
        self.on_edges = on_edges

    def level(self) -> bool:
        return self.high

    def close(self) -> None:
        self.closed = True

    def set(self, high: bool, ts: float | None = None) -> None:
        self.high = high
        assert self.on_edges is not None
        self.on_edges([Edge(high, ts if ts is not None else time.time())])


def _contact(line: FakeLine, active_low: bool = False, debounce: float = 0.05) -> tuple[Contact, list[Any]]:
    reports: list[tuple[bool, float, bool]] = []
    c = Contact(line, active_low, debounce, lambda a, ts, tr: reports.append((a, ts, tr)))
    c.start()
    return c, reports


async def test_initial_state_is_reported_but_is_not_a_transition() -> None:
    line = FakeLine(high=True)
    _, reports = _contact(line)
    assert [(a, tr) for a, _, tr in reports] == [(True, False)]


async def settled(contact: Contact) -> None:
    """Wait for the debounce timer to fire (the contact's own event), however slow the machine."""
    await async_wait_for(lambda: contact._timer is None, timeout=10, what="the debounce timer to fire")


async def test_bouncing_contact_is_one_transition_stamped_at_the_first_edge() -> None:
    line = FakeLine(high=False)
    contact, reports = _contact(line, debounce=0.05)
    t0 = time.time()
    for i, high in enumerate([True, False, True, False, True]):  # 5 ms of contact bounce (the edges' own stamps)
        line.set(high, ts=t0 + i * 0.001)
    await settled(contact)
    assert reports[1:] == [(True, t0, True)]


async def test_a_knock_that_ends_where_it_started_is_no_transition() -> None:
    line = FakeLine(high=False)
    contact, reports = _contact(line, debounce=0.05)
    line.set(True)
    line.set(False)  # within the debounce: the line is back where it was when the timer fires
    await settled(contact)
    assert reports[1:] == []
    # The next real movement is stamped with its own first edge, not the knock's.
    t1 = time.time()
    line.set(True, ts=t1)
    await settled(contact)
    assert reports[1:] == [(True, t1, True)]


async def test_active_low_inverts_the_line() -> None:
    line = FakeLine(high=False)  # low = contact closed to ground = door open, with active_low
    contact, reports = _contact(line, active_low=True, debounce=0.02)
    assert reports[0][0] is True
    line.set(True)
    await settled(contact)
    assert reports[-1][0] is False and reports[-1][2] is True


async def test_zero_debounce_and_lost_edges_are_caught_by_a_reread() -> None:
    line = FakeLine(high=False)
    contact, reports = _contact(line, debounce=0.0)
    line.set(True)
    await settled(contact)
    assert reports[-1][:1] == (True,) and reports[-1][2]
    line.high = False  # the kernel's event buffer overflowed: no edge for this change
    contact.recheck()
    assert reports[-1][0] is False and reports[-1][2]
    contact.stop()
    assert line.closed


async def test_gpio_device_in_the_agent_emits_state_and_events(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: dict[str, FakeLine] = {}

    def factory(cfg: GpioConfig) -> FakeLine:
        lines[cfg.name] = FakeLine(high=True)  # pulled up, door closed shorts it to ground
        return lines[cfg.name]

    monkeypatch.setattr(GpioDriver, "source_factory", staticmethod(factory))
    agent = make_agent([{"name": "door-gpio", "driver": "gpio", "chip": "gpiochip0", "line": 17, "active_low": False,
                         "bias": "pull_up", "debounce": "20ms"},
                        {"name": "leak-gpio", "driver": "gpio", "line": "LEAK_PROBE", "kind": "leak", "active_low": True}])
    events: list[Any] = []
    agent.observers.append(lambda d, s, ev: events.extend(ev))
    await agent.start()
    try:
        await until(lambda: current(agent, DOOR, device="door-gpio") == 1, what="initial door state")
        assert current(agent, "roomwatch_water_leak_detected", device="leak-gpio") == 0  # high + active_low = dry
        # A door already open at the first reading is an event (pushed at once); the dry leak probe is not.
        assert [(e.type, e.labels["device"], e.message) for e in events] == [
            ("door_open", "door-gpio", "already so at the first reading")]
        events.clear()
        moved = time.time()
        lines["door-gpio"].set(False, ts=moved)
        await until(lambda: current(agent, DOOR, device="door-gpio") == 0, what="door closed")
        assert [(e.type, e.ts) for e in events] == [("door_close", int(moved * 1000))]
        assert events[0].labels["device"] == "door-gpio"
    finally:
        await agent.stop()
    assert all(line.closed for line in lines.values())


async def test_without_gpiod_the_device_is_down_with_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiod", None)  # as on a machine without the gpio extra
    agent = make_agent([{"name": "door-gpio", "driver": "gpio", "line": 4}])
    await agent.start()
    try:
        assert agent.devices["door-gpio"].up is False
        assert "pip install 'roomwatch[gpio]'" in agent.devices["door-gpio"].reason
    finally:
        await agent.stop()


def test_config_accepts_offsets_and_names_and_refuses_bad_values() -> None:
    from pydantic import ValidationError

    assert GpioConfig(name="d", line=17).line == 17
    assert GpioConfig(name="d", line="GPIO17").line == "GPIO17"
    with pytest.raises(ValidationError):
        GpioConfig(name="d", line=1, kind="temperature")
    with pytest.raises(ValidationError):
        GpioConfig(name="d", line=1, debounce="1h")
