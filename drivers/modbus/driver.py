"""``modbus`` driver: UPS units, temperature/humidity modules and dry-contact I/O over Modbus TCP or RTU.

The config (:mod:`roomwatch.drivers.modbus.config`) holds the read plan computed at load;
a poll walks it: one request per planned block through the line's shared
:class:`~roomwatch.drivers.modbus.bus.ModbusBus`, then :func:`~roomwatch.drivers.modbus.table.decode_block`.
The first failing request ends the poll with a :class:`DeviceError` (the
agent shows the device down with that reason), so a silent unit costs the
line a single timeout per poll.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from roomwatch.drivers.base import Driver, Reading
from roomwatch.drivers.modbus.bus import LineSettings, ModbusBus, bus_key
from roomwatch.drivers.modbus.config import ModbusConfig
from roomwatch.drivers.modbus.table import decode_block
from roomwatch.drivers.registry import register
from roomwatch.drivers.ups import battery_age_reading

__all__ = ["ModbusDriver"]


@register
class ModbusDriver(Driver):
    """Reads one Modbus unit through the bus shared by all units on its line."""

    name = "modbus"
    config_model = ModbusConfig
    requires = ("pymodbus",)

    def __init__(self, config: ModbusConfig, context: Any):
        super().__init__(config, context)
        self._bus: ModbusBus | None = None

    async def start(self) -> None:
        cfg: ModbusConfig = self.config
        settings = LineSettings.of(cfg)
        bus = self.context.shared(bus_key(settings), lambda: ModbusBus(settings, cfg.name))
        bus.check_settings(settings, cfg.name)
        self._bus = bus

    async def poll(self) -> Sequence[Reading]:
        cfg: ModbusConfig = self.config
        if self._bus is None:
            await self.start()
        assert self._bus is not None
        out: list[Reading] = []
        for request in cfg.requests:
            data = await self._bus.read(cfg.unit, request, cfg.request_timeout, cfg.retries)
            out.extend(decode_block(request, data))
        if cfg.is_ups:
            age = battery_age_reading(cfg.battery_installed)
            if age is not None:
                out.append(age)
        return out
