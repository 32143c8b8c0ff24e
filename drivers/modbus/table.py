"""Register rows, data types and the read plan: the pure part of the Modbus driver.

A register map is a tuple of :class:`Register` rows (from a shipped profile or
the user's ``registers:``). At load time the rows are *compiled*: each gets its
decoder looked up once in :data:`TYPES` and :data:`UNITS`, and the rows are
grouped into as few read requests as the Modbus limits allow
(:func:`plan_requests`). At poll time :func:`decode_block` only slices words
and calls the precompiled functions — no branching on types per poll.

Nothing here imports pymodbus: these functions are tested table-driven
without a socket.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import Reading
from roomwatch.drivers.plausible import Drops

__all__ = [
    "FUNCTIONS",
    "TYPES",
    "UNITS",
    "CompiledRow",
    "DataType",
    "Register",
    "Request",
    "compile_row",
    "decode_block",
    "plan_requests",
    "resolve_metric",
]

Function = Literal["holding", "input", "coil", "discrete"]
WordOrder = Literal["big", "little"]


@dataclass(frozen=True, slots=True)
class FunctionDef:
    """One Modbus read function: its code and the most items one request may ask for."""

    code: int
    max_count: int
    bits: bool


#: Modbus Application Protocol v1.1b3, §6.1–6.4: 2000 bits or 125 registers per read.
FUNCTIONS: dict[Function, FunctionDef] = {
    "coil": FunctionDef(0x01, 2000, True),
    "discrete": FunctionDef(0x02, 2000, True),
    "holding": FunctionDef(0x03, 125, False),
    "input": FunctionDef(0x04, 125, False),
}


@dataclass(frozen=True, slots=True)
class DataType:
    """A register data type: how many 16-bit words it spans and its struct code (big-endian)."""

    words: int
    code: str  # struct format character; "" for bool


TYPES: dict[str, DataType] = {
    "bool": DataType(1, ""),
    "int16": DataType(1, "h"),
    "uint16": DataType(1, "H"),
    "int32": DataType(2, "i"),
    "uint32": DataType(2, "I"),
    "float32": DataType(2, "f"),
    "int64": DataType(4, "q"),
    "uint64": DataType(4, "Q"),
    "float64": DataType(4, "d"),
}

#: Device unit → (factor, addend) into the vocabulary's base unit, applied after scale/offset.
UNITS: dict[str, tuple[float, float]] = {
    "": (1.0, 0.0),
    "percent": (0.01, 0.0),  # → ratio 0..1
    "permille": (0.001, 0.0),
    "minutes": (60.0, 0.0),  # → seconds
    "hours": (3600.0, 0.0),
    "milliseconds": (0.001, 0.0),
    "millivolts": (0.001, 0.0),
    "kelvin": (1.0, -273.15),  # → celsius
    "fahrenheit": (5.0 / 9.0, -160.0 / 9.0),
}

#: Short names accepted for ``metric`` besides the full vocabulary name (same words as the MQTT ``kind``).
_ALIASES: dict[str, str] = {
    "temperature": v.TEMPERATURE,
    "humidity": v.HUMIDITY,
    "door": v.DOOR_OPEN,
    "leak": v.WATER_LEAK,
    "smoke": v.SMOKE,
}
#: Vocabulary families a Modbus device may report (not agent/collector/host self-metrics).
_NOT_DEVICE = ("roomwatch_host_", "roomwatch_agent_", "roomwatch_collector_", "roomwatch_device_", "roomwatch_alerts")


def resolve_metric(name: str) -> str:
    """Vocabulary name for ``name`` (full name, name without ``roomwatch_``, or a kind alias); ValueError if unknown."""
    if name in _ALIASES:
        return _ALIASES[name]
    full = name if name.startswith("roomwatch_") else f"roomwatch_{name}"
    mdef = v.METRICS.get(full)
    if mdef is None or full.startswith(_NOT_DEVICE) or mdef.type != "gauge":
        choices = sorted(_ALIASES) + sorted(
            m for m, d in v.METRICS.items() if not m.startswith(_NOT_DEVICE) and d.type == "gauge")
        raise ValueError(f"unknown metric {name!r}; use one of: {', '.join(choices)}")
    return full


@dataclass(frozen=True, slots=True)
class Register:
    """One row of a register map: where a value lives on the device and how it becomes a reading.

    Processing order: decode ``type`` → drop ``invalid`` raw values → ``bit``/``mask`` →
    ``values`` (enum) → ``active_low`` → ``scale``/``offset`` → ``unit`` → ``valid`` range.
    """

    name: str
    metric: str  # vocabulary name (resolved)
    address: int  # wire (PDU) address, 0-based: "40001" in a manual is holding address 0
    function: Function = "holding"
    type: str = "uint16"
    word_order: WordOrder = "big"  # big: high word first ("ABCD"); little: low word first ("CDAB")
    byte_order: WordOrder = "big"  # little swaps the two bytes inside each word ("BADC")
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    bit: int | None = None  # take one bit of an integer register (0 = least significant)
    mask: int | None = None  # 1 when any masked bit is set
    values: Mapping[int, float] | None = None  # enum: raw value → reading
    default: float | None = None  # reading for raw values missing from ``values``; None = absent
    invalid: tuple[int, ...] = ()  # raw values that mean "not available" (e.g. 0x7FFF, 0xFFFF)
    active_low: bool = False  # for 0/1 readings: a closed contact (1) means "no alarm"
    valid: tuple[float, float] | None = None  # final value outside → absent (unplugged probe)
    sensor: str | None = None  # ``sensor`` label when a device reports several of a quantity

    @property
    def words(self) -> int:
        """16-bit registers (or bits, for coils/discrete inputs) the row spans."""
        return 1 if FUNCTIONS[self.function].bits else TYPES[self.type].words


Decoder = Callable[[Sequence[int]], "int | float"]


def _int_decoder(dt: DataType, word_order: WordOrder, byte_order: WordOrder) -> Decoder:
    fmt = struct.Struct(">" + dt.code)
    words_fmt = struct.Struct(f">{dt.words}H" if byte_order == "big" else f"<{dt.words}H")
    reverse = word_order == "little" and dt.words > 1

    def decode(words: Sequence[int]) -> int | float:
        ordered = words[::-1] if reverse else words
        value: int | float = fmt.unpack(words_fmt.pack(*ordered))[0]
        return value

    return decode


def _bool_decoder(words: Sequence[int]) -> int:
    return 1 if words[0] else 0


def make_decoder(type_name: str, word_order: WordOrder = "big", byte_order: WordOrder = "big") -> Decoder:
    """The function turning a row's raw words (or one bit) into its raw number."""
    dt = TYPES[type_name]
    if not dt.code:
        return _bool_decoder
    return _int_decoder(dt, word_order, byte_order)


