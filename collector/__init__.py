"""The roomwatch collector: receives pushes from agents, exposes /metrics, evaluates alerts.

Public surface: :func:`main` (the ``roomwatch collector`` command),
:class:`~collector.core.Collector`, :func:`~collector.http.create_app`,
:func:`~collector.config.load_collector_config`.
"""

from roomwatch.collector.main import main

__all__ = ["main"]
