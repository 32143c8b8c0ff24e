"""What a request may cost before anyone has proved who they are: per-route body limits, bodies that are never read.

Every route declares what it reads with :func:`~roomwatch.core.httplimits.route_limits`
(a decorator on its handler); a route that declares nothing gets ``DEFAULT_GET`` (``GET``,
``HEAD``: no body is ever read) or ``DEFAULT_CHANGE`` (other methods: 8 KiB), so a new
route — the one-tap acknowledge page, say — is small by construction::

    @route_limits(max_body=4096)
    async def handle_login(request): ...

:func:`body_guard` (a middleware every request passes) then enforces it, before
the handler runs:

* a body on a route that reads none (every ``GET``, unknown paths, 405s) is never
  read: the answer goes out and the connection is closed after it;
* ``Content-Encoding`` other than ``identity`` is refused with 415 unless the
  route says it undoes encodings itself (``encoded=True``: only the push API,
  which does so after the token check, through :func:`inflate`);
* a ``Content-Length`` above the route's ``max_body`` is refused with 413 without
  reading a byte; a chunked body is counted as it arrives and refused past it;
* the body must arrive within ``body_timeout`` (408), on every route;
* a refused request's connection is closed after the answer instead of being
  drained (aiohttp's lingering read is off: ``lingering_time=0``).

The push route reads its body itself (``raw=True``): the per-address rate limit and
the token come first, so an unauthenticated push costs its headers.

Why bodies are inflated here and not by aiohttp: aiohttp undoes ``Content-Encoding``
in its payload parser, as bytes arrive and before any handler has looked at the
request, under one app-wide ``client_max_size``; a ``POST /login`` with a gzip bomb
was inflated before the login code ran, and after any answer the unread rest was
drained and inflated. The app is built with ``auto_decompress=False``, so bodies
stay as sent until a route that wants them decoded calls :func:`inflate`, bounded.

What a connection may hold before it has proved anything, and for how long:

* at most ``limits.connections_per_address`` connections from one client address (an IPv6
  client: its /64) are open at once; the next is closed as soon as it is accepted
  (:func:`limit_connections`). Request headers are at most 32 lines of 8 KiB (aiohttp's
  ``max_headers``/``max_field_size``), held until complete or ``idle_timeout``: without the
  cap, 200 connections each sending 1.6 MB of headers took 600 MiB;
* an answer must be taken within ``idle_timeout`` (:func:`body_guard` sends it under that
  deadline): a client that asks for /metrics or a history and never reads the answer
  does not keep it in memory past it.

Also here: the loop's exception handler that logs repeated accept/handler errors
(``EMFILE``: too many open files) once a minute instead of once per failure, and
raising the soft open-files limit to the hard one at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from roomwatch.core.httplimits import (
    DEFAULT_CHANGE,
    DEFAULT_GET,
    RouteLimits,
    client_key,
    declared_limits,
    route_limits,
)

__all__ = ["DEFAULT_CHANGE", "DEFAULT_GET", "MAX_HEADERS", "MAX_HEADER_LINE", "BodyError", "RateLimitedLoopErrors",
           "ReadPool", "RouteLimits", "body_guard", "discard", "inflate", "limit_connections", "raise_nofile_limit",
           "read_raw", "refuse", "route_limits"]

log = logging.getLogger("roomwatch.collector.http")

_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})


def limits_of_handler(handler: object, method: str) -> RouteLimits:
    """The limits ``handler`` declared, or the defaults for ``method``."""
    declared = declared_limits(handler)
    if declared is not None:
        return declared
    return DEFAULT_GET if method in _BODYLESS else DEFAULT_CHANGE


def limits_of(request: web.Request) -> RouteLimits:
    """The limits of the route ``request`` matched (unknown paths and wrong methods read nothing)."""
    match = request.match_info
    if match.http_exception is not None:
        return DEFAULT_GET
    return limits_of_handler(match.handler, request.method)


def refuse(status: int, reason: str, **headers: str) -> web.Response:
    """A JSON refusal whose connection is closed after it is sent (an unread body is never drained)."""
    resp = web.json_response({"error": reason}, status=status, headers=headers or None)
    resp.force_close()
    return resp


class BodyError(Exception):
    """A body that cannot be taken; ``status`` and ``reason`` are the answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def content_encoding(request: web.Request) -> str:
    return request.headers.get("Content-Encoding", "").strip().lower()


