"""SNMP traps (issue 13 point 5): net-snmp's ``snmptrap`` → a real ``roomwatch agent`` polling snmpsim → a real collector.

The agent polls its UPS once an hour and pushes every 60 s, so whatever reaches the collector
within the test came because of the trap: the event at once, then the values of the poll the
trap asked for. Traps from an address that is no configured device, with a wrong community or
a wrong SNMPv3 key are dropped and counted in ``roomwatch_snmp_traps_total{result}``.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from roomwatch.core import vocabulary as v
from roomwatch.drivers.snmp.profile import parse_oid
from roomwatch.drivers.snmp.traps import classify
from tests.conftest import CollectorHandle
from tests.helpers import ROOT, free_port, http_get, metric_value, require_binary, wait_for

UPS_ONLINE = ROOT / "tests" / "data" / "snmp" / "ups-mib-online.snmprec"
TRAPS = "roomwatch_snmp_traps_total"
ENGINE_ID = "0x8000000001020304"


def test_notifications_are_classified_from_their_mibs() -> None:
    def meaning(oid: str, binds: list[tuple[str, Any]] | None = None) -> tuple[str, str | None, float | None]:
        m = classify(parse_oid(oid), [(parse_oid(n), val) for n, val in binds or []])
        return m.name, m.metric, m.value

    assert meaning("1.3.6.1.2.1.33.2.1") == ("UPS-MIB upsTrapOnBattery", v.UPS_ON_BATTERY, 1.0)
    assert meaning("1.3.6.1.2.1.33.2.0.1")[1:] == (v.UPS_ON_BATTERY, 1.0)  # the same trap sent as SNMPv1
    alarm = [("1.3.6.1.2.1.33.1.6.2.1.2.7", parse_oid("1.3.6.1.2.1.33.1.6.3.3"))]  # upsAlarmDescr.7 = upsAlarmLowBattery
    assert meaning("1.3.6.1.2.1.33.2.3", alarm) == ("UPS-MIB upsTrapAlarmEntryAdded upsAlarmLowBattery", v.UPS_BATTERY_LOW,
                                                     1.0)
    assert meaning("1.3.6.1.2.1.33.2.4", alarm)[1:] == (v.UPS_BATTERY_LOW, 0.0)
    assert meaning("1.3.6.1.2.1.33.2.3") == ("UPS-MIB upsTrapAlarmEntryAdded", None, None)  # no description: poll only
    assert meaning("1.3.6.1.4.1.318.0.5")[1:] == (v.UPS_ON_BATTERY, 1.0)  # APC upsOnBattery
    assert meaning("1.3.6.1.4.1.318.0.9")[1:] == (v.UPS_ON_BATTERY, 0.0)  # APC powerRestored
    assert meaning("1.3.6.1.4.1.318.0.7")[1:] == (v.UPS_BATTERY_LOW, 1.0)
    assert meaning("1.3.6.1.4.1.534.1.11.4.1.0.3")[0] == "XUPS-MIB xupstdOnBattery"
    xalarm = [("1.3.6.1.4.1.534.1.7.2.1.2.3", parse_oid("1.3.6.1.4.1.534.1.7.3"))]
    assert meaning("1.3.6.1.4.1.534.1.11.4.1.0.21", xalarm)[1:] == (v.UPS_ON_BATTERY, 1.0)
    assert meaning("1.3.6.1.4.1.935.0.5")[1:] == (v.UPS_ON_BATTERY, 1.0)  # XPPC (Megatec NetAgent)
    assert meaning("1.3.6.1.4.1.935.0.21")[1:] == (v.WATER_LEAK, 1.0)
    assert meaning("1.3.6.1.4.1.705.1.11.0.12")[1:] == (v.UPS_ON_BATTERY, 0.0)  # MGE upsmgReturnFromBattery
    assert meaning("1.3.6.1.4.1.3854.1.7.0.3") == ("1.3.6.1.4.1.3854.1.7.0.3", None, None)  # AKCP: poll only
    assert classify(None, []).metric is None


def send(port: int, *args: str, source: str | None = None) -> None:
    """``snmptrap OPTIONS… 127.0.0.1:port REST…`` (``OPTIONS -- REST``); v2c/v3 REST: '' (uptime), the trap OID …"""
    exe = require_binary("snmptrap")
    head = [exe, *([f"--clientaddr={source}"] if source else [])]
    split = args.index("--")
    r = subprocess.run([*head, *args[:split], f"127.0.0.1:{port}", *args[split + 1:]], capture_output=True,
                       text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr


def _events(collector: CollectorHandle) -> int:
    agents = json.loads(http_get(collector.url + "/api/v1/agents")[1])["agents"]
    return int(next((a["events"] for a in agents if a["id"] == "agent-a"), 0))


def _agent_metric(url: str, name: str, **labels: str) -> float | None:
    return metric_value(http_get(url + "/metrics")[1].decode(), name, **labels)


def _start(agent_factory: Any, collector: CollectorHandle, sim_port: int, hold: str,
           **traps: Any) -> tuple[Any, str, int]:
    trap_port = free_port(socket.SOCK_DGRAM)
    proc, url = agent_factory(collector.url, collector={"push_interval": "60s"}, host={"enabled": False},
                              devices=[{"name": "ups1", "driver": "snmp", "host": "127.0.0.1", "port": sim_port,
                                        "community": "ups", "interval": "1h", "client": "builtin"}],
                              traps={"listen": f"127.0.0.1:{trap_port}", "communities": ["trapsecret"], "hold": hold,
                                     **traps})
    wait_for(lambda: _agent_metric(url, v.UPS_ON_BATTERY, device="ups1") == 0, timeout=30,
             what="the first poll (on mains)")
    return proc, url, trap_port


@pytest.mark.peer("snmpsim")
def test_on_battery_trap_reaches_the_collector_at_once_and_polls_the_ups(
        collector: CollectorHandle, agent_factory: Any, snmpsim_factory: Any) -> None:
    sim = snmpsim_factory({"ups": UPS_ONLINE})
    _proc, url, trap_port = _start(agent_factory, collector, sim.port, hold="1h")
    assert _events(collector) == 0 and metric_value(collector.metrics(), v.UPS_ON_BATTERY, device="ups1") is None

    send(trap_port, "-v2c", "-c", "trapsecret", "--", "", "1.3.6.1.2.1.33.2.1")  # upsTrapOnBattery
    # The ups_on_battery event and the value 1 reach the collector long before the 60 s push interval …
    wait_for(lambda: metric_value(collector.metrics(), v.UPS_ON_BATTERY, device="ups1", agent="agent-a") == 1,
             timeout=20, interval=0.02, what="roomwatch_ups_on_battery 1 at the collector")
    alert = wait_for(lambda: next((a for a in json.loads(http_get(collector.url + "/api/v1/alerts")[1])["alerts"]
                                   if a["alertname"] == "UPSOnBattery"), None), timeout=10, what="UPSOnBattery")
    assert alert["labels"]["device"] == "ups1"
    # … then the snmp_trap event with the values of the poll the trap asked for (the card still reads on mains,
    # which the hold keeps from undoing the trap's state).
    wait_for(lambda: _events(collector) >= 2, timeout=20, what="the snmp_trap event with the poll")
    assert metric_value(collector.metrics(), "roomwatch_ups_battery_charge_ratio", device="ups1") is not None
    assert metric_value(collector.metrics(), v.UPS_ON_BATTERY, device="ups1") == 1
    assert _agent_metric(url, TRAPS, result="accepted") == 1

    # APC powerRestored, sent as SNMPv1: back on mains at once.
    send(trap_port, "-v1", "-c", "trapsecret", "--", "1.3.6.1.4.1.318", "127.0.0.1", "6", "9", "")
    wait_for(lambda: metric_value(collector.metrics(), v.UPS_ON_BATTERY, device="ups1") == 0, timeout=20,
             interval=0.02, what="roomwatch_ups_on_battery 0 at the collector")
    assert _agent_metric(url, TRAPS, result="accepted") == 2


@pytest.mark.peer("snmpsim")
def test_any_trap_polls_the_device_and_without_hold_the_poll_decides(
        collector: CollectorHandle, agent_factory: Any, snmpsim_factory: Any) -> None:
    """hold 0s: the trap's on-battery goes out at once, and the poll it triggers (the card says on mains)
    brings it back to 0: the value 0 after the trap can only come from that poll (interval 1 h)."""
    sim = snmpsim_factory({"ups": UPS_ONLINE})
    _proc, url, trap_port = _start(agent_factory, collector, sim.port, hold="0s")
    send(trap_port, "-v2c", "-c", "trapsecret", "--", "", "1.3.6.1.4.1.935.0.5")  # XPPC upsOnBattery
    # ups_on_battery (trap), snmp_trap (with the poll), ups_on_mains (the poll disagrees)
    wait_for(lambda: _events(collector) >= 3, timeout=20, what="three events at the collector")
    assert metric_value(collector.metrics(), v.UPS_ON_BATTERY, device="ups1") == 0
    # An unmapped notification (an environment probe's threshold) is a poll too: one more snmp_trap event.
    send(trap_port, "-v2c", "-c", "trapsecret", "--", "", "1.3.6.1.4.1.3854.1.7.0.3")
    wait_for(lambda: _events(collector) >= 4, timeout=20, what="the snmp_trap event of the unmapped trap")
    assert _agent_metric(url, TRAPS, result="accepted") == 2


@pytest.mark.peer("snmpsim")
def test_unknown_senders_wrong_communities_and_keys_are_dropped_and_counted(
        collector: CollectorHandle, agent_factory: Any, snmpsim_factory: Any) -> None:
    sim = snmpsim_factory({"ups": UPS_ONLINE})
    _proc, url, trap_port = _start(agent_factory, collector, sim.port, hold="1h", users=[
        {"user": "trapuser", "auth_key": "authpass123", "priv_key": "privpass123", "engine_id": ENGINE_ID}])
    v3 = ["-v3", "-e", ENGINE_ID, "-u", "trapuser", "-a", "SHA", "-x", "AES", "-l", "authPriv", "-X", "privpass123"]
    send(trap_port, "-v2c", "-c", "trapsecret", "--", "", "1.3.6.1.2.1.33.2.1", source="127.0.0.2")  # not ups1's address
    send(trap_port, "-v2c", "-c", "guess", "--", "", "1.3.6.1.2.1.33.2.1")  # wrong community
    send(trap_port, *v3, "-A", "wrongpass123", "--", "", "1.3.6.1.2.1.33.2.1")  # wrong v3 key
    wait_for(lambda: all(_agent_metric(url, TRAPS, result=r) == 1 for r in ("unknown_sender", "bad_community", "bad_auth")),
             timeout=20, what="the three drops counted")
    assert _agent_metric(url, TRAPS, result="accepted") is None
    assert _agent_metric(url, v.UPS_ON_BATTERY, device="ups1") == 0  # nothing believed
    # the right v3 user is accepted
    send(trap_port, *v3, "-A", "authpass123", "--", "", "1.3.6.1.2.1.33.2.1")
    wait_for(lambda: _agent_metric(url, TRAPS, result="accepted") == 1, timeout=20, what="the v3 trap accepted")
    assert _agent_metric(url, v.UPS_ON_BATTERY, device="ups1") == 1
    assert _events(collector) >= 1
    # the drops were logged (once each, rate-limited)
    log = _proc.log()
    assert "dropped SNMP trap: from 127.0.0.2" in log and "community not in traps.communities" in log


@pytest.mark.peer  # runs a roomwatch agent
def test_a_listener_that_cannot_bind_stops_the_agent_with_the_reason(tmp_path: Path) -> None:
    from tests.helpers import RoomwatchProcess, write_yaml

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        conf = write_yaml(tmp_path / "agent.yaml", {
            "agent": {"id": "a", "listen": None, "spool": None}, "host": {"enabled": False},
            "devices": [{"name": "ups1", "driver": "snmp", "host": "127.0.0.1", "community": "public"}],
            "traps": {"listen": f"127.0.0.1:{taken.getsockname()[1]}", "communities": ["public"]}})
        proc = RoomwatchProcess(["agent", "-c", str(conf)], tmp_path / "agent.log")
        assert proc.proc.wait(60) == 1
        proc.stop()
        assert f"cannot listen for SNMP traps on 127.0.0.1:{taken.getsockname()[1]}: Address already in use" in proc.log()
    finally:
        taken.close()


def test_traps_config_is_checked() -> None:
    from pydantic import ValidationError

    from roomwatch.agent.traps import TrapsConfig

    assert TrapsConfig.model_validate({"communities": ["public"]}).listen == "0.0.0.0:162"
    for bad, says in [({}, "say whose traps"), ({"communities": [""]}, "must not be empty"),
                      ({"communities": ["x"], "listen": "ups.lan:162"}, "needs an IP address"),
                      ({"users": [{"user": "u", "priv_key": "privpass123"}]}, "needs auth_key"),
                      ({"users": [{"user": "u", "auth_key": "short"}]}, "at least 8"),
                      ({"users": [{"user": "u", "auth_key": "authpass123", "engine_id": "xyz"}]}, "engine_id"),
                      ({"users": [{"user": "u", "auth_key": "authpass123", "auth_protocol": "sha3"}]}, "auth_protocol")]:
        with pytest.raises(ValidationError, match=says):
            TrapsConfig.model_validate(bad)
