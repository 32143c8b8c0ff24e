"""The modbus driver against real pymodbus servers: loopback TCP and an RTU line over a socat pty pair."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import struct
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, TypeVar

import pytest

from roomwatch import drivers
from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import DeviceError, Reading
from roomwatch.drivers.modbus.config import ModbusConfig
from roomwatch.drivers.modbus.driver import ModbusDriver
from tests.peers.modbus import ModbusPeer

drivers.load_builtin()
T = TypeVar("T")


class Ctx:
    """What the agent offers a driver: a logger and one shared object per key."""

    def __init__(self) -> None:
        self.log = logging.getLogger("test.modbus")
        self.objects: dict[Hashable, Any] = {}

    def emit(self, readings: Any, events: Any = ()) -> None:
        raise AssertionError("a polled driver never emits")

    def shared(self, key: Hashable, factory: Callable[[], T]) -> T:
        if key not in self.objects:
            self.objects[key] = factory()
        return self.objects[key]  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        for obj in self.objects.values():
            await obj.aclose()


@pytest.fixture
async def ctx() -> AsyncIterator[Ctx]:
    c = Ctx()
    try:
        yield c
    finally:
        await c.aclose()


def driver(ctx: Ctx, **options: Any) -> ModbusDriver:
    cfg = ModbusConfig.model_validate({"name": options.pop("name", "dev"), "driver": "modbus", **options})
    return ModbusDriver(cfg, ctx)


def values(readings: Any) -> dict[tuple[str, str | None], float]:
    """(metric, sensor label) → value."""
    out = {}
    for r in readings:
        key = (r.metric, (r.labels or {}).get("sensor"))
        assert key not in out, f"{key} reported twice"
        out[key] = r.value
    return out


def words(fmt: str, value: Any) -> list[int]:
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


# --- TCP ------------------------------------------------------------------------------------

async def test_types_word_order_scaling_and_bit_functions_over_tcp(modbus_peer: ModbusPeer, ctx: Ctx) -> None:
    unit = {
        "holding": {100: [235, 0xFF33, *words("i", -70000), *words("f", 21.5)[::-1], *words("I", 86400)]},
        "input": {0: [651, 0b0100_0100]},
        "coil": {0: [1, 0, 1]},
        "discrete": {0: [0, 1, 0, 1]},
    }
    await modbus_peer.start_tcp({7: unit})
    regs = [
        {"name": "t1", "metric": "temperature", "sensor": "t1", "address": 100, "scale": 0.1},
        {"name": "t2", "metric": "temperature", "sensor": "t2", "address": 101, "type": "int16", "scale": 0.1},
        {"name": "i32", "metric": "ups_battery_voltage_volts", "address": 102, "type": "int32", "offset": 70100},
        {"name": "f32le", "metric": "temperature", "sensor": "f", "address": 104, "type": "float32", "word_order": "little"},
        {"name": "runtime", "metric": "ups_battery_runtime_seconds", "address": 106, "type": "uint32"},
        {"name": "rh", "metric": "humidity", "function": "input", "address": 0, "scale": 0.1, "unit": "percent"},
        {"name": "lb", "metric": "ups_battery_low", "function": "input", "address": 1, "bit": 6},
        {"name": "ob", "metric": "ups_on_battery", "function": "input", "address": 1, "bit": 3},
        {"name": "c0", "metric": "door", "function": "coil", "address": 0, "sensor": "c0"},
        {"name": "c1", "metric": "door", "function": "coil", "address": 1, "sensor": "c1"},
        {"name": "d1", "metric": "leak", "function": "discrete", "address": 1, "sensor": "d1"},
        {"name": "d3", "metric": "smoke", "function": "discrete", "address": 3, "active_low": True},
    ]
    drv = driver(ctx, host="127.0.0.1", port=modbus_peer.port, unit=7, registers=regs)
    await drv.start()
    got = values(await drv.poll())
    expected = {
        (v.TEMPERATURE, "t1"): 23.5, (v.TEMPERATURE, "t2"): -20.5, (v.UPS_BATTERY_VOLTAGE, None): 100.0,
        (v.TEMPERATURE, "f"): 21.5, (v.UPS_BATTERY_RUNTIME, None): 86400.0, (v.HUMIDITY, None): 0.651,
        (v.UPS_BATTERY_LOW, None): 1.0, (v.UPS_ON_BATTERY, None): 0.0,
        (v.DOOR_OPEN, "c0"): 1.0, (v.DOOR_OPEN, "c1"): 0.0, (v.WATER_LEAK, "d1"): 1.0, (v.SMOKE, None): 0.0,
    }
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        assert close(got[key], want), (key, got[key], want)
    # contiguous rows went out as one request per block: holding 100–107, input 0–1, coils 0–1, discrete 1–1 and 3–3
    assert sorted((f, a, n) for _, f, a, n in modbus_peer.reads_of(7)) == [
        ("coil", 0, 2), ("discrete", 1, 1), ("discrete", 3, 1), ("holding", 100, 8), ("input", 0, 2)]

    await modbus_peer.set(7, "holding", 100, [300])
    await modbus_peer.set(7, "discrete", 3, [0])
    got = values(await drv.poll())
    assert got[(v.TEMPERATURE, "t1")] == 30.0
    assert got[(v.SMOKE, None)] == 1.0  # active-low input released: alarm


async def test_xy_md02_profile_over_tcp(modbus_peer: ModbusPeer, ctx: Ctx) -> None:
    await modbus_peer.start_tcp({1: {"input": {1: [0xFF33, 455]}}})
    drv = driver(ctx, host="127.0.0.1", port=modbus_peer.port, profile="xy-md02")
    assert values(await drv.poll()) == {(v.TEMPERATURE, None): -20.5, (v.HUMIDITY, None): 0.455}
    await modbus_peer.set(1, "input", 1, [1500])  # 150 °C: outside the probe's range, so no reading
    assert values(await drv.poll()) == {(v.HUMIDITY, None): 0.455}


def _huawei_unit(mode: int, status_bits: int, alarm_bits: int) -> dict[str, Any]:
    status = [0x7FFF] * 25  # 11000–11024, 0x7FFF = not available
    status[0] = 2301  # 11000 input voltage 230.1 V
    status[8] = 2200  # 11008 output voltage 220.0 V
    status[21] = 356  # 11021 load 35.6 %
    status[24] = mode  # 11024 power supply mode
    return {"holding": {11000: status, 11043: [status_bits], 12000: [545, 0, 0, 87, *words("I", 1260)],
                        41188: [alarm_bits]}}


async def test_huawei_ups2000_profile_over_tcp(modbus_peer: ModbusPeer, ctx: Ctx) -> None:
    await modbus_peer.start_tcp({1: _huawei_unit(mode=2, status_bits=0, alarm_bits=0)})
    drv = driver(ctx, host="127.0.0.1", port=modbus_peer.port, profile="huawei-ups2000", battery_installed="2021-06-01")
    got = values(await drv.poll())
    age = got.pop((v.UPS_BATTERY_AGE, None))
    assert age > 3 * 365 * 86400
    assert got == {
        (v.UPS_INPUT_VOLTAGE, None): pytest.approx(230.1), (v.UPS_OUTPUT_VOLTAGE, None): pytest.approx(220.0),
        (v.UPS_LOAD, None): pytest.approx(0.356), (v.UPS_ON_BATTERY, None): 0.0, (v.UPS_BATTERY_LOW, None): 0.0,
        (v.UPS_BATTERY_VOLTAGE, None): pytest.approx(54.5), (v.UPS_BATTERY_CHARGE, None): pytest.approx(0.87),
        (v.UPS_BATTERY_RUNTIME, None): 1260.0, (v.UPS_BATTERY_REPLACE, None): 0.0,
    }
    # mains fails: mode 3 (battery), register 1043 bit 6 (LB), alarm 40164 bit 1 (battery needs maintenance),
    # and the UPS stops reporting its output voltage (0x7FFF): that series is absent, not 0.
    await modbus_peer.set(1, "holding", 11024, [3])
    await modbus_peer.set(1, "holding", 11043, [0b0100_0000])
    await modbus_peer.set(1, "holding", 41188, [0b10])
    await modbus_peer.set(1, "holding", 11008, [0x7FFF])
    got = values(await drv.poll())
    assert got[(v.UPS_ON_BATTERY, None)] == 1.0
    assert got[(v.UPS_BATTERY_LOW, None)] == 1.0
    assert got[(v.UPS_BATTERY_REPLACE, None)] == 1.0
    assert (v.UPS_OUTPUT_VOLTAGE, None) not in got


async def test_dry_contact_module_inputs_over_tcp(modbus_peer: ModbusPeer, ctx: Ctx) -> None:
    # DI1 door reed switch (normally closed: reads 1 while the door is shut), DI2 leak rope, DI5 smoke relay
    await modbus_peer.start_tcp({3: {"discrete": {0: [1, 0, 0, 0, 1, 0, 0, 0]}}})
    drv = driver(ctx, host="127.0.0.1", port=modbus_peer.port, unit=3, profile="waveshare-io-8ch",
                 inputs={1: {"kind": "door", "active_low": True, "sensor": "front-door"}, 2: {"kind": "leak"},
                         5: {"kind": "smoke"}})
    assert values(await drv.poll()) == {(v.DOOR_OPEN, "front-door"): 0.0, (v.WATER_LEAK, "in2"): 0.0,
                                        (v.SMOKE, "in5"): 1.0}
    assert modbus_peer.reads_of(3) == [(3, "discrete", 0, 5)]  # one request for DI1..DI5
    await modbus_peer.set(3, "discrete", 0, [0, 1])
    got = values(await drv.poll())
    assert got[(v.DOOR_OPEN, "front-door")] == 1.0 and got[(v.WATER_LEAK, "in2")] == 1.0


async def test_exception_reply_names_register_and_code(modbus_peer: ModbusPeer, ctx: Ctx) -> None:
    await modbus_peer.start_tcp({1: {"holding": {0: [1, 2, 3]}}})
    drv = driver(ctx, host="127.0.0.1", port=modbus_peer.port,
                 registers=[{"name": "inlet", "metric": "temperature", "address": 500}])
    with pytest.raises(DeviceError) as info:
        await drv.poll()
    msg = str(info.value)
    assert "unit 1 answered Modbus exception 2 (illegal data address)" in msg
    assert "holding registers 500" in msg and "[inlet]" in msg


async def test_silent_unit_times_out_and_shared_connection_keeps_serving_others(modbus_peer: ModbusPeer, ctx: Ctx) -> None:
    await modbus_peer.start_tcp({1: {"input": {1: [215, 500]}}}, silent=[9])
    good = driver(ctx, name="good", host="127.0.0.1", port=modbus_peer.port, unit=1, profile="xy-md02")
    dead = driver(ctx, name="dead", host="127.0.0.1", port=modbus_peer.port, unit=9, profile="xy-md02",
                  request_timeout="300ms")
    await good.start()
    await dead.start()
    assert len(ctx.objects) == 1  # one TCP connection for both units behind this host:port
    for _ in range(4):  # more timeouts than the reconnect threshold: the good unit is unaffected
        with pytest.raises(DeviceError, match=r"unit 9 did not answer within 0\.3s reading input registers 1–2"):
            await dead.poll()
        assert values(await good.poll()) == {(v.TEMPERATURE, None): 21.5, (v.HUMIDITY, None): 0.5}
    assert len(modbus_peer.reads_of(9)) == 4  # one request per poll: the poll stops at the first timeout


async def test_retries_repeat_an_unanswered_request(modbus_peer: ModbusPeer, ctx: Ctx) -> None:
    await modbus_peer.start_tcp({1: {"input": {1: [215, 500]}}}, silent=[9])
    dead = driver(ctx, host="127.0.0.1", port=modbus_peer.port, unit=9, profile="xy-md02", request_timeout="200ms",
                  retries=2)
    with pytest.raises(DeviceError, match=r"\(3 attempts\)"):
        await dead.poll()
    assert len(modbus_peer.reads_of(9)) == 3


async def test_connection_refused_is_a_device_error(ctx: Ctx) -> None:
    from tests.helpers import free_port

    port = free_port()  # nothing listens there
    drv = driver(ctx, host="127.0.0.1", port=port, profile="xy-md02")
    with pytest.raises(DeviceError, match=f"cannot connect to Modbus 127.0.0.1:{port}"):
        await drv.poll()


async def test_reconnects_after_the_server_restarts(ctx: Ctx) -> None:
    first = await ModbusPeer().start_tcp({1: {"input": {1: [200, 400]}}})
    port = first.port
    drv = driver(ctx, host="127.0.0.1", port=port, profile="xy-md02")
    try:
        assert values(await drv.poll())[(v.TEMPERATURE, None)] == 20.0
    finally:
        await first.stop()
    with pytest.raises(DeviceError):
        await drv.poll()
    second = await ModbusPeer().start_tcp({1: {"input": {1: [250, 400]}}}, port=port)
    try:
        # refused with the hold-off's reason until it ends (1 s after the failed connect), then read again
        deadline = time.monotonic() + 10
        while True:
            try:
                readings = await drv.poll()
                break
            except DeviceError:
                assert time.monotonic() < deadline, "no reconnect after the hold-off"
                await asyncio.sleep(0.05)
        assert values(readings)[(v.TEMPERATURE, None)] == 25.0
    finally:
        await second.stop()


async def test_rtu_frames_over_tcp_for_transparent_serial_servers(modbus_peer: ModbusPeer, ctx: Ctx) -> None:
    await modbus_peer.start_tcp({4: {"holding": {0: [655, 0xFFC4]}}}, rtu_framing=True)
    drv = driver(ctx, transport="rtu-over-tcp", host="127.0.0.1", port=modbus_peer.port, unit=4, profile="sht3x-rs485")
    assert values(await drv.poll()) == {(v.HUMIDITY, None): 0.655, (v.TEMPERATURE, None): -6.0}


# --- RTU over a pseudo-terminal pair ---------------------------------------------------------------

async def test_rtu_units_on_one_bus_polled_concurrently_without_collisions(
        modbus_peer: ModbusPeer, serial_pair: tuple[str, str], ctx: Ctx) -> None:
    server_tty, client_tty = serial_pair
    units = {u: {"input": {1: [200 + u, 400 + u]}, "holding": {0: [u] * 20}} for u in (1, 2, 3)}
    await modbus_peer.start_rtu(server_tty, units, baudrate=19200)
    devs = {u: driver(ctx, name=f"th{u}", transport="rtu", serial_port=client_tty, baudrate=19200, unit=u,
                      profile="xy-md02", registers=[{"name": "id", "metric": "ups_load_ratio", "address": 0}])
            for u in (1, 2, 3)}
    for d in devs.values():
        await d.start()
    assert len(ctx.objects) == 1  # one owner of the serial port

    async def many(u: int) -> list[dict[tuple[str, str | None], float]]:
        return [values(await devs[u].poll()) for _ in range(10)]

    results = await asyncio.gather(*(many(u) for u in devs))
    for u, polls in zip(devs, results, strict=True):
        for got in polls:  # every reply went to the unit that asked: no crossed or garbled frames
            assert got == {(v.TEMPERATURE, None): pytest.approx((200 + u) / 10),
                           (v.HUMIDITY, None): pytest.approx((400 + u) / 1000), (v.UPS_LOAD, None): u}
    bus = next(iter(ctx.objects.values()))
    assert bus.sent == 60 and bus.missed == 0
    assert len(modbus_peer.reads) == 60
    # the polls really interleaved on the line (not one device after the other)
    order = [u for u, *_ in modbus_peer.reads]
    assert sum(1 for a, b in itertools.pairwise(order) if a != b) > 6


async def test_rtu_silent_unit_costs_one_timeout_and_others_keep_reading(
        modbus_peer: ModbusPeer, serial_pair: tuple[str, str], ctx: Ctx) -> None:
    server_tty, client_tty = serial_pair
    await modbus_peer.start_rtu(server_tty, {1: {"input": {1: [215, 500]}}}, silent=[5])
    good = driver(ctx, name="good", transport="rtu", serial_port=client_tty, baudrate=19200, unit=1, profile="xy-md02")
    dead = driver(ctx, name="dead", transport="rtu", serial_port=client_tty, baudrate=19200, unit=5,
                  profile="huawei-ups2000", request_timeout="250ms")  # four requests per poll when it answers

    async def poll_dead() -> str:
        try:
            await dead.poll()
        except DeviceError as exc:
            return str(exc)
        return "answered"

    async def poll_good() -> list[dict[tuple[str, str | None], float]]:
        return [values(await good.poll()) for _ in range(6)]

    reasons, good_polls = await asyncio.gather(asyncio.gather(*(poll_dead() for _ in range(3))), poll_good())
    assert all("unit 5 did not answer within 0.25s reading holding registers 11000–11024" in r for r in reasons)
    assert all(p == {(v.TEMPERATURE, None): 21.5, (v.HUMIDITY, None): 0.5} for p in good_polls)
    assert len(modbus_peer.reads_of(5)) == 3  # each dead poll stopped after its first unanswered request
    assert len(modbus_peer.reads_of(1)) == 6


async def test_rtu_missing_port_and_clashing_line_settings(serial_pair: tuple[str, str], ctx: Ctx) -> None:
    missing = driver(ctx, name="m", transport="rtu", serial_port="/dev/ttyNOSUCH9", profile="xy-md02")
    with pytest.raises(DeviceError, match=r"serial port /dev/ttyNOSUCH9 does not exist"):
        await missing.poll()
    _, client_tty = serial_pair
    a = driver(ctx, name="a", transport="rtu", serial_port=client_tty, baudrate=9600, profile="xy-md02")
    b = driver(ctx, name="b", transport="rtu", serial_port=client_tty, baudrate=19200, unit=2, profile="xy-md02")
    await a.start()
    with pytest.raises(DeviceError, match="device a already uses this line"):
        await b.start()


def test_readings_are_plain_vocabulary_readings() -> None:
    r = Reading(v.TEMPERATURE, 1.0)
    assert r.metric in v.METRICS
