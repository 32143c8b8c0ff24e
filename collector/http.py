"""The collector's HTTP API (aiohttp): push ingest, /metrics, agents, health.

:func:`create_app` builds the application from what the composition root
(:func:`roomwatch.collector.main.build_app`) hands it: the collector, the alert
service whose life follows the app's, and the other parts' routes (login, alerts
API, history, status page, report), each a function that adds its routes.

Every route declares the body it reads with
:func:`~roomwatch.core.httplimits.route_limits` (none for a GET; a few KiB for a
form; a route that declares nothing gets those defaults), and the body guard of
:mod:`roomwatch.collector.limits` enforces it for every request before the handler
runs: unread bodies are never drained, ``Content-Encoding`` is undone only by the
push route after its token check, every body read has ``body_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from roomwatch.collector.core import Collector
from roomwatch.collector.limits import (
    INFLATABLE,
    MAX_HEADER_LINE,
    MAX_HEADERS,
    BodyError,
    ReadPool,
    body_guard,
    content_encoding,
    discard,
    inflate,
    read_raw,
    refuse,
)
from roomwatch.collector.ratelimit import RateLimiter, retry_after
from roomwatch.collector.store import StoreError
from roomwatch.core.exposition import negotiate, render_parts
from roomwatch.core.httplimits import DEFAULT_CHANGE, route_limits
from roomwatch.core.wire import PUSH_PATH, WireError, decode_batch

__all__ = ["COLLECTOR_KEY", "READS_KEY", "RouteSetup", "Service", "create_app"]

log = logging.getLogger("roomwatch.collector.http")

#: A part of the collector that adds its routes (and startup/cleanup hooks) to the app being built.
RouteSetup = Callable[[web.Application], None]


class Service(Protocol):
    """Something that runs while the app serves (the alert service): started at startup, stopped at cleanup."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

COLLECTOR_KEY = web.AppKey("collector", Collector)
LIMITS_KEY = web.AppKey("push_limits", dict)
#: The threads history queries and the report page run on (collector/limits.py ReadPool), not the default pool.
READS_KEY = web.AppKey("read_pool", ReadPool)


def _error(status: int, reason: str, collector: Collector | None = None, keep: bool = False,
           headers: dict[str, str] | None = None) -> web.Response:
    """A JSON refusal; unless ``keep`` (the body was read: the connection is clean), the connection closes after it."""
    if collector is not None:
        collector.push_codes[status] += 1
    if keep:
        return web.json_response({"error": reason}, status=status, headers=headers)
    return refuse(status, reason, **(headers or {}))


