"""The roomwatch collector: receives pushes from agents, exposes /metrics, evaluates alerts.

Public surface: :func:`main` (the ``roomwatch collector`` command),
:class:`~roomwatch.collector.core.Collector`, :func:`~roomwatch.collector.http.create_app`,
:func:`~roomwatch.collector.config.load_collector_config`.
"""

from roomwatch.collector.main import main

__all__ = ["main"]
