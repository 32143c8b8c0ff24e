"""Device drivers: one module per device type, registered by name.

Public surface: :class:`Driver`, :class:`DeviceConfig`, :class:`Reading`,
:class:`Event`, :class:`DeviceError`, :func:`register`, :func:`get`,
:func:`load_builtin`. Driver modules import their protocol library lazily, so
an agent that polls no SNMP device never pays for pysnmp.
"""

from drivers.base import Context, DeviceConfig, DeviceError, Driver, Event, Reading
from drivers.registry import get, names, register, registered

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


def load_builtin() -> None:
    """Import every built-in driver module (each registers itself)."""
    import drivers.all  # noqa: F401
