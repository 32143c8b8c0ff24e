"""NUT driver failure handling on a real upsd: login, ERR replies, upsd down and back, garbage peers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import ConfigError
from roomwatch.drivers.nut_protocol import split_line
from tests.helpers import async_wait_for, free_port, write_yaml
from tests.peers.nut import NutServer, write_dev

pytestmark = pytest.mark.peer("upsd")

ONLINE = {"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1200", "ups.mfr": "T", "ups.model": "M"}


@pytest.fixture
def upsd(nut_factory: Any, tmp_path: Path) -> NutServer:
    """upsd with two UPS units, ``alpha`` and ``beta``."""
    return nut_factory({"alpha": write_dev(tmp_path / "alpha.dev", ONLINE),
                        "beta": write_dev(tmp_path / "beta.dev", {**ONLINE, "battery.charge": "55"})})


@pytest.fixture
def make_agent() -> Iterator[Any]:
    agents: list[Agent] = []

    def make(*devices: dict[str, Any]) -> Agent:
        cfg = AgentConfig.model_validate({"agent": {"id": "t"}, "host": {"enabled": False}, "devices": list(devices)})
        agents.append(Agent(cfg))
        return agents[-1]

    yield make
    for agent in agents:
        assert agent._scheduler is None, "test must stop its agent"


async def _run(agent: Agent, done: Any, what: str) -> None:
    """Run the agent until ``done()`` holds (its devices were polled enough), then stop it."""
    await agent.start()
    try:
        await async_wait_for(done, timeout=60, what=what)
    finally:
        await agent.stop()


def _down_lines(caplog: pytest.LogCaptureFixture, device: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"device {device} is down")]


def _value(agent: Agent, metric: str, **labels: str) -> float | None:
    for fam in agent.latest.families():
        if fam.name == metric:
            for block, value in fam.samples:
                if all(f'{k}="{val}"' in block for k, val in labels.items()):
                    return value
    return None


async def test_login_bad_password_unknown_ups(upsd: NutServer, make_agent: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Good login → up (upsd logs the LOGIN); wrong password, a user without LOGIN right, an unknown UPS →
    device_up 0 with one clear log line each, while the good device keeps polling."""
    caplog.set_level(logging.DEBUG, logger="roomwatch")
    base = {"driver": "nut", "port": upsd.port, "interval": "200ms", "timeout": "2s"}
    agent = make_agent(
        {**base, "name": "good", "ups": "alpha", "username": "monitor", "password": "monpass"},
        {**base, "name": "badpw", "ups": "alpha", "username": "monitor", "password": "wrong"},
        {**base, "name": "norights", "ups": "alpha", "username": "reader", "password": "readpass"},
        {**base, "name": "nosuch", "ups": "gamma"},
        {**base, "name": "nosuch-login", "ups": "gamma", "username": "monitor", "password": "monpass"},
    )
    bad = ("badpw", "norights", "nosuch", "nosuch-login")
    await _run(agent, lambda: agent.devices["good"].up is True and all(
        agent.devices[n].up is False and agent.devices[n].errors >= 4 for n in bad), "four failed polls of each")
    assert agent.devices["good"].up is True
    assert _value(agent, v.UPS_BATTERY_CHARGE, device="good") == 1.0
    assert _value(agent, v.DEVICE_UP, device="good") == 1.0
    assert "User monitor@127.0.0.1 logged into UPS [alpha]" in upsd.procs["upsd"].log()
    expect = {
        "badpw": "ERR ACCESS-DENIED to LOGIN alpha for UPS 'alpha': upsd refused the login: wrong username or password",
        "norights": "ERR ACCESS-DENIED",
        "nosuch": "ERR UNKNOWN-UPS to LIST VAR gamma for UPS 'gamma': upsd has no UPS of that name",
        "nosuch-login": "ERR UNKNOWN-UPS to ",  # LOGIN or LIST VAR: the connection is shared with "good"
    }
    for name, text in expect.items():
        dev = agent.devices[name]
        assert dev.up is False and text in dev.reason, (name, dev.reason)
        assert _value(agent, v.DEVICE_UP, device=name) == 0.0
        assert _value(agent, v.UPS_BATTERY_CHARGE, device=name) is None
        assert len(_down_lines(caplog, name)) == 1, _down_lines(caplog, name)  # once, not every poll
        assert dev.errors >= 4  # still retried every interval
    assert all("wrong" not in r.getMessage() for r in caplog.records if "PASSWORD" in r.getMessage())


