"""``roomwatch discover`` end to end (issue 13 point 4), with real peers on loopback:

* five SNMP cards (UPS and environment monitors from the shared recordings), each alone on its
  own 127.0.0.x address inside 127.0.0.16/28, community ``public``, on one non-standard port,
  served by one snmpsim process per address;
* one upsd holding 25 UPS (dummy-ups);
* a mosquitto broker with three zigbee2mqtt sensors (plus the bridge's own topics and a smart
  plug, which are not sensors) and one Tasmota board.

``roomwatch discover --snmp 127.0.0.16/28 --port P --community public --nut 127.0.0.1:P2
--mqtt mqtt://127.0.0.1:P3`` must find exactly those 34 devices; its ``devices:`` pasted under a
minimal agent file must pass ``roomwatch check-config``; and an agent run with them must have
every device up with readings (at the agent, and at a real collector).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CollectorHandle
from tests.discover_rig import TasmotaBoard, common_udp_port
from tests.helpers import ROOT, http_get, metric_value, require_fixtures, run_cli, wait_for
from tests.peers.mosquitto import Mosquitto, Publisher
from tests.peers.nut import NutServer

pytestmark = [pytest.mark.peer("snmpsim"), pytest.mark.peer("upsd"), pytest.mark.peer("mosquitto")]

#: address → shared recording: two UPS cards and three environment monitors, scattered in the /28.
CARDS = {"127.0.0.17": "apc_smt750x-nmc2", "127.0.0.19": "hwg-poseidon", "127.0.0.22": "eatonups_eaton-connectups",
         "127.0.0.26": "avtech_roomalert12e", "127.0.0.30": "apc_environmental-manager"}
UPS_COUNT = 25
Z2M = {  # friendly name → retained state; the Chinese name is what a county office would type
    "机房温湿度": {"temperature": 24.5, "humidity": 45, "battery": 90, "linkquality": 120},
    "door_main": {"contact": True, "battery": 87, "linkquality": 80},
    "leak_ac": {"water_leak": False, "battery": 76, "linkquality": 60},
}
Z2M_DEVICES = [  # zigbee2mqtt/bridge/devices (retained), as zigbee2mqtt 1.x publishes it
    {"ieee_address": "0x00124b0000000000", "type": "Coordinator", "friendly_name": "Coordinator"},
    {"ieee_address": "0x00158d0001", "type": "EndDevice", "friendly_name": "机房温湿度",
     "definition": {"vendor": "Aqara", "model": "WSDCGQ11LM", "description": "Temperature, humidity and pressure sensor"}},
    {"ieee_address": "0x00158d0002", "type": "EndDevice", "friendly_name": "door_main",
     "definition": {"vendor": "Aqara", "model": "MCCGQ11LM", "description": "Door and window sensor"}},
    {"ieee_address": "0x00158d0003", "type": "EndDevice", "friendly_name": "leak_ac",
     "definition": {"vendor": "Aqara", "model": "SJCGQ11LM", "description": "Water leak sensor"}},
    {"ieee_address": "0x00158d0004", "type": "Router", "friendly_name": "plug1",
     "definition": {"vendor": "Xiaomi", "model": "ZNCZ02LM", "description": "Mi power plug ZigBee"}},
]


def _nut_devs(tmp_path: Path) -> dict[str, Path]:
    """25 UPS for one upsd: the shared NUT recordings and the repository's own, in turn."""
    fixtures = require_fixtures()
    sources = sorted((fixtures / "devices" / "nut").glob("*.dev")) + sorted((ROOT / "tests" / "data" / "nut").glob("*.dev"))
    out = {}
    for i in range(UPS_COUNT):
        src = sources[i % len(sources)]
        dst = tmp_path / f"ups{i + 1:02d}.dev"
        dst.write_text(src.read_text(errors="replace"))
        out[f"ups{i + 1:02d}"] = dst
    return out


def _publish_room(pub: Publisher) -> None:
    pub.publish("zigbee2mqtt/bridge/state", json.dumps({"state": "online"}), retain=True)
    pub.publish("zigbee2mqtt/bridge/info", json.dumps({"version": "1.39.0", "coordinator": {"type": "zStack3x0"}}),
                      retain=True)
    pub.publish("zigbee2mqtt/bridge/devices", json.dumps(Z2M_DEVICES), retain=True)
    for name, state in Z2M.items():
        pub.publish(f"zigbee2mqtt/{name}/availability", json.dumps({"state": "online"}), retain=True)
        pub.publish(f"zigbee2mqtt/{name}", json.dumps(state), retain=True)
    pub.publish("zigbee2mqtt/plug1", json.dumps({"state": "ON", "power": 12.5, "linkquality": 90}), retain=True)


