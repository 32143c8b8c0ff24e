"""Notification channels: one module per service, sharing :mod:`roomwatch.channels.base`.

Part of the shared ground (the collector's alerting and the agent's local fallback both
send through them); nothing here imports the agent, the collector or the alert engine.
Channel config models derive from :class:`roomwatch.channels.config.ChannelBase`.
"""
