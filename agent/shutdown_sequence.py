"""What a shutdown action does once its grace delay is over: the whole room goes down in order.

The steps, each logged as ``SHUTDOWN STEP n/N`` (``DRY RUN STEP n/N: would …``
in a dry run, which changes nothing):

1. push ``shutdown_started`` (up to a few seconds for it to reach the collector);
2. with ``nut_primary``: set FSD on this UPS in the agent's NUT server — every
   secondary (upsmon, WinNUT, Synology, another roomwatch agent) sees ``FSD`` and
   shuts down, as under a upsmon primary;
3. with ``nut_primary``: wait until the secondaries have logged out, at most
   ``hostsync``;
4. with ``ups_off``: tell the UPS to switch its output off after ``delay`` (and
   back on when mains returns), so the room restarts by itself after a long
   outage — sent now, since this host will not be up to send it later;
5. run the command (this host's poweroff);
6. a UPS read from a upsd with a login (this agent is a secondary of another
   primary): log out, so that primary counts this host as gone (what upsmon
   does after its SHUTDOWNCMD), and stop polling it.

A step that fails is logged and pushed as ``shutdown_failed`` and the sequence
goes on: nothing may keep the host from shutting down before the battery dies.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from typing import Any

from roomwatch.agent.ups_control import UpsCommandError, UpsControl, off_plan
from roomwatch.core.configbase import format_duration

__all__ = ["COMMAND_WAIT", "NOTIFY_WAIT", "ShutdownSequence"]

log = logging.getLogger("roomwatch.action.shutdown")

#: How long to give the pusher to deliver ``shutdown_started`` before the command runs (collector up or not).
NOTIFY_WAIT = 5.0
#: A poweroff command that has not returned after this long is left running and reported.
COMMAND_WAIT = 120.0


class ShutdownSequence:
    """One run of the steps for a fired :class:`roomwatch.agent.shutdown.ShutdownAction`."""

    def __init__(self, action: Any):
        self.action = action
        self.cfg = action.cfg
        self.agent = action.agent
        self.set_fsd = False
        self.steps = self._steps()

    def _steps(self) -> list[str]:
        cfg = self.cfg
        steps = ["notify"]
        if cfg.nut_primary:
            steps += ["fsd", "wait"]
        if cfg.ups_off is not None:
            steps.append("ups_off")
        steps.append("command")
        if self._upstream_login() is not None:
            steps.append("logout")
        return steps

    def _say(self, step: str, message: str, level: int = logging.CRITICAL) -> None:
        n = self.steps.index(step) + 1
        prefix = "DRY RUN STEP" if self.cfg.dry_run else "SHUTDOWN STEP"
        log.log(level, "%s %d/%d (action %s): %s", prefix, n, len(self.steps), self.cfg.name, message)

    def _fail(self, step: str, message: str) -> None:
        self._say(step, f"FAILED: {message}")
        self.action.event("shutdown_failed", message)

    async def run(self) -> None:
        """Run every step in order; never raises (each failure is logged and reported)."""
        for step in self.steps:
            try:
                await getattr(self, f"_{step}")()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a step's bug must not keep the host up
                log.exception("action %s: step %s", self.cfg.name, step)
                self._fail(step, f"step {step}: {exc}")

    # ------------------------------------------------------------ steps
    async def _notify(self) -> None:
        cfg = self.cfg
        cmd = shlex.join(cfg.command)
        reason = self.action.logic.reason
        plan = ", then ".join(self._plan_words())
        if cfg.dry_run:
            msg = f"DRY RUN: would run `{cmd}` now (UPS {cfg.ups}: {reason}); sequence: {plan}"
        else:
            msg = f"running `{cmd}` now (UPS {cfg.ups}: {reason}); sequence: {plan}"
        log.critical("SHUTDOWN STARTED (action %s): %s", cfg.name, msg)
        self.action.event("shutdown_started", msg)
        self._say("notify", "shutdown_started pushed to the collector")
        await self._let_event_out()

    def _plan_words(self) -> list[str]:
        cfg = self.cfg
        words = {"notify": "tell the collector", "fsd": "set FSD for the NUT secondaries",
                 "wait": f"wait up to {format_duration(cfg.hostsync)} for them to log out",
                 "ups_off": "switch the UPS off after a delay", "command": f"run `{shlex.join(cfg.command)}`",
                 "logout": "log out from the upsd this UPS is read from"}
        return [words[s] for s in self.steps]

    def _served(self) -> Any:
        table = getattr(self.agent, "ups_table", None)
        return table.for_device(self.cfg.ups, self.cfg.labels) if table is not None else None

    async def _fsd(self) -> None:
        server = getattr(self.agent, "nut_server", None)
        ups = self._served()
        if server is None or ups is None:
            self._fail("fsd", f"the agent's NUT server does not serve UPS {self.cfg.ups}: no FSD for secondaries")
            return
        who = server.describe_logins(ups) or "none"
        if self.cfg.dry_run:
            self._say("fsd", f"would set FSD on UPS {ups.name}; logged in now: {who}")
            return
        self.set_fsd = True
        server.set_fsd(ups, f"shutdown action {self.cfg.name}")
        self._say("fsd", f"FSD set on UPS {ups.name}; secondaries logged in: {who}")

    async def _wait(self) -> None:
        server = getattr(self.agent, "nut_server", None)
        ups = self._served()
        limit = self.cfg.hostsync
        if server is None or ups is None:
            return
        if self.cfg.dry_run:
            self._say("wait", f"would wait up to {format_duration(limit)} for {len(ups.logins)} secondaries to log out")
            return
        started = time.monotonic()
        if await server.wait_logouts(ups, limit):
            self._say("wait", f"every secondary logged out after {time.monotonic() - started:.0f}s")
        else:
            self._say("wait", f"still logged in after {format_duration(limit)} (hostsync): "
                              f"{server.describe_logins(ups)}; going on")

    async def _ups_off(self) -> None:
        off = self.cfg.ups_off
        assert off is not None
        device = self.agent.devices.get(self.cfg.ups)
        try:
            control = UpsControl(device, off.method, off.community, off.username, off.password)
        except UpsCommandError as exc:
            self._fail("ups_off", str(exc))
            return
        plan = off_plan(control.family, off.delay, off.return_on_mains)
        then = "back on when mains returns" if off.return_on_mains else "stay off until someone switches it on"
        words = f"switch UPS {self.cfg.ups} off in {format_duration(off.delay)}, {then}: {control.describe(plan)}"
        if self.cfg.dry_run:
            self._say("ups_off", f"would {words}")
            return
        try:
            done = await control.run(plan)
        except UpsCommandError as exc:
            self._fail("ups_off", f"UPS off not sent: {exc}")
            return
        refused = [d for d in done if "refused" in d]
        self._say("ups_off", f"told the UPS to {words}" + (f" ({'; '.join(refused)})" if refused else ""))

    async def _command(self) -> None:
        cfg = self.cfg
        cmd = shlex.join(cfg.command)
        if cfg.dry_run:
            self._say("command", f"would run `{cmd}`")
            return
        self._say("command", f"running `{cmd}`")
        try:
            proc = await asyncio.create_subprocess_exec(*cfg.command, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            log.critical("SHUTDOWN FAILED (action %s): cannot run %s: %s", cfg.name, cmd, exc.strerror or exc)
            self.action.event("shutdown_failed", f"cannot run `{cmd}`: {exc.strerror or exc}")
            return
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_WAIT)
        except TimeoutError:
            log.error("action %s: `%s` still running after %.0fs; leaving it be", cfg.name, cmd, COMMAND_WAIT)
            return
        self.action.returncode = proc.returncode
        text = out.decode(errors="replace").strip()
        if proc.returncode == 0:
            log.warning("action %s: `%s` exited 0%s", cfg.name, cmd, f": {text[:500]}" if text else "")
        else:
            log.critical("SHUTDOWN FAILED (action %s): `%s` exited %s: %s", cfg.name, cmd, proc.returncode,
                         text[:500] or "(no output)")
            self.action.event("shutdown_failed", f"`{cmd}` exited {proc.returncode}: {text[:300]}")

    def _upstream_login(self) -> Any:
        """The UPS device's driver when it is logged in to a upsd (this agent is someone's secondary)."""
        device = self.agent.devices.get(self.cfg.ups) if hasattr(self.agent, "devices") else None
        if device is None or device.cfg.driver != "nut" or device.cfg.username is None:
            return None
        return device

    async def _logout(self) -> None:
        device = self._upstream_login()
        where = f"{device.cfg.host}:{device.cfg.port}"
        if self.cfg.dry_run:
            self._say("logout", f"would log out from upsd {where} so its primary counts this host as gone")
            return
        await self.agent.retire_device(device.name)
        self._say("logout", f"logged out from upsd {where} and stopped polling {device.name}")

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