def _device_ok(text: str, name: str) -> bool:
    """Up, and at least one reading that is not the agent's own bookkeeping about the device."""
    from prometheus_client.parser import text_string_to_metric_families

    from roomwatch.core.vocabulary import HEALTH_METRICS

    if metric_value(text, "roomwatch_device_up", device=name) != 1:
        return False
    return any(s.labels.get("device") == name and s.name not in HEALTH_METRICS and not s.name.endswith("_info")
               for fam in text_string_to_metric_families(text) for s in fam.samples)


def test_discover_finds_exactly_the_room_and_the_agent_reads_all_of_it(
        tmp_path: Path, cards_factory: Any, nut_factory: Any, mosquitto: Mosquitto,
        publisher: Publisher, collector: CollectorHandle, agent_factory: Any) -> None:
    fixtures = require_fixtures()
    port = common_udp_port([*CARDS, "127.0.0.1"])
    cards_factory({addr: fixtures / "devices" / "snmp" / f"{rec}.snmprec" for addr, rec in CARDS.items()}, port)
    nut: NutServer = nut_factory(_nut_devs(tmp_path))
    _publish_room(publisher)
    board = TasmotaBoard(mosquitto, "tasmota_th", {"AM2301": {"Temperature": 23.1, "Humidity": 51.0}}, period=1.0)
    try:
        result = run_cli("discover", "--snmp", "127.0.0.16/28", "--port", str(port), "--community", "public",
                         "--nut", f"127.0.0.1:{nut.port}", "--mqtt", mosquitto.url, "--timeout", "3s", timeout=120)
        assert result.returncode == 0, result.stderr
        doc = yaml.safe_load(result.stdout)
        devices = doc["devices"]
        by_driver: dict[str, list[dict[str, Any]]] = {}
        for d in devices:
            by_driver.setdefault(d["driver"], []).append(d)
        assert sorted(d["host"] for d in by_driver["snmp"]) == sorted(CARDS), result.stdout
        assert all(d["port"] == port and d["community"] == "public" for d in by_driver["snmp"])
        assert sorted(d["ups"] for d in by_driver["nut"]) == [f"ups{i + 1:02d}" for i in range(UPS_COUNT)]
        assert sorted(d["topic"] for d in by_driver["mqtt"]) == sorted(
            [f"zigbee2mqtt/{n}" for n in Z2M] + ["tele/tasmota_th/SENSOR"]), result.stdout
        assert len(devices) == len(CARDS) + UPS_COUNT + len(Z2M) + 1  # exactly those: no bridge, no plug
        names = [d["name"] for d in devices]
        assert len(set(names)) == len(names)
        # A comment above each device says what it is and what it read.
        assert "Aqara WSDCGQ11LM" in result.stdout and "temperature 24.5 °C" in result.stdout
        assert "Tasmota board 'tasmota_th'" in result.stdout and "AM2301" in result.stdout
        assert result.stdout.count("# readings: ") == len(devices)

        # Pasted under a minimal agent file, it passes check-config …
        agent_file = tmp_path / "pasted.yaml"
        agent_file.write_text(f"agent:\n  id: agent-a\n  spool: {tmp_path / 'pasted-spool.db'}\n" + result.stdout,
                              encoding="utf-8")
        check = run_cli("check-config", str(agent_file))
        assert check.returncode == 0, check.stdout + check.stderr

        # … and an agent running it has every device up with readings, here and at the collector.
        _proc, agent_url = agent_factory(collector.url, host={"enabled": False}, devices=devices)
        wait_for(lambda: all(_device_ok(text, n) for text in [http_get(agent_url + "/metrics")[1].decode()]
                             for n in names), timeout=60, what="every discovered device up with readings")
        wait_for(lambda: all(metric_value(text, "roomwatch_device_up", device=n, agent="agent-a") == 1
                             for text in [collector.metrics()] for n in names), timeout=30,
                 what="every device up at the collector")
    finally:
        board.stop()


def test_discover_output_is_stable_between_runs(tmp_path: Path, cards_factory: Any,
                                                mosquitto: Mosquitto, publisher: Publisher) -> None:
    """Run twice, the same devices under the same names (only the header's time may differ)."""
    fixtures = require_fixtures()
    port = common_udp_port(["127.0.0.41", "127.0.0.42"])
    cards_factory({"127.0.0.41": fixtures / "devices" / "snmp" / "apc_smt750x-nmc2.snmprec",
                   "127.0.0.42": fixtures / "devices" / "snmp" / "apc_smt750x-nmc2.snmprec"}, port)
    _publish_room(publisher)
    runs = [run_cli("discover", "--snmp", "127.0.0.40-43", "--port", str(port), "--mqtt", mosquitto.url,
                    "--timeout", "2s", timeout=60) for _ in range(2)]
    docs = [yaml.safe_load(r.stdout)["devices"] for r in runs]
    assert docs[0] == docs[1] and len(docs[0]) == 2 + len(Z2M)
    # two cards with the same sysName: two distinct names
    snmp_names = [d["name"] for d in docs[0] if d["driver"] == "snmp"]
    assert len(set(snmp_names)) == 2, snmp_names
