"""The SNMP wire layer: one shared pysnmp engine, GET of scalars and GETBULK/GETNEXT walks of table columns.

Uses pysnmp 7.1's asyncio command generators with raw numeric OIDs. The
high-level ``pysnmp.hlapi`` wrappers resolve every OID through a MIB view and,
when pysmi is installed (snmpsim pulls it in), import pysmi, requests and
jinja2: measured here, 2x the CPU per request and about 20 MiB more agent
memory, for nothing, since profiles carry numeric OIDs. So this module
configures the engine the way ``hlapi``'s ``CommandGeneratorLcdConfigurator``
does (``pysnmp.entity.config``) and sends PDUs with ``pysnmp.entity.rfc3413.cmdgen``.

Values come back as plain Python: ``int`` for every integer type, ``str`` for
text, a tuple for OIDs, ``None`` for noSuchObject/noSuchInstance/Null/Opaque.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.base import DeviceError
from drivers.snmp.profile import OID

__all__ = ["AUTH_PROTOCOLS", "PRIV_PROTOCOLS", "Credentials", "Engine", "SnmpError", "Target"]

#: config names → pysnmp.entity.config attribute names (pysnmp 7.1).
AUTH_PROTOCOLS = {
    "MD5": "USM_AUTH_HMAC96_MD5",
    "SHA": "USM_AUTH_HMAC96_SHA",
    "SHA224": "USM_AUTH_HMAC128_SHA224",
    "SHA256": "USM_AUTH_HMAC192_SHA256",
    "SHA384": "USM_AUTH_HMAC256_SHA384",
    "SHA512": "USM_AUTH_HMAC384_SHA512",
}
PRIV_PROTOCOLS = {
    "DES": "USM_PRIV_CBC56_DES",
    "3DES": "USM_PRIV_CBC168_3DES",
    "AES": "USM_PRIV_CFB128_AES",
    "AES192": "USM_PRIV_CFB192_AES",  # Cisco-style key extension, what most vendors mean by "AES-192"
    "AES256": "USM_PRIV_CFB256_AES",
    "AES192C": "USM_PRIV_CFB192_AES_BLUMENTHAL",  # draft-blumenthal key extension
    "AES256C": "USM_PRIV_CFB256_AES_BLUMENTHAL",
}

MAX_GET_OIDS = 32  # OIDs per GET PDU: keeps responses well under 1472 bytes on old cards
V1_ABSENT_RECHECK = 600.0  # seconds before SNMPv1 asks again for OIDs the agent said it lacks
MAX_WALK_ROWS = 2000  # a table longer than this is a broken agent looping, not a sensor list
# SNMP error-status codes (RFC 3416 §3): noSuchName(2) in v1 means "not there"; tooBig(1) and
# genErr(5) on a multi-OID GET make us split the request, since some cards fail a whole PDU
# for one object they do not know.
_TOO_BIG, _NO_SUCH_NAME, _GEN_ERR, _AUTHORIZATION_ERROR = 1, 2, 5, 16

_ERROR_HINTS = {
    "requestTimedOut": "no answer",
    "wrongDigest": "SNMPv3 authentication failed: wrong auth_key or auth_protocol",
    "unknownUserName": "SNMPv3 user is unknown to the agent",
    "unsupportedSecLevel": "the agent does not support this security_level for the user",
    "decryptionError": "SNMPv3 decryption failed: wrong priv_key or priv_protocol",
    "unknownEngineID": "SNMPv3 engine discovery failed",
    "notInTimeWindow": "SNMPv3 message out of the agent's time window",
    "authenticationError": "SNMPv3 authentication failed",
}


class SnmpError(DeviceError):
    """The device did not answer, refused us, or answered nonsense; the message is for the log."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who we are to the agent (v1/v2c community, or a v3 USM user)."""

    version: str  # "1", "2c", "3"
    community: str = ""
    user: str = ""
    auth_protocol: str | None = None
    auth_key: str | None = None
    priv_protocol: str | None = None
    priv_key: str | None = None
    context: str = ""

    @property
    def security_level(self) -> str:
        if self.version != "3":
            return "noAuthNoPriv"
        if self.priv_key:
            return "authPriv"
        return "authNoPriv" if self.auth_key else "noAuthNoPriv"


