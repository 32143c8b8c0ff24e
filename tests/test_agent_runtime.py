"""Agent runtime: scheduling, timeouts, isolation of failing devices, state-change logging."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import pytest

from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core.wire import SampleRecord
from roomwatch.drivers import DeviceConfig, DeviceError, Driver, Reading, register
from tests.helpers import ManualClock, async_wait_for


class FakeConfig(DeviceConfig):
    driver: Literal["fake-test"] = "fake-test"
    behaviour: str = "ok"  # ok | fail | hang | slow | flaky


@register
class FakeDriver(Driver):
    """A device whose behaviour the test chooses."""

    name = "fake-test"
    config_model = FakeConfig
    polls: ClassVar[dict[str, int]] = {}
    in_flight: ClassVar[dict[str, int]] = {}
    most_in_flight: ClassVar[dict[str, int]] = {}

    async def poll(self) -> Sequence[Reading]:
        name = self.config.name
        FakeDriver.polls[name] = FakeDriver.polls.get(name, 0) + 1
        FakeDriver.in_flight[name] = FakeDriver.in_flight.get(name, 0) + 1
        FakeDriver.most_in_flight[name] = max(FakeDriver.most_in_flight.get(name, 0), FakeDriver.in_flight[name])
        try:
            b = self.config.behaviour
            if b == "fail":
                raise DeviceError("connection refused by the UPS card")
            if b == "hang":
                await asyncio.sleep(3600)
            if b == "slow":
                await asyncio.sleep(0.35)  # the device is slow; the test waits on the skips it causes
            if b == "flaky" and FakeDriver.polls[name] % 4 in (2, 3):
                raise DeviceError("checksum error")
            return [Reading("roomwatch_temperature_celsius", 20.0 + FakeDriver.polls[name])]
        finally:
            FakeDriver.in_flight[name] -= 1


class FakeListenConfig(DeviceConfig):
    driver: Literal["fake-listen-test"] = "fake-listen-test"
    max_age: float | None = 3.0


@register
class FakeListenDriver(Driver):
    """A listening device: speaks when the test calls :meth:`say`."""

    name = "fake-listen-test"
    config_model = FakeListenConfig
    mode = "listen"

    def say(self, value: float) -> None:
        self.context.emit([Reading("roomwatch_temperature_celsius", value)])

    def max_age(self) -> float | None:
        return self.config.max_age


def _agent(*devices: DeviceConfig, clock: Any = None) -> Agent:
    cfg = AgentConfig.model_validate({"agent": {"id": "t", "site": "s", "room": "r"}, "host": {"enabled": False}})
    cfg.devices = list(devices)
    return Agent(cfg) if clock is None else Agent(cfg, clock=clock)


def _up(agent: Agent, device: str) -> float | None:
    for fam in agent.latest.families():
        if fam.name == "roomwatch_device_up":
            for block, value in fam.samples:
                if f'device="{device}"' in block:
                    return value
    return None


def _reset() -> None:
    FakeDriver.polls.clear()
    FakeDriver.in_flight.clear()
    FakeDriver.most_in_flight.clear()


async def test_failing_and_hanging_devices_do_not_delay_others(caplog: pytest.LogCaptureFixture) -> None:
    """While one poll hangs (its 60 s timeout far away) and another device fails every poll, the good
    device is polled again and again: nothing waits for the hung poll."""
    _reset()
    caplog.set_level(logging.DEBUG, logger="roomwatch")
    agent = _agent(
        FakeConfig(name="good", driver="fake-test", interval="200ms"),
        FakeConfig(name="broken", driver="fake-test", behaviour="fail", interval="200ms"),
        FakeConfig(name="stuck", driver="fake-test", behaviour="hang", interval="200ms", timeout="60s"),
        FakeConfig(name="late", driver="fake-test", behaviour="hang", interval="200ms", timeout="300ms"),
    )
    await agent.start()
    try:
        await async_wait_for(lambda: FakeDriver.polls.get("good", 0) >= 6 and FakeDriver.polls.get("broken", 0) >= 6
                             and agent.devices["late"].up is False, timeout=60, what="6 polls of good and broken")
        assert FakeDriver.polls["stuck"] == 1 and FakeDriver.in_flight["stuck"] == 1  # its first poll still hangs
    finally:
        await agent.stop()
    assert _up(agent, "good") == 1
    assert _up(agent, "broken") == 0
    assert agent.devices["late"].reason == "no answer within 0.3s"
    # The reason is logged once (on the state change), not at every failed poll.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("device broken is down: DeviceError: connection refused by the UPS card" in m for m in warnings) == 1
    assert sum("device late is down" in m for m in warnings) == 1


async def test_overlapping_polls_are_skipped_and_counted() -> None:
    _reset()
    agent = _agent(FakeConfig(name="slow", driver="fake-test", behaviour="slow", interval="100ms", timeout="1s"))
    await agent.start()
    try:
        dev = agent.devices["slow"]
        await async_wait_for(lambda: dev.skipped >= 2 and FakeDriver.polls.get("slow", 0) >= 3, timeout=60,
                             what="skipped ticks")
    finally:
        await agent.stop()
    assert FakeDriver.most_in_flight["slow"] == 1  # never two polls of one device at once
    assert dev.up is True


async def test_recovery_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    _reset()
    caplog.set_level(logging.INFO, logger="roomwatch")
    agent = _agent(FakeConfig(name="flaky", driver="fake-test", behaviour="flaky", interval="100ms"))

    def lines(word: str) -> int:
        return sum(f"device flaky is {word}" in r.getMessage() for r in caplog.records)

    await agent.start()
    try:
        # polls 2-3 fail, 4-5 work, 6-7 fail …: every transition is logged, each once
        await async_wait_for(lambda: lines("down") >= 2 and lines("back up") >= 1, timeout=60, what="two outages")
    finally:
        await agent.stop()
    polls = FakeDriver.polls["flaky"]
    transitions = sum(1 for n in range(2, polls + 1) if (n % 4 in (2, 3)) != ((n - 1) % 4 in (2, 3)))
    assert lines("down") + lines("back up") == transitions


async def test_down_device_values_leave_agent_metrics() -> None:
    _reset()
    dev = FakeConfig(name="d", driver="fake-test", interval="100ms")
    agent = _agent(dev)
    await agent.start()
    try:
        await async_wait_for(lambda: "roomwatch_temperature_celsius" in {f.name for f in agent.latest.families()},
                             what="a reading")
        dev.behaviour = "fail"
        await async_wait_for(lambda: _up(agent, "d") == 0, what="the device down")
        names = {f.name for f in agent.latest.families()}
        assert "roomwatch_temperature_celsius" not in names  # no stale reading shown as current
    finally:
        await agent.stop()


async def test_labels_are_layered() -> None:
    _reset()
    agent = _agent(FakeConfig(name="lab", driver="fake-test", interval="100ms", labels={"rack": "r2"}))
    await agent.start()
    try:
        fam = await async_wait_for(lambda: next((f for f in agent.latest.families()
                                                 if f.name == "roomwatch_temperature_celsius"), None), what="a reading")
    finally:
        await agent.stop()
    block = fam.samples[0][0]
    for part in ('agent="t"', 'site="s"', 'room="r"', 'device="lab"', 'rack="r2"'):
        assert part in block


async def test_polls_read_the_injected_clock() -> None:
    """Stamps and the poll's duration come from the agent's clock (no scheduler: the test polls)."""
    _reset()
    clock = ManualClock()
    agent = _agent(FakeConfig(name="c", driver="fake-test", interval="10s"), clock=clock)
    seen: list[SampleRecord] = []
    agent.observers.append(lambda d, samples, events: seen.extend(samples))
    await agent.poll_device(agent.devices["c"])
    temp = next(s for s in seen if s.metric == "roomwatch_temperature_celsius")
    assert temp.ts == int(clock.t * 1000) and agent.devices["c"].duration == 0.0


async def test_a_silent_listening_device_goes_down_after_max_age_and_not_before() -> None:
    """max_age counts from the last message the agent got, on the agent's clock (no scheduler: the test runs the
    watch that the agent runs every second)."""
    _reset()
    clock = ManualClock()
    agent = _agent(FakeListenConfig(name="th1", driver="fake-listen-test"), clock=clock)
    dev = agent.devices["th1"]
    driver: Any = dev.driver
    clock.advance(1.0)
    driver.say(24.5)
    assert dev.up is True
    clock.advance(3.0)  # exactly max_age after the message: not yet
    await agent.check_silence()
    assert dev.up is True and _up(agent, "th1") == 1
    clock.advance(0.001)
    await agent.check_silence()
    assert dev.up is False and _up(agent, "th1") == 0
    assert dev.reason == "no message for 3s (max_age 3s)"
    assert "roomwatch_temperature_celsius" not in {f.name for f in agent.latest.families()}
    driver.say(25.0)  # speaks again: up with the new value
    assert dev.up is True and _up(agent, "th1") == 1


async def test_a_device_that_never_speaks_goes_down_max_age_after_the_start() -> None:
    _reset()
    clock = ManualClock()
    agent = _agent(FakeListenConfig(name="th2", driver="fake-listen-test", max_age=5.0), clock=clock)
    clock.advance(5.0)
    await agent.check_silence()
    assert agent.devices["th2"].up is None  # unknown, not down, until max_age has passed
    clock.advance(0.5)
    await agent.check_silence()
    assert agent.devices["th2"].up is False
    assert agent.devices["th2"].reason == "no message since the agent started 6s ago (max_age 5s)"


def test_default_poll_timeout_is_min_of_10s_and_interval() -> None:
    from roomwatch.agent.runtime import DeviceRunner

    runner: Any = DeviceRunner(FakeConfig(name="x", driver="fake-test", interval="60s"), FakeDriver.__new__(FakeDriver),
                               {}, 60.0)
    assert runner.timeout == 10.0  # default: min(10 s, interval)
    runner = DeviceRunner(FakeConfig(name="y", driver="fake-test", interval="2s"), FakeDriver.__new__(FakeDriver), {}, 2.0)
    assert runner.timeout == 2.0


async def test_state_change_becomes_an_event_for_observers() -> None:
    from roomwatch.drivers.base import Reading as R

    FakeDriver.polls.clear()
    dev = FakeConfig(name="door", driver="fake-test", interval="100ms")
    agent = _agent(dev)
    seen: list[tuple[str, float]] = []
    agent.observers.append(lambda d, samples, events: seen.extend((e.type, e.ts) for e in events))
    runner = agent.devices["door"]
    # drive the state directly through the publish path, as a poll would
    for value in (0.0, 0.0, 1.0, 1.0, 0.0):
        recs = agent._records(runner, [R("roomwatch_door_open", value)], 1_700_000_000.0)
        agent._publish(runner, recs, replace=False)
    assert [t for t, _ in seen] == ["door_open", "door_close"]
    assert seen[0][1] == 1_700_000_000_000  # the transition keeps the reading's time


async def test_an_alarm_state_at_the_first_reading_is_an_event_a_quiet_one_is_not() -> None:
    """Issue 13 point 6: a door already open (a UPS already on battery) when first read is as urgent as a change."""
    from roomwatch.drivers.base import Reading as R

    agent = _agent(FakeConfig(name="door", driver="fake-test"), FakeConfig(name="door2", driver="fake-test"),
                   FakeConfig(name="ups", driver="fake-test"))
    seen: list[tuple[str, str, str]] = []
    agent.observers.append(lambda d, samples, events: seen.extend((d.name, e.type, e.message) for e in events))
    publish = [("door", "roomwatch_door_open", 1.0), ("door2", "roomwatch_door_open", 0.0),
               ("ups", "roomwatch_ups_on_battery", 1.0), ("ups", "roomwatch_ups_battery_low", 0.0),
               ("door", "roomwatch_door_open", 1.0), ("door2", "roomwatch_door_open", 1.0)]
    for name, metric, value in publish:
        runner = agent.devices[name]
        agent._publish(runner, agent._records(runner, [R(metric, value)], 1_700_000_000.0), replace=False)
    assert [(n, t) for n, t, _ in seen] == [("door", "door_open"), ("ups", "ups_on_battery"), ("door2", "door_open")]
    assert seen[0][2] == seen[1][2] == "already so at the first reading" and seen[2][2] == ""
