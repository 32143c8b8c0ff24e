"""Real Modbus peers for tests: pymodbus servers on loopback TCP and on a socat pseudo-terminal pair.

A unit is described as ``{function: {address: [values]}}`` (``holding``/``input``
lists of 16-bit words, ``coil``/``discrete`` lists of 0/1). Each unit records
the reads it serves (:attr:`ModbusPeer.reads`), and a ``silent`` unit never
answers (as a unit that is off or miswired does on RS-485). Nothing is mocked:
the driver under test talks to the pymodbus server over a socket or a tty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import require_binary, wait_for

_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_FC_NAME = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
UnitSpec = Mapping[str, Mapping[int, Sequence[int]]]

__all__ = ["ModbusPeer", "modbus_peer", "serial_pair"]


class ModbusPeer:
    """An in-process pymodbus server (TCP or RTU) with units built from plain dicts."""

    def __init__(self) -> None:
        self.server: Any = None
        self.port = 0
        self.reads: list[tuple[int, str, int, int]] = []  # (unit, function, address, count) in arrival order
        self._gate = asyncio.Event()

    def _device(self, unit: int, spec: UnitSpec, silent: bool = False) -> Any:
        from pymodbus.simulator import DataType, SimData, SimDevice

        blocks: list[list[Any]] = [[], [], [], []]
        for fname, regs in spec.items():
            for address, values in regs.items():
                dtype = DataType.BITS if fname in ("coil", "discrete") else DataType.REGISTERS
                vals = [bool(x) for x in values] if dtype == DataType.BITS else list(values)
                blocks[_FC[fname] - 1].append(SimData(address, values=vals, datatype=dtype))
        for i, block in enumerate(blocks):
            if not block:  # SimDevice wants four non-empty lists; park a word far from the test addresses
                dtype = DataType.BITS if i < 2 else DataType.REGISTERS
                block.append(SimData(60000, values=[False] if i < 2 else [0], datatype=dtype))

        async def action(fc: int, start: int, address: int, count: int, regs: list[int], values: Any) -> None:
            if silent and values is None:
                await self._gate.wait()  # never answer while the test runs

        return SimDevice(id=unit, simdata=tuple(blocks), action=action)  # type: ignore[arg-type]

    def _trace(self, sending: bool, pdu: Any) -> Any:
        """Record every request as it arrives on the wire (pymodbus' trace hook)."""
        if not sending and pdu.function_code in _FC_NAME:
            self.reads.append((pdu.dev_id, _FC_NAME[pdu.function_code], pdu.address, pdu.count))
        return pdu

    def _context(self, units: Mapping[int, UnitSpec], silent: Sequence[int]) -> list[Any]:
        devices = [self._device(u, spec) for u, spec in units.items()]
        for u in silent:
            # the whole address space exists (so no "illegal address" reply comes first), nothing ever answers
            devices.append(self._device(u, {"holding": {0: [0] * 65535}, "input": {0: [0] * 65535},
                                            "coil": {0: [0] * 4096}, "discrete": {0: [0] * 4096}}, silent=True))
        return devices

    async def start_tcp(self, units: Mapping[int, UnitSpec], silent: Sequence[int] = (), port: int = 0,
                        rtu_framing: bool = False) -> ModbusPeer:
        """Serve ``units`` on 127.0.0.1 (ephemeral port unless given); ``rtu_framing`` = a transparent serial server."""
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusTcpServer

        self.server = ModbusTcpServer(context=self._context(units, silent), address=("127.0.0.1", port),
                                      framer=FramerType.RTU if rtu_framing else FramerType.SOCKET,
                                      trace_pdu=self._trace)
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]
        return self

    async def start_rtu(self, tty: str, units: Mapping[int, UnitSpec], silent: Sequence[int] = (),
                        baudrate: int = 19200) -> ModbusPeer:
        """Serve ``units`` as slaves on one RS-485 line (one end of a pty pair)."""
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusSerialServer

        self.server = ModbusSerialServer(context=self._context(units, silent), framer=FramerType.RTU, port=tty,
                                         baudrate=baudrate, trace_pdu=self._trace)
        await self.server.serve_forever(background=True)
        return self

    async def set(self, unit: int, function: str, address: int, values: Sequence[int]) -> None:
        """Change live values (what the next read returns)."""
        vals: list[Any] = [bool(x) for x in values] if function in ("coil", "discrete") else list(values)
        await self.server.context.async_setValues(unit, _FC[function], address, vals)

    def reads_of(self, unit: int) -> list[tuple[int, str, int, int]]:
        return [r for r in self.reads if r[0] == unit]

    async def stop(self) -> None:
        self._gate.set()  # let silent units' pending actions finish before the transport closes
        await asyncio.sleep(0)
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


@pytest.fixture
async def modbus_peer() -> AsyncIterator[ModbusPeer]:
    """An unstarted :class:`ModbusPeer`; the test calls ``start_tcp``/``start_rtu``; stopped afterwards."""
    peer = ModbusPeer()
    try:
        yield peer
    finally:
        await peer.stop()


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals made by socat: (server end, client end), like an RS-485 line."""
    socat = require_binary("socat")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen([socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: a.exists() and b.exists(), timeout=10, proc=proc, what="socat pty pair")
        yield str(a), str(b)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for p in (a, b):
            with contextlib.suppress(OSError):
                os.unlink(p)
