"""Scheduled UPS battery self-tests (``actions: - type: battery_test``), with the result as a metric.

A quick battery test (10–30 s on battery) finds a dead battery while mains is
still there to catch the load. The action starts one on its schedule — every
``every``, at ``at`` on one of ``days`` (working hours by default: someone is
around if the test drops the load) — only when the UPS is on mains with a
charged battery; then it reads the UPS's own result until the test is done
(at most ``max_duration``). Commands and result objects per dialect are in
:mod:`agent.ups_control` (RFC 1628 ``upsTestId``, APC ``upsAdvTestDiagnostics``,
XPPC ``upsSmartTestDiagnostics``, NUT ``test.battery.start.quick``).

While its test runs, the agent reports the UPS on mains (and
``roomwatch_ups_self_test_in_progress`` 1): the on-battery is on purpose, no one
is paged and no outage is recorded. The result goes out with the UPS's readings
as ``roomwatch_ups_self_test_failed`` (0/1) and
``roomwatch_ups_last_self_test_timestamp_seconds``, kept across restarts in the
battery history file; a failed test also fires UPSBatteryReplace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any, Literal

from pydantic import Field

from roomwatch.agent.ups_control import UpsCommandError, UpsControl, self_test_plan
from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import Duration, Model, Secret, format_duration
from roomwatch.core.wire import EventRecord, SampleRecord

__all__ = ["BatteryTestAction", "BatteryTestConfig", "next_due"]

log = logging.getLogger("roomwatch.action.battery_test")

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAYS: list[Day] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WORKDAYS: list[Day] = _DAYS[:5]
#: A test starts only with the battery at least this charged (not right after an outage).
MIN_CHARGE = 0.9
POLL = 5.0


class BatteryTestConfig(Model):
    """``actions: - type: battery_test`` — a quick battery self-test on a schedule."""

    type: Literal["battery_test"]
    name: str = Field(default="battery-test", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    ups: str = Field(min_length=1, description="name of the UPS device (devices[].name)")
    labels: dict[str, str] = Field(default_factory=dict)
    every: Duration = Field(default=30 * 86400.0, ge=86400.0, description="time between tests (at least 1d)")
    at: dt.time = Field(default=dt.time(10, 0), description="local time of day to start")
    days: list[Day] = Field(default_factory=lambda: list(_WORKDAYS),
                            description="weekdays a test may run (someone should be there)")
    max_duration: Duration = Field(default=180.0, ge=10.0, le=3600.0,
                                   description="longest the test's on-battery is taken as the test")
    method: Literal["auto", "rfc1628", "apc", "xppc", "nut"] = "auto"
    community: Secret | None = Field(default=None, description="SNMP write community (default: the device's)")
    username: str | None = Field(default=None, min_length=1, description="NUT: upsd.users user with the instcmd")
    password: Secret | None = None
    dry_run: bool = Field(default=False, description="log when the test would run; send nothing")


def next_due(last: float | None, now: float, cfg: BatteryTestConfig) -> float:
    """Unix time of the next test: the first allowed day at ``at`` (local time) not before ``last + every``."""
    earliest = max(now, (last + cfg.every) if last is not None else now)
    day = dt.datetime.fromtimestamp(earliest).astimezone()
    allowed = {_DAYS.index(d) for d in cfg.days}
    for offset in range(8 + int(cfg.every // 86400)):
        candidate = dt.datetime.combine(day.date() + dt.timedelta(days=offset), cfg.at, day.tzinfo)
        if candidate.weekday() in allowed and candidate.timestamp() >= earliest:
            return candidate.timestamp()
    return earliest + 86400.0


class BatteryTestAction:
    """Runs :class:`BatteryTestConfig` on its schedule; :meth:`run_test` does one test now."""

    def __init__(self, cfg: BatteryTestConfig, agent: Any):
        self.cfg = cfg
        self.agent = agent
        self.state: dict[str, float] = {}  # on_battery, charge of the last poll
        self.task: asyncio.Task[None] | None = None
        self.running = False
        agent.observers.append(self.observe)

    @property
    def key(self) -> str:
        ups = self.cfg.labels.get("ups")
        return self.cfg.ups if ups is None else f"{self.cfg.ups}/{ups}"

    def observe(self, dev: Any, samples: list[SampleRecord], events: list[EventRecord]) -> None:
        if dev.name != self.cfg.ups:
            return
        for s in samples:
            if s.metric in (v.UPS_ON_BATTERY, v.UPS_BATTERY_CHARGE) and all(
                    s.labels.get(k) == val for k, val in self.cfg.labels.items()):
                self.state[s.metric] = s.value

    async def run(self) -> None:
        """The schedule: sleep until due, test, repeat (cancelled at agent stop)."""
        battery = getattr(self.agent, "battery", None)
        while True:
            last = battery.last_test(self.key) if battery is not None else None
            due = next_due(last[0] if last else None, time.time(), self.cfg)
            log.info("action %s: next battery self-test of %s at %s", self.cfg.name, self.cfg.ups,
                     dt.datetime.fromtimestamp(due).astimezone().strftime("%Y-%m-%d %H:%M %Z"))
            await asyncio.sleep(max(0.0, due - time.time()))
            if not await self.run_test() and battery is not None:
                # Skipped (on battery, low charge) or refused: try again tomorrow rather than in `every`.
                await asyncio.sleep(86400.0)

    def _event(self, message: str, failed: int | None) -> None:
        dev = self.agent.devices.get(self.cfg.ups)
        labels = {**(dev.labels if dev else {}), **self.cfg.labels, "action": self.cfg.name}
        pusher = getattr(self.agent, "pusher", None)
        if pusher is not None:
            pusher.add_events([EventRecord("ups_self_test", labels, int(time.time() * 1000),
                                           None if failed is None else float(failed), message)])

    async def run_test(self) -> bool:
        """One self-test now (if the UPS is on mains and charged); True when a result was recorded."""
        cfg = self.cfg
        dev = self.agent.devices.get(cfg.ups)
        if self.state.get(v.UPS_ON_BATTERY, 0.0) >= 0.5 or self.state.get(v.UPS_BATTERY_CHARGE, 1.0) < MIN_CHARGE:
            log.warning("action %s: battery self-test of %s skipped: the UPS is on battery or not charged "
                        "(charge %.0f%%)", cfg.name, cfg.ups, 100 * self.state.get(v.UPS_BATTERY_CHARGE, 0.0))
            return False
        try:
            control = UpsControl(dev, cfg.method, cfg.community, cfg.username, cfg.password)
        except UpsCommandError as exc:
            log.error("action %s: %s", cfg.name, exc)
            return False
        plan = self_test_plan(control.family)
        if cfg.dry_run:
            log.warning("action %s: DRY RUN: would start a battery self-test: %s", cfg.name, control.describe(plan))
            return False
        started = time.time()
        self.running = True
        self.agent.testing[cfg.ups] = self.agent.clock.monotonic() + cfg.max_duration
        log.warning("action %s: starting a battery self-test of %s: %s", cfg.name, cfg.ups, control.describe(plan))
        try:
            await control.run(plan)
            failed, in_progress = await self._wait(control, started)
        except UpsCommandError as exc:
            log.error("action %s: battery self-test of %s not run: %s", cfg.name, cfg.ups, exc)
            self._event(f"battery self-test not run: {exc}", None)
            return False
        finally:
            self.agent.testing.pop(cfg.ups, None)
            self.running = False
        if in_progress or failed is None:
            words = "still running" if in_progress else "gave no result (aborted, or the UPS has none)"
            log.warning("action %s: battery self-test of %s %s after %s", cfg.name, cfg.ups, words,
                        format_duration(cfg.max_duration))
        else:
            log.warning("action %s: battery self-test of %s %s", cfg.name, cfg.ups, "FAILED" if failed else "passed")
        battery = getattr(self.agent, "battery", None)
        if battery is not None:
            battery.record_test(self.key, started, failed)
        self._event(f"battery self-test of {cfg.ups}: " + ("failed" if failed else "passed" if failed == 0 else
                                                           "no result"), failed)
        return True

    async def _wait(self, control: UpsControl, started: float) -> tuple[int | None, bool]:
        """Read the result until the test is over (or ``max_duration``)."""
        deadline = started + self.cfg.max_duration
        await asyncio.sleep(min(POLL, self.cfg.max_duration))
        failed, in_progress = await control.read_result()
        while in_progress and time.time() < deadline:
            await asyncio.sleep(POLL)
            failed, in_progress = await control.read_result()
        return failed, in_progress

    async def aclose(self) -> None:
        """Agent stopping: the schedule task is cancelled by the agent."""
