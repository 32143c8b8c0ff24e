"""Notification channels: one module per service, sharing :mod:`alerts.channels.base`."""

# The config schema first: it imports every channel module (alerts.channels.all) to build the
# channel union, whichever alerts module a program happens to import first.
import alerts.config  # noqa: F401
