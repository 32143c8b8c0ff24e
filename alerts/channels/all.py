"""Imports every built-in channel module so it registers; adding a channel adds one line here."""

from alerts.channels import alertmanager, webhook  # noqa: F401
