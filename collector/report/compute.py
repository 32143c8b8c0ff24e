"""The report's figures, computed from stored series and alert episodes (pure: no I/O, no clock).

A sample's value holds until the next sample of its series. Measured quantities
(temperature, humidity) hold at most :data:`MAX_HOLD` — a silent sensor is not a
steady room — while states (door, on battery, device up) hold until the next
sample: sensors that report only on change (a Zigbee door contact) are normal.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from roomwatch.collector.report.config import ReportConfig, ReportLimits, parse_hhmm
from roomwatch.collector.report.sources import AlertSource, Episode, HistorySource, SeriesData
from roomwatch.core import vocabulary as v

__all__ = ["MAX_HOLD", "Report", "RoomReport", "compute_report", "report_window"]

#: Measured battery health below this asks for a new battery (UPSBatteryReplace's default; IEEE 1188: 80 %).
HEALTH_REPLACE_BELOW = 0.8
#: A temperature/humidity sample stands for at most this long (3 missed 5-minute polls are an outage, not data).
MAX_HOLD = 15 * 60.0

Segment = tuple[float, float, float]  # (from, to, value)


def report_window(cfg: ReportConfig, day: dt.date | None = None, now: float | None = None) -> tuple[float, float]:
    """The 24 hours ending at ``report.time`` on ``day`` (local), or the latest such window ending before ``now``."""
    tz = cfg.zone()
    hh, mm = parse_hhmm(cfg.time)
    if day is None:
        moment = dt.datetime.fromtimestamp(now if now is not None else time.time(), tz)
        end_dt = moment.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if end_dt > moment:
            end_dt -= dt.timedelta(days=1)
    else:
        end_dt = dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=tz)
    start_dt = end_dt - dt.timedelta(days=1)
    return start_dt.timestamp(), end_dt.timestamp()


def hold_segments(samples: list[tuple[float, float]], start: float, end: float,
                  max_hold: float | None = None) -> list[Segment]:
    """Where each sample's value held inside [start, end)."""
    segs: list[Segment] = []
    for i, (ts, value) in enumerate(samples):
        nxt = samples[i + 1][0] if i + 1 < len(samples) else end
        t0, t1 = max(ts, start), min(nxt, end)
        if max_hold is not None:
            t1 = min(t1, ts + max_hold)
        if t1 > t0:
            segs.append((t0, t1, value))
    return segs


def true_intervals(samples: list[tuple[float, float]], start: float, end: float) -> list[tuple[float, float, bool]]:
    """Intervals where a 0/1 state was 1, clipped to the window: (from, to, began inside the window)."""
    out: list[tuple[float, float, bool]] = []
    began: float | None = None
    inside = False
    for ts, value in samples:
        on = value >= 0.5
        if on and began is None:
            began, inside = ts, ts >= start
        elif not on and began is not None:
            if ts > start:
                out.append((max(began, start), min(ts, end), inside))
            began = None
    if began is not None and began < end:
        out.append((max(began, start), end, inside))
    return [i for i in out if i[1] > i[0] or i[2]]


@dataclass
class SensorStats:
    kind: str  # temperature | humidity
    agent: str
    device: str
    sensor: str
    min: float
    avg: float
    max: float
    seconds_outside: float  # above temperature_high / outside humidity range
    seconds_critical: float = 0.0  # above temperature_critical (temperature only)
    samples: int = 0


@dataclass
class DoorStats:
    agent: str
    device: str
    openings: int
    longest_seconds: float
    open_seconds: float
    out_of_hours: int
    out_of_hours_times: list[float] = field(default_factory=list)
    open_at_end: bool = False


@dataclass
class UPSStats:
    agent: str
    device: str
    on_battery_count: int = 0
    on_battery_seconds: float = 0.0
    longest_on_battery_seconds: float = 0.0
    lowest_charge: float | None = None
    lowest_runtime_seconds: float | None = None
    battery_low_count: int = 0
    battery_age_seconds: float | None = None
    replace_reported: bool = False
    replace_due: bool = False
    health_ratio: float | None = None  # measured ÷ predicted runtime in the last measured outage
    measured_runtime_seconds: float | None = None
    last_self_test: float | None = None  # unix time the agent last ran a self-test
    self_test_failed: bool | None = None


