"""Collector HTTP API of alerting (docs/api.md): alerts, acknowledgements, silences.

| method, path | |
| --- | --- |
| ``GET /api/v1/alerts`` | active alerts (pending, firing) with ack, silence and inhibition state |
| ``POST /api/v1/alerts/{id}/ack`` | acknowledge one episode (login) — body optional ``{"comment": "..."}`` |
| ``GET /api/v1/silences`` | silences (active, pending, recently expired) |
| ``POST /api/v1/silences`` | create (or update, with ``id``) a silence (login) |
| ``DELETE /api/v1/silences/{id}`` (or ``?id=``) | expire a silence (login) |
| ``GET /api/v1/alerts/history?since=&until=`` | past episodes (for reports) |

The collector's composition root (:func:`roomwatch.collector.main.build_app`)
adds these routes with :func:`add_routes`, handing in the alert service's
presenter (reads) and commands (changes) and the check that names the logged-in
user of a mutating request (the collector's login); this module knows nothing
else of the collector. It only translates HTTP: parameters and bodies in,
status codes and JSON out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from roomwatch.alerts.commands import AckError, AlertCommands
from roomwatch.alerts.presenter import AlertPresenter
from roomwatch.alerts.silences import SilenceError
from roomwatch.core.httplimits import route_limits

__all__ = ["COMMANDS_KEY", "PRESENTER_KEY", "RequireUser", "add_routes"]

#: The user of a mutating request, or an HTTP error raised (401 not logged in, 403 CSRF, 429 throttled).
RequireUser = Callable[[web.Request], Awaitable[str]]

PRESENTER_KEY = web.AppKey("alerts_presenter", AlertPresenter)
COMMANDS_KEY = web.AppKey("alerts_commands", AlertCommands)
USER_KEY: web.AppKey[RequireUser] = web.AppKey("alerts_require_user")


async def require_user(request: web.Request) -> str:
    return await request.app[USER_KEY](request)

#: Largest body of a silence (32 matchers and a 1000-character comment fit in a few KiB) and of an ack.
MAX_BODY = 16 * 1024
MAX_ACK_BODY = 4 * 1024


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request, optional: bool = False) -> Any:
    # The body was read by the collector's body guard within this route's limit (route_limits below).
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise web.HTTPBadRequest(text=json.dumps({"error": "a JSON body is required"}), content_type="application/json")
    try:
        doc = json.loads(raw)
        # A lone surrogate ("\ud800") is valid JSON but no text: it could be neither stored nor logged.
        json.dumps(doc, ensure_ascii=False).encode()
    except (ValueError, UnicodeError, RecursionError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body is not valid JSON text"}),
                                 content_type="application/json") from None
    return doc


LANGUAGES = ("zh-CN", "en")


async def get_alerts(request: web.Request) -> web.Response:
    """Active alerts; ``?lang=en`` (or ``zh-CN``) renders the annotations in that language (the status page's)."""
    lang = request.query.get("lang")
    if lang is not None and lang not in LANGUAGES:
        return _json_error(400, f"lang must be one of {', '.join(LANGUAGES)}")
    return web.json_response({"alerts": request.app[PRESENTER_KEY].list_alerts(lang=lang)})


@route_limits(MAX_ACK_BODY)
async def ack_alert(request: web.Request) -> web.Response:
    user = await require_user(request)
    body = await _body(request, optional=True)
    comment = body.get("comment", "") if isinstance(body, dict) else ""
    if not isinstance(comment, str):
        return _json_error(400, "comment must be text")
    try:
        alert = request.app[COMMANDS_KEY].ack(request.match_info["id"], user, comment)
    except AckError as exc:
        return _json_error(exc.status, str(exc))
    return web.json_response(request.app[PRESENTER_KEY].alert(alert))


async def alert_history(request: web.Request) -> web.Response:
    presenter = request.app[PRESENTER_KEY]
    now = presenter.clock()
    try:
        since = float(request.query.get("since", now - 86400))
        until = float(request.query.get("until", now))
    except ValueError:
        return _json_error(400, "since and until are Unix seconds")
    if not all(math.isfinite(t) and 0 <= t < 4_102_444_800 for t in (since, until)):
        return _json_error(400, "since and until must be Unix seconds between 1970 and 2100")
    if since > until:
        return _json_error(400, "since is after until")
    return web.json_response({"alerts": presenter.history(since, until)})


async def get_silences(request: web.Request) -> web.Response:
    return web.json_response({"silences": request.app[PRESENTER_KEY].silences_json()})


@route_limits(MAX_BODY)
async def post_silence(request: web.Request) -> web.Response:
    user = await require_user(request)
    body = await _body(request)
    try:
        s = request.app[COMMANDS_KEY].add_silence(body, user)
    except SilenceError as exc:
        return _json_error(400, str(exc))
    return web.json_response({"silenceID": s.id, "silence": s.to_json(request.app[PRESENTER_KEY].clock())})


@route_limits(0)  # reads no body
async def delete_silence(request: web.Request) -> web.Response:
    await require_user(request)
    sid = request.match_info.get("id") or request.query.get("id", "")
    if not sid:
        return _json_error(400, "say which silence: DELETE /api/v1/silences/{id}")
    s = request.app[COMMANDS_KEY].expire_silence(sid)
    if s is None:
        return _json_error(404, "no silence with this id")
    return web.json_response({"silence": s.to_json(request.app[PRESENTER_KEY].clock())})


def add_routes(app: web.Application, presenter: AlertPresenter, commands: AlertCommands, user_of: RequireUser) -> None:
    """The alerts and silences API: reads from ``presenter``, changes through ``commands`` by the user ``user_of`` names."""
    app[PRESENTER_KEY] = presenter
    app[COMMANDS_KEY] = commands
    app[USER_KEY] = user_of
    app.router.add_get("/api/v1/alerts", get_alerts)
    app.router.add_get("/api/v1/alerts/history", alert_history)
    app.router.add_post("/api/v1/alerts/{id}/ack", ack_alert)
    app.router.add_get("/api/v1/silences", get_silences)
    app.router.add_post("/api/v1/silences", post_silence)
    app.router.add_delete("/api/v1/silences", delete_silence)
    app.router.add_delete("/api/v1/silences/{id}", delete_silence)
