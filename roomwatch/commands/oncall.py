"""``roomwatch oncall -c FILE [--at TIME]``: who is on duty for every route and level, and the next handover.

For each route (in order) and each of its levels, every target is listed: a plain channel
with its own recipients, or ``oncall:ROTA`` with the person on duty at ``--at`` (default:
now), how they are reached, why (the rotation, an off-day rotation, an override) and until
when; then each rota's next handovers. Times are read and written in ``rules.timezone``.
Exit codes: 0, 2 for a bad file or time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["add_arguments", "run", "schedule_lines"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="collector YAML file")
    p.add_argument("--at", metavar="TIME", help='a local time, e.g. "2025-10-01 03:00" (default: now)')
    p.add_argument("--handovers", type=int, default=3, metavar="N", help="next handovers to list per rota (default 3)")


def _when(text: str | None, tz: ZoneInfo) -> float:
    if not text:
        return time.time()
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f'--at {text!r}: write a local time such as "2025-10-01 03:00"') from None
    return (value if value.tzinfo else value.replace(tzinfo=tz)).timestamp()


def _fmt(ts: float, tz: ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M %a")


def _recipients(ch: Any) -> str:
    for key in ("phone_numbers", "to", "at_mobiles"):
        value = getattr(ch, key, None)
        if value:
            return ", ".join(map(str, value))
    for key in ("to_user", "url", "urls"):
        value = getattr(ch, key, None)
        if value:
            return str(value) if not isinstance(value, list) else ", ".join(value)
    return ""


def schedule_lines(cfg: Any, at: float, handovers: int = 3) -> list[str]:
    """The report as lines (also used by tests)."""
    from roomwatch.alerts.rota import ONCALL_PREFIX, build_rotas, person_ids
    from roomwatch.alerts.timewindow import WorkingHours

    tz = ZoneInfo(cfg.rules.timezone)
    hours = WorkingHours.from_config(cfg.rules.working_hours, cfg.rules.timezone)
    rotas = build_rotas(cfg.oncall, cfg.rules.timezone, hours)
    channels = {c.name: c for c in cfg.channels}
    lines = [f"on duty at {_fmt(at, tz)} ({cfg.rules.timezone})"]

    def target(name: str) -> str:
        if name.startswith(ONCALL_PREFIX):
            rota = rotas.get(name[len(ONCALL_PREFIX):])
            if rota is None:
                return f"{name}: no such rota"
            shift = rota.at(at)
            p = cfg.oncall.person(shift.person)
            ids = person_ids(p) if p is not None else {"name": shift.person}
            reach = ", ".join(f"{k} {v}" for k, v in ids.items() if k != "name")
            return (f"{name}: {shift.person} ({shift.source}, until {_fmt(shift.end, tz)})"
                    f" via {', '.join(rota.cfg.channels)}" + (f" [{reach}]" if reach else ""))
        ch = channels.get(name)
        who = _recipients(ch) if ch is not None else "no such channel"
        if ch is None:
            return f"{name}: {who}"
        return f"{name} ({ch.type}: {who})" if who else f"{name} ({ch.type})"

    if not cfg.routes:
        lines.append("no routes: alerts are sent nowhere")
    for i, r in enumerate(cfg.routes):
        match = " ".join([*(f'{k}="{v}"' for k, v in r.match.items()), *r.matchers]) or "every alert"
        mute = (f"; muted during {', '.join(r.mute_time_intervals)}" if r.mute_time_intervals else "") + (
            f"; only during {', '.join(r.active_time_intervals)}" if r.active_time_intervals else "")
        lines.append(f"route {i}: {match}{mute}")
        lines.append("  level 0 (at once): " + "; ".join(target(t) for t in r.channels))
        for k, lv in enumerate(r.levels, 1):
            after = f"{lv.after / 60:g} min" if lv.after < 3600 else f"{lv.after / 3600:g} h"
            lines.append(f"  level {k} (not acknowledged within {after}): " + "; ".join(target(t) for t in lv.channels))
    for name, rota in rotas.items():
        lines.append(f"rota {name} ({rota.cfg.rotation}, handover {rota.cfg.handover:%H:%M} {rota.tz.key}):")
        t = at
        for _ in range(max(0, handovers)):
            when, nxt = rota.next_handover(t)
            lines.append(f"  next handover {_fmt(when, tz)}: {nxt.person} ({nxt.source}, until {_fmt(nxt.end, tz)})")
            t = when
    return lines


def run(args: argparse.Namespace) -> int:
    from roomwatch.collector.config import load_collector_config
    from roomwatch.core.configbase import ConfigError

    try:
        cfg = load_collector_config(args.config)
        at = _when(args.at, ZoneInfo(cfg.rules.timezone))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("\n".join(schedule_lines(cfg, at, args.handovers)))
    return 0
