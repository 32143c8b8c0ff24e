"""Shipped Prometheus and Alertmanager files: promtool/amtool accept them, every rule is unit-tested."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.helpers import ROOT, documented_alert_names, free_port, http_get, http_post, require_binary, wait_for
from tests.peers.process import PeerProcess

PROM = ROOT / "config" / "prometheus"
AM = ROOT / "config" / "alertmanager"

#: docs/api.md "Default alert rules" — the names users route on.
CONTRACT_ALERTS = documented_alert_names()


def _rules() -> list[dict]:
    out = []
    for f in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(f.read_text())["groups"]:
            out.extend(group["rules"])
    return out


def _tests() -> list[dict]:
    out = []
    for f in sorted((PROM / "tests").glob("*.yml")):
        out.extend(yaml.safe_load(f.read_text())["tests"])
    return out


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


@pytest.mark.peer
def test_promtool_checks_config_and_rules() -> None:
    promtool = require_binary("promtool")
    r = _run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(promtool, "check", "rules", *map(str, sorted((PROM / "rules").glob("*.yml"))))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.peer
def test_promtool_rule_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    files = sorted((PROM / "tests").glob("*.yml"))
    assert files
    r = _run(promtool, "test", "rules", *map(str, files))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(files), r.stdout


def test_the_rule_pack_matches_the_contract() -> None:
    alerts = {r["alert"]: r for r in _rules() if "alert" in r}
    assert set(alerts) >= CONTRACT_ALERTS, CONTRACT_ALERTS - set(alerts)
    severities = {"RoomTemperatureCritical": "critical", "WaterLeak": "critical", "SmokeDetected": "critical",
                  "UPSBatteryLow": "critical", "UPSRuntimeLow": "critical", "AgentDown": "critical"}
    for name in CONTRACT_ALERTS:
        rule = alerts[name]
        assert rule["labels"]["severity"] == severities.get(name, "warning"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name
    # "for" as in alerts/defaults.yaml
    want_for = {"RoomTemperatureHigh": "5m", "RoomTemperatureCritical": "2m", "RoomHumidityOutOfRange": "15m",
                "DoorOpenTooLong": "10m", "UPSOnBattery": "30s", "UPSRuntimeLow": "1m", "UPSBatteryReplace": "10m",
                "DeviceDown": "2m"}
    for name in CONTRACT_ALERTS:
        assert alerts[name].get("for") == want_for.get(name), name


def test_every_rule_has_a_unit_test_that_sees_it_fire() -> None:
    """Each alert appears firing in some exp_alerts; each recording rule in some promql_expr_test."""
    fired: set[str] = set()
    quiet: set[str] = set()
    queried: set[str] = set()
    for t in _tests():
        for a in t.get("alert_rule_test", []):
            (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
        for e in t.get("promql_expr_test", []):
            queried.update(re.findall(r"[a-z_]+:[a-z_:]+", e["expr"]))
    for rule in _rules():
        if "alert" in rule:
            assert rule["alert"] in fired, f"{rule['alert']} never seen firing in a test"
            assert rule["alert"] in quiet, f"{rule['alert']} never seen not firing in a test"
        else:
            assert rule["record"] in queried, f"{rule['record']} untested"


def test_hysteresis_rules_reference_their_own_alert() -> None:
    for rule in _rules():
        if "ALERTS" in rule.get("expr", ""):
            assert f'alertname="{rule["alert"]}"' in rule["expr"], rule["alert"]


@pytest.mark.peer
def test_amtool_accepts_the_alertmanager_example() -> None:
    amtool = require_binary("amtool")
    r = _run(amtool, "check-config", str(AM / "alertmanager.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 inhibit rules" in r.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=WaterLeak", "severity=critical", "room=r1"], "wechat-and-sms"),
    (["alertname=DoorOpenTooLong", "severity=warning"], "wechat-duty"),
    (["alertname=Other"], "wechat-duty"),
])
@pytest.mark.peer
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    amtool = require_binary("amtool")
    r = _run(amtool, "config", "routes", "test", f"--config.file={AM / 'alertmanager.yml'}", *labels)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == receiver


# ------------------------------------------------------------ a real Alertmanager with the example


class _Stub(http.server.BaseHTTPRequestHandler):
    """WeChat Work's gettoken + message/send and an SMS webhook, as Alertmanager calls them."""

    seen: ClassVar[list[tuple[str, str, Any]]] = []

    def _reply(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        type(self).seen.append(("GET", self.path, None))
        if self.path.startswith("/cgi-bin/gettoken"):
            self._reply({"errcode": 0, "errmsg": "ok", "access_token": "test-token", "expires_in": 7200})
        else:
            self._reply({"errcode": 404})

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        type(self).seen.append(("POST", self.path, json.loads(self.rfile.read(n))))
        self._reply({"errcode": 0, "errmsg": "ok"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    _Stub.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Stub.seen
    srv.shutdown()
    srv.server_close()


@pytest.mark.peer
def test_example_delivers_to_wechat_and_sms_and_inhibits(tmp_path: Path, stub: tuple[str, list[Any]]) -> None:
    """The shipped config on a real Alertmanager: the template renders, both receivers get a critical alert."""
    binary = require_binary("/usr/bin/prometheus-alertmanager")
    base, seen = stub
    conf = yaml.safe_load((AM / "alertmanager.yml").read_text())
    conf["global"]["wechat_api_url"] = f"{base}/cgi-bin/"
    conf["templates"] = [str(AM / "templates" / "roomwatch.tmpl")]
    conf["route"]["group_wait"] = "1s"
    for r in conf["route"]["routes"]:
        r["group_wait"] = "1s"
    for rcv in conf["receivers"]:
        for w in rcv.get("webhook_configs", []):
            w["url"] = f"{base}/api/v1/sms"
    (tmp_path / "am.yml").write_text(yaml.safe_dump(conf, allow_unicode=True))
    port = free_port()
    proc = PeerProcess("alertmanager", [binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
                                        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                        "--log.level=warn"], tmp_path, env={"TZ": "Asia/Shanghai"})
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(lambda: http_get(f"{url}/-/ready")[0] == 200)
        alerts = [
            {"labels": {"alertname": "WaterLeak", "severity": "critical", "site": "s1", "room": "r1", "agent": "a1",
                        "device": "leak1"},
             "annotations": {"summary": "s1 r1 漏水", "description": "leak1 检测到漏水，请立即到现场检查。"}},
            {"labels": {"alertname": "AgentDown", "severity": "critical", "agent": "a2"}, "annotations": {"summary": "x"}},
            {"labels": {"alertname": "DeviceDown", "severity": "warning", "agent": "a2", "device": "ups9"},
             "annotations": {"summary": "y"}},
        ]
        status, body = http_post(f"{url}/api/v2/alerts", json.dumps(alerts).encode(), {"Content-Type": "application/json"})
        assert status == 200, body

        def delivered() -> bool:
            posts = [(p, b) for m, p, b in seen if m == "POST"]
            return any(p.startswith("/cgi-bin/message/send") and "WaterLeak" in json.dumps(b, ensure_ascii=False)
                       for p, b in posts) and any(p == "/api/v1/sms" for p, _ in posts)

        wait_for(delivered, timeout=60, what="WeChat and SMS deliveries")
        wechat = next(b for m, p, b in seen if m == "POST" and p.startswith("/cgi-bin/message/send")
                      and "WaterLeak" in json.dumps(b, ensure_ascii=False))
        assert wechat["msgtype"] == "markdown" and wechat["agentid"] == "1000002" and wechat["toparty"] == "2"
        content = wechat["markdown"]["content"]
        assert "**【告警】** WaterLeak" in content and "> leak1 检测到漏水，请立即到现场检查。" in content
        assert "开始：" in content
        sms = next(b for m, p, b in seen if m == "POST" and p == "/api/v1/sms")
        assert sms["version"] == "4" and sms["receiver"] == "wechat-and-sms"
        # AgentDown of a2 inhibits DeviceDown of a2's device.
        status, body = http_get(f"{url}/api/v2/alerts?filter=alertname%3D%22DeviceDown%22")
        [dd] = json.loads(body)
        assert dd["status"]["state"] == "suppressed" and dd["status"]["inhibitedBy"]
    finally:
        proc.stop()
