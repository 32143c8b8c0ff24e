"""Write roomwatch's Grafana dashboards (config/grafana/dashboards/*.json) from compact panel tables.

Run ``python scripts/gen_grafana.py`` after editing; tests check the JSON files equal this output,
that every PromQL expression parses (promtool) and names only metrics in roomwatch/core/vocabulary.py.
Dashboards target Grafana 9+ (schemaVersion 37) with a Prometheus datasource chosen by variable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "config" / "grafana" / "dashboards"

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'site=~"$site", room=~"$room", device=~"$device"'  # the usual label filter
ROOM_SEL = 'site=~"$site", room=~"$room"'

# Thresholds of the default rule pack (alerts/defaults.yaml); keep in step with config/prometheus/rules.
TEMP_STEPS = [(None, "green"), (27, "orange"), (32, "red")]
HUMIDITY_STEPS = [(None, "red"), (0.20, "green"), (0.80, "red")]
OPEN_CLOSED = [{"type": "value", "options": {"0": {"text": "关 closed", "color": "green", "index": 0},
                                             "1": {"text": "开 open", "color": "orange", "index": 1}}}]
UP_DOWN = [{"type": "value", "options": {"0": {"text": "离线 down", "color": "red", "index": 0},
                                         "1": {"text": "正常 up", "color": "green", "index": 1}}}]
MAINS_BATTERY = [{"type": "value", "options": {"0": {"text": "市电 mains", "color": "green", "index": 0},
                                               "1": {"text": "电池 battery", "color": "red", "index": 1}}}]
ALARM = [{"type": "value", "options": {"0": {"text": "正常 ok", "color": "green", "index": 0},
                                       "1": {"text": "报警 alarm", "color": "red", "index": 1}}}]


def _steps(steps: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


class Board:
    """Lays panels out on Grafana's 24-column grid, row by row."""

    def __init__(self, uid: str, title: str, description: str, variables: list[dict[str, Any]]):
        self.uid, self.title, self.description = uid, title, description
        self.variables = variables
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.row_h = 0

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "id": len(self.panels) + 1, "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}})
        self.y += 1

    def panel(self, kind: str, title: str, targets: list[tuple[str, str]], w: int = 12, h: int = 8,
              unit: str | None = None, steps: list[tuple[float | None, str]] | None = None,
              mappings: list[dict[str, Any]] | None = None, threshold_lines: bool = False,
              minmax: tuple[float | None, float | None] = (None, None), description: str = "",
              options: dict[str, Any] | None = None, instant: bool = False) -> None:
        defaults: dict[str, Any] = {}
        if unit:
            defaults["unit"] = unit
        if steps:
            defaults["thresholds"] = _steps(steps)
        if mappings:
            defaults["mappings"] = mappings
        if minmax[0] is not None:
            defaults["min"] = minmax[0]
        if minmax[1] is not None:
            defaults["max"] = minmax[1]
        if threshold_lines:
            defaults["custom"] = {"thresholdsStyle": {"mode": "line+area"}}
        if kind == "state-timeline":
            defaults["color"] = {"mode": "thresholds"}
        p: dict[str, Any] = {
            "type": kind, "title": title, "id": len(self.panels) + 1, "datasource": DS,
            "gridPos": self._place(w, h),
            "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": expr, "legendFormat": legend,
                         **({"instant": True, "range": False, "format": "table"} if instant else {})}
                        for i, (expr, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
        }
        if description:
            p["description"] = description
        if options:
            p["options"] = options
        self.panels.append(p)

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["roomwatch"], "timezone": "browser", "editable": True, "graphTooltip": 1,
            "schemaVersion": 37, "version": 1, "refresh": "30s",
            "time": {"from": "now-24h", "to": "now"},
            "links": [{"type": "dashboards", "tags": ["roomwatch"], "asDropdown": True, "title": "roomwatch",
                       "includeVars": True, "keepTime": True}],
            "templating": {"list": self.variables}, "annotations": {"list": []},
            "panels": self.panels,
        }


def _datasource_var() -> dict[str, Any]:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []}


