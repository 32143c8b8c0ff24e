"""A real Alertmanager (Debian ``prometheus-alertmanager``) on loopback, optionally forwarding to a webhook."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import free_port, http_get, require_binary
from tests.peers.process import PeerProcess

BINARY = "/usr/bin/prometheus-alertmanager"


class Alertmanager:
    def __init__(self, proc: PeerProcess, url: str):
        self.proc = proc
        self.url = url

    def status(self) -> dict[str, Any]:
        """``GET /api/v2/status`` (``cluster.status``, ``cluster.peers``)."""
        status, body = http_get(f"{self.url}/api/v2/status")
        assert status == 200, body
        return json.loads(body)

    def alerts(self, matcher: str = "", active_only: bool = True) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (resolved alerts are not listed)."""
        query = f"?filter={urllib.parse.quote(matcher)}" if matcher else ""
        status, body = http_get(f"{self.url}/api/v2/alerts{query}")
        assert status == 200, body
        return json.loads(body)


def start_alertmanager(workdir: Path, webhook_url: str | None = None, group_wait: str = "0s",
                       group_interval: str = "1s", repeat_interval: str = "1h", config: dict[str, Any] | None = None,
                       cluster_flags: list[str] | None = None, port: int | None = None) -> Alertmanager:
    """One Alertmanager; ``config`` replaces the generated one, ``cluster_flags`` (``--cluster.*``) make it a
    cluster peer (without them it runs alone: ``--cluster.listen-address=``)."""
    binary = require_binary(BINARY)
    port = port or free_port()
    receiver: dict[str, Any] = {"name": "default"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    conf = config or {"route": {"receiver": "default", "group_by": ["alertname"], "group_wait": group_wait,
                                "group_interval": group_interval, "repeat_interval": repeat_interval},
                      "receivers": [receiver]}
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(conf))
    proc = PeerProcess("alertmanager", [binary, f"--config.file={workdir / 'alertmanager.yml'}",
                                        f"--storage.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                        *(cluster_flags or ["--cluster.listen-address="]), "--log.level=warn"], workdir)
    url = f"http://127.0.0.1:{port}"
    proc.wait_ready(lambda: http_get(f"{url}/-/ready", timeout=1)[0] == 200)
    return Alertmanager(proc, url)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    d = tmp_path / "alertmanager"
    d.mkdir()
    am = start_alertmanager(d)
    yield am
    am.proc.stop()
