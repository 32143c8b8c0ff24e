"""One owner per Modbus line: a serial RS-485 port or a TCP host:port, shared by every unit on it.

RS-485 is half-duplex with one master: a second request sent before the first
reply (or its timeout) garbles both. So all devices on one serial port share
one :class:`ModbusBus` (``Context.shared(("modbus-rtu", port), ...)``), and the
bus sends one request at a time under an asyncio lock; waiting devices queue
in FIFO order. A unit that does not answer holds the line for at most its own
``request_timeout`` (× attempts) per request, and the driver stops its poll at
the first timeout, so a dead unit delays the others by one timeout per poll.
TCP devices behind one gateway share one connection the same way (most
RS-485 gateways serialise requests anyway, and many accept one client only).

pymodbus is imported here, lazily, when the first bus is created.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from roomwatch.drivers.base import DeviceError
from roomwatch.drivers.modbus.table import FUNCTIONS, Request

__all__ = ["EXCEPTION_CODES", "LineSettings", "ModbusBus", "ModbusExceptionError", "bus_key"]

log = logging.getLogger("roomwatch.driver.modbus")

#: Modbus Application Protocol v1.1b3, §7 "MODBUS Exception Responses".
EXCEPTION_CODES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

_READ_METHODS = {"coil": "read_coils", "discrete": "read_discrete_inputs",
                 "holding": "read_holding_registers", "input": "read_input_registers"}

#: After a failed connect, devices on the same line fail fast with the same reason for this long
#: instead of each waiting out its own connect timeout (five units behind one dead gateway).
_CONNECT_HOLDOFF = 1.0
#: Consecutive unanswered requests on a TCP line before the connection is dropped and reopened
#: (a half-open socket never recovers by itself; one dead unit behind a gateway is not enough).
_TCP_TIMEOUTS_BEFORE_RECONNECT = 3
#: pymodbus' own reply timeout; ours (asyncio.wait_for per request) is always shorter.
_LIBRARY_TIMEOUT = 120.0


class ModbusExceptionError(DeviceError):
    """The unit answered with a Modbus exception response."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class LineSettings:
    """How to reach the line; every device sharing a line must agree on all of it."""

    transport: str  # tcp | rtu | rtu-over-tcp
    host: str | None = None
    port: int = 502
    serial_port: str | None = None
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    @classmethod
    def of(cls, cfg: Any) -> LineSettings:
        if cfg.transport == "rtu":
            return cls("rtu", serial_port=cfg.serial_port, baudrate=cfg.baudrate, parity=cfg.parity,
                       stopbits=cfg.stopbits, bytesize=cfg.bytesize)
        return cls(cfg.transport, host=cfg.host, port=cfg.port)

    def describe(self) -> str:
        if self.transport == "rtu":
            return f"{self.serial_port} ({self.baudrate} {self.bytesize}{self.parity}{self.stopbits})"
        return f"{self.host}:{self.port}" + (" (RTU over TCP)" if self.transport == "rtu-over-tcp" else "")


def bus_key(settings: LineSettings) -> tuple[str, ...]:
    """The ``Context.shared`` key: one bus per serial port, one per TCP host:port."""
    if settings.transport == "rtu":
        return ("modbus-rtu", str(settings.serial_port))
    return ("modbus-tcp", str(settings.host), str(settings.port))


def _quiet_library() -> None:
    # pymodbus logs every unanswered request at ERROR with a frame dump; the agent logs a
    # device's state change once instead. An operator who set a level keeps it.
    lib = logging.getLogger("pymodbus")
    if lib.level == logging.NOTSET:
        lib.setLevel(logging.CRITICAL)


