"""Scale-out on existing engines: two collectors, Alertmanager deduplicating their alerts (config/scale-out/).

* Two collectors built from ``config/scale-out/collector-{a,b}.yaml`` receive the same agent's leak and
  each push it to both peers of an Alertmanager cluster started with the flags of
  ``config/scale-out/alertmanager-{1,2}.default`` and the shipped ``alertmanager.yml``: the webhook
  receiver behind the cluster gets ONE notification when the leak starts and ONE when it ends.
* Issue 6 item 4: a real agent listing both collectors fails over from one to the other while its leak
  alert fires; both collectors send the alert to ONE Alertmanager: one notification, one resolution.

Addresses and timings of the shipped files are replaced by loopback ports and seconds; the structure
(agents, channel, route, cluster flags) is theirs.
"""

from __future__ import annotations

import concurrent.futures
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    ROOT,
    RoomwatchProcess,
    cli,
    free_port,
    http_get,
    http_json,
    http_post,
    metric_value,
    require_binary,
    wait_for,
    write_yaml,
)
from tests.peers.alertmanager import Alertmanager, start_alertmanager
from tests.peers.webhook_receiver import WebhookReceiver
from tests.reliability_rig import AGENT_BOOT, Proc

SCALE = ROOT / "config" / "scale-out"
AGENT = "county-a-room1"
TOKENS = {"county-a-room1": "test-token-county-a-room1-xxxxxxxx", "county-b-room1": "test-token-county-b-room1-xxxxxxxx"}
PEER_TIMEOUT = 3.0  # s; the shipped 15s, shortened for the test
# Alertmanager's group_interval, shortened too but kept above the peer timeout as in the shipped file:
# below it, a peer whose flush began before a resolve can notify "firing" again after the other peer
# notified the resolution (prometheus/alertmanager#4008, docs/scaling.md).
GROUP_INTERVAL = 5.0


def _am_config(receiver_url: str) -> dict[str, Any]:
    """The shipped alertmanager.yml with the receiver on loopback and second-scale group timings."""
    conf = yaml.safe_load((SCALE / "alertmanager.yml").read_text())
    for r in conf["receivers"]:
        for hook in r.get("webhook_configs", []):
            hook["url"] = receiver_url
    for route in [conf["route"], *conf["route"].get("routes", [])]:
        route.update({"group_wait": "0s", "group_interval": f"{GROUP_INTERVAL:g}s"})
    return conf


def _cluster_flags(n: int, cluster_ports: dict[str, int]) -> list[str]:
    """``--cluster.*`` flags of the shipped alertmanager-N.default, addresses mapped to loopback ports."""
    text = (SCALE / f"alertmanager-{n}.default").read_text()
    line = next(line for line in text.splitlines() if line.startswith("ARGS="))
    args = shlex.split(line[len("ARGS="):])[0].split()  # the unit runs "$ARGS" unquoted: split on blanks
    out = []
    for a in args:
        if not a.startswith("--cluster."):
            continue  # config, storage and web address are the test's
        for shipped, port in cluster_ports.items():
            a = a.replace(shipped, f"127.0.0.1:{port}")
        if a.startswith("--cluster.peer-timeout="):
            a = f"--cluster.peer-timeout={PEER_TIMEOUT:g}s"
        out.append(a)
    assert any(a.startswith("--cluster.peer=127.0.0.1:") for a in out), out
    # gossip fast on loopback, so the peers settle and share what they notified within the test's seconds
    return out + ["--cluster.gossip-interval=50ms", "--cluster.pushpull-interval=1s", "--cluster.settle-timeout=10s"]


def _collector(tmp: Path, name: str, am_urls: list[str]) -> tuple[RoomwatchProcess, str]:
    """A collector from the shipped collector-NAME.yaml, on loopback, alerting to ``am_urls``."""
    conf = yaml.safe_load((SCALE / f"collector-{name}.yaml").read_text())
    port = free_port()
    conf["listen"] = f"127.0.0.1:{port}"
    conf["storage"] = str(tmp / f"collector-{name}.db")
    # tokens instead of the shipped hashes; the shipped standby marks and agent_timeout stay
    conf["agents"] = [{**{k: v for k, v in a.items() if k != "token_hash"}, "token": TOKENS[a["id"]]}
                      for a in conf["agents"]]
    [am] = [c for c in conf["channels"] if c["type"] == "alertmanager"]
    am["urls"] = am_urls
    path = write_yaml(tmp / f"collector-{name}.yaml", conf)
    proc = RoomwatchProcess(["collector", "-c", str(path)], tmp / f"collector-{name}.log")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_get(url + "/readyz", timeout=1)[0] == 200, proc=proc.proc, what=f"collector {name}")
    return proc, url


