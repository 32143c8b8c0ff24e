"""Collector HTTP API of alerting (CONTRACT.md): alerts, acknowledgements, silences.

| method, path | |
| --- | --- |
| ``GET /api/v1/alerts`` | active alerts (pending, firing) with ack, silence and inhibition state |
| ``POST /api/v1/alerts/{id}/ack`` | acknowledge one episode (login) — body optional ``{"comment": "..."}`` |
| ``GET /api/v1/silences`` | silences (active, pending, recently expired) |
| ``POST /api/v1/silences`` | create (or update, with ``id``) a silence (login) |
| ``DELETE /api/v1/silences/{id}`` (or ``?id=``) | expire a silence (login) |
| ``GET /api/v1/alerts/history?since=&until=`` | past episodes (for reports) |

The collector's composition root (:func:`roomwatch.collector.main.build_app`)
adds these routes with :func:`add_routes`, handing in the alert service and the
check that names the logged-in user of a mutating request (the collector's login);
this module knows nothing else of the collector.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from roomwatch.alerts.service import AckError, AlertService
from roomwatch.alerts.silences import SilenceError

__all__ = ["ALERTS_KEY", "RequireUser", "add_routes"]

#: The user of a mutating request, or an HTTP error raised (401 not logged in, 403 CSRF, 429 throttled).
RequireUser = Callable[[web.Request], Awaitable[str]]

ALERTS_KEY = web.AppKey("alerts", AlertService)
USER_KEY: web.AppKey[RequireUser] = web.AppKey("alerts_require_user")


async def require_user(request: web.Request) -> str:
    return await request.app[USER_KEY](request)

MAX_BODY = 64 * 1024


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request, optional: bool = False) -> Any:
    if request.content_length and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise web.HTTPBadRequest(text=json.dumps({"error": "a JSON body is required"}), content_type="application/json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body is not valid JSON"}),
                                 content_type="application/json") from None


LANGUAGES = ("zh-CN", "en")


async def get_alerts(request: web.Request) -> web.Response:
    """Active alerts; ``?lang=en`` (or ``zh-CN``) renders the annotations in that language (the status page's)."""
    svc = request.app[ALERTS_KEY]
    lang = request.query.get("lang")
    if lang is not None and lang not in LANGUAGES:
        return _json_error(400, f"lang must be one of {', '.join(LANGUAGES)}")
    return web.json_response({"alerts": svc.list_alerts(lang=lang)})


async def ack_alert(request: web.Request) -> web.Response:
    svc = request.app[ALERTS_KEY]
    user = await require_user(request)
    body = await _body(request, optional=True)
    comment = body.get("comment", "") if isinstance(body, dict) else ""
    if not isinstance(comment, str):
        return _json_error(400, "comment must be text")
    try:
        alert = svc.ack(request.match_info["id"], user, comment)
    except AckError as exc:
        return _json_error(exc.status, str(exc))
    inhibited = svc.inhibitor.compute(svc.engine.active.values(), svc.engine.version)
    return web.json_response(svc.alert_json(alert, svc.clock(), inhibited))


async def alert_history(request: web.Request) -> web.Response:
    svc = request.app[ALERTS_KEY]
    now = svc.clock()
    try:
        since = float(request.query.get("since", now - 86400))
        until = float(request.query.get("until", now))
    except ValueError:
        return _json_error(400, "since and until are Unix seconds")
    out = []
    for a in svc.store.history(since, until):
        out.append({"id": a.id, "fingerprint": a.fp, "alertname": a.name, "severity": a.severity, "labels": a.labels,
                    "state": a.state,
                    "activeSince": a.active_since, "firedAt": a.fired_at, "resolvedAt": a.resolved_at,
                    "ack": None if a.ack_at is None else {"by": a.ack_by, "at": a.ack_at, "comment": a.ack_comment},
                    "fallback": svc.fallback_json(a)})
    return web.json_response({"alerts": out})


async def get_silences(request: web.Request) -> web.Response:
    svc = request.app[ALERTS_KEY]
    now = svc.clock()
    return web.json_response({"silences": [s.to_json(now) for s in svc.silences.listing(now)]})


async def post_silence(request: web.Request) -> web.Response:
    svc = request.app[ALERTS_KEY]
    user = await require_user(request)
    body = await _body(request)
    try:
        s = svc.add_silence(body, user)
    except SilenceError as exc:
        return _json_error(400, str(exc))
    return web.json_response({"silenceID": s.id, "silence": s.to_json(svc.clock())})


async def delete_silence(request: web.Request) -> web.Response:
    svc = request.app[ALERTS_KEY]
    await require_user(request)
    sid = request.match_info.get("id") or request.query.get("id", "")
    if not sid:
        return _json_error(400, "say which silence: DELETE /api/v1/silences/{id}")
    s = svc.expire_silence(sid)
    if s is None:
        return _json_error(404, "no silence with this id")
    return web.json_response({"silence": s.to_json(svc.clock())})


def add_routes(app: web.Application, svc: AlertService, user_of: RequireUser) -> None:
    """The alerts and silences API of ``svc``; changes need the user ``user_of`` names."""
    app[ALERTS_KEY] = svc
    app[USER_KEY] = user_of
    app.router.add_get("/api/v1/alerts", get_alerts)
    app.router.add_get("/api/v1/alerts/history", alert_history)
    app.router.add_post("/api/v1/alerts/{id}/ack", ack_alert)
    app.router.add_get("/api/v1/silences", get_silences)
    app.router.add_post("/api/v1/silences", post_silence)
    app.router.add_delete("/api/v1/silences", delete_silence)
    app.router.add_delete("/api/v1/silences/{id}", delete_silence)