async def test_driver_lost_and_upsd_restart(upsd: NutServer, make_agent: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A UPS whose driver stops: its single-UPS device goes down (ERR from upsd), the all-UPS device keeps
    reporting the other UPS; upsd stopped: devices down, no crash; upsd back: the agent reconnects."""
    caplog.set_level(logging.INFO, logger="roomwatch")
    base = {"driver": "nut", "port": upsd.port, "interval": "200ms", "timeout": "2s"}
    agent = make_agent({**base, "name": "beta-only", "ups": "beta"}, {**base, "name": "all"})
    await agent.start()
    try:
        await async_wait_for(lambda: agent.devices["beta-only"].up and agent.devices["all"].up
                             and _value(agent, v.UPS_BATTERY_CHARGE, device="all", ups="beta") == 0.55, what="both up")
        await asyncio.to_thread(upsd.stop_driver, "beta")
        await async_wait_for(lambda: agent.devices["beta-only"].up is False
                             and _value(agent, v.UPS_BATTERY_CHARGE, device="all", ups="beta") is None,
                             what="beta gone from both devices")
        reason = agent.devices["beta-only"].reason
        assert agent.devices["beta-only"].up is False
        assert "ERR DRIVER-NOT-CONNECTED" in reason or "ERR DATA-STALE" in reason, reason
        assert agent.devices["all"].up is True
        assert _value(agent, v.UPS_BATTERY_CHARGE, device="all", ups="alpha") == 1.0
        assert _value(agent, v.UPS_BATTERY_CHARGE, device="all", ups="beta") is None
        assert sum("UPS beta on all cannot be read" in r.getMessage() for r in caplog.records) == 1

        await asyncio.to_thread(upsd.stop_upsd)
        await async_wait_for(lambda: agent.devices["all"].up is False, what="all down with upsd stopped")
        assert _value(agent, v.DEVICE_UP, device="all") == 0.0
        await asyncio.to_thread(upsd.start_upsd)
        await async_wait_for(lambda: agent.devices["all"].up is True
                             and _value(agent, v.UPS_BATTERY_CHARGE, device="all", ups="alpha") == 1.0,
                             what="all back up after upsd restarted")
        assert _value(agent, v.UPS_BATTERY_CHARGE, device="all", ups="alpha") == 1.0
    finally:
        await agent.stop()
    assert sum(m.startswith("device all is back up") for m in (r.getMessage() for r in caplog.records)) == 1


async def _fake_peer(behaviour: str) -> asyncio.Server:
    """Not a upsd: an HTTP server, a mute socket, or one that hangs up at once."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            if behaviour == "http":
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
            elif behaviour == "mute":
                await asyncio.sleep(30)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_unreachable_and_garbage_peers(upsd: NutServer, make_agent: Any) -> None:
    """A closed port, an HTTP server, a mute server, one that hangs up: each device down with its reason."""
    servers = {b: await _fake_peer(b) for b in ("http", "mute", "hangup")}
    ports = {b: s.sockets[0].getsockname()[1] for b, s in servers.items()}
    base = {"driver": "nut", "ups": "alpha", "interval": "300ms", "timeout": "500ms"}
    agent = make_agent({**base, "name": "closed", "port": free_port()},
                       *({**base, "name": b, "port": p} for b, p in ports.items()),
                       {**base, "name": "good", "port": upsd.port})
    try:
        await _run(agent, lambda: agent.devices["good"].up is True and all(
            agent.devices[n].up is False for n in ("closed", *ports)), "each bad peer's device down")
    finally:
        for s in servers.values():
            s.close()
    reasons = {name: dev.reason for name, dev in agent.devices.items()}
    assert "cannot connect to upsd at 127.0.0.1" in reasons["closed"]
    assert "unexpected reply to LIST VAR alpha" in reasons["http"] and "HTTP/1.1 400" in reasons["http"]
    assert reasons["mute"] == "no answer within 0.5s"
    assert "closed the connection" in reasons["hangup"]
    assert agent.devices["good"].up is True and agent.devices["good"].errors == 0


def test_config_errors(tmp_path: Path) -> None:
    """username without password (and the reverse) is refused at load time, with file and line."""
    from roomwatch.agent.config import load_agent_config

    path = write_yaml(tmp_path / "a.yaml", {"devices": [
        {"name": "u1", "driver": "nut", "username": "monitor"},
        {"name": "u2", "driver": "nut", "port": 70000}]})
    with pytest.raises(ConfigError) as err:
        load_agent_config(str(path))
    text = str(err.value)
    assert "give both username and password" in text and "port" in text


@pytest.mark.parametrize(("line", "words"), [
    ('VAR ups ups.status "OL CHRG"', ["VAR", "ups", "ups.status", "OL CHRG"]),
    ('VAR ups device.model "TP \\"Rack\\" 1500"', ["VAR", "ups", "device.model", 'TP "Rack" 1500']),
    ('VAR ups x "C:\\\\nut"', ["VAR", "ups", "x", "C:\\nut"]),
    ('VAR ups ups.firmware ""', ["VAR", "ups", "ups.firmware", ""]),
    ('UPS a "Description unavailable"', ["UPS", "a", "Description unavailable"]),
])
def test_split_line(line: str, words: list[str]) -> None:
    """NUT quoting: double quotes group words, backslash escapes quote and backslash."""
    assert split_line(line) == words


async def test_starttls(nut_factory: Any, tmp_path: Path, make_agent: Any) -> None:
    """STARTTLS with upsd's CA: encrypted (upsd logs SSL) and logged in; without the CA: refused with the
    reason; STARTTLS to an upsd without TLS: upsd's ERR explained."""
    tls = nut_factory({"alpha": write_dev(tmp_path / "tls-alpha.dev", ONLINE)}, tls=True)
    plain = nut_factory({"alpha": write_dev(tmp_path / "plain-alpha.dev", ONLINE)})
    base = {"driver": "nut", "ups": "alpha", "starttls": True, "interval": "300ms", "timeout": "3s"}
    agent = make_agent(
        {**base, "name": "tls-ok", "port": tls.port, "ca_file": str(tls.ca_file),
         "username": "monitor", "password": "monpass"},
        {**base, "name": "tls-unknown-ca", "port": tls.port},
        {**base, "name": "no-tls-upsd", "port": plain.port},
    )
    await _run(agent, lambda: agent.devices["tls-ok"].up is True
               and _value(agent, v.UPS_BATTERY_CHARGE, device="tls-ok") is not None
               and agent.devices["tls-unknown-ca"].up is False and agent.devices["no-tls-upsd"].up is False,
               "the TLS device up, the other two down")
    assert agent.devices["tls-ok"].up is True, agent.devices["tls-ok"].reason
    assert _value(agent, v.UPS_BATTERY_CHARGE, device="tls-ok") == 1.0
    assert "User monitor@127.0.0.1 logged into UPS [alpha] (SSL)" in tls.procs["upsd"].log()
    assert "certificate verify failed" in agent.devices["tls-unknown-ca"].reason
    assert "ERR FEATURE-NOT-CONFIGURED to STARTTLS: TLS is not configured on this upsd" in agent.devices["no-tls-upsd"].reason
