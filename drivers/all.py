"""Imports every built-in driver so it registers; adding a driver adds one line here."""

import drivers.nut  # noqa: F401
from drivers import host  # noqa: F401
