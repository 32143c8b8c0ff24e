"""Current state grouped by site → room → device, for the status page (``GET /api/v1/rooms``).

Built from the collector's :class:`~roomwatch.collector.series.SeriesStore` (current values
only: a down device's readings are already hidden there) and its agent registry.
"""

from __future__ import annotations

import time
from typing import Any

from roomwatch.core import vocabulary as v

__all__ = ["ROOM_METRICS", "rooms_snapshot"]

#: The quantities a room tile or device row shows; host and self-monitoring series stay in /metrics.
ROOM_METRICS: tuple[str, ...] = (
    v.TEMPERATURE, v.HUMIDITY, v.DOOR_OPEN, v.WATER_LEAK, v.SMOKE,
    v.UPS_ON_BATTERY, v.UPS_BATTERY_LOW, v.UPS_BATTERY_REPLACE, v.UPS_BATTERY_CHARGE, v.UPS_BATTERY_RUNTIME,
    v.UPS_LOAD, v.UPS_INPUT_VOLTAGE, v.UPS_OUTPUT_VOLTAGE, v.UPS_BATTERY_TEMPERATURE, v.UPS_BATTERY_AGE,
)
#: Labels that place a series; the rest (sensor, ups, …) tell series of one device apart.
_PLACE = ("site", "room", "agent", "device")


def _room_entry(rooms: dict[tuple[str, str], dict[str, Any]], site: str, room: str) -> dict[str, Any]:
    key = (site, room)
    if key not in rooms:
        rooms[key] = {"site": site, "room": room, "agents": [], "devices": {}}
    return rooms[key]


def _summary(devices: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures for the tile: hottest sensor, humidity range, doors open, UPS on battery, alarms, devices down."""
    vals: dict[str, list[float]] = {}
    for d in devices:
        for s in d["series"]:
            vals.setdefault(s["metric"], []).append(s["value"])

    def pick(metric: str, fn: Any) -> float | None:
        got = vals.get(metric)
        return fn(got) if got else None

    return {
        "temperature_max": pick(v.TEMPERATURE, max),
        "temperature_min": pick(v.TEMPERATURE, min),
        "humidity_min": pick(v.HUMIDITY, min),
        "humidity_max": pick(v.HUMIDITY, max),
        "doors": len(vals.get(v.DOOR_OPEN, [])),
        "doors_open": sum(1 for x in vals.get(v.DOOR_OPEN, []) if x >= 1),
        "ups": len(vals.get(v.UPS_ON_BATTERY, [])) or len(vals.get(v.UPS_BATTERY_CHARGE, [])),
        "ups_on_battery": sum(1 for x in vals.get(v.UPS_ON_BATTERY, []) if x >= 1),
        "ups_battery_low": sum(1 for x in vals.get(v.UPS_BATTERY_LOW, []) if x >= 1),
        "ups_charge_min": pick(v.UPS_BATTERY_CHARGE, min),
        "ups_runtime_min": pick(v.UPS_BATTERY_RUNTIME, min),
        "leaks": sum(1 for x in vals.get(v.WATER_LEAK, []) if x >= 1),
        "smoke": sum(1 for x in vals.get(v.SMOKE, []) if x >= 1),
        "devices": len(devices),
        "devices_down": sum(1 for d in devices if d["up"] is False),
    }


def rooms_snapshot(collector: Any, now: float | None = None) -> dict[str, Any]:
    """JSON-ready snapshot: rooms with devices and current values, agents and devices that are down."""
    now = time.time() if now is None else now
    store = collector.series
    rooms: dict[tuple[str, str], dict[str, Any]] = {}
    agent_place: dict[str, tuple[str, str]] = {}

    def device_entry(labels: dict[str, str]) -> dict[str, Any]:
        site, room = labels.get("site", ""), labels.get("room", "")
        entry = _room_entry(rooms, site, room)
        agent = labels.get("agent", "")
        agent_place.setdefault(agent, (site, room))
        if agent not in entry["agents"]:
            entry["agents"].append(agent)
        key = (agent, labels.get("device", ""))
        dev: dict[str, Any] | None = entry["devices"].get(key)
        if dev is None:
            dev = entry["devices"][key] = {"agent": agent, "device": key[1], "up": None, "since": None, "series": []}
        return dev

    for s in store.current(v.DEVICE_UP, now):
        if "device" not in s.labels:
            continue
        dev = device_entry(s.labels)
        dev["up"] = s.value >= 1
        down_since = store.device_down_since.get((s.labels.get("agent", ""), s.labels["device"]))
        dev["since"] = down_since / 1000 if down_since is not None and not dev["up"] else None
    for metric in ROOM_METRICS:
        for s in store.current(metric, now):
            dev = device_entry(s.labels)
            extra = {k: val for k, val in s.labels.items() if k not in _PLACE}
            dev["series"].append({"metric": metric, "labels": extra, "value": s.value, "ts": s.ts / 1000})

    out_rooms = []
    for (site, room), entry in sorted(rooms.items()):
        devices = sorted(entry["devices"].values(), key=lambda d: (d["agent"], d["device"]))
        for d in devices:
            d["series"].sort(key=lambda s: (s["metric"], sorted(s["labels"].items())))
        out_rooms.append({"site": site, "room": room, "agents": sorted(entry["agents"]), "devices": devices,
                          "summary": _summary(devices)})
    agents = []
    for a in sorted(collector.agents.agents.values(), key=lambda a: a.id):
        site, room = agent_place.get(a.id, ("", ""))
        agents.append({"id": a.id, "up": a.up(now), "standby": a.standby, "last_push": a.last_push,
                       "site": site, "room": room})
    down_devices = [
        {"site": r["site"], "room": r["room"], "agent": d["agent"], "device": d["device"], "since": d["since"]}
        for r in out_rooms for d in r["devices"] if d["up"] is False
    ]
    return {
        "generated": now,
        "rooms": out_rooms,
        "agents": agents,
        "down": {"agents": [a for a in agents if not a["up"] and not a["standby"]], "devices": down_devices},
    }
