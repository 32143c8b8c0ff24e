"""The demo's notification sink: a webhook receiver on 127.0.0.1 that prints each notification.

``roomwatch demo`` routes every alert to a real ``webhook`` channel pointing here,
so the whole path — rule, route, outbox, channel, HTTP — runs as it would for a
real receiver, and the notifications show up in the demo's terminal (and in
``notifications.log`` in the demo's directory). The body is the Alertmanager
webhook JSON (version 4) that the ``webhook`` channel posts.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

__all__ = ["NotificationSink", "notification_lines"]

#: A demo notification is a handful of alerts; anything far larger is not from the demo's collector.
_MAX_BODY = 1 << 20


def notification_lines(body: dict[str, Any]) -> list[str]:
    """One line per alert of a webhook body: time, status, name, severity, where, summary."""
    lines = []
    for a in body.get("alerts") or []:
        labels = a.get("labels") or {}
        annotations = a.get("annotations") or {}
        where = "/".join(labels[k] for k in ("site", "room", "device", "sensor") if labels.get(k)) or labels.get("agent", "")
        text = annotations.get("summary") or annotations.get("description") or ""
        lines.append(f"notification {time.strftime('%H:%M:%S')} {str(a.get('status', '?')).upper()} "
                     f"{labels.get('alertname', '?')} [{labels.get('severity', '?')}] {where}"
                     + (f" — {text}" if text else ""))
    return lines


class NotificationSink:
    """A loopback HTTP server: every POST with a webhook body is printed, one line per alert."""

    def __init__(self, log_path: Path, out: TextIO | None = None):
        self.log_path = log_path
        self.out = out if out is not None else sys.stdout
        self.lines: list[str] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= _MAX_BODY:
                    self.send_error(400, "expected a JSON body")
                    return
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    self.send_error(400, "body is not JSON")
                    return
                sink.record(notification_lines(body) if isinstance(body, dict) else [])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the lines are the log
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/demo-notifications"
        self._thread = threading.Thread(target=self.server.serve_forever, name="demo-sink", daemon=True)
        self._started = False

    def record(self, lines: list[str]) -> None:
        with self._lock:
            self.lines.extend(lines)
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.writelines(line + "\n" for line in lines)
            for line in lines:
                print(f"  {line}", file=self.out, flush=True)

    def start(self) -> NotificationSink:
        self._thread.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:  # shutdown() waits for serve_forever, which never ran otherwise
            self.server.shutdown()
            self._thread.join(5)
        self.server.server_close()