@dataclass(frozen=True, slots=True)
class CompiledRow:
    """A row with its decoder and label set resolved once, at load time."""

    row: Register
    decode: Decoder
    factor: float  # scale × unit factor
    addend: float  # offset × unit factor + unit addend
    divisor: int  # 1/factor when that is a whole number: 254 / 10 is 25.4, 254 * 0.1 is 25.400000000000002
    labels: Mapping[str, str] | None

    def value(self, words: Sequence[int]) -> float | None:
        """The reading's value from the row's words, or None when the device says "not available"."""
        out = self.read(words)
        return out if isinstance(out, float) else None

    def read(self, words: Sequence[int]) -> float | str | None:
        """The reading's value; or why it is left out (``sentinel``: a raw value the map calls
        ``invalid``; ``invalid``: not a finite number; ``out_of_range``: outside ``valid``); or
        None for an enum value the row does not map."""
        r = self.row
        raw = self.decode(words)
        if r.invalid and raw in r.invalid:
            return "sentinel"
        if isinstance(raw, float) and not math.isfinite(raw):
            return "invalid"
        if r.bit is not None:
            raw = (int(raw) >> r.bit) & 1
        elif r.mask is not None:
            raw = 1 if int(raw) & r.mask else 0
        if r.values is not None:
            mapped = r.values.get(int(raw), r.default)
            if mapped is None:
                return None
            raw = mapped
        if r.active_low:
            raw = 0 if raw else 1
        out = (raw / self.divisor if self.divisor else raw * self.factor) + self.addend
        if not math.isfinite(out):  # a float64 near its limit times the scale overflows: garbage, not a reading
            return "invalid"
        if r.valid is not None and not r.valid[0] <= out <= r.valid[1]:
            return "out_of_range"
        return float(out)


