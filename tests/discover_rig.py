"""Peers for the discover tests: several snmpsim processes on their own loopback addresses, a Tasmota board.

Linux routes all of 127.0.0.0/8 to the loopback interface, so each simulated SNMP card can have
an address of its own (127.0.0.17, 127.0.0.19 …) on one common port, as cards on a room's LAN do.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.peers.mosquitto import Mosquitto
from tests.peers.snmpsim import Snmpsim, start_snmpsim


def common_udp_port(addresses: list[str]) -> int:
    """A UDP port free on every one of ``addresses`` right now."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        socks = []
        try:
            for addr in addresses:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no UDP port free on every test address")


def start_cards(workdir: Path, cards: Mapping[str, Path], port: int) -> list[Snmpsim]:
    """One snmpsim per address (community ``public``), started side by side; all stopped if one fails."""
    def one(item: tuple[str, Path]) -> Snmpsim:
        address, recording = item
        return start_snmpsim(workdir / address, {"public": recording}, host=address, port=port)

    with ThreadPoolExecutor(len(cards)) as pool:
        futures = [pool.submit(one, item) for item in cards.items()]
    started, errors = [], []
    for f in futures:
        try:
            started.append(f.result())
        except BaseException as exc:
            errors.append(exc)
    if errors:
        for sim in started:
            sim.stop()
        raise errors[0]
    return started


@pytest.fixture
def cards_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Snmpsim] = []

    def make(cards: Mapping[str, Path], port: int) -> list[Snmpsim]:
        sims = start_cards(tmp_path / f"cards{len(started)}", cards, port)
        started.extend(sims)
        return sims

    yield make
    for sim in started:
        sim.stop()


class TasmotaBoard:
    """A Tasmota board as the broker sees it: retained LWT, SENSOR every ``period`` seconds (0: never),
    and an answer to the ``cmnd/<topic>/STATUS 10`` query on ``stat/<topic>/STATUS10``."""

    def __init__(self, mosquitto: Mosquitto, topic: str, sensors: dict[str, Any], period: float):
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.sensors = sensors
        self.period = period
        self.queries = 0
        self._stop = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tasmota-{topic}")
        self.client.will_set(f"tele/{topic}/LWT", "Offline", qos=1, retain=True)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", mosquitto.port)
        self.client.subscribe(f"cmnd/{topic}/STATUS", qos=1)
        self.client.loop_start()
        self.client.publish(f"tele/{topic}/LWT", "Online", qos=1, retain=True).wait_for_publish(5)
        self.client.publish(f"tele/{topic}/INFO1", json.dumps({"Info1": {"Module": "Sonoff TH", "Version": "13.2.0"}}),
                            qos=1).wait_for_publish(5)
        self._thread = threading.Thread(target=self._tele, daemon=True)
        if period:
            self._thread.start()

    def _payload(self) -> dict[str, Any]:
        return {"Time": "2024-05-01T10:00:00", **self.sensors, "TempUnit": "C"}

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.payload.strip() == b"10":
            self.queries += 1
            client.publish(f"stat/{self.topic}/STATUS10", json.dumps({"StatusSNS": self._payload()}), qos=1)

    def _tele(self) -> None:
        while not self._stop.wait(self.period):
            self.client.publish(f"tele/{self.topic}/SENSOR", json.dumps(self._payload()), qos=1)

    def stop(self) -> None:
        self._stop.set()
        self.client.loop_stop()
        self.client.disconnect()