class ModbusBus:
    """A pymodbus client used by one request at a time; created by the first device on the line."""

    def __init__(self, settings: LineSettings, owner: str):
        self.settings = settings
        self.owner = owner  # the device that created the bus, named when settings clash
        self._lock = asyncio.Lock()
        self._client: Any = None
        self._holdoff_until = 0.0
        self._holdoff_reason = ""
        self._tcp_timeouts = 0
        #: requests sent and replies missed, for tests and benchmarks
        self.sent = 0
        self.missed = 0

    def check_settings(self, settings: LineSettings, device: str) -> None:
        """Refuse a device whose line settings differ from the bus owner's (one port cannot run two speeds)."""
        if settings != self.settings:
            raise DeviceError(f"{device} wants {settings.describe()} but device {self.owner} already uses this line as "
                              f"{self.settings.describe()}; all units on one line must use the same settings")

    def _make_client(self) -> Any:
        _quiet_library()
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.framer import FramerType

        s = self.settings
        # reconnect_delay=0: no background reconnect task; the next poll reconnects (its interval is the backoff).
        if s.transport == "rtu":
            return AsyncModbusSerialClient(str(s.serial_port), framer=FramerType.RTU, baudrate=s.baudrate,
                                           bytesize=s.bytesize, parity=s.parity, stopbits=s.stopbits,
                                           timeout=_LIBRARY_TIMEOUT, retries=0, reconnect_delay=0)
        framer = FramerType.RTU if s.transport == "rtu-over-tcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(str(s.host), port=s.port, framer=framer, timeout=_LIBRARY_TIMEOUT,
                                    retries=0, reconnect_delay=0)

    def _connect_failure(self) -> str:
        s = self.settings
        if s.transport != "rtu":
            return f"cannot connect to Modbus {s.describe()}"
        path = str(s.serial_port)
        if not os.path.exists(path):
            return f"serial port {path} does not exist (is the USB/RS-485 adapter plugged in?)"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"no permission to open serial port {path} (add the agent's user to the dialout group)"
        return f"cannot open serial port {path}"

    async def _connected(self, timeout: float) -> Any:
        client = self._client
        if client is not None and client.connected:
            return client
        now = time.monotonic()
        if now < self._holdoff_until:
            raise DeviceError(self._holdoff_reason)
        if client is None:
            client = self._client = self._make_client()
        try:
            ok = await asyncio.wait_for(client.connect(), timeout)
        except (TimeoutError, OSError):
            ok = False
        if not ok:
            client.close()
            self._holdoff_until = time.monotonic() + _CONNECT_HOLDOFF
            self._holdoff_reason = self._connect_failure()
            raise DeviceError(self._holdoff_reason)
        self._tcp_timeouts = 0
        return client

    async def read(self, unit: int, request: Request, timeout: float, retries: int = 0) -> list[int]:
        """Words (or bits as 0/1) of one planned request; DeviceError on timeout, exception reply or I/O error."""
        from pymodbus.exceptions import ModbusException

        async with self._lock:
            client = await self._connected(timeout)
            method = getattr(client, _READ_METHODS[request.function])
            response = None
            for _ in range(retries + 1):
                self.sent += 1
                try:
                    response = await asyncio.wait_for(
                        method(request.address, count=request.count, device_id=unit), timeout)
                    break
                except TimeoutError:
                    self.missed += 1
                except ModbusException as exc:  # connection lost mid-request, undecodable reply
                    client.close()
                    raise DeviceError(f"unit {unit}, {request.describe()}: {exc}") from None
            if response is None:
                if self.settings.transport != "rtu":
                    self._tcp_timeouts += 1
                    if self._tcp_timeouts >= _TCP_TIMEOUTS_BEFORE_RECONNECT:
                        client.close()
                tries = f" ({retries + 1} attempts)" if retries else ""
                raise DeviceError(f"unit {unit} did not answer within {timeout:g}s{tries} "
                                  f"reading {request.describe()} on {self.settings.describe()}")
            self._tcp_timeouts = 0
        return _payload(unit, request, response)

    async def aclose(self) -> None:
        """Close the connection or port (the agent calls this on shared objects at shutdown)."""
        if self._client is not None:
            self._client.close()
            self._client = None


def _payload(unit: int, request: Request, response: Any) -> list[int]:
    if response.isError():
        code = int(getattr(response, "exception_code", 0) or 0)
        meaning = EXCEPTION_CODES.get(code, "unknown exception")
        raise ModbusExceptionError(
            f"unit {unit} answered Modbus exception {code} ({meaning}) reading {request.describe()} "
            f"[{request.names()}]", code)
    if FUNCTIONS[request.function].bits:
        data = [1 if b else 0 for b in response.bits[:request.count]]
    else:
        data = list(response.registers)
    if len(data) < request.count:
        raise DeviceError(f"unit {unit} sent {len(data)} values for {request.describe()} ({request.count} asked)")
    return data
