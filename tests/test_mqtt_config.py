"""MQTT/GPIO configuration: the smallest entry of docs/api.md, the commented examples, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, cli, write_yaml


def _examples() -> str:
    text = (ROOT / "config" / "agent.example.yaml").read_text(encoding="utf-8")
    start = text.index("# --- MQTT and GPIO examples")
    end = text.index("# --- end of MQTT and GPIO examples")
    return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                     for line in text[start:end].splitlines()[1:])


def test_commented_examples_are_valid(tmp_path: Path) -> None:
    devices = yaml.safe_load(_examples())
    assert {d["driver"] for d in devices} == {"mqtt", "gpio"}
    path = write_yaml(tmp_path / "agent.yaml", {"agent": {"id": "a"}, "devices": devices})
    res = cli("check-config", str(path))
    assert res.returncode == 0, res.stderr


def test_contract_smallest_mqtt_entry_is_accepted_as_is(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("""agent:
  id: room1-agent
  listen: 127.0.0.1:9641
collector:
  urls: [http://127.0.0.1:9640]
  token: s3cret-token
devices:
  - name: door1
    driver: mqtt
    broker: mqtt://127.0.0.1:1883
    topic: zigbee2mqtt/door1
    format: zigbee2mqtt
""")
    res = cli("check-config", str(path))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(("entry", "message"), [
    ({"broker": "tcp://x:1883"}, "must start with mqtt:// or mqtts://"),
    ({"broker": "mqtt://user:pw@x"}, "username and password keys"),
    ({"topic": "a/#/b"}, "# must be a whole last level"),
    ({"topic": "a/b+"}, "+ must be a whole level"),
    ({"format": "value"}, "format value needs a kind"),
    ({"format": "json", "kind": "temperature"}, "format json needs field"),
    ({"field": "a.b"}, "field is only used with format json"),
    ({"format": "value", "kind": "door", "unit": "celsius"}, "unit celsius does not fit kind door"),
    ({"password": "x"}, "password is set but username is not"),
    ({"tls": {"ca_file": "/x"}}, "tls options need an mqtts:// broker URL"),
    ({"protocol": 4}, "expected one of"),
    ({"qos": 2}, "expected one of"),
    ({"format": "zigbee"}, "expected one of"),
    ({"availability_topic": "z/+/availability"}, "availability_topic is one topic, without + or # wildcards"),
    ({"availability_topic": "z/d"}, "availability_topic must differ from topic"),
    ({"availability_topic": "", "payload_available": "up"}, 'payload_available set but availability_topic is "" (off)'),
    ({"format": "value", "kind": "door", "payload_not_available": "gone"},
     "format value has no availability topic of its own; set availability_topic"),
    ({"topic": "z/+", "payload_available": "up", "payload_not_available": "down"},
     "no availability topic can be derived from topic 'z/+'"),
    ({"payload_available": "Offline"}, "payload_available and payload_not_available are the same word"),
    ({"availability_topic": "z/d/status", "payload_available": " "}, "must not be empty"),
])
def test_bad_mqtt_entries_are_refused_with_a_clear_message(tmp_path: Path, entry: dict[str, object], message: str) -> None:
    dev = {"name": "d", "driver": "mqtt", "broker": "mqtt://127.0.0.1:1883", "topic": "z/d", "format": "zigbee2mqtt", **entry}
    path = write_yaml(tmp_path / "agent.yaml", {"agent": {"id": "a"}, "devices": [dev]})
    res = cli("check-config", str(path))
    assert res.returncode == 2
    assert message in res.stderr and "agent.yaml:" in res.stderr, res.stderr
