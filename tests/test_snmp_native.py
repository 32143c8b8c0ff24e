"""The built-in SNMP v1/v2c codec and socket: checked byte for byte against pysnmp/pyasn1, fuzzed, and on the wire.

pysnmp is the reference here: our requests must encode exactly as pysnmp's,
and we must decode every value type pysnmp encodes. On the wire, the client
must accept an answer only from the device's address, with its request-id and
community (a stray or forged datagram is dropped, and the request times out).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import encoder
from pysnmp.proto import api, rfc1902, rfc1905

from roomwatch.drivers.snmp.native import BerError, NativeTransport, decode_message, encode_oid, encode_request
from roomwatch.drivers.snmp.session import END_OF_MIB, Credentials, Engine, SnmpError

OIDS = [(1, 3, 6, 1, 2, 1, 33, 1, 2, 4, 0), (1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 2, 3, 1, 0),
        (1, 3, 6, 1, 4, 1, 4294967295, 128, 16383, 16384), (2, 999, 3), (0, 0)]


def _pysnmp_message(version: int, community: bytes, pdu: Any) -> bytes:
    proto = api.PROTOCOL_MODULES[version]
    msg = proto.Message()
    proto.apiMessage.set_defaults(msg)
    proto.apiMessage.set_community(msg, community)
    proto.apiMessage.set_pdu(msg, pdu)
    return encoder.encode(msg)


@pytest.mark.parametrize("oid", OIDS)
def test_oid_encoding_matches_pyasn1(oid: tuple[int, ...]) -> None:
    assert encode_oid(oid) == encoder.encode(rfc1902.ObjectName(oid))


@pytest.mark.parametrize(("version", "kind"), [(0, "get"), (0, "next"), (1, "get"), (1, "next"), (1, "bulk")])
@pytest.mark.parametrize("request_id", [1, 127, 128, 255, 65536, 0x7FFFFFFF])
def test_requests_encode_exactly_like_pysnmp(version: int, kind: str, request_id: int) -> None:
    proto = api.PROTOCOL_MODULES[version]
    pdu = {"get": proto.GetRequestPDU, "next": proto.GetNextRequestPDU,
           "bulk": getattr(proto, "GetBulkRequestPDU", None)}[kind]()
    if kind == "bulk":
        proto.apiBulkPDU.set_defaults(pdu)
        proto.apiBulkPDU.set_non_repeaters(pdu, 0)
        proto.apiBulkPDU.set_max_repetitions(pdu, 25)
        proto.apiBulkPDU.set_request_id(pdu, request_id)
        proto.apiBulkPDU.set_varbinds(pdu, [(o, proto.Null("")) for o in OIDS])
    else:
        proto.apiPDU.set_defaults(pdu)
        proto.apiPDU.set_request_id(pdu, request_id)
        proto.apiPDU.set_varbinds(pdu, [(o, proto.Null("")) for o in OIDS])
    ours = encode_request(version, b"public", kind, request_id, [encode_oid(o) for o in OIDS], 25)
    assert ours == _pysnmp_message(version, b"public", pdu)


def test_every_value_type_decodes() -> None:
    v2c = api.PROTOCOL_MODULES[1]
    values = [
        (rfc1902.Integer32(-5), -5), (rfc1902.Integer32(2147483647), 2147483647),
        (rfc1902.Counter32(4294967295), 4294967295), (rfc1902.Gauge32(4294967295), 4294967295),
        (rfc1902.TimeTicks(10976200), 10976200), (rfc1902.Counter64(2**64 - 1), 2**64 - 1),
        (rfc1902.OctetString("Smart-UPS 1500"), "Smart-UPS 1500"),
        (rfc1902.OctetString("机房温度".encode("gbk")), "机房温度"),  # a GBK sensor name
        (rfc1902.OctetString("机房温度".encode()), "机房温度"),
        (rfc1902.OctetString(b"\xff\xfe"), "ÿþ"),
        (rfc1902.IpAddress("10.0.0.1"), "10.0.0.1"),
        (rfc1902.ObjectIdentifier((1, 3, 6, 1, 4, 1, 318)), (1, 3, 6, 1, 4, 1, 318)),
        (rfc1902.Opaque(b"\x01\x02"), None), (rfc1902.Null(""), None),
        (rfc1905.NoSuchObject(""), None), (rfc1905.NoSuchInstance(""), None), (rfc1905.EndOfMibView(""), END_OF_MIB),
    ]
    pdu = v2c.ResponsePDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, 4242)
    v2c.apiPDU.set_error_status(pdu, 2)
    v2c.apiPDU.set_error_index(pdu, 3)
    oids = [(1, 3, 6, 1, 2, 1, 1, i, 0) for i in range(len(values))]
    v2c.apiPDU.set_varbinds(pdu, list(zip(oids, [val for val, _ in values], strict=True)))
    version, community, tag, request_id, status, index, varbinds = decode_message(_pysnmp_message(1, b"c0mm", pdu))
    assert (version, community, tag, request_id, status, index) == (1, b"c0mm", 0xA2, 4242, 2, 3)
    assert varbinds == [(o, want) for o, (_, want) in zip(oids, values, strict=True)]


@pytest.mark.parametrize("packet", [b"", b"\x30", b"\x30\x05\x02\x01\x01", b"\x30\x84\xff\xff\xff\xff",
                                    b"\x04\x03abc", b"\x30\x03\x02\x01\x01\x04"])
def test_malformed_packets_raise_ber_error(packet: bytes) -> None:
    with pytest.raises(BerError):
        decode_message(packet)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        decode_message(data)
    except BerError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_crash_the_socket_handler(data: bytes) -> None:
    proto = NativeTransport()
    proto.datagram_received(data, ("127.0.0.1", 161))
    assert proto.dropped == 1


class _Agent(asyncio.DatagramProtocol):
    """A loopback UDP peer that answers each GET with a pysnmp-encoded Response, as ``mode`` says."""

    def __init__(self, mode: str, other: asyncio.DatagramTransport | None = None):
        self.mode = mode
        self.other = other
        self.transport: asyncio.DatagramTransport | None = None
        self.tags: list[int] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    #: The "no-bulk" agent's table: one column with two rows.
    TABLE: ClassVar[dict[tuple[int, ...], int]] = {(1, 3, 6, 1, 4, 1, 32473, 5, 1, 2, 1): 21,
                                                   (1, 3, 6, 1, 4, 1, 32473, 5, 1, 2, 2): 23}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        _, community, tag, request_id, _, _, varbinds = decode_message(data)
        self.tags.append(tag)
        v2c = api.PROTOCOL_MODULES[1]
        pdu = v2c.ResponsePDU()
        v2c.apiPDU.set_defaults(pdu)
        v2c.apiPDU.set_request_id(pdu, request_id)
        if self.mode == "no-bulk" and tag == 0xA5:  # an old agent that fails every GETBULK with genErr
            v2c.apiPDU.set_error_status(pdu, 5)
            v2c.apiPDU.set_error_index(pdu, 1)
            v2c.apiPDU.set_varbinds(pdu, [(oid, rfc1902.Null("")) for oid, _ in varbinds])
        elif tag == 0xA1:  # GETNEXT over TABLE
            answer = []
            for oid, _ in varbinds:
                after = [o for o in sorted(self.TABLE) if o > oid]
                answer.append((after[0], rfc1902.Integer32(self.TABLE[after[0]])) if after
                              else (oid, rfc1905.EndOfMibView("")))
            v2c.apiPDU.set_varbinds(pdu, answer)
        else:
            v2c.apiPDU.set_varbinds(pdu, [(oid, rfc1902.Integer32(42)) for oid, _ in varbinds])
        if self.mode == "wrong-community":
            community = b"other"
        reply = _pysnmp_message(1, community, pdu)
        sender = self.other if self.mode == "other-port" else self.transport
        assert sender is not None
        sender.sendto(reply, addr)


@pytest.mark.parametrize("mode", ["ok", "wrong-community", "other-port"])
async def test_only_the_device_itself_can_answer(mode: str) -> None:
    loop = asyncio.get_running_loop()
    other, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    agent_transport, _ = await loop.create_datagram_endpoint(lambda: _Agent(mode, other), local_addr=("127.0.0.1", 0))
    port = agent_transport.get_extra_info("sockname")[1]
    engine = Engine()
    try:
        target = await engine.target(Credentials(version="2c", community="public"), ("127.0.0.1", port), False,
                                     timeout=0.2, retries=1, client="builtin")
        oid = (1, 3, 6, 1, 2, 1, 33, 1, 2, 4, 0)
        if mode == "ok":
            assert await target.get([oid]) == {oid: 42}
        else:
            with pytest.raises(SnmpError, match=r"no SNMP answer .* 2 tries"):
                await target.get([oid])
    finally:
        await engine.aclose()
        agent_transport.close()
        other.close()


async def test_unused_udp_port_times_out_with_a_clear_reason() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = Engine()
    try:
        target = await engine.target(Credentials(version="1", community="public"), ("127.0.0.1", port), False,
                                     timeout=0.1, retries=0, client="builtin")
        with pytest.raises(SnmpError, match=r"no SNMP answer from 127.0.0.1:\d+ \(timeout 0.1s, 1 try\).*community"):
            await target.get([(1, 3, 6, 1, 2, 1, 1, 2, 0)])
    finally:
        await engine.aclose()


async def test_an_agent_refusing_getbulk_is_walked_with_getnext() -> None:
    loop = asyncio.get_running_loop()
    agent = _Agent("no-bulk")
    transport, _ = await loop.create_datagram_endpoint(lambda: agent, local_addr=("127.0.0.1", 0))
    engine = Engine()
    try:
        target = await engine.target(Credentials(version="2c", community="public"),
                                     ("127.0.0.1", transport.get_extra_info("sockname")[1]), False, timeout=0.5, retries=0,
                                     client="builtin")
        column = (1, 3, 6, 1, 4, 1, 32473, 5, 1, 2)
        for _ in range(2):
            assert await target.walk([column], max_repetitions=10) == {column: {(1,): 21, (2,): 23}}
        # One refused GETBULK, then GETNEXT only (three per walk: two rows and the end).
        assert agent.tags == [0xA5] + [0xA1] * 6
    finally:
        await engine.aclose()
        transport.close()
