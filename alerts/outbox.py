"""Persistent outbox: every notification is a row before it is sent and stays until the channel answers.

One sender task per channel delivers its rows oldest first. ``retry`` outcomes
back off exponentially (``alerts.retry_initial`` doubling up to
``alerts.retry_max``, ±20 % jitter, at least the service's Retry-After);
``give_up`` ends the row as failed, ``partial`` (some recipients can never get
it) as partial. A ``retry`` may carry progress (recipients already reached): it
is stored with the row, so the next attempt, even after a restart, goes only to
those still missing; such a row, once it reached someone, does not hold back the
rows behind it while it waits (one number's SMS limit must not delay everybody's
next alerts). Each channel type's ``rate_limit`` (N, period) allows at most N
sends in any ``period`` (a sliding window, so a burst of up to N goes at once;
shared code, not per channel), and so does each of its ``more_rate_limits`` (e.g.
per hour besides per minute); a row over a limit waits in the table for the
window to free, and the windows are rebuilt from the table after a restart.
After a restart, pending rows are sent at once (within the rate limits);
delivered rows are never sent again. Just before sending, :attr:`Outbox.still_wanted` may
drop a row that has no purpose any more (a reminder, an escalation or a phone call whose
alerts were all acknowledged or resolved while it waited): it ends as ``cancelled``. A channel whose deliveries fail
for ``alerts.channel_failing_after`` (or that gave up a message) reports
``roomwatch_notification_channel_up 0``, which raises
``NotificationChannelFailing`` through the other channels.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import datetime as dt
import json
import logging
import random
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from roomwatch.channels.base import PROGRESS, AlertItem, Channel, Notification, Outcome, SendResult, remember_progress

__all__ = ["ChannelStatus", "Outbox", "notification_from_json", "notification_to_json"]

log = logging.getLogger("roomwatch.alerts.outbox")


def notification_to_json(n: Notification) -> str:
    data = asdict(n)
    for a in data["alerts"]:
        for k in ("starts_at", "ends_at"):
            if a[k] is not None:
                a[k] = a[k].timestamp()
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def notification_from_json(text: str) -> Notification:
    data = json.loads(text)
    alerts = []
    for a in data.pop("alerts"):
        for k in ("starts_at", "ends_at"):
            if a[k] is not None:
                a[k] = dt.datetime.fromtimestamp(a[k], dt.UTC)
        alerts.append(AlertItem(**a))
    return Notification(alerts=alerts, **data)


#: SQL: the row already reached some recipients and waits only for others (its progress lists who got it).
_REMAINDER = f"coalesce(json_array_length(payload, '$.extra.{PROGRESS}.reached'), 0) > 0"


def _windows(channel: Channel) -> list[tuple[int, float]]:
    """Every (messages, per seconds) window the channel keeps to: its ``rate_limit`` and ``more_rate_limits``."""
    first: Any = getattr(channel, "rate_limit", None)
    more: Any = getattr(channel, "more_rate_limits", ())
    return ([first] if first else []) + list(more or ())


def _reached_some(progress: Any) -> bool:
    """A channel's progress says the notification already reached some recipients."""
    return isinstance(progress, dict) and bool(progress.get("reached"))


@dataclass
class ChannelStatus:
    """Delivery health of one channel, for metrics and NotificationChannelFailing."""

    delivered: int = 0
    partial: int = 0  # delivered, but some recipients can never get it (see the channel's log)
    retried: int = 0
    given_up: int = 0
    expired: int = 0
    cancelled: int = 0  # dropped unsent: its alerts were acknowledged or resolved while it waited
    failing_since: float | None = None  # first failure of the current streak
    gave_up_last: bool = False
    last_error: str = ""
    last_delivered_at: float | None = None
    #: when the channel sent, oldest first, as far back as its longest rate window
    sent_times: collections.deque[float] = field(default_factory=collections.deque)

    def up(self, now: float, failing_after: float) -> bool:
        if self.gave_up_last:
            return False
        return self.failing_since is None or now - self.failing_since < failing_after


