"""Modbus register decoding, read planning and config checks: table-driven, no socket."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from roomwatch import drivers
from roomwatch.core import vocabulary as v
from roomwatch.drivers.modbus.config import ModbusConfig, load_profile, profile_names
from roomwatch.drivers.modbus.table import TYPES, Register, compile_row, decode_block, make_decoder, plan_requests, resolve_metric

drivers.load_builtin()


def words_of(fmt: str, value: Any) -> list[int]:
    """Big-endian words of a packed value (high word first), as a device sends them."""
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


# type, word order, byte order, words on the wire, expected raw number
DECODE_CASES = [
    ("uint16", "big", "big", [0x1234], 0x1234),
    ("uint16", "big", "big", [0xFFFF], 65535),
    ("int16", "big", "big", [0xFF33], -205),  # XY-MD02 manual: 0xFF33 = -20.5 °C at ×0.1
    ("int16", "big", "big", [0x7FFF], 32767),
    ("int16", "big", "little", [0x33FF], -205),  # bytes swapped inside the word
    ("uint32", "big", "big", [0x0001, 0x0002], 0x00010002),
    ("uint32", "little", "big", [0x0002, 0x0001], 0x00010002),  # low word first ("CDAB")
    ("int32", "big", "big", words_of("i", -123456), -123456),
    ("int32", "little", "big", words_of("i", -123456)[::-1], -123456),
    ("float32", "big", "big", words_of("f", 3.5), 3.5),
    ("float32", "little", "big", words_of("f", -21.25)[::-1], -21.25),
    ("float32", "big", "little", [0x6040, 0x0000], 3.5),  # "BADC": each word's bytes swapped
    ("int64", "big", "big", words_of("q", -(2**40)), -(2**40)),
    ("uint64", "little", "big", words_of("Q", 2**50 + 7)[::-1], 2**50 + 7),
    ("float64", "big", "big", words_of("d", 1234.5), 1234.5),
    ("bool", "big", "big", [1], 1),
    ("bool", "big", "big", [0], 0),
]


@pytest.mark.parametrize(("type_name", "word_order", "byte_order", "words", "expected"), DECODE_CASES)
def test_decoders(type_name: str, word_order: Any, byte_order: Any, words: list[int], expected: float) -> None:
    assert make_decoder(type_name, word_order, byte_order)(words) == expected


# row options, words, expected reading (None = absent)
ROW_CASES: list[tuple[dict[str, Any], list[int], float | None]] = [
    ({"scale": 0.1}, [235], 23.5),
    ({"type": "int16", "scale": 0.1}, [0xFF33], -20.5),
    ({"scale": 0.1, "unit": "percent"}, [651], 0.651),  # humidity ×10 %RH → ratio
    ({"unit": "minutes"}, [12], 720.0),
    ({"scale": 0.1, "unit": "kelvin"}, [2982], 25.05),
    ({"unit": "fahrenheit"}, [212], 100.0),
    ({"scale": 2.0, "offset": -10.0}, [30], 50.0),
    ({"invalid": [0x7FFF], "scale": 0.1}, [0x7FFF], None),  # Huawei "not available"
    ({"type": "uint32", "invalid": [0xFFFFFFFF]}, [0xFFFF, 0xFFFF], None),
    ({"bit": 6}, [0b0100_0000], 1.0),
    ({"bit": 6}, [0b1011_1111], 0.0),
    ({"type": "uint32", "bit": 17}, [0x0002, 0x0000], 1.0),
    ({"mask": 0x0300}, [0x0100], 1.0),
    ({"mask": 0x0300}, [0x00FF], 0.0),
    ({"values": {3: 1}, "default": 0}, [3], 1.0),  # UPS power-supply mode: 3 = on battery
    ({"values": {3: 1}, "default": 0}, [2], 0.0),
    ({"values": {3: 1}}, [7], None),  # unknown state and no default: absent, not a made-up 0
    ({"bit": 0, "active_low": True}, [1], 0.0),
    ({"bit": 0, "active_low": True}, [0], 1.0),
    ({"scale": 0.1, "valid": [-40, 125]}, [1500], None),  # 150 °C from a T/H module is a probe fault
    ({"type": "float32"}, words_of("f", float("nan")), None),
    ({"type": "float32"}, words_of("f", float("inf")), None),
]


@pytest.mark.parametrize(("options", "words", "expected"), ROW_CASES)
def test_row_pipeline(options: dict[str, Any], words: list[int], expected: float | None) -> None:
    opts = dict(options)
    if "valid" in opts:
        opts["valid"] = tuple(opts["valid"])
    if "invalid" in opts:
        opts["invalid"] = tuple(opts["invalid"])
    row = Register(name="r", metric=v.TEMPERATURE, address=0, **opts)
    got = compile_row(row).value(words)
    if expected is None:
        assert got is None
    else:
        assert got is not None and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)


def test_decimal_scales_give_the_nearest_float() -> None:
    # 254 × 0.1 is 25.400000000000002 in binary floating point; the device meant 25.4
    assert compile_row(Register(name="t", metric=v.TEMPERATURE, address=0, scale=0.1)).value([254]) == 25.4
    assert compile_row(Register(name="h", metric=v.HUMIDITY, address=0, scale=0.1, unit="percent")).value([651]) == 0.651
    assert compile_row(Register(name="x", metric=v.TEMPERATURE, address=0, scale=0.3)).value([3]) == 3 * 0.3


def _row(name: str, address: int, function: str = "holding", type_name: str = "uint16", **kw: Any) -> Register:
    return Register(name=name, metric=v.TEMPERATURE, address=address, function=function, type=type_name,  # type: ignore[arg-type]
                    sensor=name, **kw)


def test_plan_merges_contiguous_rows_only_by_default() -> None:
    rows = [_row("a", 10), _row("b", 11, type_name="uint32"), _row("c", 13), _row("d", 15), _row("e", 0, "input")]
    plan = plan_requests(rows)
    assert [(r.function, r.address, r.count) for r in plan] == [("holding", 10, 4), ("holding", 15, 1), ("input", 0, 1)]
    assert [c.row.name for c in plan[0].rows] == ["a", "b", "c"]
    # with max_gap the hole at 14 is read too: one request
    assert [(r.address, r.count) for r in plan_requests(rows, max_gap=1) if r.function == "holding"] == [(10, 6)]


def test_plan_respects_modbus_count_limits() -> None:
    regs = [_row(f"r{i}", i) for i in range(300)]
    plan = plan_requests(regs)
    assert [(r.address, r.count) for r in plan] == [(0, 125), (125, 125), (250, 50)]
    bits = [_row(f"b{i}", i, "discrete", "bool") for i in range(2500)]
    assert [(r.address, r.count) for r in plan_requests(bits)] == [(0, 2000), (2000, 500)]


def test_plan_never_splits_a_value_across_requests() -> None:
    rows = [_row(f"r{i}", i) for i in range(124)] + [_row("wide", 124, type_name="float32")]
    plan = plan_requests(rows)
    assert [(r.address, r.count) for r in plan] == [(0, 124), (124, 2)]


def test_decode_block_slices_each_row() -> None:
    rows = [_row("t", 100, scale=0.1), _row("status", 101, bit=3), _row("status2", 101, bit=4), _row("w", 102, type_name="int32")]
    (req,) = plan_requests(rows)
    readings = decode_block(req, [215, 0b1000, *words_of("i", -5)])
    assert [(r.labels["sensor"] if r.labels else None, r.value) for r in readings] == [
        ("t", 21.5), ("status", 1.0), ("status2", 0.0), ("w", -5.0)]


def test_metric_names_resolve_to_the_vocabulary() -> None:
    assert resolve_metric("humidity") == v.HUMIDITY
    assert resolve_metric("door") == v.DOOR_OPEN
    assert resolve_metric("ups_battery_charge_ratio") == v.UPS_BATTERY_CHARGE
    assert resolve_metric("roomwatch_ups_load_ratio") == v.UPS_LOAD
    for bad in ("roomwatch_device_up", "host_load1", "temperature_fahrenheit", "roomwatch_agent_push_batches_total"):
        with pytest.raises(ValueError, match="unknown metric"):
            resolve_metric(bad)


# --- config -------------------------------------------------------------------------------

def _cfg(**kw: Any) -> ModbusConfig:
    base: dict[str, Any] = {"name": "d", "driver": "modbus", "host": "127.0.0.1"}
    return ModbusConfig.model_validate({**base, **kw})


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"registers": [{"metric": "temperature", "address": 0, "type": "int32", "count": 1}]},
     "type int32 spans 2 registers, but count is 1"),
    ({"registers": [{"metric": "temperature", "address": 0, "type": "float32", "count": 3}]},
     "type float32 spans 2 registers, but count is 3"),
    ({"registers": [{"name": "a", "metric": "temperature", "address": 10, "type": "float32"},
                    {"name": "b", "metric": "humidity", "address": 11}]},
     "rows 'a' (float32 at holding 10–11) and 'b' (uint16 at holding 11) overlap"),
    ({"registers": [{"name": "a", "metric": "temperature", "address": 10},
                    {"name": "b", "metric": "humidity", "address": 10, "type": "int16"}]},
     "overlap"),
    ({"registers": [{"metric": "temperature", "address": 0}, {"metric": "temperature", "address": 1}]},
     "would both report roomwatch_temperature_celsius; give them distinct sensor labels"),
    ({"registers": [{"name": "x", "metric": "temperature", "address": 0},
                    {"name": "x", "metric": "humidity", "address": 1}]}, "two register rows are named 'x'"),
    ({"registers": [{"metric": "temperature", "address": 0, "type": "float32", "bit": 1}]}, "need an integer type"),
    ({"registers": [{"metric": "door", "address": 0, "function": "discrete", "type": "uint16"}]},
     "type must be bool"),
    ({"registers": [{"metric": "temperature", "address": 0, "bit": 16}]}, "bit 16 is outside a uint16"),
    ({"registers": [{"metric": "temperature", "address": 0, "scale": 0}]}, "scale must be a non-zero"),
    ({"registers": [{"metric": "temperature", "address": 65535, "type": "uint32"}]}, "runs past the last register"),
    ({"registers": [{"metric": "watts", "address": 0}]}, "unknown metric 'watts'"),
    ({"registers": [{"metric": "temperature", "address": 0, "default": 0}]}, "default only applies with values"),
    ({}, "say what to read"),
    ({"profile": "no-such-ups"}, "unknown profile 'no-such-ups'; shipped profiles:"),
    ({"profile": "waveshare-io-8ch"}, "say what is wired to which input"),
    ({"profile": "waveshare-io-8ch", "inputs": {9: {"kind": "door"}}}, "9 is not an input of this module (1..8)"),
    ({"profile": "xy-md02", "inputs": {1: {"kind": "door"}}}, "inputs only apply to dry-contact module profiles"),
    ({"profile": "xy-md02", "battery_installed": "2023-01-01"}, "battery_installed is for UPS devices"),
    ({"profile": "xy-md02", "transport": "rtu", "host": None}, "transport rtu needs serial_port"),
    ({"profile": "xy-md02", "transport": "rtu", "host": None, "serial_port": "/dev/ttyUSB0", "unit": 0},
     "unit 0 cannot be polled on a serial bus"),
    ({"profile": "xy-md02", "serial_port": "/dev/ttyUSB0"}, "serial_port is for transport rtu"),
    ({"profile": "xy-md02", "host": None}, "transport tcp needs host"),
    ({"profile": "xy-md02", "request_timeout": "2s", "retries": 2, "timeout": "5s"},
     "request_timeout × (retries + 1) = 6s is longer than timeout 5s"),
]


@pytest.mark.parametrize(("options", "message"), BAD_CONFIGS)
def test_bad_config_is_refused_at_load(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        _cfg(**options)
    assert message in str(info.value)


def test_serial_defaults_come_from_the_profile_and_parity_words_are_understood() -> None:
    cfg = _cfg(transport="rtu", host=None, serial_port="/dev/ttyUSB0", profile="xy-md02")
    assert (cfg.baudrate, cfg.parity, cfg.stopbits, cfg.bytesize) == (9600, "N", 1, 8)
    cfg = _cfg(transport="rtu", host=None, serial_port="/dev/ttyUSB0", profile="xy-md02", baudrate=4800, parity="even")
    assert (cfg.baudrate, cfg.parity) == (4800, "E")


def test_profile_and_extra_registers_combine_and_device_word_order_applies() -> None:
    cfg = _cfg(profile="xy-md02", word_order="little",
               registers=[{"name": "dew", "metric": "temperature", "sensor": "dewpoint", "address": 10,
                           "function": "input", "type": "float32"}])
    rows = {c.row.name: c.row for req in cfg.requests for c in req.rows}
    assert set(rows) == {"temperature", "humidity", "dew"}
    assert rows["dew"].word_order == "little"


def test_user_profile_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "my-ups.yaml"
    path.write_text("title: mine\nsource: my manual p. 12\nregisters:\n  - metric: ups_load_ratio\n"
                    "    address: 5\n    type: int32\n    count: 1\n")
    with pytest.raises(ValidationError) as info:
        _cfg(profile=str(path))
    text = str(info.value)
    assert f"{path}:4" in text and "count is 1" in text


@pytest.mark.parametrize("name", profile_names())
def test_shipped_profiles_load_and_cite_their_source(name: str) -> None:
    path, prof = load_profile(name)
    text = Path(path).read_text(encoding="utf-8")
    assert prof.source.strip()
    assert "source" in text.lower() and ("http" in text or "manual" in text.lower())
    cfg = _cfg(profile=name, inputs={1: {"kind": "door"}} if prof.inputs else {})
    assert cfg.requests
    for req in cfg.requests:
        for c in req.rows:
            assert c.row.metric in v.METRICS


def test_huawei_ups2000_plan_matches_the_protocol_blocks() -> None:
    cfg = _cfg(profile="huawei-ups2000", battery_installed="2022-03-01")
    assert [(r.function, r.address, r.count) for r in cfg.requests] == [
        ("holding", 11000, 25), ("holding", 11043, 1), ("holding", 12000, 6), ("holding", 41188, 1)]
    assert cfg.is_ups


def test_agent_config_reports_modbus_problems_with_file_line_and_key(tmp_path: Path) -> None:
    from roomwatch.agent.config import load_agent_config
    from roomwatch.core.configbase import ConfigError

    path = tmp_path / "agent.yaml"
    path.write_text(
        "agent: {id: a1}\n"
        "devices:\n"
        "  - name: th1\n"
        "    driver: modbus\n"
        "    host: 127.0.0.1\n"
        "    registers:\n"
        "      - metric: temperature\n"
        "        address: 0\n"
        "        type: int32\n"
        "        count: 1\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(str(path))
    (problem,) = info.value.problems
    assert problem.line == 7 and problem.key == "devices[0].registers[0]"
    assert "count is 1" in problem.message


_any_row = st.builds(
    lambda type_name, word_order, byte_order, scale, bit: Register(
        name="r", metric=v.TEMPERATURE, address=0, type=type_name, word_order=word_order, byte_order=byte_order,
        scale=scale, bit=bit if bit is not None and not type_name.startswith("float") and type_name != "bool" else None),
    st.sampled_from(sorted(TYPES)),
    st.sampled_from(["big", "little"]), st.sampled_from(["big", "little"]),
    st.floats(min_value=1e-6, max_value=1e6) | st.floats(min_value=-1e6, max_value=-1e-6),
    st.none() | st.integers(min_value=0, max_value=15),
)


@given(row=_any_row, data=st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=4, max_size=4))
def test_any_words_decode_to_a_finite_number_or_nothing(row: Register, data: list[int]) -> None:
    (req,) = plan_requests([row])
    for reading in decode_block(req, data[:req.count]):
        assert math.isfinite(reading.value)
