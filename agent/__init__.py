"""The roomwatch agent: polls devices of one room and pushes to a collector.

Public surface: :func:`main` (the ``roomwatch agent`` command),
:class:`~roomwatch.agent.runtime.Agent`, :func:`~roomwatch.agent.config.load_agent_config`.
"""

from roomwatch.agent.main import main

__all__ = ["main"]
