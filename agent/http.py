"""The agent's own HTTP endpoint: ``/metrics`` (pull mode) and ``/healthz``.

Served by the standard library's WSGI server in a daemon thread: the agent
needs two read-only pages, not a web framework (and the agent's memory budget
has no room for one).

Its threading server would start a thread for every connection and wait on it
forever: 3,000 idle connections held 3,000 threads and descriptors (the agent's
systemd limit is 4,096, and it needs descriptors to poll its devices). Here at
most :data:`MAX_CONNECTIONS` are served at once (more are closed when accepted),
each read waits at most :data:`READ_TIMEOUT` seconds and a connection lives at
most :data:`CONNECTION_DEADLINE` seconds. A scrape is one short request.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from roomwatch.core.exposition import negotiate, render

__all__ = ["AgentHTTP"]

log = logging.getLogger("roomwatch.agent.http")


MAX_CONNECTIONS = 16
READ_TIMEOUT = 10.0
CONNECTION_DEADLINE = 30.0


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any):
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._refused_logged = self._error_logged = float("-inf")
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            now = time.monotonic()
            if now - self._refused_logged >= 60.0:
                self._refused_logged = now
                log.warning("closed a connection from %s: %d served already (logged once a minute)",
                            client_address[0], MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # a thread of its own, which releases the slot
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr for every connection that fails (a client that
        # times out, resets or goes away): one line a minute instead, so no client can flood the log.
        exc = sys.exc_info()[1]
        now = time.monotonic()
        if now - self._error_logged >= 60.0:
            self._error_logged = now
            log.info("request from %s not served: %s: %s (such lines logged once a minute)", client_address[0],
                     type(exc).__name__, exc)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The deadline: a client that sends a byte every few seconds, or reads its answer as slowly,
        # loses the connection (shutdown wakes the thread blocked on it).
        deadline = threading.Timer(CONNECTION_DEADLINE, _shutdown, (request,))
        deadline.daemon = True
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self._slots.release()


def _shutdown(sock: Any) -> None:
    try:
        sock.shutdown(2)  # socket.SHUT_RDWR
    except OSError:
        pass


class _QuietHandler(WSGIRequestHandler):
    timeout = READ_TIMEOUT  # each read of the request (socketserver sets it on the connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)


class AgentHTTP:
    """Serves a running :class:`roomwatch.agent.runtime.Agent` on ``host:port``."""

    def __init__(self, agent: Any, host: str, port: int):
        self.agent = agent
        self._server = make_server(host, port, self._app, server_class=_Server, handler_class=_QuietHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="agent-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def close(self) -> None:
        """Release the socket of a server never started."""
        self._server.server_close()

    def _health(self) -> tuple[int, dict[str, Any]]:
        a = self.agent
        down = sorted(d.name for d in a.devices.values() if d.up is False)
        doc: dict[str, Any] = {
            "status": "ok",
            "agent": a.config.agent.id,
            "uptime_seconds": round(time.time() - a.started_at, 1),
            "devices": len(a.devices),
            "devices_down": down,
        }
        if a.pusher is not None:
            doc["push_queue_batches"] = a.pusher.outbox.depth()
            doc["last_successful_push"] = a.pusher.last_ok
        return 200, doc

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        if path == "/metrics":
            ctype = negotiate(environ.get("HTTP_ACCEPT"))
            # Fresh health for this scrape: the agent's own, and each device's counters (taken on the
            # event loop, where drivers count; a loop too busy to answer within a second gets the last ones).
            self.agent._self_samples(int(time.time() * 1000))
            self.agent.call_on_loop(self.agent.refresh_health, 1.0)
            body = render(self.agent.latest.families(), ctype)
            start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
            return [body]
        if path in ("/healthz", "/-/healthy"):
            status, doc = self._health()
            body = json.dumps(doc).encode()
            start_response(f"{status} OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/":
            body = b'roomwatch agent: <a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a>\n'
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
