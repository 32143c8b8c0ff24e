"""MQTT end to end with real processes: mosquitto → roomwatch agent → roomwatch collector.

* a door opening reaches the collector as an event at once, not at the next push
  interval (the publish → accepted latency is measured, printed and written to
  ``bench/results/mqtt_door_latency.json`` for the alerting issue's end-to-end figure);
* a sensor silent past ``max_age`` turns ``roomwatch_device_up`` 0 at the collector and its
  values leave ``/metrics``; a closed door that never speaks again stays current.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tests.conftest import CollectorHandle, start_collector
from tests.helpers import ROOT, http_get, metric_value, wait_for
from tests.peers.mosquitto import Mosquitto, Publisher
from tests.peers.prometheus import promtool_check_metrics

DOOR = "roomwatch_door_open"


def _history(c: CollectorHandle, metric: str, **labels: str) -> list[list[float]]:
    """Every stored sample of the series (one series expected), as [ts seconds, value]."""
    query = urllib.parse.urlencode({"metric": metric, "start": "0", **labels})
    status, body = http_get(f"{c.url}/api/v1/history?{query}")
    assert status == 200, body
    series = json.loads(body)["series"]
    assert len(series) <= 1, series
    return series[0]["samples"] if series else []


def _first(samples: list[list[float]], value: float | None = None) -> float:
    """Time of the first sample (with ``value``, if given); waits for nothing: the caller has seen it."""
    return next(ts for ts, v in samples if value is None or v == value)


def _last(samples: list[list[float]]) -> float:
    return samples[-1][0] if samples else 0.0


def _events(c: CollectorHandle) -> float:
    return metric_value(c.metrics(), "roomwatch_collector_events_received_total") or 0.0


def test_door_event_reaches_the_collector_at_once(collector: CollectorHandle, agent_factory: Any,
                                                  mosquitto: Mosquitto, publisher: Publisher) -> None:
    # A 60 s push interval: anything that arrives within the wait below came as an immediate event.
    proc, agent_url = agent_factory(collector.url, collector={"push_interval": "60s"}, host={"enabled": False},
                                    devices=[{"name": "door1", "driver": "mqtt", "broker": mosquitto.url,
                                              "topic": "zigbee2mqtt/door1", "format": "zigbee2mqtt"}])
    # Retained: the agent may subscribe after this publish; the broker then hands it the state.
    publisher.publish("zigbee2mqtt/door1", json.dumps({"contact": True, "battery": 90, "linkquality": 70}), retain=True)
    wait_for(lambda: metric_value(http_get(agent_url + "/metrics")[1].decode(), DOOR, device="door1") == 0,
             timeout=15, what="the closed state at the agent")
    latencies = []
    for i in range(6):
        opening = i % 2 == 0
        # Real doors do not flap within the pusher's 0.2 s minimum gap between pushes; measure one transition alone.
        time.sleep(0.5)
        before = _events(collector)
        sent = time.monotonic()
        publisher.publish("zigbee2mqtt/door1", json.dumps({"contact": not opening, "battery": 90, "linkquality": 70}))
        wait_for(lambda b=before: _events(collector) > b, timeout=20, interval=0.002,
                 what=f"the door_{'open' if opening else 'close'} event at the collector")
        latencies.append(time.monotonic() - sent)
        text = collector.metrics()
        assert metric_value(text, DOOR, device="door1", agent="agent-a") == (1 if opening else 0)  # the new value came along
    assert metric_value(collector.metrics(), "roomwatch_sensor_battery_ratio", device="door1") == 0.9
    result = {"what": "MQTT publish (QoS 1 acked) to the door event accepted by a real collector process",
              "samples_ms": [round(x * 1000, 1) for x in latencies],
              "median_ms": round(statistics.median(latencies) * 1000, 1), "max_ms": round(max(latencies) * 1000, 1),
              "date": time.strftime("%Y-%m-%d"), "test": "tests/test_mqtt_e2e.py::test_door_event_reaches_the_collector_at_once"}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mqtt_door_latency.json").write_text(json.dumps(result, indent=1))
    print(f"\ndoor event latency publish→collector: median {result['median_ms']} ms, max {result['max_ms']} ms "
          f"({len(latencies)} transitions)")
    # Everything the agent and the collector show passes promtool.
    for url in (agent_url, collector.url):
        status, body = http_get(url + "/metrics")
        assert status == 200
        res = promtool_check_metrics(body)
        assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), (url, res.stdout, res.stderr)
    assert proc.alive()


def test_silent_sensor_goes_down_at_the_collector_and_quiet_door_stays_current(
        tmp_path: Path, agent_factory: Any, mosquitto: Mosquitto, publisher: Publisher) -> None:
    c = start_collector(tmp_path, name="short", series_expire="4s")
    try:
        broker = mosquitto.url
        agent_factory(c.url, host={"enabled": False}, devices=[
            {"name": "th1", "driver": "mqtt", "broker": broker, "topic": "zigbee2mqtt/th1", "format": "zigbee2mqtt",
             "max_age": "3s", "interval": "1s"},
            {"name": "door1", "driver": "mqtt", "broker": broker, "topic": "zigbee2mqtt/door1", "format": "zigbee2mqtt",
             "interval": "1s"},
        ])
        publisher.publish("zigbee2mqtt/th1", json.dumps({"temperature": 24.5, "humidity": 40}), retain=True)
        publisher.publish("zigbee2mqtt/door1", json.dumps({"contact": True}), retain=True)
        wait_for(lambda: metric_value(c.metrics(), "roomwatch_temperature_celsius", device="th1") == 24.5
                 and metric_value(c.metrics(), DOOR, device="door1") == 0, timeout=15, what="values at the collector")
        wait_for(lambda: metric_value(c.metrics(), "roomwatch_device_up", device="th1") == 0, timeout=15,
                 what="th1 down at the collector")
        text = c.metrics()
        assert metric_value(text, "roomwatch_temperature_celsius", device="th1") is None  # no stale value as current
        assert metric_value(text, "roomwatch_humidity_ratio", device="th1") is None
        # Not before max_age: it counts from the message's arrival at the agent, so compare the agent's own
        # stamps (kept by the collector's history), not when this test happened to see the value. The first
        # temperature sample is stamped at the message's arrival; later ones are its re-sends.
        arrived = _first(_history(c, "roomwatch_temperature_celsius", device="th1"))
        down = _first(_history(c, "roomwatch_device_up", device="th1"), value=0.0)
        assert down - arrived >= 3.0 - 0.002, (arrived, down)  # 3 s max_age (stamps have ms resolution)
        # The door said "closed" once; once its series at the collector is older than series_expire (4 s),
        # it is still current (re-sent every interval with a fresh stamp).
        door_from = _first(_history(c, DOOR, device="door1"))
        wait_for(lambda: _last(_history(c, DOOR, device="door1")) - door_from > 4.5, timeout=15,
                 what="the door's re-sent state past series_expire")
        text = c.metrics()
        assert metric_value(text, DOOR, device="door1") == 0
        assert metric_value(text, "roomwatch_device_up", device="door1") == 1
        # th1 speaks again: back up with its new value.
        publisher.publish("zigbee2mqtt/th1", json.dumps({"temperature": 25.0}))
        wait_for(lambda: metric_value(c.metrics(), "roomwatch_temperature_celsius", device="th1") == 25.0, timeout=10,
                 what="th1 back")
        assert metric_value(c.metrics(), "roomwatch_device_up", device="th1") == 1
    finally:
        c.proc.stop()
