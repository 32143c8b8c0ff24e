"""The snmp driver on the wire: v1/v2c/v3 against snmpsim and net-snmp's snmpd, failures through the agent runtime.

Uses only the hand-written recordings in tests/data/snmp, so it runs on a fresh clone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import Reading
from roomwatch.drivers.snmp import SnmpConfig, SnmpDriver
from tests.helpers import ROOT, async_wait_for, free_port
from tests.peers.snmpd import Snmpd
from tests.peers.snmpsim import Snmpsim, start_snmpsim
from tests.test_snmp_recordings import _Ctx, poll_once

pytestmark = pytest.mark.peer("snmpsim")

OWN = {p.stem: p for p in sorted((ROOT / "tests" / "data" / "snmp").glob("*.snmprec"))}
V3 = {"version": 3, "user": "monitor", "auth_key": "authpass123", "priv_key": "privpass123"}


# An agent that answers, but every UPS-MIB object is of the wrong type or missing.
NOTHING_USABLE = """1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.32473.9
1.3.6.1.2.1.33.1.2.1.0|4|normal
1.3.6.1.2.1.33.1.2.4.0|5|
1.3.6.1.2.1.33.1.4.1.0|64|10.0.0.3
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpsim]:
    daemon = start_snmpsim(tmp_path_factory.mktemp("snmpsim"), {**OWN, "nothing-usable": NOTHING_USABLE})
    yield daemon
    daemon.stop()


