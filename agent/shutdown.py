"""Shut this host down cleanly before the UPS battery dies (what NUT's upsmon and apcupsd do).

The action watches one UPS device through ``Agent.observers`` — the readings the
agent already takes — so it works with the collector unreachable. It runs its
command when the UPS is **on battery** and at least one of:

* the UPS itself reports low battery (``roomwatch_ups_battery_low`` = 1, NUT ``LB``);
* the estimated runtime is below ``runtime_below``;
* the UPS has been on battery for ``on_battery_for``;
* the UPS stopped answering while on battery for ``unreachable_on_battery``
  (upsmon's rule: a UPS last seen on battery and now silent is assumed to be dying).

A condition counts only after ``confirm_readings`` consecutive readings show it
(never on one glitchy reading). Then the action is *pending*: logged at
CRITICAL and pushed as a ``shutdown_pending`` event; after ``grace`` it pushes
``shutdown_started`` and runs the command, once per agent process. Mains back
(``confirm_readings`` readings with the UPS off battery) during the grace period
cancels it (``shutdown_cancelled``). :class:`ShutdownLogic` is the pure state
machine; :class:`ShutdownAction` adds timers, events and the command.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import Duration, Model, format_duration
from roomwatch.core.wire import EventRecord, SampleRecord

__all__ = ["ShutdownAction", "ShutdownActionConfig", "ShutdownLogic"]

log = logging.getLogger("roomwatch.action.shutdown")

#: How long to give the pusher to deliver ``shutdown_started`` before the command runs (collector up or not).
NOTIFY_WAIT = 5.0
#: A poweroff command that has not returned after this long is left running and reported.
COMMAND_WAIT = 120.0


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
    dry_run: bool = Field(default=False, description="log and push events, never run the command")


@dataclass(slots=True)
class Observation:
    """What one poll said about the UPS (None: not reported)."""

    up: bool
    on_battery: bool | None = None
    low: bool | None = None
    runtime: float | None = None


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
            if self.state == "pending":
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
    obs.up = device_up and obs.on_battery is not None
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
        agent.observers.append(self.observe)
        log.info("action %s: watching UPS %s%s; will run %s%s", cfg.name, cfg.ups,
                 f" {cfg.labels}" if cfg.labels else "", shlex.join(cfg.command), " (dry run)" if cfg.dry_run else "")

    # -- input -----------------------------------------------------------------
    def observe(self, dev: Any, samples: list[SampleRecord], events: list[EventRecord]) -> None:
        """Agent observer: called on the event loop after every poll of every device."""
        if dev.name != self.cfg.ups or self.logic.state == "fired":
            return
        self._labels = {**dev.labels, **self.cfg.labels, "action": self.cfg.name}
        obs, seen = observation_from(samples, self.cfg.labels)
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
        msg = (f"UPS {cfg.ups} is on battery and {self.logic.reason}: running `{shlex.join(cfg.command)}` "
               f"in {format_duration(cfg.grace) if cfg.grace else '0s'} unless mains returns"
               + (" (DRY RUN: the command will not run)" if cfg.dry_run else ""))
        log.critical("SHUTDOWN PENDING (action %s): %s", cfg.name, msg)
        self._event("shutdown_pending", msg)
        self._timer = asyncio.get_running_loop().create_task(self._after_grace(), name=f"shutdown-{cfg.name}")

    def _on_cancelled(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        msg = f"mains power is back on UPS {self.cfg.ups}: shutdown cancelled"
        log.warning("SHUTDOWN CANCELLED (action %s): %s", self.cfg.name, msg)
        self._event("shutdown_cancelled", msg)

    async def _after_grace(self) -> None:
        await asyncio.sleep(self.cfg.grace)
        if self.logic.state != "pending":
            return
        self.logic.state = "fired"
        self.fired_at = time.time()
        self._timer = None
        self._task = asyncio.current_task()
        await self._fire()

    async def _fire(self) -> None:
        cfg = self.cfg
        cmd = shlex.join(cfg.command)
        if cfg.dry_run:
            msg = f"DRY RUN: would run `{cmd}` now (UPS {cfg.ups}: {self.logic.reason})"
        else:
            msg = f"running `{cmd}` now (UPS {cfg.ups}: {self.logic.reason})"
        log.critical("SHUTDOWN STARTED (action %s): %s", cfg.name, msg)
        self._event("shutdown_started", msg)
        await self._let_event_out()
        if cfg.dry_run:
            return
        try:
            proc = await asyncio.create_subprocess_exec(*cfg.command, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            log.critical("SHUTDOWN FAILED (action %s): cannot run %s: %s", cfg.name, cmd, exc.strerror or exc)
            self._event("shutdown_failed", f"cannot run `{cmd}`: {exc.strerror or exc}")
            return
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_WAIT)
        except TimeoutError:
            log.error("action %s: `%s` still running after %.0fs; leaving it be", cfg.name, cmd, COMMAND_WAIT)
            return
        self.returncode = proc.returncode
        text = out.decode(errors="replace").strip()
        if proc.returncode == 0:
            log.warning("action %s: `%s` exited 0%s", cfg.name, cmd, f": {text[:500]}" if text else "")
        else:
            log.critical("SHUTDOWN FAILED (action %s): `%s` exited %s: %s", cfg.name, cmd, proc.returncode,
                         text[:500] or "(no output)")
            self._event("shutdown_failed", f"`{cmd}` exited {proc.returncode}: {text[:300]}")

    async def _let_event_out(self) -> None:
        """Give the pusher a few seconds to deliver shutdown_started; go ahead regardless.

        No wait when the collector has not accepted a push lately: the battery matters more.
        """
        pusher = getattr(self.agent, "pusher", None)
        if pusher is None:
            return
        recent = 3 * pusher.target.push_interval + 10.0
        if not pusher.last_ok or time.time() - pusher.last_ok > recent:
            log.warning("action %s: collector unreachable; not waiting for the event to be delivered", self.cfg.name)
            return
        pusher.seal()
        pusher.kick()
        deadline = time.monotonic() + NOTIFY_WAIT
        while pusher.outbox.depth() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

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
