"""A small Modbus TCP server for ``roomwatch demo``: a temperature/humidity module and a UPS on one port.

Run as ``python -m roomwatch.demo.sims.modbus_server --port N`` (binds 127.0.0.1 only):

* unit 1 speaks the XY-MD02 map (input registers 1–2: °C ×10, %RH ×10), values drifting slowly;
* unit 2 speaks the Huawei UPS2000 map (holding 11000…, 12000…, 41188), on mains, load drifting.

Both maps are the shipped profiles ``xy-md02`` and ``huawei-ups2000``. Importing
this module does nothing (the demo loads every module in ``roomwatch.demo.sims``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import signal
import time
from typing import Any

__all__ = ["main", "th_registers", "ups_registers"]

_NA = 0x7FFF  # Huawei "not available" for fixed-point registers


def th_registers(t: float) -> tuple[int, int]:
    """XY-MD02 input registers 1 and 2 at time ``t``: a room drifting around 24 °C / 45 %RH."""
    temp = 24.0 + 1.5 * math.sin(t / 300.0) + random.uniform(-0.1, 0.1)
    hum = 45.0 + 6.0 * math.sin(t / 470.0 + 1.0) + random.uniform(-0.3, 0.3)
    return round(temp * 10) & 0xFFFF, round(hum * 10)


def ups_registers(t: float) -> dict[int, list[int]]:
    """Huawei UPS2000 holding registers at time ``t``: on mains, full battery, load drifting 30–40 %."""
    status = [_NA] * 28  # 11000–11027
    status[0] = round(10 * (229.0 + 2.0 * math.sin(t / 120.0)))  # input voltage
    status[3] = 500  # input frequency 50.0 Hz
    status[8] = 2200  # output voltage
    status[14] = 500  # output frequency
    status[21] = round(10 * (35.0 + 5.0 * math.sin(t / 200.0)))  # load %
    status[24] = 2  # power supply mode: normal (on mains)
    load = status[21] / 1000.0
    runtime = int(1800 * (1.0 - load))  # runtime falls as the load rises
    return {11000: status, 11043: [0], 12000: [545, _NA, 3, 100, runtime >> 16, runtime & 0xFFFF], 41188: [0]}


def _device(unit: int, holding: dict[int, list[int]], inputs: dict[int, list[int]]) -> Any:
    from pymodbus.simulator import DataType, SimData, SimDevice

    def block(regs: dict[int, list[int]]) -> list[Any]:
        out = [SimData(a, values=list(v), datatype=DataType.REGISTERS) for a, v in sorted(regs.items())]
        return out or [SimData(60000, values=[0], datatype=DataType.REGISTERS)]

    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
    return SimDevice(id=unit, simdata=(bits, list(bits), block(holding), block(inputs)))


async def serve(port: int, period: float) -> None:
    """Serve both units until SIGTERM/SIGINT, updating values every ``period`` seconds."""
    from pymodbus.server import ModbusTcpServer

    now = time.time()
    th = th_registers(now)
    server = ModbusTcpServer(context=[_device(1, {}, {1: list(th)}), _device(2, ups_registers(now), {})],
                             address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"modbus demo server on 127.0.0.1:{port} (unit 1 XY-MD02, unit 2 Huawei UPS2000)", flush=True)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), period)
        except TimeoutError:
            now = time.time()
            await server.context.async_setValues(1, 4, 1, list(th_registers(now)))
            for address, values in ups_registers(now).items():
                await server.context.async_setValues(2, 3, address, values)
    await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--period", type=float, default=2.0, help="seconds between value updates")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(serve(args.port, args.period))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
