"""Remote write to a REAL Prometheus (2.42, --web.enable-remote-write-receiver), backfill included."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from roomwatch.collector.remote_write import decode_write_request, encode_write_request
from roomwatch.core.wire import Batch, SampleRecord, encode_batch
from tests.conftest import TOKENS, CollectorHandle, start_collector
from tests.helpers import free_port, http_get, http_post, metric_value, require_binary, wait_for
from tests.peers.process import PeerProcess

T = "roomwatch_temperature_celsius"


def _prometheus(workdir: Path, port: int) -> tuple[PeerProcess, str]:
    """Prometheus as a remote-write receiver; out_of_order_time_window lets it take backfilled samples."""
    binary = require_binary("/usr/bin/prometheus")
    workdir.mkdir(exist_ok=True)
    conf = {"global": {"scrape_interval": "1m"}, "storage": {"tsdb": {"out_of_order_time_window": "2h"}}}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(conf))
    proc = PeerProcess("prometheus", [binary, f"--config.file={workdir / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                      "--web.enable-remote-write-receiver", "--log.level=warn"], workdir)
    url = f"http://127.0.0.1:{port}"
    proc.wait_ready(lambda: http_get(f"{url}/-/ready")[0] == 200)
    return proc, url


def _samples(prom: str, selector: str, at: float, window: str = "30m") -> list[tuple[int, float]]:
    q = urllib.parse.urlencode({"query": f"{selector}[{window}]", "time": f"{at:.3f}"})
    status, body = http_get(f"{prom}/api/v1/query?{q}")
    assert status == 200, body
    result = json.loads(body)["data"]["result"]
    return [(round(float(t) * 1000), float(val)) for r in result for t, val in r["values"]]


def _push(c: CollectorHandle, batch: Batch) -> int:
    batch.sent = int(time.time() * 1000)
    status, _ = http_post(c.url + "/api/v1/push", encode_batch(batch),
                          {"Authorization": f"Bearer {TOKENS['agent-a']}", "Content-Encoding": "gzip"})
    return status


def test_wire_format_round_trip() -> None:
    body = encode_write_request([({"__name__": T, "device": "t", "empty": ""}, [(2000, 2.5), (1000, 1.5)])])
    assert decode_write_request(body) == [({"__name__": T, "device": "t"}, [(1000, 1.5), (2000, 2.5)])]


@pytest.mark.peer
def test_backfill_reaches_a_real_prometheus_even_across_its_outage(tmp_path: Path) -> None:
    prom_port = free_port()
    prom, prom_url = _prometheus(tmp_path / "prom", prom_port)
    c = start_collector(tmp_path, remote_write=[{"url": f"{prom_url}/api/v1/write", "name": "prom",
                                                 "min_backoff": "200ms", "max_backoff": "1s"}])
    try:
        now = int(time.time() * 1000)
        labels = {"device": "t", "room": "r1"}
        # The present first, then an outage's backlog (10 minutes old) — as an agent's spool sends them.
        assert _push(c, Batch("agent-a", 2, [SampleRecord(T, labels, 30.0, now)], [])) == 200
        backlog = [SampleRecord(T, labels, 20.0 + i, now - 600_000 + i * 60_000) for i in range(10)]
        assert _push(c, Batch("agent-a", 1, backlog, [])) == 200
        expected = sorted([(s.ts, s.value) for s in backlog] + [(now, 30.0)])
        sel = f'{T}{{agent="agent-a",device="t",room="r1"}}'
        wait_for(lambda: _samples(prom_url, sel, now / 1000 + 1) == expected, timeout=30,
                 what="backfilled samples in Prometheus")
        sent = metric_value(c.metrics(), "roomwatch_collector_remote_write_samples_total", endpoint="prom", result="sent")
        assert sent == 11

        # Prometheus goes away; the collector keeps accepting, queues durably, is restarted meanwhile.
        prom.stop()
        later = now + 5_000
        assert _push(c, Batch("agent-a", 3, [SampleRecord(T, labels, 31.0, later)], [])) == 200
        wait_for(lambda: (metric_value(c.metrics(), "roomwatch_collector_remote_write_pending_samples",
                                       endpoint="prom") or 0) >= 1, timeout=10, what="a queued sample")
        c.proc.stop()
        c = start_collector(tmp_path, name="c2", storage=str(tmp_path / "collector.db"), listen=f"127.0.0.1:{c.port}",
                            remote_write=[{"url": f"{prom_url}/api/v1/write", "name": "prom", "min_backoff": "200ms",
                                           "max_backoff": "1s"}])
        prom, _ = _prometheus(tmp_path / "prom", prom_port)
        wait_for(lambda: _samples(prom_url, sel, later / 1000 + 1) == expected + [(later, 31.0)], timeout=30,
                 what="the sample queued during Prometheus's outage")
    finally:
        c.proc.stop()
        prom.stop()


@pytest.mark.peer
def test_endpoint_refusals_are_counted_not_retried_forever(tmp_path: Path) -> None:
    """Without an out-of-order window Prometheus refuses old samples with 400: counted as rejected, queue moves on."""
    binary = require_binary("/usr/bin/prometheus")
    port = free_port()
    work = tmp_path / "prom"
    work.mkdir()
    (work / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1m"}}))
    prom = PeerProcess("prometheus", [binary, f"--config.file={work / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                      "--web.enable-remote-write-receiver", "--log.level=error"], work)
    url = f"http://127.0.0.1:{port}"
    prom.wait_ready(lambda: http_get(f"{url}/-/ready")[0] == 200)
    c = start_collector(tmp_path, remote_write=[{"url": f"{url}/api/v1/write", "name": "p"}])
    try:
        now = int(time.time() * 1000)
        assert _push(c, Batch("agent-a", 1, [SampleRecord(T, {"device": "t"}, 30.0, now)], [])) == 200
        wait_for(lambda: metric_value(c.metrics(), "roomwatch_collector_remote_write_samples_total", endpoint="p",
                                      result="sent") == 1, timeout=20, what="the first sample sent")
        assert _push(c, Batch("agent-a", 2, [SampleRecord(T, {"device": "t"}, 20.0, now - 600_000)], [])) == 200
        wait_for(lambda: metric_value(c.metrics(), "roomwatch_collector_remote_write_samples_total", endpoint="p",
                                      result="rejected") == 1, timeout=20, what="the out-of-order sample rejected")
        assert _push(c, Batch("agent-a", 3, [SampleRecord(T, {"device": "t"}, 32.0, now + 1000)], [])) == 200
        wait_for(lambda: metric_value(c.metrics(), "roomwatch_collector_remote_write_samples_total", endpoint="p",
                                      result="sent") == 2, timeout=20, what="the queue to move on")
        assert "refused 1 samples: HTTP 400" in c.proc.log()
    finally:
        c.proc.stop()
        prom.stop()
