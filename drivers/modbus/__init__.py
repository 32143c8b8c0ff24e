"""Modbus driver package: TCP and RTU (RS-485), register maps as data.

Modules: :mod:`.table` (rows, data types, read plan, decoding — pure),
:mod:`.config` (device options, profile files), :mod:`.bus` (one owner per
serial port or TCP endpoint), :mod:`.driver` (the registered driver).
Shipped register maps live in ``profiles/*.yaml``, each naming its source.
pymodbus is imported only when a device first connects.
"""

from roomwatch.drivers.modbus.config import ModbusConfig, load_profile, profile_names
from roomwatch.drivers.modbus.driver import ModbusDriver

__all__ = ["ModbusConfig", "ModbusDriver", "load_profile", "profile_names"]
