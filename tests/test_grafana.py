"""Grafana dashboards: generated files current, every PromQL valid (promtool and a real Prometheus), only roomwatch metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from roomwatch.core.vocabulary import METRICS
from tests.helpers import ROOT, RoomwatchProcess, http_get, require_binary, wait_for

GRAFANA = ROOT / "config" / "grafana"
BOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
NON_ROOMWATCH = {"up"}  # Prometheus' own series allowed in dashboards (none used now)

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
             "inf", "nan"}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def _var_selectors(board: dict[str, Any]) -> list[str]:
    """The series selectors inside label_values(SELECTOR, label) variable queries."""
    out = []
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
        assert m, f"variable {var['name']}: unexpected query {q!r}"
        out.append(m.group(1))
    return out


def concrete(expr: str) -> str:
    """Grafana's variables replaced the way Grafana would for 'All'."""
    expr = re.sub(r"\$\{?(site|room|device|agent)\}?", ".*", expr)
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "1d")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers outside label matchers, not functions or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # strings
    text = re.sub(r"\{[^}]*\}", "", text)                        # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                       # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def all_exprs() -> list[str]:
    out = []
    for path in BOARDS:
        board = _load(path)
        out.extend(_exprs(board))
        out.extend(_var_selectors(board))
    return out


def test_dashboards_are_what_the_generator_writes() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_grafana
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    rendered = gen_grafana.render()
    assert sorted(rendered) == [p.name for p in BOARDS]
    for path in BOARDS:
        assert path.read_text(encoding="utf-8") == rendered[path.name], f"{path.name}: run python scripts/gen_grafana.py"


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_dashboard_shape(path: Path) -> None:
    board = _load(path)
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "site", "room", "device"} <= names
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"


@pytest.mark.peer
def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    exprs = sorted(set(map(concrete, all_exprs())))
    assert len(exprs) > 30
    rules = {"groups": [{"name": "dashboards", "rules": [{"record": f"dashboard:expr{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}
    f = tmp_path / "dashboard-exprs.yml"
    f.write_text(yaml.safe_dump(rules, allow_unicode=True))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_metric_name_extraction_finds_what_it_should() -> None:
    assert metric_names('sum by (a, b) (rate(x_total{a=~"$a"}[5m])) / y') == {"x_total", "y"}
    assert metric_names("time() - roomwatch_agent_up{agent=~\"x\"} and on() z == bool 1") == {"roomwatch_agent_up", "z"}


def test_dashboards_use_only_roomwatch_metrics() -> None:
    used: set[str] = set()
    for e in all_exprs():
        used |= metric_names(concrete(e))
    unknown = used - set(METRICS) - NON_ROOMWATCH
    assert not unknown, f"not in roomwatch/core/vocabulary.py: {sorted(unknown)}"
    # The overview shows each quantity the issue asks for.
    overview = " ".join(_exprs(_load(GRAFANA / "dashboards" / "room-overview.json")))
    for m in ("roomwatch_temperature_celsius", "roomwatch_humidity_ratio", "roomwatch_door_open",
              "roomwatch_ups_battery_charge_ratio", "roomwatch_ups_battery_runtime_seconds", "roomwatch_ups_on_battery",
              "roomwatch_alerts"):
        assert m in overview, m


def test_provisioning_files_are_grafana_shaped() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "roomwatch.yml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    dash = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "roomwatch.yml").read_text())
    assert dash["providers"][0]["type"] == "file" and dash["providers"][0]["options"]["path"]


# ---------------------------------------------------------------- against a running demo


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    """``roomwatch demo`` on free ports; yields the collector URL."""
    proc = RoomwatchProcess(["demo", "--collector-port", "0", "--agent-port", "0", "--dir", str(tmp_path / "demo")],
                            tmp_path / "demo.log")
    try:
        found = wait_for(lambda: re.search(r"status page\s+(http://127\.0\.0\.1:\d+)/", proc.log()), timeout=120,
                         proc=proc.proc, what="demo URLs")
        yield found.group(1)
    finally:
        proc.stop()


@pytest.mark.slow
def test_every_expression_evaluates_on_prometheus_scraping_the_demo(demo: str, prometheus_factory: Any) -> None:
    """A real Prometheus scrapes the demo's collector; every dashboard query evaluates without error."""
    prom = prometheus_factory([demo.removeprefix("http://")])
    wait_for(lambda: prom.query("roomwatch_agent_up == 1"), timeout=90, what="Prometheus to scrape the demo's agent")
    wait_for(lambda: prom.query("count_over_time(roomwatch_agent_up[5m]) >= 2"), timeout=90,
             what="a second scrape, so rate() has two points")
    status, body = http_get(demo + "/metrics")
    assert status == 200
    exported = set(re.findall(r"^(roomwatch_\w+?)(?:\{| )", body.decode(), re.M))
    used: set[str] = set()
    empty = []
    for e in sorted(set(map(concrete, all_exprs()))):
        result = prom.query(e)  # asserts HTTP 200 = parsed and evaluated
        names = metric_names(e)
        used |= names
        # A panel over metrics the demo exports must show something (alerts may rightly be none).
        if names and names <= exported and "roomwatch_alerts" not in names and not result:
            empty.append(e)
    assert not empty, f"panels empty on the demo although it exports their metrics: {empty}"
    # The demo has every kind of device the dashboards chart (MQTT door/temperature/leak/smoke, SNMP, NUT and
    # Modbus UPS, the host): every metric a dashboard uses is exported by it.
    assert used - exported == set(), f"dashboard metrics the demo does not export: {sorted(used - exported)}"
    data = prom.query('roomwatch_device_up{site=~".*", room=~".*", device=~".*"}')
    assert data, "the device-up panel would be empty on the demo"