@dataclass
class DownStats:
    agent: str
    device: str  # "" for a whole agent
    episodes: int
    seconds: float
    down_at_end: bool = False


@dataclass
class AlertStats:
    raised: int = 0
    by_name: dict[str, int] = field(default_factory=dict)
    critical: int = 0
    acknowledged: int = 0
    unacknowledged: int = 0
    ack_median_seconds: float | None = None
    ack_max_seconds: float | None = None


@dataclass
class RoomReport:
    site: str
    room: str
    agents: list[str] = field(default_factory=list)
    temperature: list[SensorStats] = field(default_factory=list)
    humidity: list[SensorStats] = field(default_factory=list)
    doors: list[DoorStats] = field(default_factory=list)
    ups: list[UPSStats] = field(default_factory=list)
    devices_down: list[DownStats] = field(default_factory=list)
    agents_down: list[DownStats] = field(default_factory=list)
    alerts: AlertStats = field(default_factory=AlertStats)


@dataclass
class Report:
    start: float
    end: float
    timezone: str
    title: str
    rooms: list[RoomReport]
    history_available: bool
    alerts_available: bool
    thresholds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Rooms:
    """Rooms by (site, room), plus which room each agent is in."""

    def __init__(self) -> None:
        self.rooms: dict[tuple[str, str], RoomReport] = {}
        self.agent_room: dict[str, tuple[str, str]] = {}

    def of(self, labels: dict[str, str]) -> RoomReport:
        key = (labels.get("site", ""), labels.get("room", ""))
        if key == ("", "") and labels.get("agent") in self.agent_room:
            key = self.agent_room[labels["agent"]]
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = RoomReport(*key)
        agent = labels.get("agent")
        if agent:
            self.agent_room.setdefault(agent, key)
            if agent not in room.agents:
                room.agents.append(agent)
        return room


def _inside(samples: Iterable[tuple[float, float]], start: float, end: float) -> list[float]:
    return [val for ts, val in samples if start <= ts < end]


def _sensor(kind: str, s: SeriesData, start: float, end: float, th: ReportLimits) -> SensorStats | None:
    values = _inside(s.samples, start, end)
    if not values:
        return None
    segs = hold_segments(s.samples, start, end, MAX_HOLD)
    covered = sum(t1 - t0 for t0, t1, _ in segs)
    avg = sum((t1 - t0) * val for t0, t1, val in segs) / covered if covered else statistics.fmean(values)
    if kind == "temperature":
        outside = sum(t1 - t0 for t0, t1, val in segs if val > th.temperature_high)
        critical = sum(t1 - t0 for t0, t1, val in segs if val > th.temperature_critical)
    else:
        outside = sum(t1 - t0 for t0, t1, val in segs if val < th.humidity_low or val > th.humidity_high)
        critical = 0.0
    lab = s.labels
    return SensorStats(kind, lab.get("agent", ""), lab.get("device", ""), lab.get("sensor", ""), min(values),
                       round(avg, 3), max(values), outside, critical, len(values))