def _query_var(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
            "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1,
            "hide": 0, "options": [], "regex": ""}


def _location_vars(device_metric: str = "roomwatch_device_up") -> list[dict[str, Any]]:
    return [
        _datasource_var(),
        _query_var("site", "站点 site", f"label_values({device_metric}, site)"),
        _query_var("room", "机房 room", f'label_values({device_metric}{{site=~"$site"}}, room)'),
        _query_var("device", "设备 device", f'label_values({device_metric}{{site=~"$site", room=~"$room"}}, device)'),
    ]


def room_overview() -> Board:
    b = Board("roomwatch-room-overview", "roomwatch · 机房总览 Room overview",
              "Temperature, humidity, doors, leaks, UPS and active alerts per room; thresholds of the default rule pack.",
              _location_vars())
    b.row("环境 Environment")
    b.panel("stat", "最高温度 Hottest sensor per room",
            [(f"max by (site, room) (roomwatch_temperature_celsius{{{ROOM_SEL}}})", "{{site}} {{room}}")],
            w=8, h=5, unit="celsius", steps=TEMP_STEPS)
    b.panel("stat", "湿度范围 Humidity per room (min)",
            [(f"min by (site, room) (roomwatch_humidity_ratio{{{ROOM_SEL}}})", "{{site}} {{room}} min")],
            w=8, h=5, unit="percentunit", steps=HUMIDITY_STEPS)
    b.panel("stat", "活动告警 Active alerts",
            [('sum by (severity) (roomwatch_alerts{state="firing"})', "{{severity}}")],
            w=8, h=5, steps=[(None, "green"), (1, "red")],
            description="Firing alerts in the roomwatch collector, by severity.")
    b.panel("timeseries", "温度 Temperature (warning 27 °C, critical 32 °C)",
            [(f"roomwatch_temperature_celsius{{{SEL}}}", "{{room}} {{device}} {{sensor}}")],
            unit="celsius", steps=TEMP_STEPS, threshold_lines=True)
    b.panel("timeseries", "湿度 Relative humidity (20–80 %)",
            [(f"roomwatch_humidity_ratio{{{SEL}}}", "{{room}} {{device}} {{sensor}}")],
            unit="percentunit", steps=HUMIDITY_STEPS, threshold_lines=True, minmax=(0, 1))
    b.row("门禁与安全 Doors, leak, smoke")
    b.panel("state-timeline", "门 Doors (open / closed)",
            [(f"roomwatch_door_open{{{SEL}}}", "{{room}} {{device}}")],
            w=24, h=6, mappings=OPEN_CLOSED, steps=[(None, "green"), (1, "orange")])
    b.panel("state-timeline", "漏水 / 烟雾 Leak and smoke",
            [(f"roomwatch_water_leak_detected{{{SEL}}}", "漏水 {{room}} {{device}}"),
             (f"roomwatch_smoke_detected{{{SEL}}}", "烟雾 {{room}} {{device}}")],
            w=24, h=5, mappings=ALARM, steps=[(None, "green"), (1, "red")])
    b.row("UPS")
    b.panel("timeseries", "电池电量 Battery charge",
            [(f"roomwatch_ups_battery_charge_ratio{{{SEL}}}", "{{room}} {{device}}")],
            w=8, unit="percentunit", minmax=(0, 1), steps=[(None, "red"), (0.5, "orange"), (0.9, "green")])
    b.panel("timeseries", "剩余时间 Runtime left (shut down below 10 min)",
            [(f"roomwatch_ups_battery_runtime_seconds{{{SEL}}}", "{{room}} {{device}}")],
            w=8, unit="s", minmax=(0, None), steps=[(None, "red"), (600, "orange"), (900, "green")],
            threshold_lines=True)
    b.panel("state-timeline", "供电 Mains / battery",
            [(f"roomwatch_ups_on_battery{{{SEL}}}", "{{room}} {{device}}")],
            w=8, mappings=MAINS_BATTERY, steps=[(None, "green"), (1, "red")])
    b.row("告警 Alerts")
    b.panel("table", "活动告警 Active alerts in roomwatch",
            [("sum by (alertname, severity, state) (roomwatch_alerts)", "")], w=24, h=7, instant=True,
            description="roomwatch_alerts from the collector: pending and firing alerts. Acknowledge on the status page.")
    return b