def _py(value: Any) -> Any:
    """A pysnmp value as plain Python (see module docstring)."""
    from pyasn1.type import univ
    from pysnmp.proto import rfc1902

    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, rfc1902.IpAddress):
        return ".".join(str(b) for b in value.asOctets())
    if isinstance(value, rfc1902.Opaque):
        return None
    if isinstance(value, univ.OctetString):
        raw = value.asOctets()
        for codec in ("utf-8", "gb18030"):  # Chinese-made cards often name sensors in GBK
            try:
                return raw.decode(codec)
            except UnicodeDecodeError:
                continue
        return raw.decode("latin-1")
    if isinstance(value, univ.ObjectIdentifier):
        return tuple(value)
    return None  # Null, noSuchObject, noSuchInstance, endOfMibView


def _end_of_mib(value: Any) -> bool:
    from pysnmp.proto import rfc1905

    return isinstance(value, rfc1905.EndOfMibView)


class _Slot:
    """One pysnmp ``SnmpEngine`` and what is registered in it."""

    def __init__(self, config: Any, ids: Iterator[int]):
        from pysnmp.entity import engine

        self._config = config
        self._ids = ids
        self.engine = engine.SnmpEngine()
        self.communities: dict[str, str] = {}
        self.users: dict[str, tuple[Any, ...]] = {}
        self.params: dict[tuple[str, str, int], str] = {}
        self.domains: set[tuple[int, ...]] = set()

    def accepts(self, creds: Credentials) -> bool:
        """False when the v3 user name is already here with other keys."""
        known = self.users.get(creds.user)
        return creds.version != "3" or known is None or known == _user_spec(creds)

    def register(self, creds: Credentials, address: tuple[str, int], ipv6: bool, timeout: float, retries: int) -> str:
        cfg = self._config
        if creds.version == "3":
            security_name = creds.user
            if creds.user not in self.users:
                auth = getattr(cfg, AUTH_PROTOCOLS[creds.auth_protocol or "SHA"]) if creds.auth_key else cfg.USM_AUTH_NONE
                priv = getattr(cfg, PRIV_PROTOCOLS[creds.priv_protocol or "AES"]) if creds.priv_key else cfg.USM_PRIV_NONE
                cfg.add_v3_user(self.engine, creds.user, auth, creds.auth_key, priv, creds.priv_key)
                self.users[creds.user] = _user_spec(creds)
        else:
            security_name = self.communities.get(creds.community, "")
            if not security_name:
                security_name = f"c{next(self._ids)}"
                cfg.add_v1_system(self.engine, security_name, creds.community)
                self.communities[creds.community] = security_name
        mp_model = {"1": 0, "2c": 1, "3": 3}[creds.version]
        pkey = (security_name, creds.security_level, mp_model)
        params = self.params.get(pkey)
        if params is None:
            params = f"p{next(self._ids)}"
            cfg.add_target_parameters(self.engine, params, security_name, creds.security_level, mp_model)
            self.params[pkey] = params
        addr_name = f"a{next(self._ids)}"
        cfg.add_target_address(self.engine, addr_name, self._transport(ipv6), address, params,
                               max(1, round(timeout * 100)), retries)
        return addr_name

    def _transport(self, ipv6: bool) -> tuple[int, ...]:
        from pysnmp.carrier.asyncio.dgram import udp, udp6

        mod = udp6 if ipv6 else udp
        if mod.DOMAIN_NAME not in self.domains:
            transport = (udp6.Udp6AsyncioTransport if ipv6 else udp.UdpAsyncioTransport)().open_client_mode()
            self._config.add_transport(self.engine, mod.DOMAIN_NAME, transport)
            self.domains.add(mod.DOMAIN_NAME)
        return mod.DOMAIN_NAME


def _user_spec(creds: Credentials) -> tuple[Any, ...]:
    return (creds.auth_protocol, creds.auth_key, creds.priv_protocol, creds.priv_key)