@route_limits(encoded=True, raw=True)  # reads and inflates its body itself, after the token check
async def handle_push(request: web.Request) -> web.Response:
    """``POST /api/v1/push``: 401 bad token, 413 too big, 415 encoding, 400 malformed, 403 wrong agent, 200 ok.

    Nothing of the body is read before the address's rate limit and the token passed; a refused
    push's connection is closed after the answer (collector/limits.py).
    """
    c = request.app[COLLECTOR_KEY]
    cfg = c.config
    peer = request.remote or ""
    limits = request.app[LIMITS_KEY]
    if wait := limits["address"].check(peer):
        if limits["address"].should_log(peer):
            log.warning("push rate limit hit by address %s (further refusals logged once a minute)", peer)
        return _error(429, "too many push requests from this address", c, headers={"Retry-After": retry_after(wait)})
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "missing bearer token", c, headers={"WWW-Authenticate": 'Bearer realm="roomwatch"'})
    agent = c.agents.authenticate(token.strip())
    if agent is None:
        if limits["address"].should_log("token:" + peer):
            log.warning("push from %s with an unknown token (further ones logged once a minute)", peer)
        return _error(401, "unknown or wrong token", c, headers={"WWW-Authenticate": 'Bearer realm="roomwatch"'})
    if wait := limits["agent"].check(agent.id):
        if limits["agent"].should_log(agent.id):
            log.warning("push rate limit hit by agent %s from %s (further refusals logged once a minute)", agent.id, peer)
        return _error(429, "too many push requests from this agent", c, headers={"Retry-After": retry_after(wait)})
    encoding = content_encoding(request)
    if encoding not in INFLATABLE and encoding not in ("", "identity"):
        return _error(415, f"Content-Encoding {encoding[:40]!r} is not supported; send gzip, deflate or identity", c)
    try:
        raw = await read_raw(request, cfg.max_body, cfg.body_timeout)
        body = inflate(raw, encoding, cfg.max_body_decompressed)
    except BodyError as exc:
        if exc.status == 408 and limits["agent"].should_log("slow:" + agent.id):
            log.warning("push from %s (agent %s): body not received within %gs (logged once a minute)", peer, agent.id,
                        cfg.body_timeout)
        if exc.status == 413 and not request.content.at_eof():
            # The agent reads the answer only after sending everything: let it (a bounded amount, as sent)
            # so it gets the 413 that makes it split the batch, not a broken connection.
            await discard(request, 4 * cfg.max_body, cfg.body_timeout)
        return _error(exc.status, exc.reason, c)
    try:
        batch = decode_batch(body)
    except WireError as exc:
        if limits["agent"].should_log("bad:" + agent.id):
            log.info("push from %s (agent %s) rejected: %s (such refusals logged once a minute per agent)", peer,
                     agent.id, exc)
        return _error(400, str(exc), c, keep=True)
    if batch.agent != agent.id:
        if limits["agent"].should_log("as:" + agent.id):
            log.warning("agent %s tried to push as %r from %s (logged once a minute)", agent.id, batch.agent, peer)
        return _error(403, f"this token belongs to agent {agent.id!r}, not {batch.agent!r}", c, keep=True)
    try:
        result = await c.accept(agent, batch, peer)
    except WireError as exc:  # a sample or event outside the agent's place (collector/admission.py)
        if limits["agent"].should_log("place:" + agent.id):
            log.warning("push from %s (agent %s) rejected: %s (logged once a minute)", peer, agent.id, exc)
        return _error(400, str(exc), c, keep=True)
    except StoreError as exc:  # not committed: the agent keeps the batch and retries (or drops it on a 400)
        if exc.permanent:
            return _error(400, str(exc), c, keep=True)
        return _error(503, str(exc), c, keep=True, headers={"Retry-After": "5"})
    c.push_codes[200] += 1
    reply: dict[str, Any] = {"accepted": result.accepted, "duplicate": result.duplicate}
    if result.future:
        reply["future_timestamps"] = result.future  # set to the receive time (README "Clocks")
    if result.rejected:
        reply["rejected"] = result.rejected  # samples not stored, by reason: the rest was (docs/security.md)
    return web.json_response(reply)


async def handle_metrics(request: web.Request) -> web.Response:
    c = request.app[COLLECTOR_KEY]
    ctype = negotiate(request.headers.get("Accept"))
    families = c.families()  # current values, copied on the loop
    # Rendering 100k series takes ~50 ms: pushes are answered between pieces of a few thousand lines
    # instead of waiting for the whole scrape (bench/fleet.py push round trip). A thread would not do:
    # the GIL makes every push wait for the render thread's time slices.
    parts = []
    for part in render_parts(families, ctype):
        parts.append(part)
        await asyncio.sleep(0)
    body = "".join(parts).encode()
    return web.Response(body=body, headers={"Content-Type": ctype})


async def handle_agents(request: web.Request) -> web.Response:
    c = request.app[COLLECTOR_KEY]
    now = time.time()
    out: list[dict[str, Any]] = []
    for a in sorted(c.agents.agents.values(), key=lambda a: a.id):
        out.append({
            "id": a.id,
            "up": a.up(now),
            "standby": a.standby,
            "last_push": a.last_push,
            "last_push_age_seconds": None if a.last_push is None else round(now - a.last_push, 3),
            "timeout_seconds": a.timeout,
            "last_seq": a.last_seq,
            "address": a.address,
            "pushes": a.pushes,
            "samples": a.samples,
            "events": a.events,
            "clock_skew_seconds": round(a.clock_skew_ms / 1000, 3),
        })
    return web.json_response({"agents": out})


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    c = request.app[COLLECTOR_KEY]
    if not c.ready:
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ready", "agents": len(c.agents.agents), "series": len(c.series)})