def ups_detail() -> Board:
    b = Board("roomwatch-ups", "roomwatch · UPS 详情 UPS detail",
              "Every UPS quantity roomwatch reads (SNMP, NUT, Modbus); absent quantities are not reported by that UPS.",
              _location_vars("roomwatch_ups_on_battery"))
    b.panel("table", "UPS 型号 Identity", [(f"roomwatch_ups_info{{{SEL}}}", "")], w=24, h=5, instant=True)
    b.panel("state-timeline", "供电 Mains / battery", [(f"roomwatch_ups_on_battery{{{SEL}}}", "{{device}}")],
            w=12, h=6, mappings=MAINS_BATTERY, steps=[(None, "green"), (1, "red")])
    b.panel("state-timeline", "电池低 / 需更换 Battery low, replace",
            [(f"roomwatch_ups_battery_low{{{SEL}}}", "低 low {{device}}"),
             (f"roomwatch_ups_battery_replace_needed{{{SEL}}}", "更换 replace {{device}}")],
            w=12, h=6, mappings=ALARM, steps=[(None, "green"), (1, "red")])
    b.panel("timeseries", "电池电量 Battery charge", [(f"roomwatch_ups_battery_charge_ratio{{{SEL}}}", "{{device}}")],
            w=8, unit="percentunit", minmax=(0, 1))
    b.panel("timeseries", "剩余时间 Runtime left", [(f"roomwatch_ups_battery_runtime_seconds{{{SEL}}}", "{{device}}")],
            w=8, unit="s", minmax=(0, None), steps=[(None, "red"), (600, "orange"), (900, "green")], threshold_lines=True)
    b.panel("timeseries", "负载 Load", [(f"roomwatch_ups_load_ratio{{{SEL}}}", "{{device}}")],
            w=8, unit="percentunit", minmax=(0, None), steps=[(None, "green"), (0.8, "orange"), (0.95, "red")])
    b.panel("timeseries", "输入 / 输出电压 Input and output voltage",
            [(f"roomwatch_ups_input_voltage_volts{{{SEL}}}", "输入 in {{device}}"),
             (f"roomwatch_ups_output_voltage_volts{{{SEL}}}", "输出 out {{device}}")], w=8, unit="volt")
    b.panel("timeseries", "电池电压 Battery voltage", [(f"roomwatch_ups_battery_voltage_volts{{{SEL}}}", "{{device}}")],
            w=8, unit="volt")
    b.panel("timeseries", "电池温度 Battery temperature",
            [(f"roomwatch_ups_battery_temperature_celsius{{{SEL}}}", "{{device}}")], w=8, unit="celsius",
            steps=[(None, "green"), (30, "orange"), (40, "red")])
    b.panel("bargauge", "电池已用年限 Battery age (replace at 3 years)",
            [(f"roomwatch_ups_battery_age_seconds{{{SEL}}} / 31536000", "{{site}} {{room}} {{device}}")],
            w=24, h=6, unit="none", minmax=(0, 5), steps=[(None, "green"), (2.5, "orange"), (3, "red")],
            options={"orientation": "horizontal", "displayMode": "gradient"},
            description="Years since the battery was installed (battery_installed in the agent config, or the UPS's own date).")
    return b


