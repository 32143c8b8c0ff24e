"""The agent's own /metrics is current (issue 13 point 7), with a real agent process and mosquitto.

A driver's counters (here ``roomwatch_mqtt_messages_invalid_total``) show at the next scrape after
they change, not at the device's next interval: the device's interval is an hour, so a test that
sees the counter move within seconds proves the scrape itself refreshed it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import http_get, metric_value, wait_for
from tests.peers.mosquitto import Mosquitto, Publisher

INVALID = "roomwatch_mqtt_messages_invalid_total"
MESSAGES = "roomwatch_mqtt_messages_total"


def _scrape(url: str) -> str:
    status, body = http_get(url + "/metrics")
    assert status == 200
    return body.decode()


@pytest.mark.peer("mosquitto")
def test_a_bad_mqtt_message_shows_in_the_next_scrape_without_waiting_for_an_interval(
        agent_factory: Any, mosquitto: Mosquitto, publisher: Publisher) -> None:
    _proc, url = agent_factory(None, host={"enabled": False},
                               devices=[{"name": "th1", "driver": "mqtt", "broker": mosquitto.url,
                                         "topic": "zigbee2mqtt/th1", "format": "zigbee2mqtt", "interval": "1h"}])
    # Retained: the agent may subscribe after this publish; the broker then hands it the state.
    publisher.publish("zigbee2mqtt/th1", json.dumps({"temperature": 22.5, "humidity": 40}), retain=True)
    wait_for(lambda: metric_value(_scrape(url), "roomwatch_temperature_celsius", device="th1") == 22.5, timeout=15,
             what="the first good message at the agent")
    assert metric_value(_scrape(url), INVALID, device="th1") is None  # nothing bad yet

    publisher.publish("zigbee2mqtt/th1", b"{not json")
    wait_for(lambda: metric_value(_scrape(url), INVALID, device="th1", reason="not_json") == 1, timeout=15,
             what="the invalid counter in the scrape")
    text = _scrape(url)
    assert metric_value(text, MESSAGES, device="th1", result="invalid") == 1
    assert metric_value(text, MESSAGES, device="th1", result="ok") == 1
    assert metric_value(text, "roomwatch_temperature_celsius", device="th1") == 22.5  # the last good value stays

    # Another one, out of range this time: counted by its own reason, again at the next scrape.
    publisher.publish("zigbee2mqtt/th1", json.dumps({"temperature": 900}))
    wait_for(lambda: metric_value(_scrape(url), INVALID, device="th1", reason="out_of_range") == 1, timeout=15,
             what="the out_of_range counter in the scrape")
