"""The agent's main loop: schedule every device, collect readings, push them.

Each polled device is an APScheduler interval job with jitter and
``max_instances=1`` (a poll still running at the next tick skips that tick and
counts it). Every poll runs under a timeout, so one hung device never delays
the others. A device's state changes (up → down, down → up) are logged once.

Time: APScheduler decides when a poll runs; everything the agent concludes from
time — sample stamps, poll durations, ``max_age`` of listening devices
(:meth:`Agent.check_silence`), push intervals and backoff, the spool's pacing —
reads the injected :class:`~roomwatch.core.clock.Clock`, so tests set the time and
call :meth:`Agent.poll_device` or :meth:`Agent.check_silence` themselves.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from roomwatch import __version__
from roomwatch.agent.actions import build_actions
from roomwatch.agent.config import AgentConfig
from roomwatch.agent.latest import LatestValues
from roomwatch.agent.push import Pusher
from roomwatch.agent.spool import open_outbox, spool_samples
from roomwatch.core import vocabulary as v
from roomwatch.core.clock import SYSTEM, Clock
from roomwatch.core.plural import plural
from roomwatch.core.wire import EventRecord, SampleRecord
from roomwatch.drivers.base import DeviceConfig, Driver, Event, Reading
from roomwatch.drivers.plausible import screen
from roomwatch.drivers.registry import get as get_driver

__all__ = ["Agent", "DeviceRunner"]

log = logging.getLogger("roomwatch.agent")
T = TypeVar("T")

_HEALTH = v.HEALTH_METRICS  # device_up, poll errors, a driver's own link counters: kept while down


def _is_ups(cfg: Any) -> bool:
    from roomwatch.drivers.ups import UpsDeviceConfig

    return isinstance(cfg, UpsDeviceConfig)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DeviceRunner:
    """One configured device: its driver, labels and health state."""

    def __init__(self, cfg: DeviceConfig, driver: Driver, base_labels: dict[str, str], interval: float,
                 clock: Clock = SYSTEM):
        self.cfg = cfg
        self.driver = driver
        self.name = cfg.name
        self.interval = interval
        self.timeout = cfg.timeout if cfg.timeout is not None else min(10.0, interval)
        self.labels = {**base_labels, **cfg.labels, "device": cfg.name}
        self.up: bool | None = None
        self.reason = ""
        self.changed_at = clock.time()
        self.last_seen = 0.0
        self.errors = 0
        self.skipped = 0
        self.duration: float | None = None
        self.started = False
        #: Listening devices: the current value of each series and the monotonic time it arrived,
        #: re-sent every interval while the device is up, so a door closed for an hour stays
        #: current at the collector (a measurement only while younger than ``max_age``).
        self.current: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[SampleRecord, float]] = {}
        self.refreshed = 0.0  # monotonic time current values were last re-sent
        self.polling = False  # a poll of it is running (scheduled or asked for by poll_now)
        self.repoll = False  # poll_now was asked while it ran: poll again when it ends


class _DriverContext:
    """What a driver sees of the agent (see :class:`roomwatch.drivers.base.Context`)."""

    def __init__(self, agent: Agent, runner_name: str):
        self._agent = agent
        self._name = runner_name
        self.log = logging.getLogger(f"roomwatch.driver.{runner_name}")

    def emit(self, readings: Sequence[Reading], events: Sequence[Event] = ()) -> None:
        self._agent.on_emit(self._name, readings, events)

    def shared(self, key: Hashable, factory: Callable[[], T]) -> T:
        return self._agent.shared(key, factory)


class Agent:
    """Runs the devices of one agent config until :meth:`stop`."""

    def __init__(self, config: AgentConfig, clock: Clock = SYSTEM):
        self.config = config
        #: Every time the agent reads (stamps, durations, max_age, push intervals, pacing): tests inject their own.
        self.clock = clock
        a = config.agent
        self.base_labels = {k: val for k, val in {"agent": a.id, "site": a.site, "room": a.room, **a.labels}.items() if val}
        self.latest = LatestValues()
        self.devices: dict[str, DeviceRunner] = {}
        self._shared: dict[Hashable, Any] = {}
        self._states: dict[tuple[str, tuple[tuple[str, str], ...]], bool] = {}
        #: Called with (device, samples, events) after every poll or message, on the event loop:
        #: the hook for actions (shutdown on low battery) and local fallback alerting.
        self.observers: list[Callable[[DeviceRunner, list[SampleRecord], list[EventRecord]], None]] = []
        #: Called with (device, samples) of every poll or message before it is stored and pushed; each
        #: returns extra samples of that device (battery health, the shutdown sequence's duration), so
        #: they travel, and stay current at the collector, with the device's own readings.
        self.enrichers: list[Callable[[DeviceRunner, list[SampleRecord]], list[SampleRecord]]] = []
        #: device → monotonic deadline of a self-test the agent started (its on-battery is not an outage)
        self.testing: dict[str, float] = {}
        self._scheduler: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._polls: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started_at = clock.time()
        self._started_m = clock.monotonic()  # start() sets it again
        self.pusher: Pusher | None = None
        if config.collector is not None:
            self.pusher = Pusher(a.id, config.collector, outbox=open_outbox(config, clock), extra_samples=self._self_samples,
                                 clock=clock)
        self.fallback: Any = None
        if config.fallback is not None:
            from roomwatch.agent.fallback import FallbackAlerter

            self.fallback = FallbackAlerter(config.fallback, self)
            self.observers.append(self.fallback.observe)
            if self.pusher is not None:
                self.pusher.on_accepted.append(self.fallback.accepted)
        for dev_cfg in config.all_devices():
            cls = get_driver(dev_cfg.driver)
            # host: {} without an interval falls back on the agent's default, like any device.
            interval = dev_cfg.interval or (config.host.interval if dev_cfg.driver == "host" else None) or a.interval
            runner = DeviceRunner(dev_cfg, cls(dev_cfg, _DriverContext(self, dev_cfg.name)), self.base_labels, interval,
                                  clock)
            runner.timeout = runner.driver.poll_timeout(runner.timeout)
            self.devices[dev_cfg.name] = runner
        self.traps: Any = None
        if config.traps is not None:
            from roomwatch.agent.traps import TrapService

            self.traps = TrapService(self, config.traps)
        self.battery: Any = None
        if any(_is_ups(d) for d in config.all_devices()):
            from roomwatch.agent.battery_health import BatteryHealth

            spool = config.agent.spool
            self.battery = BatteryHealth(self, str(Path(spool).parent / "battery.db") if spool else None)
        self.nut_server: Any = None
        if config.nut_server is not None:
            from roomwatch.agent.nut_server import NutServer
            from roomwatch.agent.nut_view import UpsTable

            # Registered before the actions, so a shutdown action sees the table current.
            self.ups_table = UpsTable(self)
            self.observers.append(self.ups_table.observe)
            self.nut_server = NutServer(config.nut_server, self.ups_table, on_fsd=self._on_fsd)
        self.actions = build_actions(self)  # each registers itself in self.observers

    # -- shared resources ----------------------------------------------------
    def shared(self, key: Hashable, factory: Callable[[], T]) -> T:
        if key not in self._shared:
            self._shared[key] = factory()
        found: T = self._shared[key]
        return found

    # -- readings ---------------------------------------------------------------
    def _records(self, dev: DeviceRunner, readings: Sequence[Reading], now: float) -> list[SampleRecord]:
        base = dev.labels
        out = []
        # Every driver's readings meet the vocabulary's physical ranges here, whatever the driver
        # checked itself: a value outside is left out and counted (drivers/plausible.py).
        for r in screen(readings, dev.driver.drops):
            labels = {**base, **r.labels} if r.labels else dict(base)
            out.append(SampleRecord(r.metric, labels, float(r.value), int((r.ts or now) * 1000)))
        return out

    def _health(self, dev: DeviceRunner, now: float) -> list[SampleRecord]:
        ms = int(now * 1000)
        labels = {**dev.labels, "driver": dev.driver.name}
        out = [
            SampleRecord(v.DEVICE_UP, labels, 1.0 if dev.up else 0.0, ms),
            SampleRecord(v.DEVICE_POLL_ERRORS, dev.labels, float(dev.errors), ms),
        ]
        if dev.driver.mode == "poll":
            out.append(SampleRecord(v.DEVICE_POLL_SKIPPED, dev.labels, float(dev.skipped), ms))
            if dev.duration is not None:
                out.append(SampleRecord(v.DEVICE_POLL_DURATION, dev.labels, dev.duration, ms))
        try:
            own = [*dev.driver.health(), *dev.driver.drops.readings()]
        except Exception:  # a driver's statistics must not stop its readings
            log.exception("health of %s", dev.name)
            own = []
        for r in own:
            out.append(SampleRecord(r.metric, {**dev.labels, **r.labels} if r.labels else dev.labels, float(r.value), ms))
        return out

    def _mask_self_test(self, dev: DeviceRunner, records: list[SampleRecord]) -> list[SampleRecord]:
        """During a self-test the agent started, the UPS is on battery on purpose: report mains, and the test."""
        if self.clock.monotonic() > self.testing[dev.name]:
            del self.testing[dev.name]
            return records
        out = []
        for rec in records:
            if rec.metric == v.UPS_ON_BATTERY and rec.value >= 0.5:
                rec = SampleRecord(rec.metric, rec.labels, 0.0, rec.ts)
            out.append(rec)
        if any(r.metric == v.UPS_ON_BATTERY for r in out):
            base = next(r for r in out if r.metric == v.UPS_ON_BATTERY)
            out.append(SampleRecord(v.UPS_SELF_TEST_IN_PROGRESS, base.labels, 1.0, base.ts))
        return out

    def _on_fsd(self, ups: Any, by: str) -> None:
        """The NUT server latched forced shutdown on a UPS: tell the collector at once."""
        runner = self.devices.get(ups.device)
        labels = dict(runner.labels) if runner is not None else {**self.base_labels, "device": ups.device}
        if ups.ups:
            labels["ups"] = ups.ups
        if self.pusher is not None:
            self.pusher.add_events([EventRecord("ups_fsd", labels, int(self.clock.time() * 1000), 1.0,
                                                f"forced shutdown (FSD) set on UPS {ups.name} by {by}")])

    def _publish(self, dev: DeviceRunner, records: list[SampleRecord], replace: bool,
                 events: list[EventRecord] | None = None, own: list[SampleRecord] | None = None) -> None:
        """Store and queue readings; a changed door/leak/smoke/on-battery state becomes an event.

        ``own``: what the device itself said, when ``records`` carry a state only an SNMP trap
        stated (agent/traps.py). The observers — shutdown actions, the NUT server's status, battery
        health, local alerts — then get ``own``: a trap, which anyone knowing a trap community can
        send, is shown and pushed at once, but nothing acts on it until the device's own readings
        say so (the trap hastens that poll). ``own=[]``: no observer is told.
        """
        events = list(events or [])
        if dev.name in self.testing:
            records = self._mask_self_test(dev, records)
            if own and dev.name in self.testing:  # (the first call forgets a test that is over)
                own = self._mask_self_test(dev, own)
        if dev.up:
            for enrich in self.enrichers:
                try:
                    extra = enrich(dev, records)
                except Exception:  # an enricher (battery health, shutdown action) must not stop polling
                    log.exception("enricher %r failed", enrich)
                    continue
                records = records + extra
                if own:
                    own = own + extra
        for rec in records:
            types = v.STATE_EVENTS.get(rec.metric)
            if types is None:
                continue
            key = (rec.metric, tuple(sorted(rec.labels.items())))
            before = self._states.get(key)
            now_on = rec.value >= 0.5
            self._states[key] = now_on
            if before == now_on or (before is None and not now_on):
                continue
            # A change is an event; so is an alarm state at the first reading (a door already open, a
            # UPS already on battery when the agent starts or a sensor first speaks): as urgent as a
            # transition, it must not wait for the next push. A quiet first state is not an event.
            # A driver that saw the transition itself (an MQTT door message) passes its own event.
            if not any(e.labels == rec.labels and e.type in types for e in events):
                events.append(EventRecord(types[0] if now_on else types[1], rec.labels, rec.ts, rec.value,
                                          "" if before is not None else "already so at the first reading"))
        self.latest.update(dev.name, records, replace=replace)
        seen = records if own is None else own
        for observer in self.observers if seen or own is None else ():
            try:
                observer(dev, seen, events)
            except Exception:  # an observer (shutdown action, local alerting) must not stop polling
                log.exception("observer %r failed", observer)
        if self.pusher is not None:
            self.pusher.add(records)
            if events:
                self.pusher.add_events(events)

    def _set_up(self, dev: DeviceRunner, up: bool, reason: str = "") -> None:
        if up and dev.up is not True:
            if dev.up is False:
                log.info("device %s is back up after %.0fs down", dev.name, self.clock.time() - dev.changed_at)
            dev.changed_at = self.clock.time()
        elif not up and dev.up is not False:
            log.warning("device %s is down: %s", dev.name, reason)
            dev.changed_at = self.clock.time()
        elif not up and reason != dev.reason:
            log.debug("device %s still down: %s", dev.name, reason)
        dev.up = up
        dev.reason = reason

    def on_emit(self, name: str, readings: Sequence[Reading], events: Sequence[Event] = ()) -> None:
        """A listening driver spoke: store its readings, push events at once."""
        dev = self.devices[name]
        now = self.clock.time()
        dev.last_seen = self.clock.monotonic()
        self._set_up(dev, True)
        records = self._records(dev, readings, now)
        for rec in records:
            dev.current[(rec.metric, tuple(rec.labels.items()))] = (rec, dev.last_seen)
        records += self._health(dev, now)
        self._publish(dev, records, replace=False, events=[
            EventRecord(e.type, {**dev.labels, **(e.labels or {})}, int((e.ts or now) * 1000), e.value, e.message)
            for e in events
        ])

    def poll_now(self, dev: DeviceRunner) -> None:
        """Poll ``dev`` at once, outside its schedule (an SNMP trap said something happened).

        Never two polls of one device at a time: while one runs, another follows when it ends.
        """
        if dev.polling:
            dev.repoll = True
            return
        asyncio.get_running_loop().create_task(self.poll_device(dev), name=f"poll-now-{dev.name}")

    async def poll_device(self, dev: DeviceRunner) -> None:
        """One poll of one device under its timeout; never raises."""
        if dev.polling:  # a scheduled tick while a poll asked for by poll_now runs: an overlap, skipped
            dev.skipped += 1
            return
        dev.polling = True
        try:
            await self._poll(dev)
        finally:
            dev.polling = False
        if dev.repoll:
            dev.repoll = False
            self.poll_now(dev)

    async def _poll(self, dev: DeviceRunner) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._polls.add(task)
            task.add_done_callback(self._polls.discard)
        started = self.clock.monotonic()
        now = self.clock.time()
        try:
            if not dev.started:
                await asyncio.wait_for(dev.driver.start(), dev.timeout)
                dev.started = True
            readings = await asyncio.wait_for(dev.driver.poll(), dev.timeout)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            dev.errors += 1
            self._set_up(dev, False, f"no answer within {dev.timeout:g}s")
            self.latest.drop_device(dev.name, keep=_HEALTH)
            records: list[SampleRecord] = []
        except Exception as exc:  # a driver bug or device error must not stop the agent
            dev.errors += 1
            self._set_up(dev, False, _reason(exc))
            self.latest.drop_device(dev.name, keep=_HEALTH)
            records = []
        else:
            self._set_up(dev, True)
            records = self._records(dev, readings, now)
        dev.duration = self.clock.monotonic() - started
        events: list[EventRecord] = []
        health = self._health(dev, now)
        if self.traps is not None:
            held = self.traps.adjust(dev, records)  # a state a trap just reported stands a while
            events = self.traps.take_events(dev)  # the snmp_trap event travels with this poll's values
            self._publish(dev, held + health, replace=bool(records), events=events, own=records + health)
            return
        self._publish(dev, records + health, replace=bool(records), events=events)

    async def check_silence(self) -> None:
        """Watch listening devices (every second).

        A device goes down when it is silent past its ``max_age`` (counted from the agent's start
        when it never spoke) or when its driver says it cannot hear it (the broker is unreachable);
        its values then leave the agent's /metrics and the collector hides them (device_up 0).
        While up, its current values are re-sent every ``interval`` with a fresh time, so a state
        that rarely changes (a closed door) never expires at the collector; a measurement not
        refreshed within ``max_age`` (one dead probe of a board that still talks) is not re-sent
        and leaves /metrics. While down, device_up 0 is re-sent the same way.
        """
        now_m = self.clock.monotonic()
        now = self.clock.time()
        for dev in self.devices.values():
            if dev.driver.mode != "listen":
                continue
            try:
                max_age = dev.driver.max_age()
            except Exception:  # a driver bug must not stop the watch of the others
                log.exception("max_age() of %s", dev.name)
                max_age = None
            since = dev.last_seen or self._started_m
            if max_age and now_m - since > max_age:
                reason: str | None = (f"no message for {now_m - since:.0f}s (max_age {max_age:g}s)" if dev.last_seen
                                      else f"no message since the agent started {now_m - since:.0f}s ago "
                                           f"(max_age {max_age:g}s)")
            else:
                try:
                    reason = dev.driver.problem()
                except Exception:
                    log.exception("problem() of %s", dev.name)
                    reason = None
            if reason and dev.up is not False:
                self._set_up(dev, False, reason)
                self.latest.drop_device(dev.name, keep=_HEALTH)
                dev.current.clear()
                dev.refreshed = now_m
                self._publish(dev, self._health(dev, now), replace=False)
            elif dev.up is not None and now_m - dev.refreshed >= dev.interval:
                dev.refreshed = now_m
                if max_age:
                    for key in [k for k, (rec, seen) in dev.current.items()
                                if now_m - seen > max_age and rec.metric not in v.STATE_EVENTS]:
                        del dev.current[key]
                ms = int(now * 1000)
                records = ([SampleRecord(r.metric, r.labels, r.value, ms) for r, _ in dev.current.values()]
                           if dev.up else [])
                # replace: a measurement dropped above also leaves the agent's /metrics.
                self._publish(dev, records + self._health(dev, now), replace=True)

    def refresh_health(self) -> None:
        """Put every device's current health (up, poll errors, a driver's own counters) into /metrics.

        Called for each scrape of the agent's /metrics (on the event loop, where drivers count), so a
        counter such as ``roomwatch_mqtt_messages_invalid_total`` shows at once, not at the device's
        next interval. A device that has not reported yet is left out (it is neither up nor down).
        """
        now = self.clock.time()
        for dev in self.devices.values():
            if dev.up is not None:
                self.latest.update(dev.name, self._health(dev, now), replace=False)

    def call_on_loop(self, fn: Callable[[], None], timeout: float) -> bool:
        """Run ``fn`` on the agent's event loop from another thread; False when it did not run in time."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        done = threading.Event()

        def call() -> None:
            try:
                fn()
            except Exception:  # a scrape must still be answered
                log.exception("%r failed", fn)
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(call)
        except RuntimeError:  # the loop closed meanwhile (the agent is stopping)
            return False
        return done.wait(timeout)

    def _self_samples(self, now_ms: int) -> list[SampleRecord]:
        """Agent health, added to every pushed batch and the agent's /metrics."""
        labels = dict(self.base_labels)
        out = [SampleRecord(v.AGENT_BUILD_INFO, {**labels, "version": __version__}, 1.0, now_ms)]
        try:
            import psutil

            proc = psutil.Process()
            out.append(SampleRecord(v.AGENT_RESIDENT_MEMORY, labels, float(proc.memory_info().rss), now_ms))
            cpu = proc.cpu_times()
            out.append(SampleRecord(v.AGENT_CPU_SECONDS, labels, cpu.user + cpu.system, now_ms))
        except (ImportError, OSError):
            pass
        if self.traps is not None:
            for result, n in sorted(self.traps.stats().items()):
                out.append(SampleRecord(v.AGENT_SNMP_TRAPS, {**labels, "result": result}, float(n), now_ms))
        if self.nut_server is not None:
            out.append(SampleRecord(v.AGENT_NUT_CLIENTS, labels, float(self.nut_server.clients), now_ms))
            for reason, n in self.nut_server.refused.items():
                out.append(SampleRecord(v.AGENT_NUT_REFUSED, {**labels, "reason": reason}, float(n), now_ms))
        if self.pusher is not None:
            for result, n in self.pusher.stats.items():
                out.append(SampleRecord(v.AGENT_PUSH_BATCHES, {**labels, "result": result}, float(n), now_ms))
            out.append(SampleRecord(v.AGENT_PUSH_QUEUE, labels, float(self.pusher.outbox.depth()), now_ms))
            out.append(SampleRecord(v.AGENT_PUSH_DROPPED, labels, float(self.pusher.outbox.dropped_samples), now_ms))
            if self.pusher.last_ok:
                out.append(SampleRecord(v.AGENT_LAST_PUSH_OK, labels, self.pusher.last_ok, now_ms))
            if (stats := getattr(self.pusher.outbox, "stats", None)) is not None:
                out.extend(spool_samples(stats(), labels, now_ms))
        self.latest.update("__agent__", out, replace=True)
        return out

    async def retire_device(self, name: str) -> None:
        """Stop polling ``name`` and let its driver go (a followed upsd: LOGOUT, so its primary sees us leave)."""
        dev = self.devices.get(name)
        if dev is None:
            return
        if self._scheduler is not None and self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)
        release = getattr(dev.driver, "release", None)
        try:
            await asyncio.wait_for(release() if release is not None else dev.driver.stop(), 5.0)
        except Exception as exc:  # best effort: the host is shutting down
            log.warning("releasing %s: %s", name, _reason(exc))

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Start drivers, the scheduler and the push loop (call inside a running loop)."""
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        # We log device state changes ourselves; APScheduler would warn on every skipped tick.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        # poll_device never raises; the executor only "fails" when shutdown cancels a running poll.
        logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
        self._started_m = self.clock.monotonic()
        self._loop = asyncio.get_running_loop()
        if self.nut_server is not None:
            await self.nut_server.start()  # first: a taken port stops the start before anything runs
        if self.traps is not None:
            await self.traps.start()  # first: a listener that cannot bind stops the agent before it polls
        sched = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30})

        def on_skip(event: JobExecutionEvent) -> None:
            dev = self.devices.get(event.job_id)
            if dev is not None:
                dev.skipped += 1

        sched.add_listener(on_skip, EVENT_JOB_MAX_INSTANCES)
        from datetime import datetime, timedelta

        for dev in self.devices.values():
            if dev.driver.mode == "listen":
                try:
                    await asyncio.wait_for(dev.driver.start(), dev.timeout)
                    dev.started = True
                except Exception as exc:  # the driver reconnects on its own; show it down meanwhile
                    self._set_up(dev, False, _reason(exc))
                    self._publish(dev, self._health(dev, self.clock.time()), replace=False)
                continue
            # Spread first polls over a short window so devices do not all fire together.
            first = datetime.now().astimezone() + timedelta(seconds=random.uniform(0, min(1.0, dev.interval / 10)))
            sched.add_job(self.poll_device, "interval", args=[dev], id=dev.name, seconds=dev.interval,
                          jitter=min(dev.interval * 0.1, 5.0), next_run_time=first)
        if any(d.driver.mode == "listen" for d in self.devices.values()):
            sched.add_job(self.check_silence, "interval", seconds=1.0, id="__silence__")
        sched.start()
        self._scheduler = sched
        if self.pusher is not None:
            self._tasks.append(asyncio.create_task(self.pusher.run(), name="push"))
        if self.fallback is not None:
            self._tasks.append(asyncio.create_task(self.fallback.run(), name="fallback"))
        for action in self.actions:
            if callable(run := getattr(action, "run", None)):  # scheduled actions (battery self-tests)
                self._tasks.append(asyncio.create_task(run(), name=f"action-{action.cfg.name}"))
        log.info("agent %s started: %s, pushing to %s", self.config.agent.id, plural(len(self.devices), "device"),
                 ", ".join(self.config.collector.urls) if self.config.collector else "nobody (pull mode)")

    async def stop(self, poll_grace: float = 5.0) -> None:
        """Stop polling, flush what can be pushed, close drivers."""
        if self._scheduler is not None:
            # No new polls; let the running ones finish (bounded) so a reading already taken is
            # published and flushed instead of being cancelled half-way.
            self._scheduler.pause()
            if self._polls:
                await asyncio.wait(set(self._polls), timeout=poll_grace)
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self.traps is not None:
            self.traps.stop()
        for action in self.actions:
            await action.aclose()  # drops pending timers; lets a started command finish
        if self.nut_server is not None:
            await self.nut_server.stop()
        if self.battery is not None:
            self.battery.close()
        if self.pusher is not None:
            self.pusher.stop()
        for task in self._tasks:
            task.cancel()
        for task, result in zip(self._tasks, await asyncio.gather(*self._tasks, return_exceptions=True), strict=True):
            if isinstance(result, Exception):  # a loop that died before the stop: say so, it stopped pushing or alerting
                log.error("task %s had stopped with an error", task.get_name(), exc_info=result)
        self._tasks.clear()
        if self.fallback is not None:
            await self.fallback.close()
        if self.pusher is not None:
            await self.pusher.flush(timeout=3.0)
            self.pusher.close()
            if (close := getattr(self.pusher.outbox, "close", None)) is not None:
                close()
        for dev in self.devices.values():
            try:
                await asyncio.wait_for(dev.driver.stop(), 5.0)
            except Exception as exc:  # closing is best effort
                log.debug("closing %s: %s", dev.name, _reason(exc))
        for obj in self._shared.values():
            closer = getattr(obj, "aclose", None)
            if closer is not None:
                try:
                    await asyncio.wait_for(closer(), 5.0)
                except Exception as exc:
                    log.debug("closing shared resource: %s", _reason(exc))
        self._stopped.set()
