"""Agent actions: things the agent does by itself on what it reads (``actions:`` in the agent file).

Each action type is a config model with ``type: Literal[...]`` and a class built
with ``(config, agent)`` that watches readings through ``Agent.observers``, so
actions work without the collector; an action with an async ``run()`` is started
as a task with the agent. Types: ``shutdown`` (:mod:`roomwatch.agent.shutdown`),
``battery_test`` (:mod:`agent.battery_test`).
Adding a type adds one row to :data:`ACTION_TYPES`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Union

from pydantic import Field

from roomwatch.agent.battery_test import BatteryTestAction, BatteryTestConfig
from roomwatch.agent.shutdown import ShutdownAction, ShutdownActionConfig

__all__ = ["ACTION_TYPES", "ActionEntry", "build_actions", "check_actions"]

log = logging.getLogger("roomwatch.action")

#: config model → class that runs it
ACTION_TYPES: dict[type[Any], type[Any]] = {ShutdownActionConfig: ShutdownAction, BatteryTestConfig: BatteryTestAction}


def _union() -> Any:
    models = tuple(ACTION_TYPES)
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built at run time


#: One entry of ``actions:`` (discriminated on ``type``).
ActionEntry = _union()


def check_actions(actions: list[Any], devices: list[Any], nut_server: Any = None) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-checks against the device list and the NUT server: (path, message) pairs."""
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
        if isinstance(action, ShutdownActionConfig):
            problems.extend(_check_shutdown(action, i, dev, nut_server))
        elif dev is not None and getattr(dev, "driver", None) not in ("snmp", "nut") and action.method == "auto":
            problems.append((("actions", i, "ups"), f"device {ups!r} ({getattr(dev, 'driver', '?')}) cannot be "
                             "told to run a self-test: only snmp and nut devices can"))
    return problems


def _check_shutdown(action: Any, i: int, dev: Any, nut_server: Any) -> list[tuple[tuple[Any, ...], str]]:
    out: list[tuple[tuple[Any, ...], str]] = []
    if getattr(action, "nut_primary", False) and nut_server is None:
        out.append((("actions", i, "nut_primary"), "nut_primary needs a nut_server section: the secondaries "
                    "learn about FSD from this agent's NUT server"))
    off = getattr(action, "ups_off", None)
    if off is None:
        return out
    if off.delay < action.host_shutdown_time:
        out.append((("actions", i, "ups_off", "delay"), f"the UPS would cut the power "
                    f"{off.delay:g}s after the command, before this host is down (host_shutdown_time "
                    f"{action.host_shutdown_time:g}s): make delay longer"))
    driver = getattr(dev, "driver", None)
    if dev is not None and driver not in ("snmp", "nut") and off.method == "auto":
        out.append((("actions", i, "ups_off"), f"device {dev.name!r} ({driver}) cannot be told to switch off: "
                    "only snmp and nut devices can"))
    if dev is not None and driver == "nut" and off.method in ("auto", "nut") and \
            (off.username or getattr(dev, "username", None)) is None:
        out.append((("actions", i, "ups_off", "username"), "a NUT UPS takes shutdown.return only from a "
                    "upsd.users login with instcmds: give username/password here or on the device"))
    return out


def build_actions(agent: Any) -> list[Any]:
    """Instantiate the configured actions; each registers itself as an observer of ``agent``."""
    return [ACTION_TYPES[type(cfg)](cfg, agent) for cfg in agent.config.actions]
