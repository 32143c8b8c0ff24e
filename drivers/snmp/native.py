"""roomwatch's own SNMP v1/v2c client: a small BER codec and one asyncio UDP socket for every device.

Only what a poller needs: GetRequest, GetNextRequest and GetBulkRequest out,
Response in (RFC 1157 for v1, RFC 3416 for the v2c PDUs, X.690 for BER). A
response is accepted only from the device's address, with its request-id, our
version and community; anything else on the socket is dropped. Values decode
to the plain Python of :mod:`roomwatch.drivers.snmp.session`; a type we do not know is
``None`` (absent), never an error.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Sequence
from typing import Any, cast

from roomwatch.drivers.snmp.profile import OID
from roomwatch.drivers.snmp.session import END_OF_MIB, Credentials, Engine, SnmpError, Target, decode_text

__all__ = ["BerError", "NativeTarget", "NativeTransport", "decode_message", "encode_request"]

# PDU tags (context-specific, constructed) and application value tags, RFC 1157/3416.
PDU_TAGS = {"get": 0xA0, "next": 0xA1, "bulk": 0xA5}
RESPONSE = 0xA2
_INTEGER, _OCTETS, _NULL, _OID, _SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30
_IPADDRESS, _COUNTER32, _GAUGE32, _TIMETICKS, _OPAQUE, _COUNTER64 = 0x40, 0x41, 0x42, 0x43, 0x44, 0x46
_NO_SUCH_OBJECT, _NO_SUCH_INSTANCE, _END_OF_MIB_VIEW = 0x80, 0x81, 0x82
_UNSIGNED = frozenset({_COUNTER32, _GAUGE32, _TIMETICKS, _COUNTER64})


class BerError(ValueError):
    """A packet that is not a well-formed SNMP message."""


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _length(len(body)) + body


def _integer(n: int) -> bytes:
    return _tlv(_INTEGER, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def encode_oid(oid: OID) -> bytes:
    """An OID as a BER TLV (the first two arcs share a byte: 40 × first + second)."""
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] >= 40):
        raise ValueError(f"cannot encode OID {oid}")
    out = bytearray()
    for arc in (40 * oid[0] + oid[1], *oid[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(_OID, bytes(out))


def encode_request(version: int, community: bytes, kind: str, request_id: int, encoded_oids: Sequence[bytes],
                   max_repetitions: int = 0) -> bytes:
    """A whole SNMP message; ``version`` is 0 (v1) or 1 (v2c); ``encoded_oids`` come from :func:`encode_oid`."""
    varbinds = b"".join(_tlv(_SEQUENCE, o + b"\x05\x00") for o in encoded_oids)
    second, third = (0, max_repetitions) if kind == "bulk" else (0, 0)  # non-repeaters / error fields
    pdu = _tlv(PDU_TAGS[kind], _integer(request_id) + _integer(second) + _integer(third) + _tlv(_SEQUENCE, varbinds))
    return _tlv(_SEQUENCE, _integer(version) + _tlv(_OCTETS, community) + pdu)


def _read(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the TLV at ``pos``."""
    if pos + 2 > end:
        raise BerError("truncated")
    tag, n = data[pos], data[pos + 1]
    pos += 2
    if n & 0x80:
        size = n & 0x7F
        if not 0 < size <= 4 or pos + size > end:
            raise BerError("bad length")
        n = int.from_bytes(data[pos:pos + size], "big")
        pos += size
    if pos + n > end:
        raise BerError("truncated")
    return tag, pos, pos + n


def _expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    got, start, stop = _read(data, pos, end)
    if got != tag:
        raise BerError(f"expected tag {tag:#x}, got {got:#x}")
    return start, stop


_OID_CACHE: dict[bytes, OID] = {}