class _ProtocolErrorFilter(logging.Filter):
    """aiohttp logs every malformed request (bad header, broken chunking) as an ERROR with a traceback,
    and every handler error too; garbage from the network is not our error. One INFO line a minute for
    malformed requests (with how many there were), and handler errors at most once a minute each with
    their traceback, so a scanner cannot flood the journal."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def _due(self, key: str) -> tuple[bool, int]:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return False, 0
        if len(self._last) > 1000:
            self._last.clear()
            self._skipped.clear()
        self._last[key] = now
        return True, self._skipped.pop(key, 0)

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (HttpProcessingError, RequestPayloadError)):
            due, skipped = self._due("malformed")
            if not due:
                return False
            more = f" ({skipped} more since the last such line)" if skipped else ""
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "malformed HTTP request refused: %s%s", (str(getattr(exc, "message", exc)).splitlines()[0][:200], more),
                None, None)
            return True
        if record.levelno >= logging.ERROR:
            due, skipped = self._due(f"{record.msg}|{type(exc).__name__}")
            if due and skipped:
                record.msg = f"{record.msg} ({skipped} more like it since the last such line)"
            return due
        return True


def create_app(collector: Collector, *, alerts: Service | None = None,
               routes: Sequence[RouteSetup] = ()) -> web.Application:
    """The aiohttp application serving ``collector``: its own routes, then each of ``routes``.

    ``alerts`` (the alert service) is started when the app starts and stopped when it is cleaned up.
    """
    cfg = collector.config
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ProtocolErrorFilter) for f in server_log.filters):
        server_log.addFilter(_ProtocolErrorFilter())
    # keepalive_timeout also bounds a connection that never completes its request headers (slowloris):
    # aiohttp arms it at connect and closes a connection still waiting for a request when it fires.
    # auto_decompress off: bodies stay as sent until a route inflates them, bounded (collector/limits.py);
    # lingering_time 0: a body left unread is not drained after the answer, the connection is closed.
    # client_max_size: what request.read() may take if a body ever got past the guard unread (it should not).
    # max_headers/max_field_size: what one connection's incomplete headers may hold (collector/limits.py).
    # The body guard also sends every answer within idle_timeout: a client that does not read it is dropped.
    app = web.Application(client_max_size=DEFAULT_CHANGE.max_body,
                          middlewares=[body_guard(cfg.body_timeout, send_timeout=cfg.idle_timeout)],
                          handler_args={"max_headers": MAX_HEADERS, "max_field_size": MAX_HEADER_LINE,
                                        "keepalive_timeout": cfg.idle_timeout, "auto_decompress": False,
                                        "lingering_time": 0})
    app[COLLECTOR_KEY] = collector
    app[READS_KEY] = reads = ReadPool()

    async def close_reads(_app: web.Application) -> None:
        reads.close()

    app.on_cleanup.append(close_reads)
    app[LIMITS_KEY] = {"agent": RateLimiter(cfg.rate_limit.per_agent, cfg.rate_limit.per_agent_burst),
                       "address": RateLimiter(cfg.rate_limit.per_address, cfg.rate_limit.per_address_burst)}
    app.router.add_post(PUSH_PATH, handle_push)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/api/v1/agents", handle_agents)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    if alerts is not None:
        service = alerts

        async def start(_app: web.Application) -> None:
            await service.start()

        async def stop(_app: web.Application) -> None:
            await service.stop()

        app.on_startup.append(start)
        app.on_cleanup.append(stop)
    for add_routes in routes:
        add_routes(app)
    return app
