"""Imports every built-in driver so it registers; adding a driver adds one line here."""

from drivers import (  # noqa: F401 - imported for their @register side effect
    gpio,
    host,
    modbus,
    mqtt,
    nut,
)
