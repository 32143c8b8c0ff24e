"""The demo's Modbus simulator: a real server process on 127.0.0.1 that the driver reads through the profiles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from roomwatch import drivers
from roomwatch.core import vocabulary as v
from roomwatch.demo.run import DemoContext, _stop
from roomwatch.demo.sims import modbus_server, modbus_th
from roomwatch.drivers.modbus.config import ModbusConfig
from roomwatch.drivers.modbus.driver import ModbusDriver

drivers.load_builtin()
T = TypeVar("T")


class Ctx:
    log = logging.getLogger("test.modbus.demo")

    def __init__(self) -> None:
        self.objects: dict[Hashable, Any] = {}

    def emit(self, *a: Any) -> None:
        raise AssertionError

    def shared(self, key: Hashable, factory: Callable[[], T]) -> T:
        return self.objects.setdefault(key, factory())  # type: ignore[no-any-return]


def test_simulated_values_stay_plausible() -> None:
    for t in range(0, 20_000, 97):
        temp, hum = modbus_server.th_registers(float(t))
        assert 20.0 <= temp / 10 <= 28.0 and 35.0 <= hum / 10 <= 55.0
        ups = modbus_server.ups_registers(float(t))
        assert ups[11000][24] == 2 and 300 <= ups[11000][21] <= 400


async def _poll_all(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    ctx = Ctx()
    got: dict[str, dict[str, float]] = {}
    try:
        for entry in entries:
            drv = ModbusDriver(ModbusConfig.model_validate(entry), ctx)
            got[entry["name"]] = {r.metric: r.value for r in await drv.poll()}
    finally:
        for bus in ctx.objects.values():
            await bus.aclose()
    return got


@pytest.mark.peer
def test_demo_modbus_server_is_read_by_the_shipped_profiles(tmp_path: Path) -> None:
    dctx = DemoContext(tmp_path)
    try:
        entries = modbus_th.start(dctx)
        assert {e["profile"] for e in entries} == {"xy-md02", "huawei-ups2000"}
        proc = dctx.processes[0]
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=False).stdout
        mine = [line for line in out.splitlines() if f"pid={proc.pid}," in line]
        assert mine and all("127.0.0.1:" in line for line in mine)  # loopback only
        got = asyncio.run(_poll_all(entries))
    finally:
        _stop(dctx.processes)
        for cleanup in dctx.cleanups:
            with contextlib.suppress(Exception):
                cleanup()
    assert 20.0 <= got["th-modbus"][v.TEMPERATURE] <= 28.0
    assert 0.35 <= got["th-modbus"][v.HUMIDITY] <= 0.55
    ups = got["ups-modbus"]
    assert ups[v.UPS_ON_BATTERY] == 0.0 and ups[v.UPS_BATTERY_CHARGE] == 1.0
    assert 0.3 <= ups[v.UPS_LOAD] <= 0.4 and ups[v.UPS_BATTERY_RUNTIME] > 0
    assert ups[v.UPS_BATTERY_AGE] > 0
    assert v.UPS_BATTERY_TEMPERATURE not in ups  # the UPS2000 map has none: absent, not 0
