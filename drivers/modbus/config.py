"""Configuration of the ``modbus`` driver: the device entry, user register rows, profile files.

Everything is checked when the file loads, before any I/O: transport options,
each row (type, count, bit, unit), the rows together (overlaps, duplicate
series) and the read plan, which is computed here once and kept on the config.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, PrivateAttr, field_validator, model_validator

from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import ConfigError, Duration, Model, load_model
from roomwatch.drivers.modbus.table import (
    FUNCTIONS,
    TYPES,
    UNITS,
    Register,
    Request,
    WordOrder,
    plan_requests,
    resolve_metric,
)
from roomwatch.drivers.ups import UpsDeviceConfig

__all__ = ["PROFILE_DIR", "InputSpec", "ModbusConfig", "ProfileFile", "RegisterSpec", "load_profile", "profile_names"]

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

TypeName = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"]
UnitName = Literal["", "percent", "permille", "minutes", "hours", "milliseconds", "millivolts", "kelvin", "fahrenheit"]
assert set(get_args(TypeName)) == set(TYPES) and set(get_args(UnitName)) == set(UNITS)

_LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,63}$"

#: ``kind`` of a dry-contact input → the vocabulary metric it reports.
INPUT_KINDS: dict[str, str] = {"door": v.DOOR_OPEN, "leak": v.WATER_LEAK, "smoke": v.SMOKE}


class RegisterSpec(Model):
    """One row of a register map as written in YAML (a profile file or the device's ``registers:``)."""

    name: str | None = Field(default=None, max_length=64, description="row name used in error messages")
    metric: str = Field(description="vocabulary metric, e.g. temperature, humidity, door, ups_battery_charge_ratio")
    address: int = Field(ge=0, le=65535, description="wire (0-based) address; manual's 40001 = holding 0")
    function: Literal["holding", "input", "coil", "discrete"] = "holding"
    type: TypeName | None = Field(default=None, description="default uint16 for registers, bool for coils/discrete")
    count: int | None = Field(default=None, ge=1, le=4, description="registers the value spans (checked against type)")
    word_order: Literal["big", "little"] | None = None
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: UnitName = ""
    bit: int | None = Field(default=None, ge=0, le=63)
    mask: int | None = Field(default=None, ge=1)
    values: dict[int, float] | None = None
    default: float | None = None
    invalid: list[int] = Field(default_factory=list)
    active_low: bool = False
    valid: tuple[float, float] | None = None
    sensor: str | None = Field(default=None, pattern=_LABEL)

    @field_validator("metric")
    @classmethod
    def _metric(cls, name: str) -> str:
        return resolve_metric(name)

    @model_validator(mode="after")
    def _check(self) -> RegisterSpec:
        bits = FUNCTIONS[self.function].bits
        if bits:
            if self.type not in (None, "bool"):
                raise ValueError(f"a {self.function} is one bit: type must be bool (or left out), not {self.type}")
            if self.bit is not None or self.mask is not None:
                raise ValueError(f"bit and mask apply to registers, not to a {self.function}")
            if self.count not in (None, 1):
                raise ValueError(f"a {self.function} is one bit; count must be 1")
            return self
        type_name = self.type or "uint16"
        words = TYPES[type_name].words
        if self.count is not None and self.count != words:
            raise ValueError(f"type {type_name} spans {words} register{'s' if words > 1 else ''}, but count is {self.count}")
        if self.address + words - 1 > 65535:
            raise ValueError(f"type {type_name} at address {self.address} runs past the last register (65535)")
        if (self.bit is not None or self.mask is not None) and type_name.startswith("float"):
            raise ValueError("bit and mask need an integer type, not a float")
        if self.bit is not None and self.mask is not None:
            raise ValueError("give either bit or mask, not both")
        if self.bit is not None and self.bit >= 16 * words:
            raise ValueError(f"bit {self.bit} is outside a {type_name} ({16 * words} bits)")
        if self.scale == 0 or not math.isfinite(self.scale) or not math.isfinite(self.offset):
            raise ValueError("scale must be a non-zero finite number and offset finite")
        if self.default is not None and self.values is None:
            raise ValueError("default only applies with values (an enum map)")
        if self.valid is not None and not self.valid[0] < self.valid[1]:
            raise ValueError("valid must be [low, high] with low < high")
        return self

    def to_row(self, index: int, word_order: WordOrder, where: str) -> Register:
        """The frozen table row; ``word_order`` is the device's default when the row leaves it out."""
        bits = FUNCTIONS[self.function].bits
        return Register(
            name=self.name or f"{where}[{index}]",
            metric=self.metric,
            address=self.address,
            function=self.function,
            type="bool" if bits else (self.type or "uint16"),
            word_order=self.word_order or word_order,
            byte_order=self.byte_order,
            scale=self.scale,
            offset=self.offset,
            unit=self.unit,
            bit=self.bit,
            mask=self.mask,
            values=dict(self.values) if self.values is not None else None,
            default=self.default,
            invalid=tuple(self.invalid),
            active_low=self.active_low,
            valid=self.valid,
            sensor=self.sensor,
        )


class InputBlock(Model):
    """Where a dry-contact module's numbered inputs live (profile files only)."""

    function: Literal["discrete", "coil", "input", "holding"] = "discrete"
    address: int = Field(default=0, ge=0, le=65535, description="address of input 1")
    count: int = Field(ge=1, le=256)


class SerialDefaults(Model):
    """Line settings the device ships with, used when the device entry leaves them out."""

    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class ProfileFile(Model):
    """A shipped or user-written register map file (``drivers/modbus/profiles/*.yaml``)."""

    title: str
    kind: Literal["ups", "environment", "io", "other"] = "other"
    source: str = Field(min_length=1, description="where the register map comes from (manual, URL)")
    max_gap: int = Field(default=0, ge=0, le=100)
    word_order: Literal["big", "little"] = "big"
    serial: SerialDefaults = Field(default_factory=SerialDefaults)
    registers: list[RegisterSpec] = Field(default_factory=list)
    inputs: InputBlock | None = None

    @model_validator(mode="after")
    def _some(self) -> ProfileFile:
        if not self.registers and self.inputs is None:
            raise ValueError("a profile needs registers or inputs")
        return self


class InputSpec(Model):
    """What is wired to one input of a dry-contact module."""

    kind: Literal["door", "leak", "smoke"]
    active_low: bool = Field(default=False, description="true when the input reads 1 in the normal state (NC contact)")
    sensor: str | None = Field(default=None, pattern=_LABEL, description="label value; default in<N>")


def profile_names() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


@functools.lru_cache(maxsize=64)
def _load_profile_file(path: str, mtime: float) -> ProfileFile:
    return load_model(path, ProfileFile)


def load_profile(name: str) -> tuple[str, ProfileFile]:
    """A shipped profile by name, or a user profile file by path; ValueError says what is wrong."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        path = Path(os.path.expanduser(name))
    else:
        path = PROFILE_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown profile {name!r}; shipped profiles: {', '.join(profile_names())} "
                             "(or give the path of your own profile file)")
    try:
        return str(path), _load_profile_file(str(path), path.stat().st_mtime)
    except FileNotFoundError:
        raise ValueError(f"profile file {path} not found") from None
    except ConfigError as exc:
        raise ValueError(f"profile file has problems:\n{exc}") from None


def _check_rows(rows: list[Register]) -> None:
    """Cross-row checks: unique names, no partial overlaps, no two rows reporting one series."""
    seen_names: set[str] = set()
    series: dict[tuple[str, str | None], str] = {}
    for r in rows:
        if r.name in seen_names:
            raise ValueError(f"two register rows are named {r.name!r}")
        seen_names.add(r.name)
        key = (r.metric, r.sensor)
        if key in series:
            raise ValueError(f"rows {series[key]!r} and {r.name!r} would both report {r.metric}"
                             + (f"{{sensor={r.sensor!r}}}" if r.sensor else "") + "; give them distinct sensor labels")
        series[key] = r.name
    by_function: dict[str, list[Register]] = {}
    for r in rows:
        by_function.setdefault(r.function, []).append(r)
    for fname, group in by_function.items():
        group.sort(key=lambda r: (r.address, r.words))
        for a, b in itertools.pairwise(group):
            a_end = a.address + a.words - 1
            if b.address > a_end:
                continue
            same_span = a.address == b.address and a.words == b.words
            same_reading = (a.type, a.word_order, a.byte_order) == (b.type, b.word_order, b.byte_order)
            if same_span and same_reading:
                continue  # e.g. several status bits of one register
            b_end = b.address + b.words - 1
            raise ValueError(
                f"rows {a.name!r} ({a.type} at {fname} {a.address}{'–' + str(a_end) if a.words > 1 else ''}) and "
                f"{b.name!r} ({b.type} at {fname} {b.address}{'–' + str(b_end) if b.words > 1 else ''}) overlap; "
                "a register can only be read one way (bit rows must share the same type and address)")


class ModbusConfig(UpsDeviceConfig):
    """A Modbus device: one unit on a TCP host (or gateway) or on a serial RS-485 bus."""

    driver: Literal["modbus"] = "modbus"
    transport: Literal["tcp", "rtu", "rtu-over-tcp"] = Field(
        default="tcp",
        description="tcp: Modbus TCP; rtu: serial RS-485; rtu-over-tcp: RTU frames through a transparent TCP converter")
    host: str | None = Field(default=None, min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    serial_port: str | None = Field(default=None, min_length=1, description="e.g. /dev/ttyUSB0")
    baudrate: int | None = Field(default=None, ge=300, le=4_000_000, description="default: the profile's, else 9600")
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    bytesize: Literal[7, 8] | None = None
    unit: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id")
    profile: str | None = Field(default=None, min_length=1, description="shipped profile name or path of a profile file")
    registers: list[RegisterSpec] = Field(default_factory=list)
    inputs: dict[int, InputSpec] = Field(default_factory=dict, description="dry-contact modules: input number → kind")
    request_timeout: Duration = Field(default=1.0, gt=0, description="wait this long for each reply")
    retries: int = Field(default=0, ge=0, le=5, description="extra attempts after a request times out")
    max_gap: int | None = Field(default=None, ge=0, le=100,
                                description="unused registers a read may span (default: profile's, else 0)")
    word_order: Literal["big", "little"] | None = Field(default=None, description="default word order of 32/64-bit rows")

    _requests: tuple[Request, ...] = PrivateAttr(default=())
    _profile: ProfileFile | None = PrivateAttr(default=None)

    @field_validator("parity", mode="before")
    @classmethod
    def _parity(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"none": "N", "even": "E", "odd": "O"}.get(value.strip().lower(), value.strip().upper())
        return value

    @model_validator(mode="after")
    def _build(self) -> ModbusConfig:
        if self.transport == "rtu":
            if not self.serial_port:
                raise ValueError("transport rtu needs serial_port (e.g. /dev/ttyUSB0)")
            if self.host:
                raise ValueError("host is for transport tcp or rtu-over-tcp; an rtu device uses serial_port")
            # Modbus over Serial Line v1.02 §2.2: 0 is broadcast (never answered), 248–255 are reserved.
            if not 1 <= self.unit <= 247:
                raise ValueError(f"unit {self.unit} cannot be polled on a serial bus; use 1..247")
        else:
            if not self.host:
                raise ValueError(f"transport {self.transport} needs host")
            if self.serial_port:
                raise ValueError("serial_port is for transport rtu")
        budget = self.request_timeout * (self.retries + 1)
        if self.timeout is not None and budget > self.timeout:
            raise ValueError(f"request_timeout × (retries + 1) = {budget:g}s is longer than timeout {self.timeout:g}s "
                             "(the whole poll); shorten request_timeout or lengthen timeout")
        profile: ProfileFile | None = None
        rows: list[Register] = []
        if self.profile:
            _, profile = load_profile(self.profile)
            self._profile = profile
            word_order = self.word_order or profile.word_order
            rows += [spec.to_row(i, word_order, "profile.registers") for i, spec in enumerate(profile.registers)]
            if profile.inputs is not None:
                rows += self._input_rows(profile.inputs)
            elif self.inputs:
                raise ValueError(f"inputs only apply to dry-contact module profiles; {self.profile!r} has none")
        elif self.inputs:
            raise ValueError("inputs need a dry-contact module profile (e.g. profile: waveshare-io-8ch)")
        rows += [spec.to_row(i, self.word_order or "big", "registers") for i, spec in enumerate(self.registers)]
        if not rows:
            raise ValueError("say what to read: a profile, registers, or (for an I/O module profile) inputs"
                             + (f"; shipped profiles: {', '.join(profile_names())}" if not self.profile else ""))
        _check_rows(rows)
        if self.battery_installed is not None and not any(r.metric.startswith("roomwatch_ups_") for r in rows):
            raise ValueError("battery_installed is for UPS devices; this device's map reports no roomwatch_ups_* metric")
        serial = profile.serial if profile else SerialDefaults()
        self.baudrate = self.baudrate or serial.baudrate
        self.parity = self.parity or serial.parity
        self.stopbits = self.stopbits or serial.stopbits
        self.bytesize = self.bytesize or serial.bytesize
        gap = self.max_gap if self.max_gap is not None else (profile.max_gap if profile else 0)
        self._requests = plan_requests(rows, gap)
        return self

    def _input_rows(self, block: InputBlock) -> list[Register]:
        if not self.inputs:
            raise ValueError(f"profile {self.profile!r} is a dry-contact module: say what is wired to which input, "
                             f"e.g. inputs: {{1: {{kind: door}}, 2: {{kind: leak}}}} (inputs 1..{block.count})")
        rows = []
        for number, spec in sorted(self.inputs.items()):
            if not 1 <= number <= block.count:
                raise ValueError(f"inputs: {number} is not an input of this module (1..{block.count})")
            rows.append(Register(
                name=f"input {number}",
                metric=INPUT_KINDS[spec.kind],
                address=block.address + number - 1,
                function=block.function,
                type="bool" if FUNCTIONS[block.function].bits else "uint16",
                active_low=spec.active_low,
                mask=None if FUNCTIONS[block.function].bits else 0xFFFF,
                sensor=spec.sensor or f"in{number}",
            ))
        return rows

    @property
    def requests(self) -> tuple[Request, ...]:
        """The read plan computed at load time."""
        return self._requests

    @property
    def is_ups(self) -> bool:
        return any(c.row.metric.startswith("roomwatch_ups_") for req in self._requests for c in req.rows)

    def endpoint(self) -> str:
        """``tcp://host:port`` or ``rtu:/dev/ttyUSB0`` — where this device's bus is, for messages."""
        if self.transport == "rtu":
            return f"rtu:{self.serial_port}"
        return f"{self.transport}://{self.host}:{self.port}"
