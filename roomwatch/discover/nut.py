"""NUT discovery: every UPS an upsd serves (``LIST UPS``), each read once by the ``nut`` driver.

One device entry per UPS (``ups: <name>``), so each UPS has its own ``roomwatch_device_up`` and
its series carry no ``ups`` label, like an SNMP or Modbus UPS. The entries share one connection
in the agent (the driver shares it per upsd and login), as they do here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from roomwatch.discover.probe import ProbeContext, Shared
from roomwatch.discover.report import Found, Outcome
from roomwatch.discover.targets import parse_hostport_target
from roomwatch.drivers.nut import NutConfig, NutDriver
from roomwatch.drivers.nut_protocol import NutClient

__all__ = ["discover_upsd"]

Progress = Callable[[str], None]
#: UPS read from one upsd (a real one serves a few; thousands would be a broken or hostile server).
MAX_UPS = 256


async def discover_upsd(spec: str, username: str | None, password: str | None, timeout: float,
                        progress: Progress) -> Outcome:
    """The UPS units one ``HOST[:PORT]`` serves, each read once; a upsd that cannot be reached is unreachable."""
    host, port = parse_hostport_target(spec, 3493, "NUT")
    where = f"{host}:{port}"
    lister = NutClient(host, port, username, password, None, connect_timeout=timeout)
    try:
        names = await asyncio.wait_for(lister.list_ups(), timeout)
    except Exception as exc:  # refused, timeout, not upsd at all
        reason = str(exc) or type(exc).__name__
        progress(f"nut: upsd {where}: {reason}")
        return Outcome([], [f"upsd {where}: {reason}"], unreachable=True)
    finally:
        await lister.aclose()
    progress(f"nut: upsd {where} serves {len(names)} UPS")
    if len(names) > MAX_UPS:
        problems_cap = [f"upsd {where} lists {len(names)} UPS; only the first {MAX_UPS} are read"]
        names = dict(list(names.items())[:MAX_UPS])
    else:
        problems_cap = []
    shared = Shared()
    found: list[Found] = []
    problems: list[str] = problems_cap
    try:
        for ups, description in names.items():
            entry: dict[str, Any] = {"driver": "nut", "host": host}
            if port != 3493:
                entry["port"] = port
            entry["ups"] = ups
            if username is not None:
                entry |= {"username": username, "password": password}
            driver = NutDriver(NutConfig.model_validate({"name": "discover", **entry}), ProbeContext(shared, "nut"))
            try:
                await driver.start()
                readings = list(await asyncio.wait_for(driver.poll(), timeout))
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                problems.append(f"upsd {where}: UPS {ups!r} lists but cannot be read: {reason}")
                progress(f"nut: {ups}@{where} cannot be read: {reason}")
                continue
            if not readings:
                problems.append(f"upsd {where}: UPS {ups!r} publishes nothing the agent reads")
                continue
            info = next((dict(r.labels or {}) for r in readings if r.metric == "roomwatch_ups_info"), {})
            vendor = " ".join(x for x in (info.get("manufacturer"), info.get("model")) if x)
            identity = f"UPS {ups!r}" + (f": {vendor}" if vendor else "") + (
                f" ({description})" if description and description not in ("Description unavailable", vendor) else "")
            found.append(Found("nut", f"upsd {where}", ups, entry, identity, readings,
                               sort_key=(1, host, port, ups)))
    finally:
        await shared.aclose()
    return Outcome(found, problems)
