"""End to end with real processes: agent → collector → Prometheus."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.conftest import CollectorHandle
from tests.helpers import http_get, http_json, metric_value, wait_for
from tests.peers.prometheus import promtool_check_metrics

pytest_plugins: list[str] = []


def test_agent_pushes_host_metrics_and_goes_down_when_killed(collector: CollectorHandle, agent_factory: Any) -> None:
    proc, _ = agent_factory(collector.url)

    def seen() -> bool:
        text = collector.metrics()
        return (metric_value(text, "roomwatch_agent_up", agent="agent-a") == 1
                and metric_value(text, "roomwatch_host_memory_total_bytes", agent="agent-a") is not None)

    wait_for(seen, timeout=20, what="host metrics at the collector")
    text = collector.metrics()
    assert metric_value(text, "roomwatch_device_up", agent="agent-a", device="host", site="test-site",
                        room="room-1") == 1
    assert metric_value(text, "roomwatch_host_cpus", agent="agent-a") >= 1
    agents = {a["id"]: a for a in http_json(collector.url + "/api/v1/agents")["agents"]}
    assert agents["agent-a"]["up"] is True and agents["agent-b"]["up"] is False

    killed_at = time.monotonic()
    proc.kill()  # SIGKILL: no goodbye
    wait_for(lambda: metric_value(collector.metrics(), "roomwatch_agent_up", agent="agent-a") == 0, timeout=15,
             what="roomwatch_agent_up 0")
    # agent_timeout is 3s in the fixture: not before it, and soon after (housekeeping runs every second)
    assert time.monotonic() - killed_at >= 2.0
    wait_for(lambda: "agent agent-a is down" in collector.proc.log(), timeout=5, what="the AgentDown log line")


def test_metrics_pass_promtool(collector: CollectorHandle, agent_factory: Any) -> None:
    _, agent_url = agent_factory(collector.url)
    wait_for(lambda: metric_value(collector.metrics(), "roomwatch_host_load1") is not None, timeout=20,
             what="host metrics")
    for url in (collector.url, agent_url):
        status, body = http_get(url + "/metrics")
        assert status == 200
        res = promtool_check_metrics(body)
        assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), (url, res.stdout, res.stderr)


def test_openmetrics_when_asked(collector: CollectorHandle, agent_factory: Any) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    _, agent_url = agent_factory(collector.url)
    wait_for(lambda: metric_value(collector.metrics(), "roomwatch_host_load1") is not None, timeout=20,
             what="host metrics")
    for url in (collector.url, agent_url):
        status, body = http_get(url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert status == 200 and body.endswith(b"# EOF\n")
        names = {f.name for f in text_string_to_metric_families(body.decode())}  # strict parser: raises on errors
        assert "roomwatch_device_up" in names


def test_real_prometheus_scrapes_collector(collector: CollectorHandle, agent_factory: Any,
                                           prometheus_factory: Any, tmp_path: Path) -> None:
    agent_factory(collector.url)
    prom = prometheus_factory([f"127.0.0.1:{collector.port}"])
    result = wait_for(lambda: prom.query('roomwatch_host_memory_total_bytes{agent="agent-a"}'), timeout=40,
                      what="Prometheus to return the agent's series")
    assert result[0]["metric"]["device"] == "host"
    assert float(result[0]["value"][1]) > 0
    up = wait_for(lambda: prom.query('roomwatch_agent_up{agent="agent-a"} == 1'), timeout=20, what="agent_up in Prometheus")
    assert up


def test_pull_mode_agent_without_collector(agent_factory: Any) -> None:
    _, url = agent_factory(None)
    wait_for(lambda: metric_value(http_get(url + "/metrics")[1].decode(), "roomwatch_host_load1") is not None,
             timeout=15, what="agent /metrics")
    health = http_json(url + "/healthz")
    assert health["status"] == "ok" and health["devices_down"] == []


def test_agent_keeps_batches_while_collector_is_down(tmp_path: Path, agent_factory: Any) -> None:
    from tests.conftest import start_collector
    from tests.helpers import free_port

    port = free_port()
    proc, agent_url = agent_factory(f"http://127.0.0.1:{port}")
    wait_for(lambda: http_json(agent_url + "/healthz").get("push_queue_batches", 0) >= 3, timeout=20,
             what="batches queued while the collector is down")
    # The collector comes up on the port the agent was told about; the backlog drains.
    c = start_collector(tmp_path, name="late", listen=f"127.0.0.1:{port}")
    try:
        wait_for(lambda: http_json(agent_url + "/healthz")["push_queue_batches"] == 0, timeout=90,
                 what="the queue to drain")
        assert metric_value(c.metrics(), "roomwatch_agent_up", agent="agent-a") == 1
        assert "cannot push to the collector" in proc.log()
        assert proc.log().count("cannot push to the collector") == 1  # said once, not every retry
    finally:
        c.proc.stop()
