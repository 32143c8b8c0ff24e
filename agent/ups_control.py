"""Commands the agent sends to a UPS: switch the output off after a delay (and back on with mains), start a self-test.

One UPS, several dialects; each command is a short *plan* of writes, so a dry
run can print exactly what would be sent and a test can check it on the wire:

* **RFC 1628 UPS-MIB** (any card speaking the standard): ``upsAutoRestart`` on(1)
  (off(2) to stay off), then ``upsShutdownAfterDelay`` = delay in seconds; the
  self-test sets ``upsTestId`` to the OID ``upsTestQuickBatteryTest``.
  ``upsStartupAfterDelay`` is not used: it would start the output on a timer
  even with mains still down, draining what is left of the battery.
* **APC PowerNet-MIB** (NUT's apc-mib ``shutdown.return``/``shutdown.stayoff``):
  ``upsAdvConfigShutoffDelay`` (TimeTicks), then ``upsBasicControlConserveBattery``
  putUpsToSleep(2) — sleeps on battery, wakes when mains returns — or
  ``upsAdvControlUpsOff`` turnUpsOffGracefully(3); self-test: ``upsAdvTestDiagnostics`` (2).
* **XPPC-MIB** (Megatec/PPC NetAgent cards behind many Chinese brands, enterprise 935):
  ``upsSmartConfigShutoffDelay``, then ``upsSmartControlUpsSleep`` putUpsToSleep(2)
  or ``upsSmartControlUpsOff`` turnUpsOff(2); self-test ``upsSmartTestDiagnostics`` (2).
* **NUT**: ``SET VAR ups.delay.shutdown`` (optional: not every driver has it), then
  ``INSTCMD shutdown.return`` (or ``shutdown.stayoff``); self-test
  ``INSTCMD test.battery.start.quick``. The upsd.users user needs those ``instcmds``.

Writes marked optional (a delay or auto-restart setting the card may not have)
are logged and skipped when refused; a refused main write fails the command.
Sources: RFC 1628 §§ upsTest, upsControl; NUT drivers/ietf-mib.c, apc-mib.c;
LibreNMS mibs/XPPC-MIB (upsSmartControl, upsSmartTest).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from roomwatch.core.configbase import Duration, Model, Secret

__all__ = ["RESULT_OIDS", "SnmpWrite", "UpsCommandError", "UpsControl", "UpsOffConfig", "decode_test_result",
           "family_of", "off_plan", "parse_nut_result", "self_test_plan"]

log = logging.getLogger("roomwatch.ups_control")

Family = Literal["rfc1628", "apc", "xppc", "nut"]

UPS_MIB = "1.3.6.1.2.1.33.1"
APC = "1.3.6.1.4.1.318.1.1.1"
XPPC = "1.3.6.1.4.1.935.1.1.1"


class UpsOffConfig(Model):
    """``ups_off:`` of a shutdown action: switch the UPS output off after the host is down, and back on with mains."""

    delay: Duration = Field(default=180.0, ge=10, le=86400,
                            description="the UPS cuts its output this long after the command (longer than the "
                                        "host's shutdown)")
    return_on_mains: bool = Field(default=True, description="power the outputs again when mains returns "
                                                            "(shutdown.return); false: stay off (shutdown.stayoff)")
    method: Literal["auto", "rfc1628", "apc", "xppc", "nut"] = Field(
        default="auto", description="auto: from the device (nut driver → nut; SNMP profile apc/xppc, else rfc1628)")
    community: Secret | None = Field(default=None, description="SNMP v1/v2c write community (default: the device's)")
    username: str | None = Field(default=None, min_length=1, description="NUT: upsd.users user with the instcmds")
    password: Secret | None = None


class UpsCommandError(Exception):
    """The UPS refused or did not answer a command; the message says which write and why."""


@dataclass(frozen=True, slots=True)
class SnmpWrite:
    """One SNMP SET: ``kind`` is ``int``, ``ticks`` (TimeTicks) or ``oid`` (an OBJECT IDENTIFIER value)."""

    oid: str
    kind: Literal["int", "ticks", "oid"]
    value: int | str
    what: str
    optional: bool = False

    def __str__(self) -> str:
        return f"SET {self.what} ({self.oid}) = {self.value}"


@dataclass(frozen=True, slots=True)
class NutWrite:
    """One NUT request: ``SET VAR ups var value`` or ``INSTCMD ups cmd``."""

    command: Literal["SET", "INSTCMD"]
    name: str
    value: str = ""
    optional: bool = False

    def __str__(self) -> str:
        return f"SET VAR {self.name} {self.value}" if self.command == "SET" else f"INSTCMD {self.name}"


def family_of(device: Any) -> Family | None:
    """Which dialect the device speaks, from its driver (and SNMP profile); None: it takes no commands."""
    cfg = device.cfg
    if cfg.driver == "nut":
        return "nut"
    if cfg.driver != "snmp":
        return None
    profile = getattr(getattr(device.driver, "_profile", None), "name", None) or cfg.profile
    if profile == "apc":
        return "apc"
    if "xppc" in str(profile):
        return "xppc"
    return "rfc1628"


def off_plan(family: Family, delay: float, return_on_mains: bool) -> list[SnmpWrite] | list[NutWrite]:
    """The writes that switch the output off after ``delay`` seconds (back on with mains if ``return_on_mains``)."""
    seconds = round(delay)
    if family == "rfc1628":
        return [SnmpWrite(f"{UPS_MIB}.8.5.0", "int", 1 if return_on_mains else 2,
                          f"upsAutoRestart {'on' if return_on_mains else 'off'}", optional=True),
                SnmpWrite(f"{UPS_MIB}.8.2.0", "int", seconds, "upsShutdownAfterDelay")]
    if family == "apc":
        return [SnmpWrite(f"{APC}.5.2.10.0", "ticks", seconds * 100, "upsAdvConfigShutoffDelay", optional=True),
                SnmpWrite(f"{APC}.6.1.1.0", "int", 2, "upsBasicControlConserveBattery putUpsToSleep")
                if return_on_mains else
                SnmpWrite(f"{APC}.6.2.1.0", "int", 3, "upsAdvControlUpsOff turnUpsOffGracefully")]
    if family == "xppc":
        return [SnmpWrite(f"{XPPC}.5.2.10.0", "int", seconds, "upsSmartConfigShutoffDelay", optional=True),
                SnmpWrite(f"{XPPC}.6.2.3.0", "int", 2, "upsSmartControlUpsSleep putUpsToSleep")
                if return_on_mains else SnmpWrite(f"{XPPC}.6.2.1.0", "int", 2, "upsSmartControlUpsOff turnUpsOff")]
    return [NutWrite("SET", "ups.delay.shutdown", str(seconds), optional=True),
            NutWrite("INSTCMD", "shutdown.return" if return_on_mains else "shutdown.stayoff")]


def self_test_plan(family: Family) -> list[SnmpWrite] | list[NutWrite]:
    """The writes that start a quick battery self-test."""
    if family == "rfc1628":
        return [SnmpWrite(f"{UPS_MIB}.7.1.0", "oid", f"{UPS_MIB}.7.7.4", "upsTestId upsTestQuickBatteryTest")]
    if family == "apc":
        return [SnmpWrite(f"{APC}.7.2.2.0", "int", 2, "upsAdvTestDiagnostics testDiagnostics")]
    if family == "xppc":
        return [SnmpWrite(f"{XPPC}.7.2.2.0", "int", 2, "upsSmartTestDiagnostics testDiagnostics")]
    return [NutWrite("INSTCMD", "test.battery.start.quick")]


#: Where each dialect keeps the last self-test's result, and what its values mean:
#: value → (failed: 1/0, or None for "no result"; in progress).
RESULT_OIDS: dict[str, tuple[str, dict[int, tuple[int | None, bool]]]] = {
    # upsTestResultsSummary: donePass(1) doneWarning(2) doneError(3) aborted(4) inProgress(5) noTestsInitiated(6)
    "rfc1628": (f"{UPS_MIB}.7.3.0", {1: (0, False), 2: (0, False), 3: (1, False), 4: (None, False),
                                     5: (None, True), 6: (None, False)}),
    # upsAdvTestDiagnosticsResults: ok(1) failed(2) invalidTest(3) testInProgress(4)
    "apc": (f"{APC}.7.2.3.0", {1: (0, False), 2: (1, False), 3: (None, False), 4: (None, True)}),
    # upsSmartTestDiagnosticsResults: ok(1) failed(2) invalidTest(3) testInProgress(4)
    "xppc": (f"{XPPC}.7.2.3.0", {1: (0, False), 2: (1, False), 3: (None, False), 4: (None, True)}),
}


def parse_nut_result(text: str) -> tuple[int | None, bool]:
    """NUT ``ups.test.result`` → (failed, in progress): "Done and passed", "Done and error", "In progress" …"""
    low = text.strip().lower()
    if "progress" in low:
        return None, True
    if any(w in low for w in ("error", "fail", "bad", "replace")):
        return 1, False
    if "pass" in low or "warning" in low or low == "ok":
        return 0, False
    return None, False


def decode_test_result(family: str, raw: Any) -> tuple[int | None, bool]:
    """(failed, in progress) from what the device returned for its result object."""
    if family == "nut":
        return parse_nut_result(str(raw or ""))
    table = RESULT_OIDS[family][1]
    try:
        return table.get(int(raw), (None, False))
    except (TypeError, ValueError):
        return None, False


class UpsControl:
    """Sends plans to one device of the agent, with its own credentials (or those given)."""

    def __init__(self, device: Any, method: str = "auto", community: Any = None, username: str | None = None,
                 password: Any = None):
        self.device = device
        family = family_of(device) if method == "auto" else method
        if family is None:
            raise UpsCommandError(f"device {device.name} ({device.cfg.driver}) cannot be sent UPS commands: "
                                  "only snmp and nut devices can")
        self.family: Family = family  # type: ignore[assignment]
        self._community = community
        self._username = username
        self._password = password

    def describe(self, plan: list[Any]) -> str:
        """The plan in words, for the log and the dry run."""
        via = "NUT" if self.family == "nut" else f"SNMP ({self.family})"
        return f"{via} to {self.device.name}: " + "; ".join(str(w) for w in plan)

    async def run(self, plan: list[Any], timeout: float = 10.0) -> list[str]:
        """Send every write in order; return what was done (optional writes refused are noted, not fatal)."""
        if self.family == "nut":
            return await self._run_nut(plan, timeout)
        return await self._run_snmp(plan, timeout)

    async def read_result(self, timeout: float = 10.0) -> tuple[int | None, bool]:
        """The device's last self-test result: (failed 1/0 or None, in progress)."""
        if self.family == "nut":
            from roomwatch.drivers.base import DeviceError
            from roomwatch.drivers.nut_protocol import NutClient

            cfg = self.device.cfg
            user, secret = self._username or cfg.username, self._password or cfg.password
            client = NutClient(cfg.host, cfg.port, user, secret.get_secret_value() if secret else None)
            try:
                variables = await asyncio.wait_for(client.list_var(cfg.ups), timeout)
            except (DeviceError, TimeoutError) as exc:
                raise UpsCommandError(f"cannot read ups.test.result of {self.device.name}: {exc}") from None
            finally:
                await client.aclose()
            return decode_test_result("nut", variables.get("ups.test.result"))
        oid = RESULT_OIDS[self.family][0]
        raw = await self._snmp_get(oid, timeout)
        return decode_test_result(self.family, raw)

    # ------------------------------------------------------------ SNMP
    def _snmp_auth(self, h: Any) -> tuple[Any, Any]:
        from roomwatch.drivers.snmp.pysnmp_client import AUTH_PROTOCOLS, PRIV_PROTOCOLS

        cfg = self.device.cfg
        if cfg.version == "3":
            auth = h.UsmUserData(
                cfg.user, cfg.auth_key.get_secret_value() if cfg.auth_key else None,
                cfg.priv_key.get_secret_value() if cfg.priv_key else None,
                authProtocol=getattr(h, AUTH_PROTOCOLS[cfg.auth_protocol]) if cfg.auth_key else h.USM_AUTH_NONE,
                privProtocol=getattr(h, PRIV_PROTOCOLS[cfg.priv_protocol]) if cfg.priv_key else h.USM_PRIV_NONE)
            return auth, h.ContextData(contextName=cfg.context.encode())
        secret = self._community or cfg.community
        return h.CommunityData(secret.get_secret_value(), mpModel=0 if cfg.version == "1" else 1), h.ContextData()

    async def _snmp_get(self, oid: str, timeout: float) -> Any:
        from pysnmp.hlapi.v3arch import asyncio as h
        from pysnmp.proto import rfc1905

        cfg = self.device.cfg
        engine = h.SnmpEngine()
        try:
            auth, context = self._snmp_auth(h)
            target = await h.UdpTransportTarget.create((cfg.host, cfg.port), timeout=min(timeout, 5.0), retries=1)
            err_ind, err_status, _, answer = await h.get_cmd(engine, auth, target, context,
                                                             h.ObjectType(h.ObjectIdentity(oid)), lookupMib=False)
        finally:
            engine.close_dispatcher()
        if err_ind or int(err_status):
            raise UpsCommandError(f"cannot read {oid} from {self.device.name}: {err_ind or _status_name(int(err_status))}")
        value = answer[0][1] if answer else None
        if value is None or isinstance(value, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance)):
            return None
        return int(value)

    async def _run_snmp(self, plan: list[SnmpWrite], timeout: float) -> list[str]:
        # pysnmp's high-level API (no MIB lookups): commands are rare (a shutdown, a monthly test), so the
        # agent's hand-tuned GET path (drivers.snmp.session) is not worth extending to SET.
        from pysnmp.hlapi.v3arch import asyncio as h
        from pysnmp.proto import rfc1902, rfc1905

        cfg = self.device.cfg
        engine = h.SnmpEngine()
        done: list[str] = []
        try:
            auth, context = self._snmp_auth(h)
            target = await h.UdpTransportTarget.create((cfg.host, cfg.port), timeout=min(timeout, 5.0), retries=1)
            for write in plan:
                value: Any = {"int": rfc1902.Integer32, "ticks": rfc1902.TimeTicks,
                              "oid": rfc1902.ObjectName}[write.kind](write.value)
                err_ind, err_status, _, answer = await h.set_cmd(
                    engine, auth, target, context, h.ObjectType(h.ObjectIdentity(write.oid), value), lookupMib=False)
                problem = str(err_ind) if err_ind else (_status_name(int(err_status)) if int(err_status) else "")
                if not problem and answer and isinstance(answer[0][1], (rfc1905.NoSuchObject, rfc1905.NoSuchInstance)):
                    problem = "no such object"  # an agent that echoes noSuchInstance instead of notWritable
                if problem:
                    if write.optional:
                        log.warning("UPS %s: %s refused (%s); going on without it", self.device.name, write, problem)
                        done.append(f"{write} refused ({problem})")
                        continue
                    raise UpsCommandError(f"{self.device.name} refused {write}: {problem}")
                done.append(str(write))
        finally:
            engine.close_dispatcher()
        return done

    # ------------------------------------------------------------ NUT
    async def _run_nut(self, plan: list[NutWrite], timeout: float) -> list[str]:
        from roomwatch.drivers.base import DeviceError
        from roomwatch.drivers.nut_protocol import NutClient, NutError

        cfg = self.device.cfg
        user = self._username or cfg.username
        secret = self._password or cfg.password
        if user is None or secret is None:
            raise UpsCommandError(f"NUT commands to {self.device.name} need a upsd.users login with instcmds "
                                  "(ups_off.username/password or the device's)")
        ups = cfg.ups
        if ups is None:
            raise UpsCommandError(f"device {self.device.name} reads every UPS of its upsd: set its ups: to command one")
        client = NutClient(cfg.host, cfg.port, user, secret.get_secret_value())
        done: list[str] = []
        try:
            for write in plan:
                try:
                    if write.command == "SET":
                        await asyncio.wait_for(client.set_var(ups, write.name, write.value), timeout)
                    else:
                        await asyncio.wait_for(client.instcmd(ups, write.name), timeout)
                except NutError as exc:
                    if write.optional:
                        log.warning("UPS %s: %s refused (ERR %s); going on without it", self.device.name, write,
                                    exc.code)
                        done.append(f"{write} refused (ERR {exc.code})")
                        continue
                    raise UpsCommandError(f"upsd refused {write} for {ups}: ERR {exc.code}") from None
                done.append(str(write))
        except TimeoutError:
            raise UpsCommandError(f"upsd at {client.address} did not answer within {timeout:g}s") from None
        except DeviceError as exc:  # cannot connect, or not a upsd
            raise UpsCommandError(str(exc)) from None
        finally:
            await client.aclose()
        return done


#: RFC 3416 error-status names (what a card says when it refuses a SET).
_STATUS = {1: "tooBig", 2: "noSuchName", 3: "badValue", 4: "readOnly", 5: "genErr", 6: "noAccess", 7: "wrongType",
           8: "wrongLength", 9: "wrongEncoding", 10: "wrongValue", 11: "noCreation", 12: "inconsistentValue",
           13: "resourceUnavailable", 14: "commitFailed", 15: "undoFailed", 16: "authorizationError",
           17: "notWritable", 18: "inconsistentName"}


def _status_name(code: int) -> str:
    return f"{_STATUS.get(code, 'error')}({code})"