class Engine:
    """The agent's pysnmp engine(s) for every SNMP device, with one bound on requests in flight.

    Normally one ``SnmpEngine`` (one UDP socket) serves every device. pysnmp keys SNMPv3 users
    by name, so a second device whose user has the same name but other keys (two UPS cards set
    up by different people, or a mistyped key) gets an engine of its own.
    """

    def __init__(self, max_in_flight: int = 32):
        from pysnmp.entity import config

        self._config = config
        self.in_flight = asyncio.Semaphore(max_in_flight)
        self._ids = itertools.count(1)
        self._slots: list[_Slot] = []
        self._closed = False

    @property
    def engines(self) -> int:
        return len(self._slots)

    def target(self, creds: Credentials, address: tuple[str, int], ipv6: bool, timeout: float, retries: int) -> Target:
        """Register one device (credentials, address, timeout) and return its handle."""
        slot = next((s for s in self._slots if s.accepts(creds)), None)
        if slot is None:
            slot = _Slot(self._config, self._ids)
            self._slots.append(slot)
        addr_name = slot.register(creds, address, ipv6, timeout, retries)
        return Target(self, slot.engine, addr_name, creds, f"{address[0]}:{address[1]}", timeout, retries)

    def forget(self, target: Target) -> None:
        """Drop a device's address entry (when it is re-registered after an address change, or stopped)."""
        if not self._closed:
            self._config.delete_target_address(target.snmp_engine, target.addr_name)

    async def aclose(self) -> None:
        """Close the UDP sockets (the agent calls this once at shutdown)."""
        if not self._closed:
            self._closed = True
            for slot in self._slots:
                slot.engine.close_dispatcher()