def _push_leak(url: str, seq: int, wet: bool) -> None:
    ts = int(time.time() * 1000)
    labels = {"site": "county-a", "room": "room1", "device": "leak1"}
    body = {"agent": AGENT, "seq": seq, "sent": ts,
            "samples": [{"metric": "roomwatch_water_leak_detected", "labels": labels, "value": 1 if wet else 0, "ts": ts}],
            "events": [{"type": "water_leak" if wet else "water_leak_clear", "labels": labels, "ts": ts,
                        "value": 1 if wet else 0}]}
    status, reply = http_post(url + "/api/v1/push", json.dumps(body).encode(),
                              {"Authorization": f"Bearer {TOKENS[AGENT]}", "Content-Type": "application/json"})
    assert status == 200, reply


def _leak_notifications(receiver: WebhookReceiver) -> list[str]:
    """Status of each WaterLeak alert in each notification the receiver got, in order."""
    return [a["status"] for r in receiver.received for a in r.body["alerts"] if a["labels"]["alertname"] == "WaterLeak"]


def _wait_notifications(receiver: WebhookReceiver, expected: list[str], settle: float) -> None:
    """Until the receiver has ``expected``; then ``settle`` seconds more, and still exactly that."""
    wait_for(lambda: _leak_notifications(receiver) == expected, timeout=30, interval=0.1,
             what=f"notifications {expected} (got {_leak_notifications(receiver)})")
    time.sleep(settle)
    assert _leak_notifications(receiver) == expected