def health() -> Board:
    variables = [
        _datasource_var(),
        _query_var("agent", "采集端 agent", "label_values(roomwatch_agent_up, agent)"),
        *_location_vars()[1:],
    ]
    b = Board("roomwatch-health", "roomwatch · 采集健康 Agents and devices",
              "Are the agents pushing, are the devices answering, is the collector healthy.", variables)
    b.row("采集端 Agents")
    b.panel("state-timeline", "采集端在线 Agent up", [('roomwatch_agent_up{agent=~"$agent"}', "{{agent}}")],
            w=12, h=6, mappings=UP_DOWN, steps=[(None, "red"), (1, "green")])
    b.panel("timeseries", "距上次上报 Seconds since last push",
            [('time() - roomwatch_agent_last_push_timestamp_seconds{agent=~"$agent"}', "{{agent}}")],
            w=12, h=6, unit="s", steps=[(None, "green"), (60, "red")], threshold_lines=True)
    b.panel("timeseries", "待发送批次 Agent push queue",
            [('roomwatch_agent_push_queue_batches{agent=~"$agent"}', "{{agent}}")], w=8, unit="none")
    b.panel("timeseries", "上报结果 Agent pushes by result",
            [('sum by (agent, result) (rate(roomwatch_agent_push_batches_total{agent=~"$agent"}[$__rate_interval]))',
              "{{agent}} {{result}}")], w=8, unit="reqps")
    b.panel("timeseries", "采集端内存 Agent memory",
            [('roomwatch_agent_resident_memory_bytes{agent=~"$agent"}', "{{agent}}")], w=8, unit="bytes")
    b.row("设备 Devices")
    b.panel("state-timeline", "设备在线 Device up",
            [(f'roomwatch_device_up{{agent=~"$agent", {SEL}}}', "{{agent}} {{device}}")],
            w=24, h=8, mappings=UP_DOWN, steps=[(None, "red"), (1, "green")])
    b.panel("timeseries", "轮询耗时 Poll duration",
            [(f'roomwatch_device_poll_duration_seconds{{agent=~"$agent", {SEL}}}', "{{agent}} {{device}}")],
            w=8, unit="s")
    b.panel("timeseries", "轮询失败 Poll errors per second",
            [(f'rate(roomwatch_device_poll_errors_total{{agent=~"$agent", {SEL}}}[$__rate_interval])',
              "{{agent}} {{device}}")], w=8, unit="reqps")
    b.panel("timeseries", "轮询跳过 Polls skipped per second",
            [(f'rate(roomwatch_device_poll_skipped_total{{agent=~"$agent", {SEL}}}[$__rate_interval])',
              "{{agent}} {{device}}")], w=8, unit="reqps")
    b.row("主机 Hosts")
    b.panel("timeseries", "CPU", [('roomwatch_host_cpu_usage_ratio{agent=~"$agent"}', "{{agent}}")],
            w=8, unit="percentunit", minmax=(0, 1))
    b.panel("timeseries", "可用内存 Memory available",
            [('roomwatch_host_memory_available_bytes{agent=~"$agent"} / roomwatch_host_memory_total_bytes{agent=~"$agent"}',
              "{{agent}}")], w=8, unit="percentunit", minmax=(0, 1))
    b.panel("timeseries", "磁盘可用 Filesystem space available",
            [('roomwatch_host_filesystem_avail_bytes{agent=~"$agent"} / roomwatch_host_filesystem_size_bytes{agent=~"$agent"}',
              "{{agent}} {{mountpoint}}")], w=8, unit="percentunit", minmax=(0, 1),
            steps=[(None, "red"), (0.1, "orange"), (0.2, "green")])
    b.row("汇总服务 Collector")
    b.panel("timeseries", "上报请求 Pushes by status",
            [("sum by (code) (rate(roomwatch_collector_pushes_total[$__rate_interval]))", "{{code}}")],
            w=8, unit="reqps")
    b.panel("timeseries", "样本 Samples received per second",
            [("rate(roomwatch_collector_samples_received_total[$__rate_interval])", "samples"),
             ("rate(roomwatch_collector_events_received_total[$__rate_interval])", "events")], w=8, unit="short")
    b.panel("timeseries", "序列与内存 Series and memory",
            [("roomwatch_collector_series", "series"), ("roomwatch_collector_resident_memory_bytes / 1048576", "MiB")],
            w=8, unit="short")
    return b


BOARDS = {"room-overview.json": room_overview, "ups.json": ups_detail, "health.json": health}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {name: json.dumps(make().json(), ensure_ascii=False, indent=2) + "\n" for name, make in BOARDS.items()}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
