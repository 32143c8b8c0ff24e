"""The modbus driver inside the agent runtime: a dead unit is down, its neighbours keep reading."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core import vocabulary as v
from tests.peers.modbus import ModbusPeer


def _series(agent: Agent, metric: str) -> dict[str, float]:
    """device → value of ``metric`` in the agent's current values."""
    out = {}
    for fam in agent.latest.families():
        if fam.name == metric:
            for block, value in fam.samples:
                device = block.split('device="', 1)[1].split('"', 1)[0]
                out[device] = value
    return out


def _agent(devices: list[dict[str, Any]]) -> Agent:
    cfg = AgentConfig.model_validate({"agent": {"id": "t", "site": "s", "room": "r"}, "host": {"enabled": False},
                                      "devices": devices})
    return Agent(cfg)


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_dead_unit_is_down_others_keep_reading_over_tcp(modbus_peer: ModbusPeer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roomwatch")
    await modbus_peer.start_tcp({1: {"input": {1: [221, 480]}}, 2: {"holding": {0: [1]}}}, silent=[3])
    common = {"driver": "modbus", "host": "127.0.0.1", "port": modbus_peer.port, "interval": "200ms"}
    agent = _agent([
        {**common, "name": "th1", "unit": 1, "profile": "xy-md02"},
        {**common, "name": "bad-map", "unit": 2, "registers": [{"metric": "temperature", "address": 40}]},
        {**common, "name": "dead", "unit": 3, "profile": "xy-md02", "request_timeout": "150ms"},
    ])
    await agent.start()
    try:
        await _until(lambda: len(_series(agent, v.DEVICE_UP)) == 3 and len(modbus_peer.reads_of(3)) >= 3)
        th1, dead = len(modbus_peer.reads_of(1)), len(modbus_peer.reads_of(3))
        # th1 is still polled on its interval while the dead unit keeps timing out
        await _until(lambda: len(modbus_peer.reads_of(1)) >= th1 + 3 and len(modbus_peer.reads_of(3)) >= dead + 2)
    finally:
        await agent.stop()
    up = _series(agent, v.DEVICE_UP)
    assert up == {"th1": 1.0, "bad-map": 0.0, "dead": 0.0}
    assert _series(agent, v.TEMPERATURE) == {"th1": pytest.approx(22.1)}  # nothing shown for the down devices
    assert agent.devices["dead"].reason.startswith("DeviceError: unit 3 did not answer within 0.15s")
    assert "Modbus exception 2 (illegal data address) reading holding registers 40" in agent.devices["bad-map"].reason
    downs = [r.getMessage() for r in caplog.records if "is down" in r.getMessage()]
    assert sum("device dead is down" in m for m in downs) == 1  # logged once, not at every poll
    assert not [r for r in caplog.records if r.name.startswith("pymodbus") and r.levelno >= logging.ERROR]


async def test_rtu_bus_shared_by_agent_devices(modbus_peer: ModbusPeer, serial_pair: tuple[str, str]) -> None:
    server_tty, client_tty = serial_pair
    await modbus_peer.start_rtu(server_tty, {1: {"input": {1: [200, 400]}}, 2: {"holding": {0: [555, 241]}}},
                                silent=[7])
    common = {"driver": "modbus", "transport": "rtu", "serial_port": client_tty, "baudrate": 19200, "interval": "200ms"}
    agent = _agent([
        {**common, "name": "th-a", "unit": 1, "profile": "xy-md02"},
        {**common, "name": "th-b", "unit": 2, "profile": "sht3x-rs485"},
        {**common, "name": "gone", "unit": 7, "profile": "xy-md02", "request_timeout": "150ms"},
    ])
    await agent.start()
    try:
        await _until(lambda: _series(agent, v.DEVICE_UP) == {"th-a": 1.0, "th-b": 1.0, "gone": 0.0}
                     and len(_series(agent, v.TEMPERATURE)) == 2 and len(_series(agent, v.HUMIDITY)) == 2)
    finally:
        await agent.stop()
    assert _series(agent, v.TEMPERATURE) == {"th-a": 20.0, "th-b": pytest.approx(24.1)}
    assert _series(agent, v.HUMIDITY) == {"th-a": pytest.approx(0.4), "th-b": pytest.approx(0.555)}
    assert len([k for k in agent._shared if k[0] == "modbus-rtu"]) == 1
