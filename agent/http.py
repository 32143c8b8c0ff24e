"""The agent's own HTTP endpoint: ``/metrics`` (pull mode) and ``/healthz``.

Served by the standard library's WSGI server in a daemon thread: the agent
needs two read-only pages, not a web framework (and the agent's memory budget
has no room for one).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from roomwatch.core.exposition import negotiate, render

__all__ = ["AgentHTTP"]

log = logging.getLogger("roomwatch.agent.http")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
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
