"""Helpers for MQTT driver tests: an in-process agent and reading its current values."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core.exposition import render
from tests.helpers import async_wait_for, metric_value


def make_agent(devices: list[dict[str, Any]]) -> Agent:
    """An agent without collector or host device, running the given device entries."""
    cfg = AgentConfig.model_validate({"agent": {"id": "t", "site": "s", "room": "r"}, "host": {"enabled": False},
                                      "devices": devices})
    return Agent(cfg)


def current(agent: Agent, metric: str, **labels: str) -> float | None:
    """The agent's current value of ``metric`` (as its /metrics shows it)."""
    return metric_value(render(agent.latest.families()).decode(), metric, **labels)


async def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Wait on the event loop until ``check()`` is truthy (:func:`tests.helpers.async_wait_for`, a shorter default)."""
    return await async_wait_for(check, timeout, what)


async def subscribed(agent: Agent, timeout: float = 15.0) -> None:
    """Wait until every MQTT connection of ``agent`` has its subscriptions acknowledged by the broker (SUBACK):
    a message published from then on reaches the agent (the event itself, instead of a sleep)."""
    from roomwatch.drivers.mqtt.connection import BrokerConnection

    conns = [c for c in agent._shared.values() if isinstance(c, BrokerConnection)]
    assert conns, "the agent has no MQTT connection"
    await until(lambda: all(c.subscribed() for c in conns), timeout=timeout, what="SUBACK from the broker")


async def publish(pub: Any, topic: str, payload: bytes | str, retain: bool = False, qos: int = 1) -> None:
    """Publish from a test coroutine without blocking the agent's loop."""
    await asyncio.to_thread(pub.publish, topic, payload, retain, qos)