def decode_oid(raw: bytes) -> OID:
    """BER OID contents → tuple (cached: a poller sees the same OIDs every cycle)."""
    found = _OID_CACHE.get(raw)
    if found is not None:
        return found
    arcs, value = [], 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise BerError("empty OID")
    first = arcs[0]
    oid = (*((first // 40, first % 40) if first < 80 else (2, first - 80)), *arcs[1:])
    if len(_OID_CACHE) < 100_000:
        _OID_CACHE[raw] = oid
    return oid


def _value(tag: int, raw: bytes) -> Any:
    if tag == _INTEGER:
        return int.from_bytes(raw, "big", signed=True)
    if tag in _UNSIGNED:
        return int.from_bytes(raw, "big")
    if tag == _OCTETS:
        return decode_text(raw)
    if tag == _OID:
        return decode_oid(raw)
    if tag == _IPADDRESS:
        return ".".join(map(str, raw)) if len(raw) == 4 else None
    if tag == _END_OF_MIB_VIEW:
        return END_OF_MIB
    return None  # NULL, noSuchObject, noSuchInstance, Opaque, anything unknown


def decode_message(data: bytes) -> tuple[int, bytes, int, int, int, int, list[tuple[OID, Any]]]:
    """(version, community, PDU tag, request-id, error-status, error-index, var-binds) of a message."""
    end = len(data)
    start, end = _expect(data, 0, end, _SEQUENCE)
    vs, ve = _expect(data, start, end, _INTEGER)
    version = int.from_bytes(data[vs:ve], "big", signed=True)
    cs, ce = _expect(data, ve, end, _OCTETS)
    tag, ps, pe = _read(data, ce, end)
    fields = []
    pos = ps
    for _ in range(3):
        s, e = _expect(data, pos, pe, _INTEGER)
        fields.append(int.from_bytes(data[s:e], "big", signed=True))
        pos = e
    ls, le = _expect(data, pos, pe, _SEQUENCE)
    varbinds = []
    pos = ls
    while pos < le:
        bs, be = _expect(data, pos, le, _SEQUENCE)
        os_, oe = _expect(data, bs, be, _OID)
        vtag, xs, xe = _read(data, oe, be)
        varbinds.append((decode_oid(data[os_:oe]), _value(vtag, data[xs:xe])))
        pos = be
    return version, data[cs:ce], tag, fields[0], fields[1], fields[2], varbinds


class NativeTransport(asyncio.DatagramProtocol):
    """One UDP socket for every v1/v2c device; responses go to the waiting request by request-id."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, tuple[asyncio.Future[bytes], tuple[str, int]]] = {}
        self.dropped = 0  # packets that matched no request (late answers, strangers, garbage)
        self._next_id = random.randrange(1, 1 << 30)

    @classmethod
    async def open(cls, ipv6: bool) -> NativeTransport:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ipv6 else socket.AF_INET
        _, proto = await loop.create_datagram_endpoint(cls, family=family, local_addr=("::" if ipv6 else "0.0.0.0", 0))
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # create_datagram_endpoint's own kind

    def request_id(self) -> int:
        self._next_id = self._next_id % 0x7FFFFFFF + 1
        return self._next_id

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        try:
            # The request-id sits at a fixed depth; decode fully only once it matched a request.
            start, end = _expect(data, 0, len(data), _SEQUENCE)
            _, ve = _expect(data, start, end, _INTEGER)
            _, ce = _expect(data, ve, end, _OCTETS)
            _, ps, pe = _read(data, ce, end)
            s, e = _expect(data, ps, pe, _INTEGER)
            request_id = int.from_bytes(data[s:e], "big", signed=True)
        except BerError:
            self.dropped += 1
            return
        waiting = self.pending.get(request_id)
        if waiting is None or waiting[0].done() or tuple(addr[:2]) != waiting[1]:
            self.dropped += 1
            return
        waiting[0].set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP errors on an unconnected socket: nothing to do
        pass

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        for future, _ in self.pending.values():
            if not future.done():
                future.cancel()


class NativeTarget(Target):
    """A v1/v2c device read with the built-in client."""

    def __init__(self, engine: Engine, transport: NativeTransport, creds: Credentials, address: tuple[str, int],
                 where: str, timeout: float, retries: int):
        super().__init__(engine, creds, where, timeout, retries)
        self._transport = transport
        self._address = address
        self._version = 0 if creds.version == "1" else 1
        self._community = creds.community.encode()
        self._oids: dict[OID, bytes] = {}

    def _encoded(self, oid: OID) -> bytes:
        found = self._oids.get(oid)
        if found is None:
            found = self._oids[oid] = encode_oid(oid)
        return found

    async def _exchange(self, kind: str, oids: Sequence[OID], max_repetitions: int) -> tuple[int, int, list[Any]]:
        transport = self._transport
        if transport.transport is None or transport.transport.is_closing():
            raise SnmpError("the SNMP socket is closed")
        request_id = transport.request_id()
        packet = encode_request(self._version, self._community, kind, request_id, [self._encoded(o) for o in oids],
                                max_repetitions)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        transport.pending[request_id] = (future, self._address)
        try:
            for _ in range(self.retries + 1):
                try:
                    transport.transport.sendto(packet, self._address)
                except OSError as exc:
                    raise SnmpError(f"cannot send to {self.where}: {exc.strerror or exc}") from None
                done, _ = await asyncio.wait((future,), timeout=self.timeout)
                if not done:
                    continue
                answer = self._check(future.result())
                if answer is not None:
                    return answer
                # A well-formed message with the right id but wrong community/version: keep waiting.
                future = asyncio.get_running_loop().create_future()
                transport.pending[request_id] = (future, self._address)
            raise self.timed_out()
        finally:
            transport.pending.pop(request_id, None)

    def _check(self, data: bytes) -> tuple[int, int, list[Any]] | None:
        try:
            version, community, tag, _, status, index, varbinds = decode_message(data)
        except BerError as exc:
            raise SnmpError(f"{self.where} sent a malformed SNMP message ({exc})") from None
        if version != self._version or community != self._community or tag != RESPONSE:
            return None
        return status, index, varbinds
