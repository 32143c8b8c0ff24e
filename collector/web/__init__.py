"""The web status page at ``/`` and its JSON (``GET /api/v1/rooms``), added by :func:`add_routes`.

Static files sit next to this module (package data, no build step): ``index.html``,
``app.js`` (vanilla JS, own SVG charts), ``style.css``. Nothing is fetched from the
internet; the Content-Security-Policy header forbids it. Mutating actions
(acknowledge, silence) go to the alerting API with the login session and CSRF
token of :mod:`roomwatch.collector.webauth`; the page shows "not available" for any API
this collector lacks.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from roomwatch.collector.http import COLLECTOR_KEY
from roomwatch.collector.web.rooms import rooms_snapshot

__all__ = ["STATIC_FILES", "add_routes"]

#: Files served under /static/ (a fixed list: no path from the request reaches the file system).
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}

# Same-origin only; inline styles only for SVG attributes set from JS (style-src allows them).
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache"}


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def page(name: str, language: str) -> bytes:
    """An HTML page of this package with the configured default language filled in."""
    return _read(name).replace(b"{{LANG}}", language.encode())


async def handle_index(request: web.Request) -> web.Response:
    c = request.app[COLLECTOR_KEY]
    return web.Response(body=page("index.html", c.config.web.language), content_type="text/html",
                        charset="utf-8", headers=_HEADERS)


async def handle_static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    ctype = STATIC_FILES.get(name)
    if ctype is None:
        raise web.HTTPNotFound()
    return web.Response(body=_read(name), content_type=ctype, charset="utf-8", headers=_HEADERS)


async def handle_rooms(request: web.Request) -> web.Response:
    """``GET /api/v1/rooms``: current values by site/room/device, agents and devices that are down."""
    c = request.app[COLLECTOR_KEY]
    doc: dict[str, Any] = rooms_snapshot(c)
    doc["language"] = c.config.web.language
    doc["login"] = bool(c.config.web.users)
    return web.json_response(doc)


def add_routes(app: web.Application) -> None:
    """The status page (``/``, ``/static/...``) and ``GET /api/v1/rooms``."""
    app.router.add_get("/", handle_index)
    app.router.add_get("/static/{name}", handle_static)
    app.router.add_get("/api/v1/rooms", handle_rooms)

