"""Agent actions: things the agent does by itself on what it reads (``actions:`` in the agent file).

Each action type is a config model with ``type: Literal[...]`` and a class built
with ``(config, agent)`` that watches readings through ``Agent.observers``, so
actions work without the collector. Types so far: ``shutdown`` (:mod:`roomwatch.agent.shutdown`).
Adding a type adds one row to :data:`ACTION_TYPES`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Union

from pydantic import Field

from roomwatch.agent.shutdown import ShutdownAction, ShutdownActionConfig

__all__ = ["ACTION_TYPES", "ActionEntry", "build_actions", "check_actions"]

log = logging.getLogger("roomwatch.action")

#: config model → class that runs it
ACTION_TYPES: dict[type[Any], type[Any]] = {ShutdownActionConfig: ShutdownAction}


def _union() -> Any:
    models = tuple(ACTION_TYPES)
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built at run time


#: One entry of ``actions:`` (discriminated on ``type``).
ActionEntry = _union()


def check_actions(actions: list[Any], devices: list[Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-checks against the device list: (path, message) pairs."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    by_name = {d.name: d for d in devices}
    names: set[str] = set()
    for i, action in enumerate(actions):
        if action.name in names:
            problems.append((("actions", i, "name"), f"action name {action.name!r} is used twice"))
        names.add(action.name)
        ups = getattr(action, "ups", None)
        if ups is None:
            continue
        dev = by_name.get(ups)
        if dev is None:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append((("actions", i, "ups"), f"no device is named {ups!r} (devices: {known})"))
        elif getattr(dev, "driver", "") == "nut" and getattr(dev, "ups", "") is None and "ups" not in action.labels:
            problems.append((("actions", i, "labels"), f"device {ups!r} reports every UPS of its upsd: "
                             "pick one with labels: {ups: NAME}"))
    return problems


def build_actions(agent: Any) -> list[Any]:
    """Instantiate the configured actions; each registers itself as an observer of ``agent``."""
    return [ACTION_TYPES[type(cfg)](cfg, agent) for cfg in agent.config.actions]
