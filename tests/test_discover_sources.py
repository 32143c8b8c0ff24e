"""``roomwatch discover`` per source, against real peers: silent and unreachable addresses, SNMPv3,
upsd logins, a Tasmota board heard only by its LWT, Modbus units on a gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.discover_rig import TasmotaBoard, common_udp_port
from tests.helpers import ROOT, free_port, require_fixtures, run_cli, wait_for
from tests.peers.modbus import ModbusPeer
from tests.peers.mosquitto import Mosquitto, Publisher
from tests.peers.nut import NutServer, write_dev


def _devices(stdout: str) -> list[dict[str, Any]]:
    return yaml.safe_load(stdout)["devices"]


class _Sinks:
    """UDP sockets on several loopback addresses that take every packet and never answer."""

    def __init__(self, addresses: list[str], port: int):
        self.socks = []
        for a in addresses:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((a, port))
            s.settimeout(0.2)
            self.socks.append(s)
        self.got: dict[str, int] = dict.fromkeys(addresses, 0)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(s, a), daemon=True)
                         for s, a in zip(self.socks, addresses, strict=True)]
        for t in self._threads:
            t.start()

    def _read(self, sock: socket.socket, address: str) -> None:
        while not self._stop.is_set():
            try:
                sock.recv(65535)
            except OSError:
                continue
            self.got[address] += 1

    def total(self) -> int:
        return sum(self.got.values())

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for s in self.socks:
            s.close()


@pytest.mark.peer("snmpsim")
def test_silent_addresses_cost_one_timeout_together(tmp_path: Path, cards_factory: Any) -> None:
    """16 addresses that take packets and never answer, beside one real card: every silent address gets
    exactly one probe per credential (no retries), all of them sent at once — while discover is still
    inside its first timeout — so the whole sweep costs one timeout, not one per address."""
    silent = [f"127.0.0.{i}" for i in range(81, 97)]
    port = common_udp_port([*silent, "127.0.0.97"])
    cards_factory({"127.0.0.97": require_fixtures() / "devices" / "snmp" / "apc_smt750x-nmc2.snmprec"}, port)
    sinks = _Sinks(silent, port)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "roomwatch", "discover", "--snmp", "127.0.0.81-97", "--port",
                                 str(port), "--community", "public", "private", "--timeout", "8s"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # 2 communities × (v2c, v1) = 4 probes per address, all out before the first timeout ends
        wait_for(lambda: sinks.total() == 4 * len(silent), timeout=30, what="every probe at the silent addresses")
        assert proc.poll() is None, "discover finished before its timeout: the probes were not sent all at once"
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert sinks.got == dict.fromkeys(silent, 4)  # one try each: no retries to a silent address
        devices = _devices(out)
        assert [d["host"] for d in devices] == ["127.0.0.97"]
        assert "16 silent" in err
    finally:
        sinks.close()


@pytest.mark.peer("mosquitto")
def test_unreachable_sources_are_named_and_exit_1(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens here
    r = run_cli("discover", "--nut", f"127.0.0.1:{closed}", "--mqtt", f"mqtt://127.0.0.1:{closed}",
                "--modbus", f"127.0.0.1:{closed}", "--modbus-units", "1-2", "--timeout", "1s", timeout=60)
    assert r.returncode == 1, r.stderr
    assert _devices(r.stdout) == []
    assert f"upsd 127.0.0.1:{closed}: cannot connect" in r.stdout  # the footer lists each problem
    assert f"MQTT broker mqtt://127.0.0.1:{closed}:" in r.stdout
    assert f"Modbus tcp://127.0.0.1:{closed}: cannot connect" in r.stdout


@pytest.mark.peer("snmpsim")
def test_snmpv3_user_and_a_wrong_key(tmp_path: Path, snmpsim_factory: Any) -> None:
    rec = ROOT / "tests" / "data" / "snmp" / "ups-mib-online.snmprec"
    sim = snmpsim_factory({"ups": rec})
    r = run_cli("discover", "--snmp", "127.0.0.1", "--port", str(sim.port), "--v3-user", "monitor",
                "--v3-auth-key", "authpass123", "--v3-priv-key", "privpass123", "--v3-context", "ups", "--timeout", "2s")
    assert r.returncode == 0, r.stderr
    [dev] = _devices(r.stdout)
    assert (dev["version"], dev["user"], dev["auth_key"], dev["priv_key"], dev["context"]) == (
        "3", "monitor", "authpass123", "privpass123", "ups")
    assert "community" not in dev
    r = run_cli("discover", "--snmp", "127.0.0.1", "--port", str(sim.port), "--v3-user", "monitor",
                "--v3-auth-key", "wrongpass123", "--v3-priv-key", "privpass123", "--timeout", "2s")
    assert r.returncode == 0 and _devices(r.stdout) == []
    assert "authentication failed" in r.stdout  # said in the footer: it answered, but not to these keys


@pytest.mark.peer("upsd")
def test_upsd_with_a_login_writes_it_into_every_entry(tmp_path: Path, nut_factory: Any) -> None:
    ups = {"ups.status": "OL", "battery.charge": "100", "ups.mfr": "Kehua", "ups.model": "KR1000"}
    nut: NutServer = nut_factory({"a": write_dev(tmp_path / "a.dev", ups), "b": write_dev(tmp_path / "b.dev", ups)})
    r = run_cli("discover", "--nut", f"127.0.0.1:{nut.port}", "--nut-user", "monitor", "--nut-password", "monpass")
    assert r.returncode == 0, r.stderr
    devices = _devices(r.stdout)
    assert [(d["ups"], d["username"], d["password"], d["port"]) for d in devices] == [
        ("a", "monitor", "monpass", nut.port), ("b", "monitor", "monpass", nut.port)]
    assert "Kehua KR1000" in r.stdout
    # A user upsd refuses at LOGIN: nothing is written, and the footer says why.
    r = run_cli("discover", "--nut", f"127.0.0.1:{nut.port}", "--nut-user", "reader", "--nut-password", "readpass")
    assert _devices(r.stdout) == [] and "ACCESS-DENIED" in r.stdout


@pytest.mark.peer("mosquitto")
def test_a_tasmota_board_heard_only_by_its_lwt_is_asked_for_its_sensors(
        mosquitto: Mosquitto, publisher: Publisher) -> None:
    board = TasmotaBoard(mosquitto, "th_rack", {"SHT3X": {"Temperature": 22.4, "Humidity": 38.5}}, period=0)
    quiet = TasmotaBoard(mosquitto, "th_quiet", {"DS18B20": {"Temperature": 20.0}}, period=0)
    try:
        r = run_cli("discover", "--mqtt", mosquitto.url, "--timeout", "2s", timeout=60)
        assert r.returncode == 0, r.stderr
        [dev, dev2] = _devices(r.stdout)
        assert dev["topic"] == "tele/th_quiet/SENSOR" and dev2["topic"] == "tele/th_rack/SENSOR"
        assert board.queries == 1 and quiet.queries == 1  # asked once each: the read-only STATUS 10
        assert "temperature [sensor SHT3X] 22.4 °C, humidity [sensor SHT3X] 38.5 %" in r.stdout
        r = run_cli("discover", "--mqtt", mosquitto.url, "--timeout", "1s", "--no-tasmota-query", timeout=60)
        assert _devices(r.stdout) == [] and board.queries == 1  # not asked: not read, so not written
        assert "gave no reading" in r.stdout
    finally:
        board.stop()
        quiet.stop()


def _huawei_unit() -> dict[str, Any]:
    status = [0x7FFF] * 25  # 11000–11024 (0x7FFF = not available)
    status[0], status[8], status[21], status[24] = 2301, 2200, 356, 2  # input V, output V, load, mode normal
    return {"holding": {11000: status, 11043: [0], 12000: [545, 0, 0, 87, 0, 1260], 41188: [0]}}


@pytest.mark.peer("modbus")
async def test_modbus_units_get_the_map_that_reads_plausibly(modbus_peer: ModbusPeer) -> None:
    await modbus_peer.start_tcp({
        1: {"input": {1: [235, 456]}},  # XY-MD02: input 1 temperature 23.5 °C, input 2 humidity 45.6 %
        2: {"holding": {0: [512, 0xFF9C]}},  # SHT3x module: holding 0 humidity 51.2 %, holding 1 -10.0 °C
        3: _huawei_unit(),
        4: {"input": {1: [0, 0]}, "holding": {0: [0, 0]}},  # answers, but only zeros: no map fits
        6: {"input": {1: [9000, 456]}},  # 900 °C: the map's registers do not read plausibly
    }, silent=[5])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomwatch", "discover", "--modbus", f"127.0.0.1:{modbus_peer.port}", "--modbus-units",
        "1-6", "--timeout", "300ms", cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    devices = _devices(out.decode())
    assert [(d["unit"], d["profile"]) for d in devices] == [(1, "xy-md02"), (2, "sht3x-rs485"), (3, "huawei-ups2000")]
    assert all(d["host"] == "127.0.0.1" and d["port"] == modbus_peer.port for d in devices)
    text = out.decode()
    assert "temperature 23.5 °C, humidity 45.6 %" in text and "temperature -10 °C" in text
    assert "input voltage 230.1 V" in text
    assert json.dumps(devices)  # plain data