class Outbox:
    """Queue rows in the caller's transaction (:meth:`enqueue`); deliver them in background tasks."""

    def __init__(self, conn: sqlite3.Connection, channels: dict[str, Channel], clock: Callable[[], float],
                 retry_initial: float = 1.0, retry_max: float = 300.0, max_age: float = 86400.0,
                 failing_after: float = 60.0, send_timeout_margin: float = 5.0):
        self.conn = conn
        self.channels = channels
        self.clock = clock
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.max_age = max_age
        self.failing_after = failing_after
        self.margin = send_timeout_margin
        self.status: dict[str, ChannelStatus] = {name: ChannelStatus() for name in channels}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: Per channel: its sender waits (nothing to send now), and how many times it went to wait. Tests wait
        #: on these — "the sender looked and sent nothing" — instead of sleeping.
        self.parked: dict[str, bool] = dict.fromkeys(channels, False)
        self.waits: dict[str, int] = dict.fromkeys(channels, 0)
        self.on_result: Callable[[str, SendResult], None] | None = None
        #: (channel, notification) → a reason to drop it unsent now, or None to send it
        self.still_wanted: Callable[[str, Notification], str | None] = lambda _name, _n: None

    # -- queueing ---------------------------------------------------------------------
    def enqueue(self, channel: str, n: Notification, now: float) -> int:
        """Insert a row (inside the caller's transaction); :meth:`wake` after the commit."""
        cur = self.conn.execute("INSERT INTO outbox (channel, group_key, reason, created_at, payload, next_attempt_at) "
                                "VALUES (?, ?, ?, ?, ?, ?)", (channel, n.group_key, n.reason, now,
                                                              notification_to_json(n), now))
        return int(cur.lastrowid or 0)

    def wake(self, channel: str | None = None) -> None:
        for name, ev in self._wake.items():
            if channel is None or name == channel:
                ev.set()

    def pending(self) -> dict[str, int]:
        out = dict.fromkeys(self.channels, 0)
        for name, n in self.conn.execute("SELECT channel, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY channel"):
            out[name] = n
        return out

    # -- delivery -------------------------------------------------------------------
    async def start(self) -> None:
        # A restart is a good moment to retry: whatever waited for a backoff goes now.
        self.conn.execute("UPDATE outbox SET next_attempt_at = ? WHERE state = 'pending'", (self.clock(),))
        orphans = self.conn.execute("SELECT DISTINCT channel FROM outbox WHERE state = 'pending'").fetchall()
        for (name,) in orphans:
            if name not in self.channels:
                log.warning("notifications queued for channel %r wait: no such channel in the config now", name)
        for name in self.channels:
            self._seed_window(name)
            self._wake[name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(name), name=f"outbox-{name}"))

    def _seed_window(self, name: str) -> None:
        """Sends of the current rate window, from the table: a restart must not reopen a daily SMS quota."""
        windows = _windows(self.channels[name])
        if not windows:
            return
        # The newest sends of the longest window include the newest of every shorter one.
        count, per = max(c for c, _ in windows), max(p for _, p in windows)
        rows = self.conn.execute("SELECT done_at FROM outbox WHERE channel = ? "
                                 "AND state IN ('delivered', 'partial', 'failed') "
                                 "AND attempts > 0 AND done_at >= ? ORDER BY done_at DESC LIMIT ?",
                                 (name, self.clock() - per, count)).fetchall()
        times = self.status[name].sent_times
        times.clear()
        times.extend(sorted(r[0] for r in rows))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for ch in self.channels.values():
            try:
                await ch.close()
            except Exception:
                log.exception("closing channel %s failed", ch.name)

    async def _run(self, name: str) -> None:
        wake = self._wake[name]
        while True:
            try:
                delay = await self._deliver_next(name)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop deliveries for good
                log.exception("outbox for channel %s failed; retrying in 5s", name)
                delay = 5.0
            if delay == 0:
                continue
            wake.clear()
            self.waits[name] += 1
            self.parked[name] = True
            try:
                await asyncio.wait_for(wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            finally:
                self.parked[name] = False

    async def _deliver_next(self, name: str) -> float:
        """Send the oldest pending row of ``name``; return how long to wait before the next (0 = go on).

        Rows are sent in order, and one waiting for its retry holds back the rows behind it (the
        service is failing: they would fail too, and a resolved message must not overtake its
        firing one) — except a row that already reached some recipients and waits only for others.
        """
        now = self.clock()
        row = self.conn.execute("SELECT id, payload, attempts, next_attempt_at, created_at FROM outbox "
                                f"WHERE channel = ? AND state = 'pending' AND (next_attempt_at <= ? OR NOT {_REMAINDER}) "
                                "ORDER BY id LIMIT 1", (name, now)).fetchone()
        if row is None or row[3] > now:
            # Nothing to send yet: wake for the head row's retry or a waiting remainder's, whichever comes first.
            wakes = [row[3]] if row is not None else []
            later = self.conn.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE channel = ? AND state = 'pending' "
                                      f"AND next_attempt_at > ? AND {_REMAINDER}", (name, now)).fetchone()[0]
            if later is not None:
                wakes.append(later)
            return min(wakes) - now if wakes else 3600.0
        row_id, payload, attempts, created = row[0], row[1], row[2], row[4]
        status = self.status[name]
        if now - created > self.max_age:
            log.error("channel %s: giving up a notification queued %.0fs ago (alerts.max_age)", name, now - created)
            status.expired += 1
            self._finish(row_id, "expired", f"not delivered within max_age after {attempts} attempts", now)
            return 0
        wait = self._rate_wait(name, now)
        if wait > 0:
            return wait
        channel = self.channels[name]
        notification = notification_from_json(payload)
        drop = self.still_wanted(name, notification)
        if drop:
            status.cancelled += 1
            log.info("channel %s: a queued %s message is not sent: %s", name, notification.reason, drop)
            self._finish(row_id, "cancelled", drop, now, attempts)
            return 0
        was_remainder = _reached_some(notification.extra.get(PROGRESS))
        result = await self._send(channel, notification)
        now = self.clock()
        if _windows(channel):
            status.sent_times.append(now)
        attempts += 1
        if result.outcome in (Outcome.DELIVERED, Outcome.PARTIAL):
            # The channel works: a recipient it can never reach is a configuration matter, logged by the
            # channel once and counted here as partial, not a failing channel.
            if result.outcome is Outcome.PARTIAL:
                status.partial += 1
            else:
                status.delivered += 1
            status.failing_since, status.gave_up_last, status.last_delivered_at = None, False, now
            if attempts > 1:
                log.info("channel %s: %s after %d attempts", name, result.outcome.value, attempts)
            self._finish(row_id, result.outcome.value, result.detail, now, attempts)
        elif result.outcome is Outcome.RETRY:
            status.retried += 1
            if _reached_some(result.progress):
                # Some recipients have it, others wait for their own limit: the channel works, so this is
                # not a failure streak (NotificationChannelFailing would be a false alarm).
                if not was_remainder:
                    log.info("channel %s: delivered to some recipients, will retry the others: %s", name, result.detail)
            else:
                if status.failing_since is None:
                    status.failing_since = now
                    log.warning("channel %s: delivery failed, will retry: %s", name, result.detail)
                status.last_error = result.detail
            backoff = min(self.retry_max, self.retry_initial * 2 ** min(attempts - 1, 30)) * random.uniform(0.8, 1.2)
            if result.retry_after:
                backoff = max(backoff, min(result.retry_after, self.retry_max))
            if remember_progress(notification, result):
                payload = notification_to_json(notification)
            self.conn.execute("UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?, payload = ? "
                              "WHERE id = ?", (attempts, now + backoff, result.detail[:1000], payload, row_id))
        else:
            status.given_up += 1
            status.gave_up_last = True
            status.last_error = result.detail
            if status.failing_since is None:
                status.failing_since = now
            log.error("channel %s: the service refused a notification, giving it up: %s", name, result.detail)
            self._finish(row_id, "failed", result.detail, now, attempts)
        if self.on_result is not None:
            self.on_result(name, result)
        return 0

    async def _send(self, channel: Channel, n: Notification) -> SendResult:
        # A backstop against a hung channel only: each channel bounds its own requests (a modem
        # sending a 4-part SMS may legitimately take minutes: send_timeout per part).
        longest = max(float(getattr(channel.config, "timeout", 10.0)), float(getattr(channel.config, "send_timeout", 0.0)))
        timeout = max(30.0, 10 * longest) + self.margin
        try:
            return await asyncio.wait_for(channel.send(n), timeout)
        except TimeoutError:
            return SendResult(Outcome.RETRY, f"no result within {timeout:g}s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a channel bug: keep the row, say what happened
            log.exception("channel %s raised while sending", channel.name)
            return SendResult(Outcome.RETRY, f"channel error: {type(exc).__name__}: {exc}")

    def hand_over(self, from_channel: str, to_channel: str, group_prefix: str,
                  person: dict[str, str] | None = None) -> int:
        """Move the pending rows of ``from_channel`` whose group key starts with ``group_prefix`` to ``to_channel``
        (route failover; inside the caller's transaction, then :meth:`wake` ``to_channel``). Returns how many."""
        rows = self.conn.execute("SELECT id, payload FROM outbox WHERE channel = ? AND state = 'pending' AND "
                                 "substr(group_key, 1, ?) = ?", (from_channel, len(group_prefix), group_prefix)).fetchall()
        for row_id, payload in rows:
            n = notification_from_json(payload)
            n.receiver = to_channel
            n.extra.pop(PROGRESS, None)  # the new channel has its own recipients
            n.extra.pop("person", None)
            if person is not None:
                n.extra["person"] = person
            self.conn.execute("UPDATE outbox SET channel = ?, payload = ?, attempts = 0, next_attempt_at = ? WHERE id = ?",
                              (to_channel, notification_to_json(n), self.clock(), row_id))
        return len(rows)

    def _rate_wait(self, name: str, now: float) -> float:
        """Seconds until one more send fits every rate window of the channel (0: now)."""
        windows = _windows(self.channels[name])
        if not windows:
            return 0.0
        times = self.status[name].sent_times
        longest = max(per for _, per in windows)
        while times and now - times[0] >= longest:
            times.popleft()
        wait = 0.0
        for count, per in windows:
            inside = len(times) - bisect.bisect_right(times, now - per)  # sends less than `per` ago
            if inside >= count:  # full until the count-th newest send leaves this window
                wait = max(wait, per - (now - times[-count]) + 0.001)
        return wait

    def _finish(self, row_id: int, state: str, detail: str, now: float, attempts: int | None = None) -> None:
        if attempts is None:
            self.conn.execute("UPDATE outbox SET state = ?, last_error = ?, done_at = ? WHERE id = ?",
                              (state, detail[:1000], now, row_id))
        else:
            self.conn.execute("UPDATE outbox SET state = ?, last_error = ?, done_at = ?, attempts = ? WHERE id = ?",
                              (state, detail[:1000], now, attempts, row_id))
