"""Notification channels: one module per service, sharing :mod:`alerts.channels.base`."""