def compile_row(row: Register) -> CompiledRow:
    """Look up the row's decoder and unit once."""
    unit_factor, add = UNITS[row.unit]
    factor = row.scale * unit_factor
    inverse = 1.0 / factor
    divisor = round(inverse) if abs(factor) < 1 and abs(inverse - round(inverse)) < 1e-9 * abs(inverse) else 0
    return CompiledRow(
        row=row,
        decode=make_decoder("bool" if FUNCTIONS[row.function].bits else row.type, row.word_order, row.byte_order),
        factor=factor,
        addend=row.offset * unit_factor + add,
        divisor=divisor,
        labels={"sensor": row.sensor} if row.sensor else None,
    )


@dataclass(frozen=True, slots=True)
class Request:
    """One read request: a function, a start address, a count, and the rows it feeds."""

    function: Function
    address: int
    count: int
    rows: tuple[CompiledRow, ...] = field(default=())

    @property
    def last(self) -> int:
        return self.address + self.count - 1

    def describe(self) -> str:
        """``holding registers 11000–11024`` — for error messages."""
        kind = {"holding": "holding registers", "input": "input registers", "coil": "coils",
                "discrete": "discrete inputs"}[self.function]
        span = f"{self.address}" if self.count == 1 else f"{self.address}–{self.last}"
        return f"{kind} {span}"

    def names(self) -> str:
        return ", ".join(dict.fromkeys(c.row.name for c in self.rows))


def plan_requests(rows: Sequence[Register], max_gap: int = 0) -> tuple[Request, ...]:
    """Group rows into the fewest reads: contiguous (or at most ``max_gap`` apart) rows of one function share a request.

    Gaps are off by default: many devices answer "illegal data address" for any
    unmapped register inside a read, so only maps known to tolerate gaps set ``max_gap``.
    """
    out: list[Request] = []
    for fname in FUNCTIONS:
        group = sorted((r for r in rows if r.function == fname), key=lambda r: (r.address, r.words))
        limit = FUNCTIONS[fname].max_count
        start = end = -1
        members: list[Register] = []
        for r in group:
            r_end = r.address + r.words - 1
            if members and r.address <= end + 1 + max_gap and max(end, r_end) - start + 1 <= limit:
                end = max(end, r_end)
                members.append(r)
                continue
            if members:
                out.append(Request(fname, start, end - start + 1, tuple(compile_row(m) for m in members)))
            start, end, members = r.address, r_end, [r]
        if members:
            out.append(Request(fname, start, end - start + 1, tuple(compile_row(m) for m in members)))
    return tuple(out)


def decode_block(request: Request, data: Sequence[int], drops: Drops | None = None) -> list[Reading]:
    """Readings of every row of ``request`` from the words (or bits) the device returned.

    A row whose value the map calls not available, or that is no finite number or outside its
    ``valid`` range, gives no reading and is counted in ``drops``; the agent then checks every
    reading against the metric's physical range (roomwatch/core/vocabulary.py)."""
    out: list[Reading] = []
    base = request.address
    for c in request.rows:
        start = c.row.address - base
        words = data[start:start + c.row.words]
        if len(words) < c.row.words:
            continue  # short reply; the bus layer already refuses those, this is belt and braces
        value = c.read(words)
        if isinstance(value, float):
            out.append(Reading(c.row.metric, value, c.labels))
        elif value is not None and drops is not None:
            drops.add(c.row.metric, value, words[0] if len(words) == 1 else list(words), f"register {c.row.name}")
    return out