async def read_raw(request: web.Request, max_body: int, timeout: float) -> bytes:
    """The body as sent, at most ``max_body`` bytes, within ``timeout`` seconds; raises :class:`BodyError`."""
    length = request.content_length
    if length is not None and length > max_body:
        raise BodyError(413, f"body larger than {max_body} bytes")

    async def read() -> bytes:
        if length is not None:
            return await request.content.readexactly(length) if length else b""
        parts, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > max_body:
                raise BodyError(413, f"body larger than {max_body} bytes")
            parts.append(chunk)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise BodyError(408, f"body not received within {timeout:g}s") from None
    except asyncio.IncompleteReadError:
        raise BodyError(400, "body ended before Content-Length bytes arrived") from None
    except RequestPayloadError as exc:  # a malformed chunked encoding
        raise BodyError(400, f"body could not be read: {str(exc).splitlines()[-1].strip()}") from None
    except ConnectionError:  # the client went away mid-body: nobody to answer, nothing to log
        raise BodyError(400, "connection lost while the body was arriving") from None


async def discard(request: web.Request, limit: int, timeout: float) -> None:
    """Read and drop what is left of the body, at most ``limit`` bytes within ``timeout`` (as sent, never inflated).

    Only for an authenticated push refused as too large: an agent sends its whole body before it
    reads the answer, so without this it would see a broken connection instead of the 413 that
    tells it to split the batch. Anyone else's refused body is never read.
    """
    async def drop() -> None:
        left = limit
        while left > 0:
            chunk = await request.content.readany()
            if not chunk:
                return
            left -= len(chunk)

    try:
        await asyncio.wait_for(drop(), timeout)
    except (TimeoutError, ConnectionError, RequestPayloadError):
        pass


#: Content-Encodings :func:`inflate` undoes, with zlib's window bits (31: gzip header, 15: zlib header).
INFLATABLE = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``encoding`` (gzip, deflate, identity) of ``raw``, producing at most ``limit`` bytes.

    The work stops once ``limit + 1`` bytes came out (a gzip bomb costs ``limit`` bytes of
    memory and the time to make them, nothing more); raises :class:`BodyError` 413 past the
    limit, 415 for an encoding it does not know, 400 for data that is not what it claims.
    """
    if encoding in ("", "identity"):
        return raw
    wbits = INFLATABLE.get(encoding)
    if wbits is None:
        raise BodyError(415, f"Content-Encoding {encoding[:40]!r} is not supported; send gzip, deflate or identity")
    if encoding == "deflate" and raw and raw[0] & 0x0F != 8:
        wbits = -15  # "deflate" sent without the zlib header, as some clients do (aiohttp accepts it too)
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, f"body is not valid {encoding} data ({exc})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise BodyError(413, f"body larger than {limit} bytes once decompressed")
    if not d.eof:
        raise BodyError(400, f"{encoding} body is truncated")
    if d.unused_data:
        raise BodyError(400, f"data after the end of the {encoding} stream")
    return out


#: Request header lines and the length of one (aiohttp's parser; its default count is 128, 2 MiB a request).
MAX_HEADERS, MAX_HEADER_LINE = 32, 8190


async def _send(request: web.Request, resp: web.StreamResponse, timeout: float) -> web.StreamResponse:
    """Send ``resp`` within ``timeout`` seconds, else drop the connection (and the answer buffered for it).

    aiohttp would wait for a client that never reads for as long as the connection lives,
    keeping the whole answer (a /metrics of thousands of series) in memory.
    """
    if resp.prepared:
        return resp  # a handler that streams its own answer
    try:
        async with asyncio.timeout(timeout):
            await resp.prepare(request)
            await resp.write_eof()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:  # the client reset or closed: the answer has nowhere to go (aiohttp's own
        pass  # sending treats this the same way, quietly; a traceback per request would flood the log)
    return resp


def body_guard(body_timeout: float, send_timeout: float | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware enforcing each route's :class:`RouteLimits` (see the module docstring).

    ``send_timeout``: the time an answer may take to be sent (none: aiohttp's own sending, unbounded).
    """

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        resp = await _guarded(request, handler)
        return resp if send_timeout is None else await _send(request, resp, send_timeout)

    async def _guarded(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)  # the common case: GETs, bodyless POSTs
        limits = limits_of(request)
        encoding = content_encoding(request)
        if encoding not in ("", "identity") and not limits.encoded:
            return refuse(415, "Content-Encoding is not accepted here")
        if limits.raw:
            return await handler(request)
        if limits.max_body == 0:
            resp = await handler(request)  # the body stays unread: close the connection after the answer
            if not isinstance(resp, web.WebSocketResponse):
                resp.force_close()
            return resp
        try:
            raw = await read_raw(request, limits.max_body, body_timeout)
        except BodyError as exc:
            return refuse(exc.status, exc.reason)
        # The handler sees the body through the usual request.read()/json()/post(): aiohttp's cache of
        # read() is filled, so nothing in the handler reads from the connection again.
        request._read_bytes = raw
        return await handler(request)

    return guard