def values(readings: list[Reading]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Readings as comparable data (battery age moves with the clock, so it is left out)."""
    return {(r.metric, tuple(sorted((r.labels or {}).items()))): r.value for r in readings if r.metric != v.UPS_BATTERY_AGE}


def value(readings: list[Reading], metric: str, **labels: str) -> float | None:
    found = [r.value for r in readings if r.metric == metric and all((r.labels or {}).get(k) == x
                                                                      for k, x in labels.items())]
    assert len(found) <= 1, found
    return found[0] if found else None


@pytest.mark.parametrize("options", [
    pytest.param({"version": 1, "community": "ups-mib-online"}, id="v1"),
    pytest.param({"version": 1, "community": "ups-mib-online", "client": "pysnmp"}, id="v1-pysnmp"),
    pytest.param({"community": "ups-mib-online", "client": "pysnmp"}, id="v2c-pysnmp"),
    pytest.param({**V3, "context": "ups-mib-online"}, id="v3-authPriv-SHA-AES"),
    pytest.param({"version": "3", "user": "md5des", "auth_protocol": "MD5", "auth_key": "authpass123",
                  "priv_protocol": "DES", "priv_key": "privpass123", "context": "ups-mib-online"}, id="v3-MD5-DES"),
    pytest.param({"version": "3", "user": "sha256", "auth_protocol": "SHA256", "auth_key": "authpass123",
                  "priv_protocol": "AES256", "priv_key": "privpass123", "context": "ups-mib-online"},
                 id="v3-SHA256-AES256"),
    pytest.param({"version": "3", "user": "authonly", "auth_key": "authpass123", "security_level": "authNoPriv",
                  "context": "ups-mib-online"}, id="v3-authNoPriv"),
])
async def test_every_version_reads_the_same_values(sim: Snmpsim, options: dict[str, Any]) -> None:
    base, _ = await poll_once(sim.port, community="ups-mib-online")
    assert value(base, v.UPS_BATTERY_RUNTIME) == 2700.0  # 45 minutes
    got, _ = await poll_once(sim.port, **options)
    assert values(got) == values(base)


async def test_getbulk_walks_tables_in_fewer_requests_than_getnext(sim: Snmpsim) -> None:
    bulk, bulk_requests = await poll_once(sim.port, community="apc-smartups", max_repetitions=10)
    nxt, next_requests = await poll_once(sim.port, community="apc-smartups", max_repetitions=0)
    v1, _ = await poll_once(sim.port, community="apc-smartups", version=1)
    via_pysnmp, pysnmp_requests = await poll_once(sim.port, community="apc-smartups", client="pysnmp")
    assert values(bulk) == values(nxt) == values(v1) == values(via_pysnmp)
    assert pysnmp_requests == bulk_requests
    assert value(bulk, v.TEMPERATURE, sensor="Rack rear") == 31.0
    # sysObjectID + one GET + walk: GETBULK takes every column of every table in one or two PDUs.
    assert bulk_requests <= 4 < next_requests


async def test_snmpd_v2c_and_v3_users(snmpd: Snmpd) -> None:
    """net-snmp's agent (UPS-MIB values pinned with `override`): each v3 user reads the same UPS."""
    users = [
        {"user": "monitor", "auth_protocol": "SHA", "auth_key": "authpass123", "priv_protocol": "AES",
         "priv_key": "privpass123"},
        {"user": "md5des", "auth_protocol": "MD5", "auth_key": "authpass123", "priv_protocol": "DES",
         "priv_key": "privpass123"},
        {"user": "sha256", "auth_protocol": "SHA256", "auth_key": "authpass123", "priv_protocol": "AES",
         "priv_key": "privpass123"},
        {"user": "authonly", "auth_key": "authpass123"},
    ]
    base, _ = await poll_once(snmpd.port, community="public")
    assert value(base, v.UPS_BATTERY_CHARGE) == 0.18
    assert value(base, v.UPS_BATTERY_RUNTIME) == 420.0
    assert value(base, v.UPS_ON_BATTERY) == 1.0
    assert value(base, v.UPS_BATTERY_LOW) == 1.0
    assert value(base, v.UPS_INFO, manufacturer="net-snmp test UPS") == 1.0
    assert value(base, v.UPS_BATTERY_TEMPERATURE) is None  # snmpd has no such object: absent, not 0
    for user in users:
        got, _ = await poll_once(snmpd.port, version=3, **user)
        assert values(got) == values(base), user["user"]


def _agent(*devices: dict[str, Any]) -> Agent:
    return Agent(AgentConfig.model_validate({"agent": {"id": "t", "site": "s", "room": "r"}, "host": {"enabled": False},
                                             "devices": [{"driver": "snmp", "host": "127.0.0.1", "interval": "300ms",
                                                          **d} for d in devices]}))


def _up(agent: Agent, device: str) -> float | None:
    for fam in agent.latest.families():
        if fam.name == v.DEVICE_UP:
            for block, val in fam.samples:
                if f'device="{device}"' in block:
                    return val
    return None


def _series(agent: Agent, device: str) -> set[str]:
    return {fam.name for fam in agent.latest.families() for block, _ in fam.samples if f'device="{device}"' in block}


async def _run(agent: Agent, down: tuple[str, ...], up: tuple[str, ...] = ("good",)) -> None:
    """Run until the ``up`` devices are up and the ``down`` ones down after two failed polls each (so a
    reason logged at every poll would show), then stop."""
    await agent.start()
    try:
        await async_wait_for(lambda: all(agent.devices[n].up is True for n in up) and all(
            agent.devices[n].up is False and agent.devices[n].errors >= 2 for n in down), timeout=60,
            what="every device polled enough")
    finally:
        await agent.stop()


async def test_wrong_credentials_mean_device_down_and_one_clear_log_line(sim: Snmpsim,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="roomwatch")
    fast = {"timeout": "300ms", "retries": 0}
    agent = _agent(
        {"name": "good", "port": sim.port, **V3, "context": "ups-mib-online"},
        {"name": "bad-auth", "port": sim.port, **V3, "auth_key": "wrong-auth-key", "context": "ups-mib-online"},
        {"name": "bad-priv", "port": sim.port, **V3, "priv_key": "wrong-priv-key", "context": "ups-mib-online", **fast},
        {"name": "bad-user", "port": sim.port, **V3, "user": "intruder", "context": "ups-mib-online"},
        {"name": "bad-community", "port": sim.port, "community": "not-a-recording", **fast},
    )
    await _run(agent, ("bad-auth", "bad-priv", "bad-user", "bad-community"))
    assert _up(agent, "good") == 1.0
    assert v.UPS_BATTERY_CHARGE in _series(agent, "good")
    expected = {"bad-auth": "wrong auth_key or auth_protocol", "bad-priv": "wrong priv_key or priv_protocol",
                "bad-user": "user is unknown to the agent", "bad-community": "wrong community"}
    log = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    for name, reason in expected.items():
        assert _up(agent, name) == 0.0, name
        assert v.UPS_BATTERY_CHARGE not in _series(agent, name)
        lines = [m for m in log if name in m]
        # Polled several times, logged once: on the transition to down, with the reason.
        assert len(lines) == 1, lines
        assert "is down" in lines[0] and reason in lines[0], lines[0]
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("authpass123", "privpass123", "wrong-auth-key", "wrong-priv-key"):
        assert secret not in text


def _silent_udp_port() -> Iterator[int]:
    """A loopback UDP socket that reads nothing and never answers (a hung SNMP agent)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from _silent_udp_port()


async def test_unreachable_silent_and_broken_agents_do_not_disturb_others(
        sim: Snmpsim, silent_port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="roomwatch")
    closed_port = free_port(socket.SOCK_DGRAM)  # nothing listens: ICMP port unreachable, then timeouts
    fast = {"timeout": "200ms", "retries": 1}
    agent = _agent(
        {"name": "good", "port": sim.port, "community": "ups-mib-onbattery"},
        {"name": "closed", "port": closed_port, "community": "public", **fast},
        {"name": "silent", "port": silent_port, "community": "public", **fast},
        {"name": "garbage", "port": sim.port, "community": "garbage-types"},
        {"name": "nothing-usable", "port": sim.port, "community": "nothing-usable"},
        {"name": "wrong-profile", "port": sim.port, "community": "poseidon-fahrenheit", "profile": "ups-mib"},
    )
    await _run(agent, ("closed", "silent", "nothing-usable", "wrong-profile"), up=("good", "garbage"))
    assert _up(agent, "good") == 1.0
    assert agent.devices["good"].errors == 0
    assert {v.UPS_ON_BATTERY, v.UPS_BATTERY_LOW} <= _series(agent, "good")
    for name in ("closed", "silent"):
        assert _up(agent, name) == 0.0
        assert "no SNMP answer" in agent.devices[name].reason
        assert "tries" in agent.devices[name].reason  # 2 tries: retries are honoured
    # An agent answering some nonsense types is up (it answers) but reports only what makes sense.
    assert _up(agent, "garbage") == 1.0
    assert _series(agent, "garbage") & {v.UPS_ON_BATTERY, v.UPS_BATTERY_CHARGE, v.UPS_BATTERY_LOW, v.UPS_INFO} == set()
    assert v.UPS_LOAD in _series(agent, "garbage")
    # One that gives nothing usable at all, or has none of its profile's objects, is as good as down.
    for name in ("nothing-usable", "wrong-profile"):
        assert _up(agent, name) == 0.0, name
        assert "no usable value for profile ups-mib" in agent.devices[name].reason
        lines = [r.getMessage() for r in caplog.records if f"device {name} is down" in r.getMessage()]
        assert len(lines) == 1, lines


async def test_battery_age_from_the_card_or_the_config(sim: Snmpsim) -> None:
    from_card, _ = await poll_once(sim.port, community="apc-smartups")
    age = value(from_card, v.UPS_BATTERY_AGE)
    expected = (dt.datetime.now(dt.UTC) - dt.datetime(2022, 3, 15, tzinfo=dt.UTC)).total_seconds()
    assert age is not None and abs(age - expected) < 60  # upsBasicBatteryLastReplaceDate 03/15/2022
    from_config, _ = await poll_once(sim.port, community="apc-smartups", battery_installed="2024-06-01")
    expected = (dt.datetime.now(dt.UTC) - dt.datetime(2024, 6, 1, tzinfo=dt.UTC)).total_seconds()
    assert abs(value(from_config, v.UPS_BATTERY_AGE) - expected) < 60  # type: ignore[operator]
    unknown, _ = await poll_once(sim.port, community="ups-mib-online")
    assert value(unknown, v.UPS_BATTERY_AGE) is None  # no date anywhere: absent, not 0


async def test_contacts_become_door_leak_and_smoke(sim: Snmpsim) -> None:
    apc, _ = await poll_once(sim.port, community="apc-smartups", contacts={
        "Door": {"kind": "door", "active": "alarm"}, "Leak rope": {"kind": "leak", "active": "alarm"},
        "Spare": {"kind": "smoke", "active": "alarm"}})
    assert value(apc, v.DOOR_OPEN, sensor="Door") == 1.0
    assert value(apc, v.WATER_LEAK, sensor="Leak rope") == 0.0
    assert value(apc, v.SMOKE) is None  # the "Spare" contact is disabled: no state, no reading
    poseidon, _ = await poll_once(sim.port, community="poseidon-fahrenheit", contacts={
        "Door contact": {"kind": "door", "active": "open"}, "Smoke relay": {"kind": "smoke", "active": "closed"}})
    assert value(poseidon, v.DOOR_OPEN, sensor="Door contact") == 0.0  # contact closed = door shut
    assert value(poseidon, v.SMOKE, sensor="Smoke relay") == 0.0


async def test_info_labels(sim: Snmpsim) -> None:
    apc, _ = await poll_once(sim.port, community="apc-smartups")
    assert value(apc, v.UPS_INFO, manufacturer="APC", model="Smart-UPS 1500", serial="AS1234567890",
                 firmware="UPS 15.0 (ID18)") == 1.0
    env, _ = await poll_once(sim.port, community="poseidon-fahrenheit")
    assert value(env, v.UPS_INFO) is None  # an environment monitor is not a UPS


def test_poll_budget_covers_retries() -> None:
    cfg = SnmpConfig(name="u", driver="snmp", host="127.0.0.1", community="public", timeout="5s", retries=2)
    assert SnmpDriver(cfg, _Ctx()).poll_timeout(5.0) == 46.0  # 3 requests × 5 s × 3 tries + 1 s
    agent = _agent({"name": "u", "community": "public", "timeout": "5s", "retries": 2})
    assert agent.devices["u"].timeout == 46.0
    agent = _agent({"name": "d", "community": "public"})
    assert agent.devices["d"].timeout == 13.0  # defaults: 2 s per try, 1 retry


def test_demo_ups_is_served_over_real_snmp(tmp_path: Any) -> None:
    """`roomwatch demo`'s simulated UPS: snmpsim with the shipped recording, read by the driver."""
    from roomwatch.demo.run import DemoContext, _stop
    from roomwatch.demo.sims import snmp_ups

    ctx = DemoContext(tmp_path)
    try:
        (entry,) = snmp_ups.start(ctx)
        options = {k: val for k, val in entry.items() if k not in ("name", "driver", "host")}
        readings, _ = asyncio.run(poll_once(**options))
    finally:
        _stop(ctx.processes)
        for cleanup in ctx.cleanups:
            cleanup()
    assert value(readings, v.UPS_ON_BATTERY) in (0.0, 1.0)
    assert 0.05 <= value(readings, v.UPS_BATTERY_CHARGE) <= 1.0  # type: ignore[operator]
    assert value(readings, v.UPS_INFO, model="DP-3000 RT") == 1.0
    assert value(readings, v.UPS_BATTERY_AGE) is not None  # battery_installed in the demo's device entry


def test_agent_process_exposes_snmp_metrics_that_pass_promtool(sim: Snmpsim, agent_factory: Any) -> None:
    """The real agent process with SNMP devices: /metrics has the UPS, probe and contact series, lint-clean."""
    from tests.helpers import http_get, metric_value, wait_for
    from tests.peers.prometheus import promtool_check_metrics

    devices = [
        {"name": "ups1", "driver": "snmp", "host": "127.0.0.1", "port": sim.port, "community": "apc-smartups",
         "interval": "1s", "contacts": {"Door": {"kind": "door", "active": "alarm"}}},
        {"name": "env1", "driver": "snmp", "host": "127.0.0.1", "port": sim.port, "community": "poseidon-fahrenheit",
         "interval": "1s"},
    ]
    _, url = agent_factory(None, devices=devices)

    def scrape() -> str | None:
        text = http_get(url + "/metrics")[1].decode()
        ready = metric_value(text, v.TEMPERATURE, device="env1") is not None and v.DOOR_OPEN in text
        return text if ready else None

    text = wait_for(scrape, timeout=20, what="SNMP series on /metrics")
    assert metric_value(text, v.UPS_ON_BATTERY, device="ups1") == 1.0
    assert metric_value(text, v.DOOR_OPEN, device="ups1", sensor="Door") == 1.0
    assert metric_value(text, v.TEMPERATURE, device="env1", sensor="Inlet") == 25.0
    assert metric_value(text, v.UPS_INFO, device="ups1", model="Smart-UPS 1500") == 1.0
    done = promtool_check_metrics(text.encode())
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


def test_contract_smallest_agent_file_runs_with_its_snmp_device(sim: Snmpsim, tmp_path: Any) -> None:
    """docs/api.md's smallest agent file, its SNMP device pointed at snmpsim (no host section, so the host
    driver takes the default interval)."""
    from tests.helpers import RoomwatchProcess, http_get, metric_value, wait_for

    port = free_port()
    conf = tmp_path / "agent.yaml"
    conf.write_text(f"""agent:
  id: room1-agent
  listen: 127.0.0.1:{port}
devices:
  - name: ups1
    driver: snmp
    host: 127.0.0.1
    port: {sim.port}
    version: 2c
    community: ups-mib-online
""")
    proc = RoomwatchProcess(["agent", "-c", str(conf)], tmp_path / "agent.log")
    try:
        text = wait_for(lambda: (lambda t: t if metric_value(t, v.DEVICE_UP, device="ups1") == 1.0 else None)(
            http_get(f"http://127.0.0.1:{port}/metrics", timeout=1)[1].decode()), proc=proc.proc, timeout=30,
            what="ups1 up on the agent's /metrics")
        assert metric_value(text, v.UPS_BATTERY_CHARGE, device="ups1") == 1.0
    finally:
        proc.stop()
