"""The collector's HTTP API (aiohttp): push ingest, /metrics, agents, health.

:func:`create_app` builds the application from what the composition root
(:func:`roomwatch.collector.main.build_app`) hands it: the collector, the alert
service whose life follows the app's, and the other parts' routes (login, alerts
API, history, status page, report), each a function that adds its routes.
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
from roomwatch.collector.ratelimit import RateLimiter, retry_after
from roomwatch.collector.store import StoreError
from roomwatch.core.exposition import negotiate, render_parts
from roomwatch.core.wire import PUSH_PATH, WireError, decode_batch

__all__ = ["COLLECTOR_KEY", "RouteSetup", "Service", "create_app"]

log = logging.getLogger("roomwatch.collector.http")

#: A part of the collector that adds its routes (and startup/cleanup hooks) to the app being built.
RouteSetup = Callable[[web.Application], None]


class Service(Protocol):
    """Something that runs while the app serves (the alert service): started at startup, stopped at cleanup."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

COLLECTOR_KEY = web.AppKey("collector", Collector)
LIMITS_KEY = web.AppKey("push_limits", dict)


def _error(status: int, reason: str, collector: Collector | None = None, **headers: str) -> web.Response:
    if collector is not None:
        collector.push_codes[status] += 1
    return web.json_response({"error": reason}, status=status, headers=headers or None)


#: Content-Encodings aiohttp undoes while reading (bounded by max_body_decompressed); any other
#: value arrives as sent, so it is counted against max_body like an uncompressed body.
_DECODED = frozenset({"gzip", "deflate", "br", "zstd"})


async def _read_body(request: web.Request, max_body: int) -> bytes | None:
    """The body, or None when a chunked, uncompressed body passes ``max_body``.

    With Content-Length the size was checked before reading. A chunked body has no
    length up front: count it as it arrives. aiohttp hands the body over already
    decompressed, so for a compressed chunked body the size as sent is unknown; it is
    bounded by ``max_body_decompressed`` (client_max_size), which is the memory bound anyway.
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if request.content_length is not None or encoding in _DECODED:
        return await request.read()
    parts, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > max_body:
            return None
        parts.append(chunk)
    return b"".join(parts)


async def handle_push(request: web.Request) -> web.Response:
    """``POST /api/v1/push``: 401 bad token, 413 too big, 400 malformed, 403 wrong agent, 200 ok."""
    c = request.app[COLLECTOR_KEY]
    cfg = c.config
    peer = request.remote or ""
    limits = request.app[LIMITS_KEY]
    if wait := limits["address"].check(peer):
        if limits["address"].should_log(peer):
            log.warning("push rate limit hit by address %s (further refusals logged once a minute)", peer)
        return _error(429, "too many push requests from this address", c, **{"Retry-After": retry_after(wait)})
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "missing bearer token", c, **{"WWW-Authenticate": 'Bearer realm="roomwatch"'})
    agent = c.agents.authenticate(token.strip())
    if agent is None:
        log.warning("push from %s with an unknown token", peer)
        return _error(401, "unknown or wrong token", c, **{"WWW-Authenticate": 'Bearer realm="roomwatch"'})
    if wait := limits["agent"].check(agent.id):
        if limits["agent"].should_log(agent.id):
            log.warning("push rate limit hit by agent %s from %s (further refusals logged once a minute)", agent.id, peer)
        return _error(429, "too many push requests from this agent", c, **{"Retry-After": retry_after(wait)})
    if request.content_length is not None and request.content_length > cfg.max_body:
        return _error(413, f"body larger than {cfg.max_body} bytes", c)
    try:
        raw = await asyncio.wait_for(_read_body(request, cfg.max_body), cfg.body_timeout)
        if raw is None:
            return _error(413, f"body larger than {cfg.max_body} bytes", c)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body larger than {cfg.max_body_decompressed} bytes once decompressed", c)
    except RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not gzip
        return _error(400, f"body could not be read: {str(exc).splitlines()[-1].strip()}", c)
    except TimeoutError:
        log.warning("push from %s (agent %s): body not received within %gs", peer, agent.id, cfg.body_timeout)
        return _error(408, f"body not received within {cfg.body_timeout:g}s", c)
    # aiohttp has already undone Content-Encoding gzip/deflate while reading, stopping at
    # client_max_size (= max_body_decompressed), so a gzip bomb ends as a 413 above.
    try:
        batch = decode_batch(raw)
    except WireError as exc:
        log.info("push from %s (agent %s) rejected: %s", peer, agent.id, exc)
        return _error(400, str(exc), c)
    if batch.agent != agent.id:
        log.warning("agent %s tried to push as %r from %s", agent.id, batch.agent, peer)
        return _error(403, f"this token belongs to agent {agent.id!r}, not {batch.agent!r}", c)
    try:
        result = await c.accept(agent, batch, peer)
    except StoreError as exc:  # not committed: the agent keeps the batch and retries
        return _error(503, str(exc), c, **{"Retry-After": "5"})
    c.push_codes[200] += 1
    reply: dict[str, Any] = {"accepted": result.accepted, "duplicate": result.duplicate}
    if result.future:
        reply["future_timestamps"] = result.future  # set to the receive time (README "Clocks")
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
    """aiohttp logs every malformed request (bad header, unknown Content-Encoding) as an ERROR with a
    traceback; garbage from the network is not our error. One INFO line instead, so a scanner cannot
    flood the journal with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        # RequestPayloadError: a body we refused without reading (401) turned out undecodable while
        # aiohttp drained it after our answer.
        if isinstance(exc, (HttpProcessingError, RequestPayloadError)):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "malformed HTTP request refused: %s", (str(getattr(exc, "message", exc)).splitlines()[0][:200],),
                None, None)
        return True


def create_app(collector: Collector, *, alerts: Service | None = None,
               routes: Sequence[RouteSetup] = ()) -> web.Application:
    """The aiohttp application serving ``collector``: its own routes, then each of ``routes``.

    ``alerts`` (the alert service) is started when the app starts and stopped when it is cleaned up.
    """
    # client_max_size bounds request.read(); aiohttp answers 413 past it.
    cfg = collector.config
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ProtocolErrorFilter) for f in server_log.filters):
        server_log.addFilter(_ProtocolErrorFilter())
    # keepalive_timeout also bounds a connection that never completes its request headers (slowloris):
    # aiohttp arms it at connect and closes a connection still waiting for a request when it fires.
    app = web.Application(client_max_size=cfg.max_body_decompressed,
                          handler_args={"max_field_size": 16384, "keepalive_timeout": cfg.idle_timeout})
    app[COLLECTOR_KEY] = collector
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