def compute_report(history: HistorySource, alerts: AlertSource | None, cfg: ReportConfig,
                   start: float, end: float, rules: Any = None) -> Report:
    """Figures per room for the window [start, end); working hours and limits from ``rules`` (a RulesConfig).

    The steps run in this order (a room is first named by the series read first, and an agent's
    room by its first labelled series): sensors, doors, UPS, devices down, alerts.
    """
    limits = cfg.limits(rules)
    rooms = _Rooms()
    _add_sensors(rooms, history, start, end, limits)
    _add_doors(rooms, history, start, end, limits)
    _add_ups(rooms, history, start, end, limits)
    _add_devices_down(rooms, history, start, end)
    episodes: list[Episode] = alerts.episodes(start, end) if alerts is not None else []
    _add_alerts(rooms, episodes, start, end)
    _sort(rooms)
    th = limits
    title = cfg.title or "、".join(sorted({r.site for r in rooms.rooms.values() if r.site}))
    return Report(start, end, cfg.timezone, title, [rooms.rooms[k] for k in sorted(rooms.rooms)],
                  history.available, bool(alerts is not None and alerts.alerts_available),
                  {"temperature_high": th.temperature_high, "temperature_critical": th.temperature_critical,
                   "humidity_low": th.humidity_low, "humidity_high": th.humidity_high,
                   "battery_max_age_seconds": th.battery_max_age})


def _add_sensors(rooms: _Rooms, history: HistorySource, start: float, end: float, limits: ReportLimits) -> None:
    """Temperature and humidity: min/avg/max and the time outside the limits, per sensor."""
    for kind, metric in (("temperature", v.TEMPERATURE), ("humidity", v.HUMIDITY)):
        for s in history.series(metric, start, end):
            stats = _sensor(kind, s, start, end, limits)
            if stats is not None:
                room = rooms.of(s.labels)
                (room.temperature if kind == "temperature" else room.humidity).append(stats)


def _add_doors(rooms: _Rooms, history: HistorySource, start: float, end: float, limits: ReportLimits) -> None:
    """Openings, longest and total open time, openings outside working hours, per door."""
    for s in history.series(v.DOOR_OPEN, start, end):
        spans = true_intervals(s.samples, start, end)
        openings = [t0 for t0, _, began_inside in spans if began_inside]
        ooh = [t for t in openings if not limits.hours.contains(t)]
        if not spans and not _inside(s.samples, start, end):
            continue
        rooms.of(s.labels).doors.append(DoorStats(
            s.labels.get("agent", ""), s.labels.get("device", ""), len(openings),
            max((t1 - t0 for t0, t1, _ in spans), default=0.0), sum(t1 - t0 for t0, t1, _ in spans),
            len(ooh), ooh, bool(s.samples) and s.samples[-1][1] >= 0.5))


def _add_ups(rooms: _Rooms, history: HistorySource, start: float, end: float, limits: ReportLimits) -> None:
    """Per UPS: time on battery, lowest charge and runtime, battery low, replacement due."""
    ups: dict[tuple[str, str], UPSStats] = {}

    def ups_of(s: SeriesData) -> UPSStats:
        key = (s.labels.get("agent", ""), s.labels.get("device", ""))
        if key not in ups:
            ups[key] = UPSStats(*key)
            rooms.of(s.labels).ups.append(ups[key])
        return ups[key]

    for s in history.series(v.UPS_ON_BATTERY, start, end):
        u = ups_of(s)
        spans = true_intervals(s.samples, start, end)
        u.on_battery_count += sum(1 for *_, inside in spans if inside)
        u.on_battery_seconds += sum(t1 - t0 for t0, t1, _ in spans)
        u.longest_on_battery_seconds = max([u.longest_on_battery_seconds, *(t1 - t0 for t0, t1, _ in spans)])
    for s in history.series(v.UPS_BATTERY_CHARGE, start, end):
        if vals := _inside(s.samples, start, end):
            u = ups_of(s)
            u.lowest_charge = min(vals) if u.lowest_charge is None else min(u.lowest_charge, *vals)
    for s in history.series(v.UPS_BATTERY_RUNTIME, start, end):
        if vals := _inside(s.samples, start, end):
            u = ups_of(s)
            low = min(vals)
            u.lowest_runtime_seconds = low if u.lowest_runtime_seconds is None else min(u.lowest_runtime_seconds, low)
    for s in history.series(v.UPS_BATTERY_LOW, start, end):
        ups_of(s).battery_low_count += sum(1 for *_, inside in true_intervals(s.samples, start, end) if inside)
    for s in history.series(v.UPS_BATTERY_REPLACE, start, end):
        if any(val >= 0.5 for val in _inside(s.samples, start, end)):
            ups_of(s).replace_reported = True
    for metric, name in ((v.UPS_BATTERY_AGE, "battery_age_seconds"), (v.UPS_BATTERY_HEALTH, "health_ratio"),
                         (v.UPS_MEASURED_RUNTIME, "measured_runtime_seconds"), (v.UPS_LAST_SELF_TEST, "last_self_test"),
                         (v.UPS_SELF_TEST_FAILED, "self_test_failed")):
        for s in history.series(metric, start, end):
            last = [val for ts, val in s.samples if ts < end]
            if last:
                setattr(ups_of(s), name, last[-1] >= 0.5 if name == "self_test_failed" else last[-1])
    for u in ups.values():
        u.replace_due = (u.replace_reported or (u.battery_age_seconds or 0) > limits.battery_max_age
                         or bool(u.self_test_failed)
                         or (u.health_ratio is not None and u.health_ratio < HEALTH_REPLACE_BELOW))


