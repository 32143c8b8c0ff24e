"""The SNMP wire layer shared by the driver's two clients: GET of scalars, GETBULK/GETNEXT walks of columns.

Two clients speak SNMP, behind one :class:`Target` interface:

* :mod:`roomwatch.drivers.snmp.pysnmp_client` — pysnmp 7.1's asyncio command generators:
  the default for every version, and always for SNMPv3 (USM authentication and privacy).
* :mod:`roomwatch.drivers.snmp.native` — roomwatch's own v1/v2c client (``client: builtin``):
  a BER codec for the four PDU types we send and one UDP socket for every
  device. pysnmp spends about 1.2 ms of CPU per GET in pyasn1 — twice
  snmp_exporter's cost per target — and its import (with cryptography) adds
  15 MiB to the agent; the built-in client costs a third of snmp_exporter's CPU.

Both hand back plain Python values: ``int`` for every integer type, ``str`` for
text, a tuple for OIDs, ``None`` for noSuchObject/noSuchInstance/Null/Opaque
and :data:`END_OF_MIB` at the end of a walk. The GET/walk logic here (SNMPv1
noSuchName, tooBig splitting, parallel column walks) is the same for both.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from roomwatch.drivers.base import DeviceError
from roomwatch.drivers.snmp.profile import OID

if TYPE_CHECKING:  # imported when first needed: pysnmp is heavy (see above)
    from roomwatch.drivers.snmp.pysnmp_client import PysnmpEngines

__all__ = ["END_OF_MIB", "Credentials", "Engine", "SnmpError", "Target", "decode_text"]

MAX_GET_OIDS = 32  # OIDs per GET PDU: keeps responses well under 1472 bytes on old cards
V1_ABSENT_RECHECK = 600.0  # seconds before SNMPv1 asks again for OIDs the agent said it lacks
MAX_WALK_ROWS = 2000  # a table longer than this is a broken agent looping, not a sensor list
# SNMP error-status codes (RFC 3416 §3): noSuchName(2) in v1 means "not there"; tooBig(1) and
# genErr(5) on a multi-OID GET make us split the request, since some cards fail a whole PDU
# for one object they do not know.
TOO_BIG, NO_SUCH_NAME, GEN_ERR, AUTHORIZATION_ERROR = 1, 2, 5, 16


class _EndOfMib:
    def __repr__(self) -> str:
        return "END_OF_MIB"


#: The value an agent returns past the last object (SNMPv2 endOfMibView).
END_OF_MIB: Any = _EndOfMib()


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


def decode_text(raw: bytes) -> str:
    """OCTET STRING → text: UTF-8, else GB18030 (Chinese-made cards often name sensors in GBK), else Latin-1.

    ASCII with Latin-1 degree signs (Comet's ``b"\\xb0C"`` unit column) stays Latin-1: read as GB18030,
    ``\\xb0C`` would become one Chinese character and the unit would be lost."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if all(b < 0x80 or b == 0xB0 for b in raw):
        return raw.decode("latin-1")
    for codec in ("gb18030",):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


class Target(abc.ABC):
    """One device: GET and walk with its credentials, timeout and retries (a client implements :meth:`_exchange`)."""

    def __init__(self, engine: Engine, creds: Credentials, where: str, timeout: float, retries: int):
        self._engine = engine
        self.creds = creds
        self.where = where
        self.timeout = timeout
        self.retries = retries
        self.requests = 0  # PDUs sent (not counting retries), for tests and benchmarks
        self._v1_absent: set[OID] = set()
        self._v1_absent_since = time.monotonic()
        self._bulk_refused = False

    @abc.abstractmethod
    async def _exchange(self, kind: str, oids: Sequence[OID], max_repetitions: int) -> tuple[int, int, list[Any]]:
        """Send one PDU (``get``, ``next`` or ``bulk``); return (error-status, error-index, [(oid, value)])."""

    def close(self) -> None:  # noqa: B027 - clients with per-device state override it
        """Forget the device (stopped, or registered again at a new address)."""

    def timed_out(self) -> SnmpError:
        tries = self.retries + 1
        who = "community" if self.creds.version != "3" else "SNMPv3 user, keys or context"
        return SnmpError(f"no SNMP answer from {self.where} (timeout {self.timeout:g}s, {tries} "
                         f"{'try' if tries == 1 else 'tries'}): host down, port closed or wrong {who}")

    async def _request(self, kind: str, oids: Sequence[OID], max_repetitions: int = 0) -> tuple[int, int, list[Any]]:
        async with self._engine.in_flight:
            self.requests += 1
            status, index, answer = await self._exchange(kind, oids, max_repetitions)
        if status == AUTHORIZATION_ERROR:
            raise SnmpError(f"{self.where} refused access (authorizationError): check the SNMPv3 context and view")
        return status, index, answer

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
                    out[oid] = None if value is END_OF_MIB else value
            elif status == NO_SUCH_NAME and 1 <= index <= len(chunk):
                # SNMPv1: one unknown OID fails the whole PDU; drop it and ask again for the rest.
                missing = chunk.pop(index - 1)
                out[missing] = None
                self._v1_absent.add(missing)
                if chunk:
                    pending.append(chunk)
            elif status in (TOO_BIG, GEN_ERR, NO_SUCH_NAME) and len(chunk) > 1:
                half = len(chunk) // 2
                pending += [chunk[:half], chunk[half:]]
            elif status in (TOO_BIG, GEN_ERR, NO_SUCH_NAME):
                out[chunk[0]] = None
            else:
                raise SnmpError(f"{self.where} answered error-status {status} to a GET")
        return out

    async def next(self, oids: Sequence[OID]) -> dict[OID, tuple[OID, Any] | None]:
        """One GETNEXT step from each of ``oids``: oid → (next OID, its value), or None at the end of the MIB.

        ``profile: auto`` asks this of each profile's probe subtrees to see which MIBs answer.
        SNMPv1 fails a whole PDU for one OID at the end of the MIB (noSuchName): that one is set
        aside and the rest asked again, as :meth:`get` does.
        """
        out: dict[OID, tuple[OID, Any] | None] = {}
        pending = [list(oids[i:i + MAX_GET_OIDS]) for i in range(0, len(oids), MAX_GET_OIDS)]
        while pending:
            chunk = pending.pop()
            status, index, answer = await self._request("next", chunk)
            if status == 0:
                if len(answer) != len(chunk):
                    raise SnmpError(f"{self.where} answered {len(answer)} values for {len(chunk)} OIDs")
                for oid, (name, value) in zip(chunk, answer, strict=True):
                    out[oid] = None if value is END_OF_MIB else (tuple(name), value)
            elif status == NO_SUCH_NAME and 1 <= index <= len(chunk):
                out[chunk.pop(index - 1)] = None
                if chunk:
                    pending.append(chunk)
            elif status in (TOO_BIG, GEN_ERR, NO_SUCH_NAME) and len(chunk) > 1:
                half = len(chunk) // 2
                pending += [chunk[:half], chunk[half:]]
            elif status in (TOO_BIG, GEN_ERR, NO_SUCH_NAME):
                out[chunk[0]] = None
            else:
                raise SnmpError(f"{self.where} answered error-status {status} to a GETNEXT")
        return out

    async def walk(self, columns: Sequence[OID], max_repetitions: int) -> dict[OID, dict[OID, Any]]:
        """Walk table columns side by side: column OID → {index suffix → value}.

        GETBULK (v2c/v3, ``max_repetitions`` > 0) fetches several rows of every column per PDU;
        SNMPv1 or ``max_repetitions: 0`` uses GETNEXT, one row per PDU.
        """
        result: dict[OID, dict[OID, Any]] = {c: {} for c in columns}
        cursor = {c: c for c in columns}
        active = list(columns)
        bulk = self.creds.version != "1" and max_repetitions > 0 and not self._bulk_refused
        while active:
            reps = max(1, min(max_repetitions, 60 // len(active))) if bulk else 1
            status, index, answer = await self._request("bulk" if bulk else "next", [cursor[c] for c in active], reps)
            if status and bulk:
                # Some old v2c agents answer GETBULK with an error: walk this one with GETNEXT from now on.
                self._bulk_refused, bulk = True, False
                continue
            if status == NO_SUCH_NAME and 1 <= index <= len(active):
                active.pop(index - 1)  # SNMPv1 end of MIB for this column
                continue
            if status:
                raise SnmpError(f"{self.where} answered error-status {status} to a {'GETBULK' if bulk else 'GETNEXT'}")
            if not answer:
                break
            finished: set[OID] = set()
            moved = False
            for pos, (oid, value) in enumerate(answer):
                col = active[pos % len(active)]
                if col in finished:
                    continue
                # Left the column, end of MIB, or an agent that does not move forward: this column is done.
                if value is END_OF_MIB or oid[:len(col)] != col or oid <= cursor[col] \
                        or len(result[col]) >= MAX_WALK_ROWS:
                    finished.add(col)
                    continue
                result[col][oid[len(col):]] = value
                cursor[col] = oid
                moved = True
            active = [c for c in active if c not in finished]
            if not moved and not finished:
                break  # an agent that answers without moving any column forward would loop us forever
        return result


class Engine:
    """Every SNMP device of the agent: the clients' sockets, and one bound on requests in flight.

    The agent keeps one (``Context.shared``); it closes it at shutdown with :meth:`aclose`.
    """

    def __init__(self, max_in_flight: int = 32):
        self.in_flight = asyncio.Semaphore(max_in_flight)
        self._native: dict[bool, Any] = {}  # ipv6? → native transport
        self._opening = asyncio.Lock()
        self._pysnmp: PysnmpEngines | None = None
        self._closed = False

    @property
    def pysnmp_engines(self) -> int:
        """How many pysnmp engines exist (0 until a device needs pysnmp)."""
        return self._pysnmp.count if self._pysnmp is not None else 0

    async def target(self, creds: Credentials, address: tuple[str, int], ipv6: bool, timeout: float, retries: int,
                     client: str = "pysnmp") -> Target:
        """Register one device and return its handle; ``client`` is ``pysnmp`` or ``builtin`` (v1/v2c only)."""
        if self._closed:
            raise SnmpError("the SNMP engine is closed")
        where = f"[{address[0]}]:{address[1]}" if ipv6 else f"{address[0]}:{address[1]}"
        if creds.version != "3" and client == "builtin":
            from roomwatch.drivers.snmp.native import NativeTarget, NativeTransport

            async with self._opening:  # devices start concurrently: open each socket once
                transport = self._native.get(ipv6)
                if transport is None:
                    transport = self._native[ipv6] = await NativeTransport.open(ipv6)
            return NativeTarget(self, transport, creds, address, where, timeout, retries)
        if self._pysnmp is None:
            from roomwatch.drivers.snmp.pysnmp_client import PysnmpEngines

            self._pysnmp = PysnmpEngines()
        return self._pysnmp.target(self, creds, address, ipv6, where, timeout, retries)

    async def aclose(self) -> None:
        """Close every socket (the agent calls this once at shutdown)."""
        if self._closed:
            return
        self._closed = True
        for transport in self._native.values():
            transport.close()
        if self._pysnmp is not None:
            self._pysnmp.close()
