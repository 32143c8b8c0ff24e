"""Receiving SNMP notifications (v1/v2c traps and informs, v3 with USM users) with pysnmp's notification receiver.

pysnmp's ``NotificationReceiver`` (``pysnmp.entity.rfc3413.ntfrcv``) does what a trap
receiver must: v1 traps translated to the v2 form (RFC 3584), informs answered, communities
and SNMPv3 users (authentication, privacy, time windows) checked by the engine's security
models. Measured (BENCHMARKS.md, "SNMP traps"): with the default ``client: pysnmp`` devices the
listener adds about 0.6 MiB to the agent; with only ``client: builtin`` devices it brings pysnmp
in, about 14 MiB. A BER-only v1/v2c receiver on the built-in codec would spare those 14 MiB but
redo the v1→v2 translation and the inform answers, and still need pysnmp for SNMPv3: not worth
it for the one agent per room that listens for traps (set ``client`` as you like; the cost is said).

What the engine drops is counted here: a community not configured (seen at pysnmp's
``rfc2576.processIncomingMsg:writable`` observation point, with the sender's address), SNMPv3
messages failing authentication or decryption (``usmStats*`` counters of
SNMP-USER-BASED-SM-MIB), and packets that are not SNMP (``snmpInASNParseErrs``).

Traps (unconfirmed) in SNMPv3 are authoritative at the *sender*: the receiver must know each
sender's engine ID to check them (``engine_id`` of the user, as net-snmp's ``createUser -e``).
Informs are authoritative at the receiver: no engine ID needed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from roomwatch.drivers.snmp.profile import OID
from roomwatch.drivers.snmp.pysnmp_client import AUTH_PROTOCOLS, PRIV_PROTOCOLS, _py
from roomwatch.drivers.snmp.traps import SNMP_TRAP_OID

__all__ = ["Notification", "TrapReceiver", "TrapUser"]


@dataclass(frozen=True, slots=True)
class TrapUser:
    """An SNMPv3 user traps may come from (``engine_id``: the sender's, hex; needed for traps, not informs)."""

    user: str
    auth_protocol: str = "SHA"
    auth_key: str | None = None
    priv_protocol: str = "AES"
    priv_key: str | None = None
    engine_id: str | None = None


@dataclass(slots=True)
class Notification:
    """One notification the engine accepted."""

    source: str  # the sender's IP address (UDP source)
    trap_oid: OID | None
    var_binds: list[tuple[OID, Any]] = field(default_factory=list)
    security: str = ""  # the community's index name or the v3 user


_USM_FAILURES = ("usmStatsWrongDigests", "usmStatsUnknownUserNames", "usmStatsDecryptionErrors",
                 "usmStatsUnsupportedSecLevels")


class TrapReceiver:
    """A UDP listener on ``host:port`` handing accepted notifications to ``on_trap`` (on the event loop)."""

    def __init__(self, host: str, port: int, communities: Sequence[str], users: Sequence[TrapUser],
                 on_trap: Callable[[Notification], None], on_bad_community: Callable[[str], None]):
        self.host = host
        self.port = port
        self._communities = {c.encode() for c in communities}
        self._community_list = list(communities)
        self._users = list(users)
        self._on_trap = on_trap
        self._on_bad_community = on_bad_community
        self._engine: Any = None
        self._receiver: Any = None
        self._transport: Any = None

    def open(self) -> int:
        """Bind the socket and start receiving; OSError (port in use, no permission) as the OS says it. Returns the port."""
        from pysnmp.carrier.asyncio.dgram import udp, udp6
        from pysnmp.entity import config, engine
        from pysnmp.entity.rfc3413 import ntfrcv
        from pysnmp.proto.rfc1902 import OctetString

        ipv6 = ipaddress.ip_address(self.host).version == 6
        sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))  # here, so a refused bind is a clear error at start
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        eng = engine.SnmpEngine()
        mod = udp6 if ipv6 else udp
        transport = (udp6.Udp6AsyncioTransport if ipv6 else udp.UdpAsyncioTransport)().open_server_mode(sock=sock)
        config.add_transport(eng, mod.DOMAIN_NAME, transport)
        for i, community in enumerate(self._community_list):
            config.add_v1_system(eng, f"trap-community-{i}", community)
        for u in self._users:
            auth = getattr(config, AUTH_PROTOCOLS[u.auth_protocol]) if u.auth_key else config.USM_AUTH_NONE
            priv = getattr(config, PRIV_PROTOCOLS[u.priv_protocol]) if u.priv_key else config.USM_PRIV_NONE
            # Informs: this engine is authoritative (its own engine ID); traps: the sender's engine ID.
            config.add_v3_user(eng, u.user, auth, u.auth_key, priv, u.priv_key)
            if u.engine_id:
                config.add_v3_user(eng, u.user, auth, u.auth_key, priv, u.priv_key,
                                   securityEngineId=OctetString(hexValue=u.engine_id))
        eng.observer.register_observer(self._check_community, "rfc2576.processIncomingMsg:writable")
        self._receiver = ntfrcv.NotificationReceiver(eng, self._received)
        self._engine, self._transport = eng, transport
        self._baseline = self._usm_failures()
        return self.port

    # -- counters the engine keeps -------------------------------------------------------
    def _counter(self, module: str, name: str) -> int:
        if self._engine is None:
            return 0
        (obj,) = self._engine.get_mib_builder().import_symbols(module, name)
        return int(obj.syntax)

    def _usm_failures(self) -> int:
        return sum(self._counter("__SNMP-USER-BASED-SM-MIB", n) for n in _USM_FAILURES)

    def v3_failures(self) -> int:
        """SNMPv3 messages refused since start (wrong key, unknown user, undecryptable, wrong security level)."""
        return self._usm_failures() - self._baseline if self._engine is not None else 0

    def malformed(self) -> int:
        """Packets that were not SNMP at all."""
        return self._counter("__SNMPv2-MIB", "snmpInASNParseErrs")

    # -- pysnmp callbacks (event loop) -----------------------------------------------------
    def _check_community(self, _engine: Any, _point: str, variables: dict[str, Any], _ctx: Any) -> None:
        community = variables.get("communityName")
        raw = community.asOctets() if community is not None and hasattr(community, "asOctets") else bytes(community or b"")
        if raw not in self._communities:
            info = variables.get("transportInformation") or (None, ("?", 0))
            self._on_bad_community(str(info[1][0]))

    def _received(self, snmp_engine: Any, state_reference: Any, _ctx_engine: Any, _ctx_name: Any,
                  var_binds: Any, _cb_ctx: Any) -> None:
        try:
            _domain, address = snmp_engine.message_dispatcher.get_transport_info(state_reference)
            source = str(address[0])
        except Exception:  # the dispatcher forgot the request: a trap we cannot place is dropped
            source = "?"
        binds = [(tuple(name), _py(value)) for name, value in var_binds]
        trap_oid = next((val for name, val in binds if name == SNMP_TRAP_OID and isinstance(val, tuple)), None)
        self._on_trap(Notification(source, trap_oid, [b for b in binds if b[0] != SNMP_TRAP_OID]))

    def close(self) -> None:
        if self._engine is not None:
            if self._receiver is not None:
                self._receiver.close(self._engine)
            self._engine.close_dispatcher()
            self._engine = None
