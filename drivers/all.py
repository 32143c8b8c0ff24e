"""Imports every built-in driver so it registers; adding a driver adds one line here."""

from drivers import (
    gpio,  # noqa: F401
    host,  # noqa: F401
    mqtt,  # noqa: F401
)