def _add_devices_down(rooms: _Rooms, history: HistorySource, start: float, end: float) -> None:
    """Per device: how often and how long it was down (``roomwatch_device_up`` 0)."""
    for s in history.series(v.DEVICE_UP, start, end):
        if "device" not in s.labels:
            continue
        down = [(s_, 1 - val) for s_, val in s.samples]  # the 0/1 state "down"
        spans = true_intervals(down, start, end)
        if spans:
            rooms.of(s.labels).devices_down.append(DownStats(
                s.labels.get("agent", ""), s.labels["device"], sum(1 for *_, inside in spans if inside),
                sum(t1 - t0 for t0, t1, _ in spans), s.samples[-1][1] < 0.5))
        else:
            rooms.of(s.labels)  # the room exists even when all went well


def _add_alerts(rooms: _Rooms, episodes: list[Episode], start: float, end: float) -> None:
    """Agents down (from AgentDown episodes) and the alerts raised and acknowledged, per room."""
    per_room: dict[tuple[str, str], list[Episode]] = {}
    for e in episodes:
        room = rooms.of(e.labels)
        per_room.setdefault((room.site, room.room), []).append(e)
        if e.alertname == "AgentDown" and e.fired_at is not None:
            t1 = min(e.resolved_at or end, end)
            still = e.resolved_at is None or e.resolved_at > end
            room.agents_down.append(DownStats(e.labels.get("agent", ""), "", 1 if e.fired_at >= start else 0,
                                              max(0.0, t1 - max(e.fired_at, start)), still))
    for key, eps in per_room.items():
        _alert_stats(rooms.rooms[key].alerts, eps, start, end)


def _alert_stats(stats: AlertStats, episodes: list[Episode], start: float, end: float) -> None:
    """Count the episodes raised in the window by name and severity, and how fast they were acknowledged."""
    raised = [e for e in episodes if e.fired_at is not None and start <= e.fired_at < end]
    delays = [e.ack_at - e.fired_at for e in raised if e.ack_at is not None and e.fired_at is not None]
    stats.raised = len(raised)
    for e in raised:
        stats.by_name[e.alertname] = stats.by_name.get(e.alertname, 0) + 1
    stats.critical = sum(1 for e in raised if e.severity == "critical")
    stats.acknowledged = len(delays)
    stats.unacknowledged = len(raised) - len(delays)
    stats.ack_median_seconds = statistics.median(delays) if delays else None
    stats.ack_max_seconds = max(delays) if delays else None


def _sort(rooms: _Rooms) -> None:
    """Stable order inside each room: by agent, device, sensor."""
    for room in rooms.rooms.values():
        room.agents.sort()
        for lst in (room.temperature, room.humidity):
            lst.sort(key=lambda x: (x.agent, x.device, x.sensor))
        room.doors.sort(key=lambda x: (x.agent, x.device))
        room.ups.sort(key=lambda x: (x.agent, x.device))
        room.devices_down.sort(key=lambda x: (x.agent, x.device))
