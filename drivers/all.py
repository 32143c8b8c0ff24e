"""Imports every built-in driver so it registers; adding a driver adds one line here."""

import drivers.snmp  # noqa: F401
from drivers import host  # noqa: F401