class ReadPool:
    """Threads of their own for reads anyone may ask for that cost real work: history queries, the report.

    At most ``workers`` run at once and ``waiting`` more wait; beyond, :meth:`run` refuses
    (429) at once. A flood of such reads, which need no login by default, must neither
    queue without bound nor take the default thread pool, which sends e-mail and SMS and
    rings phones (channels run their blocking calls there): alerts would not go out.
    """

    def __init__(self, workers: int = 2, waiting: int = 16, name: str = "reads"):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._limit = workers + waiting
        self._busy = 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the pool; raises 429 (``web.HTTPTooManyRequests``) when it is full."""
        if self._busy >= self._limit:
            raise web.HTTPTooManyRequests(text='{"error": "too many history or report queries at once; try again '
                                               'in a moment"}', content_type="application/json",
                                          headers={"Retry-After": "5"})
        self._busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._busy -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def limit_connections(server: Any, per_address: int) -> None:
    """Close, as soon as it is made, a connection from a client that has ``per_address`` open already.

    ``server`` is the aiohttp ``web.Server`` of the app runner (``runner.server``): its
    ``connection_made``/``connection_lost`` are where every connection is counted in and out
    (aiohttp has no limit of its own; its request handler reports each connection there).
    """
    open_now: dict[str, int] = {}
    of_handler: dict[Any, str] = {}
    made, lost = server.connection_made, server.connection_lost
    last_log = [float("-inf")]

    def connection_made(handler: Any, transport: Any) -> None:
        made(handler, transport)
        peer = transport.get_extra_info("peername")
        key = client_key(str(peer[0])) if isinstance(peer, tuple) and peer else "?"
        if open_now.get(key, 0) >= per_address:
            now = time.monotonic()
            if now - last_log[0] >= 60.0:
                last_log[0] = now
                log.warning("closed a connection from %s: %d open already (limits.connections_per_address; "
                            "logged once a minute)", key, per_address)
            # Soon, not now: the handler starts its task right after this call, and that task expects the
            # connection it was made for (connection_lost, which follows the abort, finds nothing counted).
            asyncio.get_running_loop().call_soon(transport.abort)
            return
        open_now[key] = open_now.get(key, 0) + 1
        of_handler[handler] = key

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        key = of_handler.pop(handler, None)
        if key is not None:
            left = open_now[key] - 1
            if left:
                open_now[key] = left
            else:
                del open_now[key]
        lost(handler, exc)

    # Instance attributes shadow the methods: the request handlers call these.
    server.connection_made = connection_made
    server.connection_lost = connection_lost


class RateLimitedLoopErrors:
    """The event loop's exception handler: one line per kind of error a minute, with how many were left out.

    asyncio's default handler logs every failed ``accept()`` with a traceback; out of file
    descriptors (EMFILE) that is megabytes a second, and the journal fills while the
    collector has no descriptor left to answer anyone. The collector's own tasks log
    their errors themselves; this is for what reaches the loop.
    """

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message") or "unhandled error in the event loop")
        key = f"{message}|{type(exc).__name__}"
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        if len(self._last) > 1000:  # an unbounded variety of messages must not grow this
            self._last.clear()
            self._skipped.clear()
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        more = f" ({skipped} more like it in the last {self.every:g}s)" if skipped else ""
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        if isinstance(exc, OSError) or exc is None:
            log.error("%s%s%s", message, detail, more)  # EMFILE & co: the message says all, no traceback
        else:
            log.error("%s%s%s", message, detail, more, exc_info=exc)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one (each connection is a descriptor); returns (soft, hard)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard
