"""A webhook receiver on loopback (aiohttp in a thread) that checks what Alertmanager's receivers rely on.

Every POST body must be the Alertmanager webhook JSON version 4 with exactly
Alertmanager 0.25's fields (CHANNELS.md §10); a body that is not gets a 400
and is recorded as a protocol error, which tests assert never happens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import free_port

TOP_KEYS = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
            "commonAnnotations", "externalURL", "alerts"}
ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
ZERO = "0001-01-01T00:00:00Z"


def check_v4(body: Any) -> list[str]:
    """Problems of a webhook body (empty when it is a valid version 4 body)."""
    problems = []
    if not isinstance(body, dict):
        return ["body is not an object"]
    if set(body) != TOP_KEYS:
        problems.append(f"top-level keys {sorted(set(body) ^ TOP_KEYS)} differ from Alertmanager's")
    if body.get("version") != "4":
        problems.append("version is not '4'")
    if body.get("status") not in ("firing", "resolved"):
        problems.append("status is not firing/resolved")
    if not isinstance(body.get("truncatedAlerts"), int):
        problems.append("truncatedAlerts is not an integer")
    for k in ("groupLabels", "commonLabels", "commonAnnotations"):
        if not isinstance(body.get(k), dict) or not all(isinstance(v, str) for v in body.get(k, {}).values()):
            problems.append(f"{k} is not a map of strings")
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        return problems + ["alerts is not a non-empty list"]
    for i, a in enumerate(alerts):
        if set(a) != ALERT_KEYS:
            problems.append(f"alerts[{i}] keys {sorted(set(a) ^ ALERT_KEYS)} differ")
            continue
        if a["status"] not in ("firing", "resolved"):
            problems.append(f"alerts[{i}].status")
        if not re.fullmatch(r"[0-9a-f]{16}", a["fingerprint"]):
            problems.append(f"alerts[{i}].fingerprint is not 16 hex digits")
        if "alertname" not in a["labels"]:
            problems.append(f"alerts[{i}] has no alertname label")
        try:
            starts = dt.datetime.fromisoformat(a["startsAt"].replace("Z", "+00:00"))
            assert starts.tzinfo is not None
        except (ValueError, AssertionError):
            problems.append(f"alerts[{i}].startsAt is not RFC 3339")
        if a["status"] == "firing" and a["endsAt"] != ZERO:
            problems.append(f"alerts[{i}] firing but endsAt is not the zero time")
        if a["status"] == "resolved" and a["endsAt"] == ZERO:
            problems.append(f"alerts[{i}] resolved without endsAt")
    return problems


@dataclass
class Received:
    at: float  # time.time() when the request arrived
    path: str
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    port: int
    status: int = 200  # what to answer
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.time()
        try:
            body = json.loads(await request.read())
        except ValueError:
            self.errors.append("body is not JSON")
            return web.Response(status=400)
        problems = check_v4(body)
        if problems:
            self.errors.extend(problems)
            return web.Response(status=400, text="; ".join(problems))
        if self.status < 300:
            self.received.append(Received(at, request.path, body))
        return web.Response(status=self.status, text="ok" if self.status < 300 else "try later")

    def start(self) -> WebhookReceiver:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="webhook-receiver")
        self._thread.start()
        if not ready.wait(10):
            raise AssertionError("webhook receiver did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def alerts(self) -> list[tuple[str, str, dict[str, str]]]:
        """(status, alertname, labels) of every alert received, in order."""
        return [(a["status"], a["labels"]["alertname"], a["labels"]) for r in self.received for a in r.body["alerts"]]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A running receiver on an ephemeral port; ``.stop()``/``.start()`` simulate an outage."""
    r = WebhookReceiver(free_port()).start()
    yield r
    r.stop()
    assert not r.errors, r.errors
