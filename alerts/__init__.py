"""Alerting: rule evaluation, alert lifecycle, routing and notification channels."""
