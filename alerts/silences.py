"""Silences (maintenance windows): label matchers with a start and an end.

A silenced alert stays visible (API, status page, ``roomwatch_alerts``) but is
not notified. Silences live in the collector's store and survive restarts;
deleting one expires it (``ends_at = now``), as Alertmanager does, so the
record of who silenced what stays.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sqlite3
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from roomwatch.alerts.matchers import Matcher, parse_matcher
from roomwatch.core.configbase import parse_duration

__all__ = ["Silence", "SilenceError", "SilenceStore", "parse_time"]

log = logging.getLogger("roomwatch.alerts")

#: Keep expired silences this long for the API's history.
KEEP_EXPIRED = 7 * 86400.0
MAX_MATCHERS = 32
#: Times a silence may name: from 2000-01-01 to 2100-01-01 (Unix seconds). Beyond, a value is a mistake
#: (milliseconds given as seconds, 1e309, year 9999), and storing it would mute alerts for millennia.
TIME_MIN, TIME_MAX = 946_684_800.0, 4_102_444_800.0
#: Default ceiling on endsAt - startsAt (alerts.silence_max_duration).
MAX_DURATION = 90 * 86400.0


class SilenceError(ValueError):
    """A silence request that cannot be accepted; the message is the 400 reason."""


@dataclass(slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float
    updated_at: float

    def state(self, now: float) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [m.to_json() for m in self.matchers],
            "matchersText": [str(m) for m in self.matchers],
            "startsAt": _iso(self.starts_at),
            "endsAt": _iso(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
            "updatedAt": _iso(self.updated_at),
            "status": {"state": self.state(now)},
        }


def _human(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    return f"{days}d" if days and not rest else f"{int(seconds)}s" if not days else f"{days}d {rest}s"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any, what: str) -> float:
    """RFC 3339 text (``2024-11-29T20:00:00+08:00``) or Unix seconds → Unix seconds, between 2000 and 2100."""
    if isinstance(value, bool):
        raise SilenceError(f"{what} must be a time")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # a JSON integer with hundreds of digits
            seconds = math.inf
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise SilenceError(f"{what}: {value[:60]!r} is not an RFC 3339 time such as 2024-11-29T20:00:00+08:00"
                               ) from None
        if parsed.tzinfo is None:
            raise SilenceError(f"{what}: {value[:60]!r} needs a time zone (e.g. +08:00 or Z)")
        try:
            seconds = parsed.timestamp()
        except (OverflowError, ValueError):
            seconds = math.inf
    else:
        raise SilenceError(f"{what} must be an RFC 3339 time or Unix seconds")
    if not math.isfinite(seconds) or not TIME_MIN <= seconds < TIME_MAX:
        hint = " (Unix seconds, not milliseconds)" if math.isfinite(seconds) and seconds > 1e11 else ""
        raise SilenceError(f"{what} must be a time between 2000-01-01 and 2100-01-01{hint}")
    return seconds


class SilenceStore:
    """Silences in memory, written through to SQLite."""

    def __init__(self, conn: sqlite3.Connection, max_duration: float = MAX_DURATION):
        self.conn = conn
        self.max_duration = max_duration
        self.items: dict[str, Silence] = {}
        for row in conn.execute("SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at, updated_at "
                                "FROM silences"):
            try:
                s = Silence(row[0], tuple(parse_matcher(m) for m in json.loads(row[1])), *row[2:])
                for t in (s.starts_at, s.ends_at, s.created_at, s.updated_at):
                    _iso(t)  # a time the list cannot show must not break it
            except (ValueError, TypeError, OverflowError, OSError) as exc:
                # Written by an older release that did not check (a silence for 55,000 years): it must not
                # break GET /api/v1/silences or mute anything. Kept in the table for whoever looks.
                log.warning("silence %s in the store is invalid (%s): ignored", row[0], exc)
                continue
            self.items[s.id] = s

    def build(self, body: Any, user: str, now: float) -> Silence:
        """Validate an API request body into a silence (not yet stored)."""
        if not isinstance(body, dict):
            raise SilenceError("body must be a JSON object")
        unknown = set(body) - {"id", "matchers", "startsAt", "endsAt", "duration", "comment", "createdBy"}
        if unknown:
            raise SilenceError(f"unknown field(s): {', '.join(sorted(unknown))}")
        raw = body.get("matchers")
        if not isinstance(raw, list) or not raw:
            raise SilenceError('matchers must be a non-empty list, e.g. ["alertname=\\"DoorOpenTooLong\\"", "room=\\"A\\""]')
        if len(raw) > MAX_MATCHERS:
            raise SilenceError(f"at most {MAX_MATCHERS} matchers")
        try:
            matchers = tuple(parse_matcher(m) for m in raw)
        except ValueError as exc:
            raise SilenceError(f"matchers: {exc}") from None
        if all(m.matches({}) for m in matchers):
            raise SilenceError("at least one matcher must not match an empty label (a silence must not cover everything)")
        comment = body.get("comment")
        if not isinstance(comment, str) or not comment.strip():
            raise SilenceError("comment is required: say why (e.g. 空调检修 / UPS battery replacement)")
        if len(comment) > 1000:
            raise SilenceError("comment is longer than 1000 characters")
        starts = parse_time(body["startsAt"], "startsAt") if body.get("startsAt") is not None else now
        if body.get("endsAt") is not None:
            if body.get("duration") is not None:
                raise SilenceError("give endsAt or duration, not both")
            ends = parse_time(body["endsAt"], "endsAt")
        elif body.get("duration") is not None:
            try:
                ends = starts + parse_duration(body["duration"])
            except ValueError as exc:
                raise SilenceError(f"duration: {exc}") from None
        else:
            raise SilenceError("endsAt (RFC 3339) or duration (e.g. 2h) is required: a maintenance window ends")
        if ends <= starts:
            raise SilenceError("endsAt must be after startsAt")
        if ends <= now:
            raise SilenceError("endsAt is in the past")
        if not math.isfinite(ends) or not ends < TIME_MAX:
            raise SilenceError("endsAt must be before 2100-01-01")
        if ends - max(starts, now) > self.max_duration:
            raise SilenceError(f"a silence may last at most {_human(self.max_duration)} "
                               "(alerts.silence_max_duration); renew it when the work takes longer")
        sid = body.get("id")
        if sid is not None and (not isinstance(sid, str) or sid not in self.items):
            raise SilenceError("id names no existing silence (leave it out to create one)")
        created_by = user or str(body.get("createdBy") or "")
        return Silence(sid or str(uuid.uuid4()), matchers, starts, ends, created_by, comment.strip(),
                       self.items[sid].created_at if sid else now, now)

    def save(self, s: Silence) -> None:
        """Insert or replace; the caller commits."""
        self.items[s.id] = s
        self.conn.execute(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET matchers=excluded.matchers, "
            "starts_at=excluded.starts_at, ends_at=excluded.ends_at, created_by=excluded.created_by, "
            "comment=excluded.comment, updated_at=excluded.updated_at",
            (s.id, json.dumps([str(m) for m in s.matchers], ensure_ascii=False), s.starts_at, s.ends_at, s.created_by,
             s.comment, s.created_at, s.updated_at))

    def expire(self, sid: str, now: float) -> Silence | None:
        s = self.items.get(sid)
        if s is None:
            return None
        if s.state(now) != "expired":
            s.ends_at = now if s.starts_at <= now else s.starts_at
            s.updated_at = now
            self.save(s)
        return s

    def silenced_by(self, labels: Mapping[str, str], now: float) -> list[str]:
        return [s.id for s in self.items.values() if s.starts_at <= now < s.ends_at and s.matches(labels)]

    def listing(self, now: float) -> list[Silence]:
        return sorted(self.items.values(), key=lambda s: (s.state(now) != "active", -s.ends_at))

    def purge(self, now: float) -> None:
        old = [s.id for s in self.items.values() if s.ends_at < now - KEEP_EXPIRED]
        for sid in old:
            del self.items[sid]
            self.conn.execute("DELETE FROM silences WHERE id = ?", (sid,))
