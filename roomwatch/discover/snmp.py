"""SNMP discovery: which of the named addresses answer, what they are, and what they read.

Two steps per target, all targets at once up to ``concurrency``:

1. **probe**: one GET of sysObjectID, sysDescr and sysName with every credential at once (each
   community as v2c and as v1, then the v3 user), no retries, so a silent address costs exactly
   one ``timeout`` whatever the number of credentials. v1/v2c go through the SNMP driver's own
   client (``client: builtin``, one UDP socket for the whole sweep), v3 through pysnmp; the first
   credential in the order given that answers is the device's.
2. **identify and read**: the device entry discover would print is handed to the SNMP driver
   itself (``profile: auto``): it picks the profile exactly as the agent will (the driver's own
   selection code, so every profile and selection rule the driver learns applies here too) and
   polls once. The entry is printed with the profile the driver chose, and only when that poll
   gave readings.

Only the addresses named are probed (no broadcast, no neighbour tables).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roomwatch.core.configbase import format_duration
from roomwatch.discover.probe import ProbeContext, Shared
from roomwatch.discover.report import Found
from roomwatch.discover.targets import SnmpTarget
from roomwatch.drivers.snmp.driver import SYS_OBJECT_ID, SnmpConfig, SnmpDriver
from roomwatch.drivers.snmp.profile import format_oid
from roomwatch.drivers.snmp.readings import text
from roomwatch.drivers.snmp.session import Credentials, Engine, SnmpError

__all__ = ["SYS_DESCR", "SYS_NAME", "SnmpCredential", "SnmpScan", "credentials_from"]

SYS_DESCR = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)
_DESCR_SHOWN = 100  # characters of sysDescr in a comment

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SnmpCredential:
    """One way of asking: a community with an SNMP version, or an SNMPv3 user."""

    version: str  # "1" | "2c" | "3"
    community: str = ""
    user: str = ""
    auth_protocol: str = "SHA"
    auth_key: str | None = None
    priv_protocol: str = "AES"
    priv_key: str | None = None
    context: str = ""

    def entry(self) -> dict[str, Any]:
        """The keys of an ``snmp`` device entry that say who we are (defaults left out)."""
        if self.version != "3":
            return ({} if self.version == "2c" else {"version": self.version}) | {"community": self.community}
        out: dict[str, Any] = {"version": "3", "user": self.user}
        if self.auth_key:
            out |= {"auth_protocol": self.auth_protocol, "auth_key": self.auth_key}
        if self.priv_key:
            out |= {"priv_protocol": self.priv_protocol, "priv_key": self.priv_key}
        if self.context:
            out["context"] = self.context
        return out

    def session(self) -> Credentials:
        return Credentials(version=self.version, community=self.community, user=self.user,
                           auth_protocol=self.auth_protocol, auth_key=self.auth_key, priv_protocol=self.priv_protocol,
                           priv_key=self.priv_key, context=self.context)

    def describe(self) -> str:
        return f"SNMPv3 user {self.user!r}" if self.version == "3" else f"v{self.version} community {self.community!r}"


def credentials_from(communities: list[str], v3: dict[str, Any] | None) -> list[SnmpCredential]:
    """Credentials in the order they are preferred: each community as v2c then v1, then the v3 user.

    The v3 options are checked by the SNMP driver's own config model (ValueError with its message).
    """
    out: list[SnmpCredential] = []
    for community in communities:
        out += [SnmpCredential("2c", community), SnmpCredential("1", community)]
    if v3:
        cfg = SnmpConfig.model_validate({"name": "check", "driver": "snmp", "host": "127.0.0.1", "version": "3", **v3})

        def reveal(secret: Any) -> str | None:
            return secret.get_secret_value() if secret is not None else None

        out.append(SnmpCredential("3", user=cfg.user or "", auth_protocol=cfg.auth_protocol, auth_key=reveal(cfg.auth_key),
                                  priv_protocol=cfg.priv_protocol, priv_key=reveal(cfg.priv_key), context=cfg.context))
    return out


@dataclass
class _Answer:
    credential: SnmpCredential
    object_id: tuple[int, ...] | None
    descr: str
    name: str


class SnmpScan:
    """One sweep of SNMP targets; :meth:`run` returns the devices read and fills ``silent``/``unread``."""

    def __init__(self, targets: list[SnmpTarget], port: int, credentials: list[SnmpCredential], timeout: float,
                 concurrency: int, progress: Progress):
        self.targets = targets
        self.port = port
        self.credentials = credentials
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.silent = 0
        #: addresses that answered but gave nothing the agent could use, with the reason (for the footer)
        self.unread: list[str] = []
        #: addresses whose v3 answer was an error (wrong key …): said once per address
        self.refused: list[str] = []
        self.probes_sent = 0
        self._shared = Shared()

    async def run(self) -> list[Found]:
        """Probe every target (at most ``concurrency`` at a time), then identify and read each that answered."""
        if not self.targets:
            return []
        engine = Engine(self.concurrency * len(self.credentials))
        self._shared.put(("snmp", "engine"), engine)
        gate = asyncio.Semaphore(self.concurrency)
        creds = ", ".join(c.describe() for c in self.credentials)
        self.progress(f"snmp: probing {len(self.targets)} address{'es' if len(self.targets) != 1 else ''} on port "
                      f"{self.port} ({creds}; timeout {format_duration(self.timeout)}, {self.concurrency} at a time)")
        try:
            results = await asyncio.gather(*(self._one(engine, t, gate) for t in self.targets))
        finally:
            await self._shared.aclose()
        found = [f for f in results if f is not None]
        self.progress(f"snmp: {len(found)} device{'s' if len(found) != 1 else ''} read, {len(self.unread)} answered "
                      f"without a usable reading, {self.silent} silent")
        return found

    async def _address(self, target: SnmpTarget) -> tuple[str, bool] | None:
        if target.address is not None:
            return str(target.address), target.address.version == 6
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                target.host, self.port, type=socket.SOCK_DGRAM), max(self.timeout, 2.0))
        except (OSError, TimeoutError) as exc:
            self.progress(f"snmp: cannot resolve {target.host}: {getattr(exc, 'strerror', None) or exc or 'timeout'}")
            self.silent += 1
            return None
        family, _, _, _, sockaddr = infos[0]
        return str(sockaddr[0]), family == socket.AF_INET6

    async def _ask(self, engine: Engine, cred: SnmpCredential, address: tuple[str, int], ipv6: bool,
                   where: str) -> _Answer | None:
        target = await engine.target(cred.session(), address, ipv6, self.timeout, 0,
                                     "builtin" if cred.version != "3" else "pysnmp")
        self.probes_sent += 1
        try:
            values = await target.get([SYS_OBJECT_ID, SYS_DESCR, SYS_NAME])
        except SnmpError as exc:
            if cred.version == "3" and "no SNMP answer" not in str(exc):
                self.refused.append(f"{where}: {exc}")  # it answered, but not to these keys
            return None
        finally:
            target.close()
        oid = values.get(SYS_OBJECT_ID)
        return _Answer(cred, oid if isinstance(oid, tuple) else None, text(values.get(SYS_DESCR)),
                       text(values.get(SYS_NAME)))

    async def _one(self, engine: Engine, target: SnmpTarget, gate: asyncio.Semaphore) -> Found | None:
        async with gate:
            resolved = await self._address(target)
            if resolved is None:
                return None
            ip, ipv6 = resolved
            where = f"[{ip}]:{self.port}" if ipv6 else f"{ip}:{self.port}"
            answers = await asyncio.gather(*(self._ask(engine, c, (ip, self.port), ipv6, where)
                                             for c in self.credentials))
            answer = next((a for a in answers if a is not None), None)
            if answer is None:
                self.silent += 1
                return None
            return await self._read(target, where, answer)

    async def _read(self, target: SnmpTarget, where: str, answer: _Answer) -> Found | None:
        cred = answer.credential
        entry: dict[str, Any] = {"driver": "snmp", "host": target.host}
        if self.port != 161:
            entry["port"] = self.port
        entry |= cred.entry()
        descr = answer.descr[:_DESCR_SHOWN] + ("…" if len(answer.descr) > _DESCR_SHOWN else "")
        oid_text = format_oid(answer.object_id) if answer.object_id else "none"
        cfg = SnmpConfig.model_validate({
            "name": "discover", **entry, "profile": "auto", "timeout": format_duration(self.timeout), "retries": 1,
            "client": "builtin" if cred.version != "3" else "pysnmp"})
        ctx = ProbeContext(self._shared, "snmp")
        driver = SnmpDriver(cfg, ctx)
        try:
            await driver.start()
            readings = list(await asyncio.wait_for(driver.poll(), driver.poll_timeout(self.timeout)))
        except Exception as exc:  # the device answered the probe but not a poll: say why, print nothing
            reason = str(exc) or type(exc).__name__
            self.unread.append(f"{target.host} ({where}, sysObjectID {oid_text}, {descr or 'no sysDescr'}): {reason}")
            self.progress(f"snmp: {where} answers ({cred.describe()}) but cannot be read: {reason}")
            return None
        finally:
            await driver.stop()
        profile = driver.profile
        assert profile is not None  # a poll that returned has chosen one
        entry["profile"] = profile.name
        info = next((dict(r.labels or {}) for r in readings if r.metric == "roomwatch_ups_info"), {})
        vendor = " ".join(x for x in (info.get("manufacturer"), info.get("model")) if x)
        identity = (f"{vendor or descr or 'no sysDescr'}; sysObjectID {oid_text}; profile {profile.name}"
                    + (f" ({profile.description})" if profile.description else ""))
        notes = [f"sysDescr: {descr}"] if vendor and descr else []
        if answer.name:
            notes.append(f"sysName: {answer.name}")
        self.progress(f"snmp: {where} → profile {profile.name}, {len(readings)} readings")
        return Found("snmp", where, answer.name or f"{profile.name}-{target.host}", entry, identity, readings, notes,
                     sort_key=(0, *target.sort_key()))
