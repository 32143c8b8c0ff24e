"""Shut this host down cleanly before the UPS battery dies (what NUT's upsmon and apcupsd do).

The action watches one UPS device through ``Agent.observers`` — the readings the
agent already takes — so it works with the collector unreachable. It runs its
command when the UPS is **on battery** and at least one of:

* the UPS itself reports low battery (``roomwatch_ups_battery_low`` = 1, NUT ``LB``);
* the estimated runtime is below ``runtime_below``;
* the UPS has been on battery for ``on_battery_for``;
* the UPS stopped answering while on battery for ``unreachable_on_battery``
  (upsmon's rule: a UPS last seen on battery and now silent is assumed to be dying).

It also runs, on mains or not, when the UPS shows forced shutdown (``FSD``) set by
its NUT primary (``on_fsd``: what a secondary upsmon does), after ``fsd_delay``.

A condition counts only after ``confirm_readings`` consecutive readings show it
(never on one glitchy reading). Then the action is *pending*: logged at
CRITICAL and pushed as a ``shutdown_pending`` event; after ``grace`` it pushes
``shutdown_started`` and runs the command, once per agent process. Mains back
(``confirm_readings`` readings with the UPS off battery) during the grace period
cancels it (``shutdown_cancelled``). :class:`ShutdownLogic` is the pure state
machine; :class:`ShutdownAction` adds timers and events; the steps after the
grace delay (FSD for the secondaries, the UPS switched off after a delay, the
command, the logout) are :class:`agent.shutdown_sequence.ShutdownSequence`.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from roomwatch.agent.ups_control import UpsOffConfig
from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import Duration, Model, format_duration
from roomwatch.core.wire import EventRecord, SampleRecord

__all__ = ["ShutdownAction", "ShutdownActionConfig", "ShutdownLogic"]

log = logging.getLogger("roomwatch.action.shutdown")


class ShutdownActionConfig(Model):
    """``actions: - type: shutdown`` — run a command before the UPS battery runs out."""

    type: Literal["shutdown"]
    name: str = Field(default="shutdown", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
                      description="names this action in logs and events")
    ups: str = Field(min_length=1, description="name of the UPS device (devices[].name) to watch")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="pick one UPS of a device that reports several, e.g. {ups: rack1}")
    command: list[str] = Field(default_factory=lambda: ["systemctl", "poweroff"], min_length=1,
                               description="argv run once, without a shell")
    runtime_below: Duration | None = Field(default=None, gt=0, description="critical when runtime left is below this")
    on_battery_for: Duration | None = Field(default=None, gt=0, description="critical after this long on battery")
    unreachable_on_battery: Duration | None = Field(
        default=120.0, description="critical when the UPS was on battery and has not answered for this long; 0 = off")
    grace: Duration = Field(default=30.0, ge=0, description="delay between pending and running the command")
    confirm_readings: int = Field(default=2, ge=2, le=100,
                                  description="consecutive readings a state needs before it counts (at least 2)")
    dry_run: bool = Field(default=False, description="log each step and push events; set no FSD, send nothing "
                                                     "to the UPS, never run the command")
    on_fsd: bool = Field(default=True, description="also shut down when the UPS shows FSD (forced shutdown set by "
                                                   "its NUT primary), on mains or not, as a secondary upsmon does")
    fsd_delay: Duration = Field(default=5.0, ge=0, le=600, description="wait after seeing FSD (upsmon's FINALDELAY)")
    nut_primary: bool = Field(default=False, description="before the command, set FSD on this UPS for the clients of "
                                                         "nut_server and wait for them to log out (upsmon primary)")
    hostsync: Duration = Field(default=60.0, ge=0, le=3600,
                               description="longest wait for the secondaries to log out (upsmon's HOSTSYNC)")
    host_shutdown_time: Duration = Field(default=120.0, ge=0, le=3600,
                                         description="how long this host takes to power off once the command runs")
    ups_off: UpsOffConfig | None = Field(default=None, description="then switch the UPS output off after a delay, "
                                                                   "and back on when mains returns")

    def sequence_seconds(self, interval: float) -> float:
        """Time from the first critical reading to this host being off: what the battery must still last."""
        return (self.confirm_readings * interval + self.grace + (self.hostsync if self.nut_primary else 0.0)
                + self.host_shutdown_time)


@dataclass(slots=True)
class Observation:
    """What one poll said about the UPS (None: not reported)."""

    up: bool
    on_battery: bool | None = None
    low: bool | None = None
    runtime: float | None = None
    fsd: bool = False  # the UPS's NUT status carries FSD (set by its primary)


class ShutdownLogic:
    """The decision, free of I/O and clocks: feed observations with their time, get transitions back."""

    def __init__(self, cfg: ShutdownActionConfig):
        self.cfg = cfg
        self.state: Literal["idle", "pending", "fired"] = "idle"
        self.ob_streak = 0  # consecutive readings on battery
        self.ol_streak = 0  # consecutive readings on mains
        self.critical_streak = 0
        self.on_battery = False  # confirmed on battery (ob_streak reached confirm_readings, mains not back)
        self.ob_since: float | None = None  # first reading of the current outage
        self.down_since: float | None = None
        self.reason = ""
        self.fsd = False  # pending because of FSD

    def _critical(self, now: float, obs: Observation) -> str | None:
        cfg = self.cfg
        if obs.low:
            return "the UPS reports low battery"
        if cfg.runtime_below is not None and obs.runtime is not None and obs.runtime < cfg.runtime_below:
            return f"runtime left {obs.runtime:.0f}s is below {format_duration(cfg.runtime_below)}"
        if cfg.on_battery_for is not None and self.ob_since is not None and now - self.ob_since >= cfg.on_battery_for:
            return f"on battery for {now - self.ob_since:.0f}s (limit {format_duration(cfg.on_battery_for)})"
        return None

    def observe(self, now: float, obs: Observation) -> str | None:
        """Take one reading; return ``"pending"`` or ``"cancelled"`` on a transition, else None."""
        n = self.cfg.confirm_readings
        if obs.fsd and self.cfg.on_fsd and self.state == "idle":
            # A latch the primary set on purpose, not a glitchy reading: no confirmation, and mains
            # coming back does not cancel it (the primary is switching the UPS off).
            self.fsd = True
            return self._pending("the UPS shows forced shutdown (FSD) set by its NUT primary")
        if not obs.up or obs.on_battery is None:
            # No fresh state: streaks stand still, but a UPS last seen on battery keeps draining.
            if self.down_since is None:
                self.down_since = now
            limit = self.cfg.unreachable_on_battery
            if (self.state == "idle" and self.on_battery and limit and self.down_since is not None
                    and now - self.down_since >= limit):
                return self._pending(f"the UPS was on battery and has not answered for {now - self.down_since:.0f}s")
            return None
        self.down_since = None
        if obs.on_battery:
            self.ob_streak += 1
            self.ol_streak = 0
            if self.ob_since is None:
                self.ob_since = now
            if self.ob_streak >= n:
                self.on_battery = True
            reason = self._critical(now, obs)
            self.critical_streak = self.critical_streak + 1 if reason else 0
            if self.state == "idle" and reason and self.critical_streak >= n and self.ob_streak >= n:
                return self._pending(reason)
            return None
        self.ol_streak += 1
        self.ob_streak = self.critical_streak = 0
        if self.ol_streak >= n:
            self.on_battery = False
            self.ob_since = None
            if self.state == "pending" and not self.fsd:
                self.state = "idle"
                self.reason = ""
                return "cancelled"
        return None

    def _pending(self, reason: str) -> str:
        self.state = "pending"
        self.reason = reason
        return "pending"


def observation_from(samples: list[SampleRecord], labels: dict[str, str]) -> tuple[Observation, int]:
    """The UPS state in one poll's samples (those carrying ``labels``), and how many UPS matched.

    ``up`` means the state is known: the device answered and reported whether the UPS is on battery.
    """
    obs = Observation(up=False)
    device_up = False
    seen = 0
    for s in samples:
        if s.metric == v.DEVICE_UP:  # per device, without per-UPS labels
            device_up = s.value >= 0.5
            continue
        if labels and any(s.labels.get(k) != val for k, val in labels.items()):
            continue
        if s.metric == v.UPS_ON_BATTERY:
            seen += 1
            if obs.on_battery is None:
                obs.on_battery = s.value >= 0.5
        elif s.metric == v.UPS_BATTERY_LOW and obs.low is None:
            obs.low = s.value >= 0.5
        elif s.metric == v.UPS_BATTERY_RUNTIME and obs.runtime is None:
            obs.runtime = s.value
        elif s.metric == v.UPS_STATUS_FLAG and s.labels.get("flag") == "FSD" and s.value >= 0.5:
            obs.fsd = True
    obs.up = device_up and obs.on_battery is not None
    obs.fsd = obs.fsd and device_up
    return obs, seen


class ShutdownAction:
    """Wires :class:`ShutdownLogic` to an agent: observer, grace timer, events, the command."""

    def __init__(self, cfg: ShutdownActionConfig, agent: Any):
        self.cfg = cfg
        self.agent = agent
        self.logic = ShutdownLogic(cfg)
        self.fired_at: float | None = None
        self.returncode: int | None = None
        self._timer: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._labels: dict[str, str] = {}
        self._warned_many = False
        self.sequence: Any = None
        agent.observers.append(self.observe)
        register_sequence_time(agent, cfg)
        log.info("action %s: watching UPS %s%s; will run %s%s", cfg.name, cfg.ups,
                 f" {cfg.labels}" if cfg.labels else "", shlex.join(cfg.command), " (dry run)" if cfg.dry_run else "")

    # -- input -----------------------------------------------------------------
    def observe(self, dev: Any, samples: list[SampleRecord], events: list[EventRecord]) -> None:
        """Agent observer: called on the event loop after every poll of every device."""
        if dev.name != self.cfg.ups or self.logic.state == "fired":
            return
        self._labels = {**dev.labels, **self.cfg.labels, "action": self.cfg.name}
        obs, seen = observation_from(samples, self.cfg.labels)
        table = getattr(self.agent, "ups_table", None)
        served = table.for_device(dev.name, self.cfg.labels) if table is not None else None
        if served is not None and served.fsd and not getattr(self.sequence, "set_fsd", False):
            obs.fsd = True  # a NUT primary client set FSD on this agent's own NUT server
        if seen > 1 and not self._warned_many:
            self._warned_many = True
            log.error("action %s: device %s reports %d UPS units; set labels (e.g. {ups: NAME}) to pick one; "
                      "using the first", self.cfg.name, self.cfg.ups, seen)
        change = self.logic.observe(time.monotonic(), obs)
        if change == "pending":
            self._on_pending()
        elif change == "cancelled":
            self._on_cancelled()

    # -- transitions ---------------------------------------------------------------
    def event(self, kind: str, message: str) -> None:
        """Push an event about this action (labels: the UPS's, ``action``, ``dry_run``)."""
        self._event(kind, message)

    def _event(self, kind: str, message: str) -> None:
        labels = dict(self._labels)
        if self.cfg.dry_run:
            labels["dry_run"] = "true"
        record = EventRecord(kind, labels, int(time.time() * 1000), None, message)
        pusher = getattr(self.agent, "pusher", None)
        if pusher is not None:
            pusher.add_events([record])

    def _on_pending(self) -> None:
        cfg = self.cfg
        delay = cfg.fsd_delay if self.logic.fsd else cfg.grace
        what = f"UPS {cfg.ups}: {self.logic.reason}" if self.logic.fsd else \
            f"UPS {cfg.ups} is on battery and {self.logic.reason}"
        msg = (f"{what}: running `{shlex.join(cfg.command)}` in {format_duration(delay) if delay else '0s'}"
               + ("" if self.logic.fsd else " unless mains returns")
               + (" (DRY RUN: the command will not run)" if cfg.dry_run else ""))
        log.critical("SHUTDOWN PENDING (action %s): %s", cfg.name, msg)
        self._event("shutdown_pending", msg)
        self._timer = asyncio.get_running_loop().create_task(self._after_grace(delay), name=f"shutdown-{cfg.name}")

    def _on_cancelled(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        msg = f"mains power is back on UPS {self.cfg.ups}: shutdown cancelled"
        log.warning("SHUTDOWN CANCELLED (action %s): %s", self.cfg.name, msg)
        self._event("shutdown_cancelled", msg)

    async def _after_grace(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.logic.state != "pending":
            return
        self.logic.state = "fired"
        self.fired_at = time.time()
        self._timer = None
        self._task = asyncio.current_task()
        from roomwatch.agent.shutdown_sequence import ShutdownSequence

        self.sequence = ShutdownSequence(self)
        await self.sequence.run()

    async def aclose(self) -> None:
        """Agent stopping: drop a pending timer; a command already started is left to finish."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            log.warning("action %s: agent stopping while a shutdown was pending", self.cfg.name)
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except (TimeoutError, asyncio.CancelledError):
                pass


def register_sequence_time(agent: Any, cfg: ShutdownActionConfig) -> None:
    """Export ``roomwatch_ups_shutdown_sequence_seconds`` with the UPS's readings (the longest of its actions).

    The series carries the UPS's own labels (plus ``labels`` picking one UPS of a device), so a
    collector rule can compare a runtime prediction with it series by series.
    """
    times: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, ShutdownActionConfig]] | None = \
        getattr(agent, "_sequence_actions", None)
    if times is None:
        times = agent._sequence_actions = {}

        def enrich(dev: Any, samples: list[SampleRecord]) -> list[SampleRecord]:
            out = []
            ms = samples[0].ts if samples else int(time.time() * 1000)
            for (device, picked), actions in times.items():
                if device != dev.name:
                    continue
                seconds = max(a.sequence_seconds(dev.interval) for a in actions.values())
                out.append(SampleRecord(v.UPS_SHUTDOWN_SEQUENCE, {**dev.labels, **dict(picked)}, seconds, ms))
            return out

        if hasattr(agent, "enrichers"):
            agent.enrichers.append(enrich)
    times.setdefault((cfg.ups, tuple(sorted(cfg.labels.items()))), {})[cfg.name] = cfg
