"""A real Prometheus server and promtool for tests."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import free_port, http_get, require_binary
from tests.peers.process import PeerProcess


def promtool_check_metrics(text: bytes) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on exposition text: rc 0 and no output means no lint findings."""
    promtool = require_binary("promtool")
    return subprocess.run([promtool, "check", "metrics"], input=text.decode(), capture_output=True, text=True,
                          timeout=60, check=False)


class Prometheus:
    def __init__(self, proc: PeerProcess, url: str):
        self.proc = proc
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, body = http_get(f"{self.url}/api/v1/query?query={urllib.parse.quote(expr)}")
        assert status == 200, body
        return json.loads(body)["data"]["result"]


def start_prometheus(workdir: Path, scrape_targets: list[str], interval: str = "1s") -> Prometheus:
    binary = require_binary("/usr/bin/prometheus")
    port = free_port()
    conf = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": "roomwatch", "static_configs": [{"targets": scrape_targets}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(conf))
    proc = PeerProcess("prometheus", [binary, f"--config.file={workdir / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={workdir / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], workdir)
    url = f"http://127.0.0.1:{port}"
    proc.wait_ready(lambda: http_get(f"{url}/-/ready")[0] == 200)
    return Prometheus(proc, url)


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    """Call with a list of host:port targets; the server is stopped after the test."""
    started: list[Prometheus] = []

    def make(targets: list[str], interval: str = "1s") -> Prometheus:
        d = tmp_path / f"prometheus{len(started)}"
        d.mkdir()
        p = start_prometheus(d, targets, interval)
        started.append(p)
        return p

    yield make
    for p in started:
        p.proc.stop()
