"""The agent's SNMP trap listener: a trap from a polled card is an immediate poll and, where it says so, an event.

``traps:`` in the agent file turns it on (see docs/snmp.md, "Traps"). For each notification
the engine accepts (:mod:`roomwatch.drivers.snmp.trap_receiver`: community or v3 user checked):

1. the sender is matched to the configured ``snmp`` devices by address (the UDP source, else
   the v1 agent-addr pysnmp passes on as snmpTrapAddress.0). No match: dropped, counted
   ``unknown_sender``.
2. a notification that states a state (:mod:`roomwatch.drivers.snmp.traps`: on battery, low battery,
   mains back, leak, smoke) is a reading of that state now: its sample and, when it changes
   the state, its event (``ups_on_battery`` …) are pushed at once. The card's own objects
   may lag its trap (many cards read the UPS over a serial link every few seconds), so for
   ``hold`` a poll that still says the opposite does not undo it; a poll that agrees ends the
   hold, and after it the polls decide again.
3. the device is polled now (one poll at a time per device, at most one per ``MIN_GAP``; traps
   arriving meanwhile are folded into the next), and an ``snmp_trap`` event naming the
   notifications goes with that poll's values, so they are pushed at once too.

Everything dropped is counted in ``roomwatch_snmp_traps_total{result}`` and logged at most once
a minute per result with the last sender.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import Duration, HostPort, Model, Secret, parse_hostport
from roomwatch.core.wire import EventRecord, SampleRecord

if TYPE_CHECKING:
    from roomwatch.agent.runtime import Agent, DeviceRunner
    from roomwatch.drivers.snmp.trap_receiver import Notification

__all__ = ["MIN_GAP", "TrapListenError", "TrapService", "TrapUserConfig", "TrapsConfig"]

log = logging.getLogger("roomwatch.agent.traps")

MIN_GAP = 1.0  # s between trap-triggered polls of one device (a trap storm must not become a poll storm)
_LOG_EVERY = 60.0  # s between log lines about dropped traps of one kind
_RESOLVE_EVERY = 300.0  # s between look-ups of device host names when a trap comes from an unknown address
_MESSAGE_NAMES = 8  # notification names listed in one snmp_trap event
SNMP_TRAP_ADDRESS = (1, 3, 6, 1, 6, 3, 18, 1, 3, 0)  # snmpTrapAddress.0 (SNMP-COMMUNITY-MIB, RFC 3584)
_ENGINE_ID = re.compile(r"^(0x)?([0-9a-fA-F]{10,64})$")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class TrapUserConfig(Model):
    """An SNMPv3 user whose notifications are accepted."""

    user: str = Field(min_length=1, max_length=64)
    auth_protocol: Annotated[str, BeforeValidator(_upper)] = "SHA"
    auth_key: Secret | None = None
    priv_protocol: Annotated[str, BeforeValidator(_upper)] = "AES"
    priv_key: Secret | None = None
    engine_id: str | None = Field(default=None, description="the sender's snmpEngineID in hex (needed for v3 traps, "
                                                            "not for informs)")

    @model_validator(mode="after")
    def _check(self) -> TrapUserConfig:
        from roomwatch.drivers.snmp.pysnmp_client import AUTH_PROTOCOLS, PRIV_PROTOCOLS

        if self.auth_protocol not in AUTH_PROTOCOLS:
            raise ValueError(f"auth_protocol must be one of {', '.join(AUTH_PROTOCOLS)}")
        if self.priv_protocol not in PRIV_PROTOCOLS:
            raise ValueError(f"priv_protocol must be one of {', '.join(PRIV_PROTOCOLS)}")
        if self.priv_key is not None and self.auth_key is None:
            raise ValueError("priv_key needs auth_key (SNMPv3 has no privacy without authentication)")
        for key in ("auth_key", "priv_key"):
            secret = getattr(self, key)
            if secret is not None and len(secret.get_secret_value()) < 8:
                raise ValueError(f"{key} must be at least 8 characters (RFC 3414 USM passphrase)")
        if self.engine_id is not None:
            m = _ENGINE_ID.match(self.engine_id.strip())
            if not m or len(m.group(2)) % 2:
                raise ValueError("engine_id is the sender's snmpEngineID in hex, 5 to 32 bytes (e.g. 0x8000000001020304)")
            self.engine_id = m.group(2).lower()
        return self


class TrapsConfig(Model):
    """``traps:`` — the agent's SNMP notification listener."""

    listen: HostPort = Field(default="0.0.0.0:162", description="address:port to receive on (162 needs "
                                                                "CAP_NET_BIND_SERVICE: docs/snmp.md)")
    communities: list[Secret] = Field(default_factory=list, description="v1/v2c communities accepted")
    users: list[TrapUserConfig] = Field(default_factory=list, description="SNMPv3 users accepted")
    hold: Duration = Field(default=30.0, ge=0, le=3600, description="how long a state a trap reported stands against "
                                                                    "polls that still say otherwise")

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        host, _ = parse_hostport(value, default_host="0.0.0.0")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"listen needs an IP address (0.0.0.0, ::, 192.168.1.5), not {host!r}") from None
        return value

    @field_validator("communities")
    @classmethod
    def _communities(cls, value: list[Any]) -> list[Any]:
        if any(not c.get_secret_value() for c in value):
            raise ValueError("a community must not be empty")
        return value

    @model_validator(mode="after")
    def _someone(self) -> TrapsConfig:
        if not self.communities and not self.users:
            raise ValueError("say whose traps to accept: communities (v1/v2c) and/or users (SNMPv3)")
        return self


