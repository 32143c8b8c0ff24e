"""``GET|POST /ack/{id}``: the phone page behind a one-tap acknowledge link, no login needed.

GET shows what happened, where and since when, and one button; the button POSTs to the
same URL and acknowledges (recorded "via link" with the channel and person the link was
sent to). GET never acknowledges: link previews in chat apps and mail scanners open links.
A refused link is answered 403 (forged, for another alert, expired) or 404 (malformed, the
episode is over), counted by reason in ``roomwatch_ack_links_refused_total``, and an address
that keeps sending refused links is answered 429 for a while. The route reads no body (the
button sends none): it declares ``route_limits(0)``, so the collector's body guard never reads
one and closes the connection of a request that brings one anyway.
"""

from __future__ import annotations

import html
import time
from collections import Counter, deque
from collections.abc import Callable

from aiohttp import web

from roomwatch.alerts.acklink import AckLinks, LinkRefused
from roomwatch.alerts.commands import AckError, AlertCommands
from roomwatch.alerts.model import FIRING, Alert
from roomwatch.alerts.render import Renderer
from roomwatch.alerts.templates import format_value, where
from roomwatch.alerts.timewindow import format_time
from roomwatch.core.httplimits import route_limits

__all__ = ["AckPage", "add_routes"]

THROTTLE_WINDOW, THROTTLE_LIMIT = 600.0, 30  # refused links per address before 429
_MAX_ADDRESSES = 10_000

_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}

_T = {
    "zh-CN": {"title": "告警确认", "where": "位置", "value": "当前", "since": "开始", "button": "确认，我来处理",
              "acked": "已由 {by} 确认（{at}）", "done": "已确认。不再重复提醒，也不再升级。",
              "gone": "这条告警已恢复或已结束，无需确认。",
              "refused": "链接无效", "hint": "打开链接不会确认；请点按钮。", "status": "状态页", "via": "确认人"},
    "en": {"title": "Acknowledge alert", "where": "Where", "value": "Value", "since": "Since", "button": "Acknowledge",
           "acked": "acknowledged by {by} ({at})", "done": "Acknowledged: no more reminders, no escalation.",
           "gone": "This alert has resolved or ended: nothing to acknowledge.", "refused": "Link not valid",
           "hint": "Opening the link does not acknowledge; press the button.", "status": "Status page", "via": "By"},
}
_STYLE = ("body{font:17px/1.5 system-ui,sans-serif;margin:0;padding:16px;max-width:32em;color:#222}"
          "h1{font-size:1.25em;margin:.2em 0}.sev{display:inline-block;padding:0 .5em;border-radius:4px;color:#fff;"
          "background:#c62828}.warning{background:#ef6c00}.info{background:#1565c0}dl{margin:1em 0}"
          "dt{color:#666;font-size:.85em}dd{margin:0 0 .6em}button{font-size:1.2em;width:100%;padding:.8em;"
          "border:0;border-radius:8px;background:#2e7d32;color:#fff}p.note{color:#666;font-size:.85em}")