class Target:
    """One device as the engine knows it: GET and walk with its credentials, timeout and retries."""

    def __init__(self, engine: Engine, snmp_engine: Any, addr_name: str, creds: Credentials, where: str,
                 timeout: float, retries: int):
        self._engine = engine
        self.snmp_engine = snmp_engine
        self.addr_name = addr_name
        self.creds = creds
        self.where = where
        self.timeout = timeout
        self.retries = retries
        self._context = creds.context.encode()
        self._names: dict[OID, Any] = {}
        self.requests = 0  # PDUs sent, for tests and benchmarks
        self._v1_absent: set[OID] = set()
        self._v1_absent_since = time.monotonic()

    def _name(self, oid: OID) -> Any:
        name = self._names.get(oid)
        if name is None:
            from pysnmp.proto.rfc1902 import ObjectName

            name = self._names[oid] = ObjectName(oid)
        return name

    async def _request(self, kind: str, oids: Sequence[OID], max_repetitions: int = 0) -> tuple[int, int, list[Any]]:
        """Send one PDU; return (error status, error index, var-binds) or raise :class:`SnmpError`."""
        from pysnmp.entity.rfc3413 import cmdgen
        from pysnmp.proto.rfc1902 import Null

        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, int, int, Any]] = loop.create_future()

        def done(_engine: Any, _handle: Any, indication: Any, status: Any, index: Any, var_binds: Any, _ctx: Any) -> None:
            if not future.done():  # a poll cancelled by its timeout leaves pysnmp's callback behind
                future.set_result((indication, int(status or 0), int(index or 0), var_binds))

        var_binds = [(self._name(o), Null("")) for o in oids]
        eng = self.snmp_engine
        async with self._engine.in_flight:
            self.requests += 1
            if kind == "get":
                cmdgen.GetCommandGenerator().send_varbinds(eng, self.addr_name, None, self._context, var_binds, done)
            elif kind == "next":
                cmdgen.NextCommandGeneratorSingleRun().send_varbinds(eng, self.addr_name, None, self._context,
                                                                     var_binds, done)
            else:
                cmdgen.BulkCommandGeneratorSingleRun().send_varbinds(eng, self.addr_name, None, self._context,
                                                                     0, max_repetitions, var_binds, done)
            indication, status, index, answer = await future
        if indication:
            raise SnmpError(self._describe(indication))
        if status == _AUTHORIZATION_ERROR:
            raise SnmpError(f"{self.where} refused access (authorizationError): check the SNMPv3 context and view")
        return status, index, list(answer)

    def _describe(self, indication: Any) -> str:
        key = type(indication).__name__
        key = key[:1].lower() + key[1:]
        hint = _ERROR_HINTS.get(key)
        if key == "requestTimedOut":
            tries = self.retries + 1
            who = "community" if self.creds.version != "3" else "SNMPv3 user, keys or context"
            return (f"no SNMP answer from {self.where} (timeout {self.timeout:g}s, {tries} "
                    f"{'try' if tries == 1 else 'tries'}): host down, port closed or wrong {who}")
        return f"{self.where}: {hint or indication}"

    async def get(self, oids: Sequence[OID]) -> dict[OID, Any]:
        """Values of scalar ``oids`` (absent ones map to None), in PDUs of at most MAX_GET_OIDS."""
        out: dict[OID, Any] = {}
        if self.creds.version == "1":
            # SNMPv1 costs one round trip per missing OID (noSuchName fails the whole PDU), so remember
            # them, and look again every V1_ABSENT_RECHECK seconds for probes plugged in since.
            now = time.monotonic()
            if now - self._v1_absent_since > V1_ABSENT_RECHECK:
                self._v1_absent.clear()
                self._v1_absent_since = now
            out = dict.fromkeys((o for o in oids if o in self._v1_absent), None)
            oids = [o for o in oids if o not in self._v1_absent]
        pending = [list(oids[i:i + MAX_GET_OIDS]) for i in range(0, len(oids), MAX_GET_OIDS)]
        while pending:
            chunk = pending.pop()
            status, index, answer = await self._request("get", chunk)
            if status == 0:
                if len(answer) != len(chunk):
                    raise SnmpError(f"{self.where} answered {len(answer)} values for {len(chunk)} OIDs")
                for oid, (_name, value) in zip(chunk, answer, strict=True):
                    out[oid] = _py(value)
            elif status == _NO_SUCH_NAME and 1 <= index <= len(chunk):
                # SNMPv1: one unknown OID fails the whole PDU; drop it and ask again for the rest.
                missing = chunk.pop(index - 1)
                out[missing] = None
                self._v1_absent.add(missing)
                if chunk:
                    pending.append(chunk)
            elif status in (_TOO_BIG, _GEN_ERR, _NO_SUCH_NAME) and len(chunk) > 1:
                half = len(chunk) // 2
                pending += [chunk[:half], chunk[half:]]
            elif status in (_TOO_BIG, _GEN_ERR, _NO_SUCH_NAME):
                out[chunk[0]] = None
            else:
                raise SnmpError(f"{self.where} answered error-status {status} to a GET")
        return out

    async def walk(self, columns: Sequence[OID], max_repetitions: int) -> dict[OID, dict[OID, Any]]:
        """Walk table columns side by side: column OID → {index suffix → value}.

        GETBULK (v2c/v3, ``max_repetitions`` > 0) fetches several rows of every column per PDU;
        SNMPv1 or ``max_repetitions: 0`` uses GETNEXT, one row per PDU.
        """
        result: dict[OID, dict[OID, Any]] = {c: {} for c in columns}
        cursor = {c: c for c in columns}
        active = list(columns)
        bulk = self.creds.version != "1" and max_repetitions > 0
        while active:
            reps = max(1, min(max_repetitions, 60 // len(active))) if bulk else 1
            status, index, answer = await self._request("bulk" if bulk else "next", [cursor[c] for c in active], reps)
            if status == _NO_SUCH_NAME and 1 <= index <= len(active):
                active.pop(index - 1)  # SNMPv1 end of MIB for this column
                continue
            if status:
                raise SnmpError(f"{self.where} answered error-status {status} to a {'GETBULK' if bulk else 'GETNEXT'}")
            if not answer:
                break
            finished: set[OID] = set()
            moved = False
            for pos, (name, value) in enumerate(answer):
                col = active[pos % len(active)]
                if col in finished:
                    continue
                oid = tuple(name)
                # Left the column, end of MIB, or an agent that does not move forward: this column is done.
                if _end_of_mib(value) or oid[:len(col)] != col or oid <= cursor[col] \
                        or len(result[col]) >= MAX_WALK_ROWS:
                    finished.add(col)
                    continue
                result[col][oid[len(col):]] = _py(value)
                cursor[col] = oid
                moved = True
            active = [c for c in active if c not in finished]
            if not moved and not finished:
                break  # an agent that answers without moving any column forward would loop us forever
        return result
