"""Device drivers: one module per device type, registered by name.

Public surface: :class:`Driver`, :class:`DeviceConfig`, :class:`Reading`,
:class:`Event`, :class:`DeviceError`, :func:`register`, :func:`get`,
:func:`load_builtin`. Driver modules import their protocol library lazily, so
an agent that polls no SNMP device never pays for pysnmp.
"""

from roomwatch.drivers.base import Context, DeviceConfig, DeviceError, Driver, Event, Reading
from roomwatch.drivers.registry import get, load_builtin, names, register, registered

__all__ = [
    "Context",
    "DeviceConfig",
    "DeviceError",
    "Driver",
    "Event",
    "Reading",
    "get",
    "load_builtin",
    "names",
    "register",
    "registered",
]