class AckPage:
    """The page's logic: verify, show, acknowledge, count."""

    def __init__(self, links: AckLinks, commands: AlertCommands, renderer: Renderer, clock: Callable[[], float],
                 status_page: str):
        self.links = links
        self.commands = commands
        self.renderer = renderer
        self.clock = clock
        self.status_page = status_page
        self.refused: Counter[str] = Counter()
        self._refusals: dict[str, deque[float]] = {}

    # -- throttle ---------------------------------------------------------------------
    def throttled(self, address: str) -> bool:
        times = self._refusals.get(address)
        now = time.monotonic()
        while times and now - times[0] > THROTTLE_WINDOW:
            times.popleft()
        return times is not None and len(times) >= THROTTLE_LIMIT

    def _refusal(self, address: str, reason: str) -> None:
        self.refused[reason] += 1
        if address not in self._refusals and len(self._refusals) >= _MAX_ADDRESSES:
            self._refusals.clear()
        self._refusals.setdefault(address, deque(maxlen=THROTTLE_LIMIT)).append(time.monotonic())

    # -- pages --------------------------------------------------------------------------
    def _page(self, status: int, body: str) -> web.Response:
        lang = self.renderer.lang
        w = _T.get(lang, _T["zh-CN"])
        doc = (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
               f'<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">'
               f"<title>{w['title']}</title><style>{_STYLE}</style></head><body>{body}"
               f'<p class="note"><a href="{html.escape(self.status_page)}/">{w["status"]}</a></p></body></html>')
        return web.Response(status=status, text=doc, content_type="text/html", charset="utf-8", headers=_HEADERS)

    def refused_page(self, exc: LinkRefused) -> web.Response:
        w = _T.get(self.renderer.lang, _T["zh-CN"])
        return self._page(exc.status, f"<h1>{w['refused']}</h1><p>{html.escape(str(exc))}</p>")

    def alert_page(self, a: Alert, action: str, note: str = "") -> web.Response:
        lang = self.renderer.lang
        w = _T.get(lang, _T["zh-CN"])
        ann = self.renderer.annotations(a)
        summary = ann.get("summary") or a.name
        rows = [(w["where"], where(a.labels) or "-"), (w["value"], format_value(a.metric, a.value, lang)),
                (w["since"], format_time(a.active_since, self.renderer.tz))]
        body = [f'<p><span class="sev {html.escape(a.severity)}">{html.escape(a.severity)}</span></p>',
                f"<h1>{html.escape(summary)}</h1>",
                "<dl>" + "".join(f"<dt>{k}</dt><dd>{html.escape(v)}</dd>" for k, v in rows) + "</dl>"]
        if ann.get("description"):
            body.append(f"<p>{html.escape(ann['description'])}</p>")
        if note:
            body.append(f"<p><b>{html.escape(note)}</b></p>")
        if a.ack_at is not None:
            body.append("<p>" + html.escape(w["acked"].format(by=a.ack_by, at=format_time(a.ack_at, self.renderer.tz)))
                        + "</p>")
        else:
            body.append(f'<form method="post" action="{html.escape(action)}"><button type="submit">{w["button"]}'
                        f'</button></form><p class="note">{w["hint"]}</p>')
        return self._page(200, "".join(body))

    def gone_page(self) -> web.Response:
        return self._page(404, f"<h1>{_T.get(self.renderer.lang, _T['zh-CN'])['gone']}</h1>")

    def current(self, alert_id: str) -> Alert | None:
        a = self.commands.engine.active.get(alert_id.partition("-")[0])
        return a if a is not None and a.id == alert_id and a.state == FIRING else None

    # -- handlers -----------------------------------------------------------------------
    async def handle_get(self, request: web.Request) -> web.Response:
        """GET (and HEAD): the page; never acknowledges."""
        return await self.handle(request)

    @route_limits(0)  # the button sends no body; one that comes anyway is never read (collector/limits.py)
    async def handle_post(self, request: web.Request) -> web.Response:
        """POST: acknowledge."""
        return await self.handle(request)

    async def handle(self, request: web.Request) -> web.Response:
        address = request.remote or ""
        if self.throttled(address):
            self.refused["throttled"] += 1
            return web.Response(status=429, text="too many invalid links from this address; wait a few minutes",
                                headers={"Retry-After": "600"})
        alert_id = request.match_info["id"]
        try:
            claim = self.links.verify(alert_id, request.query, self.clock())
        except LinkRefused as exc:
            self._refusal(address, exc.reason)
            return self.refused_page(exc)
        a = self.current(alert_id)
        if a is None:
            self.refused["gone"] += 1
            return self.gone_page()
        action = request.rel_url.raw_path + ("?" + request.rel_url.raw_query_string if request.rel_url.raw_query_string
                                             else "")
        if request.method != "POST":
            return self.alert_page(a, action)
        who = claim.person or (f"link ({claim.channel})" if claim.channel else "link")
        try:
            a = self.commands.ack(alert_id, who, via="link", channel=claim.channel)
        except AckError:
            self.refused["gone"] += 1
            return self.gone_page()
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response({"acknowledged": True, "id": a.id, "by": a.ack_by, "via": "link"},
                                     headers=_HEADERS)
        return self.alert_page(a, action, _T.get(self.renderer.lang, _T["zh-CN"])["done"])


ACKPAGE_KEY = web.AppKey("ack_page", AckPage)


def add_routes(app: web.Application, page: AckPage) -> None:
    """``GET`` and ``POST /ack/{id}`` (no login: the signed link is the credential)."""
    app[ACKPAGE_KEY] = page
    app.router.add_get("/ack/{id}", page.handle_get)
    app.router.add_post("/ack/{id}", page.handle_post)
