"""The alert path watches itself: a daily "all quiet" message, and heartbeats sent out.

``heartbeat:`` in the collector file:

* ``daily`` — at ``time`` every day, one line through the chosen channels: "一切正常：3 个机房，0 条告警"
  (or the alerts still open). It goes through the outbox like any alert message, once a day
  (table ``heartbeat_log``; a collector restarted up to 6 hours after the time still sends
  that day's). When the message does not come, something on the way is broken.
* ``ping`` — every ``interval`` a request to a dead-man service (healthchecks.io, Uptime
  Kuma push monitors, a Cronitor heartbeat, an Alertmanager-fed Watchdog receiver …): it
  raises its own alarm when the pings stop.
* ``collector`` — every ``interval`` an empty push to a second roomwatch collector, as an agent
  of that collector (``agents: [{id: <agent_id>, token_hash: …, role: collector}]`` there):
  when this collector dies, that one raises ``CollectorDown`` for it (docs/alerting.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field

from roomwatch.alerts.config import Clock
from roomwatch.core.configbase import Duration, Model, Secret, TimeZoneName
from roomwatch.core.wire import PUSH_PATH, Batch, encode_batch

__all__ = ["CATCH_UP", "DailyHeartbeat", "HeartbeatConfig", "Pinger", "daily_due", "daily_text"]

log = logging.getLogger("roomwatch.alerts.heartbeat")

#: A daily message whose time passed less than this long ago is still sent after a restart.
CATCH_UP = 6 * 3600.0


class DailyHeartbeat(Model):
    """The daily message: when, and through which channels."""

    time: Clock = dt.time(9, 0)
    channels: list[str] = Field(min_length=1)
    timezone: TimeZoneName | None = Field(default=None, description="default rules.timezone")


class PingConfig(Model):
    """A dead-man service's URL, requested every ``interval``."""

    url: str = Field(pattern=r"^https?://")
    interval: Duration = Field(default=300.0, ge=10)
    method: Literal["GET", "POST", "HEAD"] = "GET"
    timeout: Duration = Field(default=10.0, gt=0)
    bearer_token: Secret | None = None


class CollectorPushConfig(Model):
    """A second collector this one pushes to as its agent ``agent_id`` (empty batches: a heartbeat)."""

    url: str = Field(pattern=r"^https?://", description="the second collector's address, e.g. http://10.1.2.4:9640")
    agent_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
    token: Secret
    interval: Duration = Field(default=30.0, ge=5)
    timeout: Duration = Field(default=10.0, gt=0)


class HeartbeatConfig(Model):
    """``heartbeat:`` — see the module docstring."""

    daily: DailyHeartbeat | None = None
    ping: PingConfig | None = None
    collector: CollectorPushConfig | None = None


def daily_due(cfg: DailyHeartbeat, tz: str, now: float, sent: Callable[[str], bool]) -> str | None:
    """The day (``YYYY-MM-DD``) whose message is due at ``now``, or None (not yet, sent, or too late)."""
    zone = ZoneInfo(cfg.timezone or tz)
    local = dt.datetime.fromtimestamp(now, zone)
    at = dt.datetime.combine(local.date(), cfg.time, zone).timestamp()
    day = local.date().isoformat()
    if now < at or now - at > CATCH_UP or sent(day):
        return None
    return day


def daily_text(lang: str, rooms: int, agents: int, agents_down: int, firing: list[str]) -> tuple[str, str]:
    """(title, text) of the daily message."""
    if lang == "en":
        title = "[Heartbeat] roomwatch: all quiet" if not firing and not agents_down else "[Heartbeat] roomwatch running"
        text = f"{rooms} room{'s' if rooms != 1 else ''}, {len(firing)} alert{'s' if len(firing) != 1 else ''}"
        text += f", {agents - agents_down}/{agents} agents pushing" if agents else ""
        if firing:
            text += ": " + "; ".join(firing[:5]) + (f" and {len(firing) - 5} more" if len(firing) > 5 else "")
        return title, f"{title}: {text}."
    title = "【平安报】roomwatch 一切正常" if not firing and not agents_down else "【值守报】roomwatch 运行中"
    text = f"{rooms} 个机房，{len(firing)} 条告警"
    text += f"，代理 {agents - agents_down}/{agents} 在线" if agents else ""
    if firing:
        text += "：" + "；".join(firing[:5]) + (f" 等 {len(firing)} 条" if len(firing) > 5 else "")
    return title, f"{title}：{text}。"


class Pinger:
    """Sends the outbound heartbeats (``ping``, ``collector``) while the collector runs."""

    def __init__(self, cfg: HeartbeatConfig):
        self.cfg = cfg
        self.results: dict[tuple[str, str], int] = {}  # (kind, ok|failed) → count
        self.last_ok: dict[str, float] = {}
        self._failing: dict[str, bool] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: Any = None

    async def _session_get(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "roomwatch"}, trust_env=True)
        return self._session

    def _note(self, kind: str, ok: bool, detail: str) -> None:
        self.results[(kind, "ok" if ok else "failed")] = self.results.get((kind, "ok" if ok else "failed"), 0) + 1
        if ok:
            self.last_ok[kind] = time.time()
            if self._failing.get(kind):
                log.info("heartbeat %s works again", kind)
        elif not self._failing.get(kind):
            log.warning("heartbeat %s failed: %s (logged again when it works)", kind, detail)
        self._failing[kind] = not ok

    async def ping_once(self) -> bool:
        """One request to the dead-man URL; True on 2xx."""
        import aiohttp

        p = self.cfg.ping
        assert p is not None
        headers = {"Authorization": f"Bearer {p.bearer_token.get_secret_value()}"} if p.bearer_token else {}
        session = await self._session_get()
        try:
            async with session.request(p.method, p.url, headers=headers, timeout=aiohttp.ClientTimeout(total=p.timeout)) as r:
                await r.content.read(4096)
                ok, detail = bool(200 <= r.status < 300), f"HTTP {r.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self._note("ping", ok, detail)
        return ok

    async def push_once(self) -> bool:
        """One empty push to the second collector as its agent; True on 200."""
        import aiohttp

        c = self.cfg.collector
        assert c is not None
        now_ms = int(time.time() * 1000)
        body = encode_batch(Batch(c.agent_id, now_ms, [], [], now_ms), compress=False)
        headers = {"Authorization": f"Bearer {c.token.get_secret_value()}", "Content-Type": "application/json"}
        session = await self._session_get()
        try:
            async with session.post(c.url.rstrip("/") + PUSH_PATH, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=c.timeout)) as r:
                text = (await r.content.read(600)).decode("utf-8", "replace")
                ok, detail = bool(r.status == 200), f"HTTP {r.status}: {text}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self._note("collector", ok, detail)
        return ok

    async def _loop(self, once: Callable[[], Any], interval: float) -> None:
        while True:
            try:
                await once()
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(interval)

    def start(self) -> None:
        if self.cfg.ping is not None:
            self._tasks.append(asyncio.create_task(self._loop(self.ping_once, self.cfg.ping.interval), name="heartbeat-ping"))
        if self.cfg.collector is not None:
            self._tasks.append(asyncio.create_task(self._loop(self.push_once, self.cfg.collector.interval),
                                                   name="heartbeat-collector"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