class TrapListenError(RuntimeError):
    """The listener could not bind its address; the message says what to do."""


def _plain_ip(text: str) -> str:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # a dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d
    return str(addr)


class TrapService:
    """Ties a :class:`~drivers.snmp.trap_receiver.TrapReceiver` to an agent's snmp devices."""

    def __init__(self, agent: Agent, config: TrapsConfig):
        self.agent = agent
        self.config = config
        self.counts: Counter[str] = Counter()
        self.port = 0
        self._receiver: Any = None
        self._by_address: dict[str, list[DeviceRunner]] = {}
        self._resolved_at = 0.0
        self._resolving = False
        self._holds: dict[tuple[str, str], tuple[float, float]] = {}  # (device, metric) → (value, until monotonic)
        self._pending: dict[str, list[str]] = {}  # device → notification names not yet sent with a poll
        self._last_poll: dict[str, float] = {}
        self._logged: dict[str, tuple[float, int]] = {}  # result → (last log time, suppressed since)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiting: set[str] = set()  # devices with a trap-triggered poll already timed

    def devices(self) -> list[DeviceRunner]:
        return [d for d in self.agent.devices.values() if d.cfg.driver == "snmp"]

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Resolve device addresses and open the socket; TrapListenError when it cannot bind."""
        from roomwatch.drivers.snmp.trap_receiver import TrapReceiver, TrapUser

        await self._resolve()
        host, port = parse_hostport(self.config.listen, default_host="0.0.0.0")
        users = [TrapUser(u.user, u.auth_protocol, u.auth_key.get_secret_value() if u.auth_key else None, u.priv_protocol,
                          u.priv_key.get_secret_value() if u.priv_key else None, u.engine_id) for u in self.config.users]
        self._receiver = TrapReceiver(host, port, [c.get_secret_value() for c in self.config.communities], users,
                                      self._on_trap, self._on_bad_community)
        try:
            self.port = self._receiver.open()
        except OSError as exc:
            hint = (" (ports below 1024 need CAP_NET_BIND_SERVICE, see docs/snmp.md \"Traps\"; or listen on a port "
                    "from 1024 up and point the cards there)") if port < 1024 and exc.errno in (1, 13) else ""
            raise TrapListenError(f"cannot listen for SNMP traps on {self.config.listen}: {exc.strerror or exc}{hint}") from None
        log.info("listening for SNMP traps on %s (%d snmp devices)", self.config.listen, len(self.devices()))

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
        for task in self._tasks:
            task.cancel()

    async def _resolve(self) -> None:
        loop = asyncio.get_running_loop()
        found: dict[str, list[DeviceRunner]] = {}
        for dev in self.devices():
            host = str(getattr(dev.cfg, "host", ""))
            try:
                ipaddress.ip_address(host)
                addresses = [host]
            except ValueError:
                try:
                    infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM), 5.0)
                    addresses = sorted({str(i[4][0]) for i in infos})
                except (OSError, TimeoutError):
                    log.warning("traps: cannot resolve %s (device %s) now; its traps count as unknown senders", host,
                                dev.name)
                    addresses = []
            for a in addresses:
                found.setdefault(_plain_ip(a), []).append(dev)
        self._by_address = found
        self._resolved_at = time.monotonic()

    # -- counting and logging -------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Notifications by result, the engine's own drops included."""
        out = dict(self.counts)
        if self._receiver is not None:
            for result, n in (("bad_auth", self._receiver.v3_failures()), ("malformed", self._receiver.malformed())):
                if n:
                    out[result] = n
        return out

    def _drop(self, result: str, detail: str) -> None:
        self.counts[result] += 1
        now = time.monotonic()
        last, suppressed = self._logged.get(result, (float("-inf"), 0))
        if now - last >= _LOG_EVERY:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("dropped SNMP trap: %s%s", detail, more)
            self._logged[result] = (now, 0)
        else:
            self._logged[result] = (last, suppressed + 1)

    def _on_bad_community(self, source: str) -> None:
        self._drop("bad_community", f"from {_plain_ip(source)} with a community not in traps.communities")

    # -- notifications (event loop) --------------------------------------------------------------------
    def _on_trap(self, n: Notification) -> None:
        from roomwatch.drivers.snmp.traps import classify

        source = _plain_ip(n.source)
        devices = self._by_address.get(source)
        if not devices:
            agent_addr = next((val for name, val in n.var_binds if name == SNMP_TRAP_ADDRESS), None)
            if isinstance(agent_addr, str) and len(agent_addr) == 4:
                agent_addr = ".".join(str(ord(c)) for c in agent_addr)  # IpAddress passed on as 4 raw bytes
            devices = self._by_address.get(str(agent_addr)) if agent_addr else None
        if not devices:
            self._drop("unknown_sender", f"from {source}, which is no configured snmp device's address")
            if time.monotonic() - self._resolved_at > _RESOLVE_EVERY and not self._resolving:
                self._resolving = True  # a card with a new DHCP lease: look its name up again (rarely)
                self._spawn(self._re_resolve())
            return
        self.counts["accepted"] += 1
        meaning = classify(n.trap_oid, n.var_binds)
        for dev in devices:
            log.info("SNMP trap %s from %s (device %s): polling it now", meaning.name, source, dev.name)
            if meaning.metric is not None and meaning.value is not None:
                self._state(dev, meaning.metric, meaning.value, f"SNMP trap {meaning.name} from {source}")
            self._pending.setdefault(dev.name, []).append(meaning.name)
            self._poll_soon(dev)

    async def _re_resolve(self) -> None:
        try:
            await self._resolve()
        finally:
            self._resolving = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _state(self, dev: DeviceRunner, metric: str, value: float, message: str) -> None:
        """The trap is a reading of the device's state now: publish it (an event when it changes it), hold it."""
        agent = self.agent
        now = time.time()
        labels = dict(dev.labels)
        key = (metric, tuple(sorted(labels.items())))
        before = agent._states.get(key)
        events = []
        types = v.STATE_EVENTS[metric]
        if before != (value >= 0.5) and (before is not None or value >= 0.5):
            events.append(EventRecord(types[0] if value >= 0.5 else types[1], labels, int(now * 1000), value, message))
        if self.config.hold:
            self._holds[(dev.name, metric)] = (value, time.monotonic() + self.config.hold)
        # Shown and pushed at once, but no observer acts on it (own=[]): the poll it asks for tells them
        # what the device itself says (a trap is only as trustworthy as its community: docs/security.md).
        agent._publish(dev, [SampleRecord(metric, labels, value, int(now * 1000))], replace=False, events=events,
                       own=[])

    def _poll_soon(self, dev: DeviceRunner) -> None:
        wait = self._last_poll.get(dev.name, float("-inf")) + MIN_GAP - time.monotonic()
        if wait > 0:
            if dev.name not in self._waiting:
                self._waiting.add(dev.name)
                asyncio.get_running_loop().call_later(wait, self._poll_now, dev)
            return
        self._poll_now(dev)

    def _poll_now(self, dev: DeviceRunner) -> None:
        self._waiting.discard(dev.name)
        self._last_poll[dev.name] = time.monotonic()
        self.agent.poll_now(dev)

    # -- hooks the agent calls around a poll ------------------------------------------------------------
    def take_events(self, dev: DeviceRunner) -> list[EventRecord]:
        """The ``snmp_trap`` event for the notifications that asked for this poll (none: an ordinary poll)."""
        names = self._pending.pop(dev.name, None)
        if not names:
            return []
        counted = Counter(names)
        shown = [f"{n} ×{c}" if c > 1 else n for n, c in list(counted.items())[:_MESSAGE_NAMES]]
        more = f" and {len(counted) - _MESSAGE_NAMES} more" if len(counted) > _MESSAGE_NAMES else ""
        return [EventRecord("snmp_trap", dict(dev.labels), int(time.time() * 1000), float(len(names)),
                            "SNMP trap: " + ", ".join(shown) + more)]

    def adjust(self, dev: DeviceRunner, records: list[SampleRecord]) -> list[SampleRecord]:
        """Within ``hold`` of a trap, its state stands against a poll that still says otherwise."""
        if not self._holds:
            return records
        now = time.monotonic()
        out = []
        for rec in records:
            held = self._holds.get((dev.name, rec.metric))
            if held is not None and rec.labels == dev.labels:
                value, until = held
                if now >= until or rec.value == value:
                    del self._holds[(dev.name, rec.metric)]  # expired, or the card agrees now
                else:
                    rec = SampleRecord(rec.metric, rec.labels, value, rec.ts)
            out.append(rec)
        return out