@pytest.mark.peer
def test_shipped_scale_out_configs_are_valid() -> None:
    """What users copy must pass each engine's own checker."""
    for name in ("collector-a.yaml", "collector-b.yaml", "agent.yaml"):
        res = cli("check-config", str(SCALE / name))
        assert res.returncode == 0, res.stdout + res.stderr
    amtool = require_binary("/usr/bin/amtool")
    res = subprocess.run([amtool, "check-config", str(SCALE / "alertmanager.yml")], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    promtool = require_binary("/usr/bin/promtool")
    res = subprocess.run([promtool, "check", "config", str(SCALE / "prometheus.yml")], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    a, b = (yaml.safe_load((SCALE / f"collector-{n}.yaml").read_text()) for n in "ab")
    tokens = [{e["id"]: e["token_hash"] for e in c["agents"]} for c in (a, b)]
    assert tokens[0] == tokens[1], "both collectors of a failover pair must accept every agent"
    # each agent has one home: standby on exactly one of the pair, so only its home raises AgentDown
    standby = [{e["id"] for e in c["agents"] if e.get("standby")} for c in (a, b)]
    assert standby[0].isdisjoint(standby[1]) and standby[0] | standby[1] == set(tokens[0])
    assert AGENT in standby[1], "county A's agent lives on collector A (agent.yaml lists A first)"
    agent = yaml.safe_load((SCALE / "agent.yaml").read_text())
    assert agent["collector"]["urls"] == [f"http://{a['listen']}", f"http://{b['listen']}"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[list[Any]]:
    """Processes to stop at the end, in reverse order."""
    started: list[Any] = []
    yield started
    for p in reversed(started):
        p.proc.stop() if isinstance(p, Alertmanager) else p.stop()


@pytest.mark.peer("alertmanager")
def test_two_collectors_two_clustered_alertmanagers_one_notification(
        tmp_path: Path, webhook_receiver: WebhookReceiver, stack: list[Any]) -> None:
    cluster_ports = {"10.0.0.21:9094": free_port(), "10.0.0.22:9094": free_port()}
    ams = []
    for n in (1, 2):
        d = tmp_path / f"am{n}"
        d.mkdir()
        ams.append(start_alertmanager(d, config=_am_config(webhook_receiver.url + "/duty"),
                                      cluster_flags=_cluster_flags(n, cluster_ports)))
        stack.append(ams[-1])

    def settled() -> bool:
        return all(s["cluster"]["status"] == "ready" and len(s["cluster"]["peers"]) == 2
                   for s in (am.status() for am in ams))

    wait_for(settled, timeout=30, interval=0.2, what="the two Alertmanagers to form a cluster")
    collectors = []
    for name in ("a", "b"):
        proc, url = _collector(tmp_path, name, [am.url for am in ams])
        stack.append(proc)
        collectors.append(url)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the same push reaches both at once
        list(pool.map(lambda u: _push_leak(u, 1, True), collectors))
    # both peers hold the alert (each got it from both collectors): the cluster had something to deduplicate
    for am in ams:
        wait_for(lambda am=am: len(am.alerts('alertname="WaterLeak"')) == 1, timeout=15, what="the alert in each peer")
    # one notification, and none later: the second peer waits PEER_TIMEOUT, sees the first one's, stays quiet
    _wait_notifications(webhook_receiver, ["firing"], settle=PEER_TIMEOUT + GROUP_INTERVAL + 2)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda u: _push_leak(u, 2, False), collectors))
    _wait_notifications(webhook_receiver, ["firing", "resolved"], settle=PEER_TIMEOUT + GROUP_INTERVAL + 2)
    [first] = [r for r in webhook_receiver.received if r.body["status"] == "firing"]
    assert first.body["alerts"][0]["labels"]["agent"] == AGENT


@pytest.mark.peer("alertmanager")
def test_agent_failing_over_between_collectors_one_alertmanager_one_notification(
        tmp_path: Path, webhook_receiver: WebhookReceiver, stack: list[Any]) -> None:
    """Issue 6 item 4: the same agent's alert from two collectors, one Alertmanager: one notification."""
    d = tmp_path / "am"
    d.mkdir()
    am = start_alertmanager(d, config=_am_config(webhook_receiver.url + "/duty"))
    stack.append(am)
    proc_a, url_a = _collector(tmp_path, "a", [am.url])
    stack.append(proc_a)
    proc_b, url_b = _collector(tmp_path, "b", [am.url])
    stack.append(proc_b)
    state = tmp_path / "state"
    state.write_text("roomwatch_water_leak_detected 0\n")
    agent_yaml = yaml.safe_load((SCALE / "agent.yaml").read_text().replace("${ROOMWATCH_TOKEN:-", "${UNSET_IN_TEST:-"))
    port = free_port()
    agent_yaml["agent"].update({"listen": f"127.0.0.1:{port}", "spool": str(tmp_path / "spool.db")})
    agent_yaml["collector"].update({"urls": [url_a, url_b], "token": TOKENS[AGENT], "push_interval": "300ms",
                                    "timeout": "2s", "backoff_max": "1s"})
    agent_yaml["host"] = {"enabled": False}
    agent_yaml["devices"] = [{"name": "leak1", "driver": "test-counter", "interval": "200ms",
                              "log": str(tmp_path / "produced.log"), "state_file": str(state)}]
    agent = Proc([sys.executable, "-c", AGENT_BOOT, "agent", "-c", str(write_yaml(tmp_path / "agent.yaml", agent_yaml))],
                 tmp_path / "agent.log")
    stack.append(agent)
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz", timeout=1)[0] == 200, proc=agent.proc, what="agent")

    state.write_text("roomwatch_water_leak_detected 1\n")
    _wait_notifications(webhook_receiver, ["firing"], settle=0)
    proc_a.stop()  # the agent moves to collector B, which sees the leak and fires the same alert

    def b_delivered() -> bool:
        fired = [a for a in http_json(url_b + "/api/v1/alerts")["alerts"] if a["alertname"] == "WaterLeak"]
        sent = metric_value(http_get(url_b + "/metrics")[1].decode(), "roomwatch_notifications_total",
                            channel="am", outcome="delivered")
        return bool(fired) and fired[0]["state"] == "firing" and (sent or 0) >= 1

    wait_for(b_delivered, timeout=30, interval=0.2, what="collector B to fire the leak and push it to Alertmanager")
    _wait_notifications(webhook_receiver, ["firing"], settle=3)  # Alertmanager already told people

    state.write_text("roomwatch_water_leak_detected 0\n")
    _wait_notifications(webhook_receiver, ["firing", "resolved"], settle=3)
