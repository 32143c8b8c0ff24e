"""Whole-room shutdown in order: a primary agent, a real upsmon secondary and a second agent following it;
the UPS told to switch off after a delay (SNMP SET into snmpsim, NUT INSTCMD); the dry run.

Every agent is a real ``roomwatch agent`` process; shutdown commands are marker
scripts appending ``<who> <unix time>`` to a file, so order and count are checked.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, wait_for
from tests.peers.nut import write_dev
from tests.peers.nut_clients import upsc, upsc_vars, wait_lines

ONLINE = {"ups.status": "OL", "battery.charge": "100", "battery.runtime": "1800", "ups.mfr": "T", "ups.model": "M"}


def _marker(tmp_path: Path, who: str, log: Path) -> list[str]:
    script = tmp_path / f"poweroff-{who}.sh"
    script.write_text(f'#!/bin/sh\necho "{who} $(date +%s.%N)" >> {log}\n')
    script.chmod(0o755)
    return [str(script)]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.peer("upsd", "upsmon")
def test_primary_sets_fsd_waits_for_upsmon_and_a_follower_agent_then_shuts_down(
        nut_factory: Any, agent_factory: Any, nut_clients: Any, tmp_path: Path) -> None:
    """The UPS goes on battery (no low battery: only the primary's own rule decides). The primary agent sets
    FSD; a real upsmon secondary and a second roomwatch agent (following over the NUT protocol) both shut
    down and log out; only then does the primary run its own command."""
    ups = nut_factory({"rack": write_dev(tmp_path / "rack.dev", ONLINE)})
    shutdowns = tmp_path / "shutdowns.log"
    port = free_port()
    primary, _ = agent_factory(None, agent_id="agent-a", host={"enabled": False},
                               devices=[{"name": "rack-ups", "driver": "nut", "port": ups.port, "ups": "rack",
                                         "interval": "300ms", "timeout": "2s"}],
                               nut_server={"listen": f"127.0.0.1:{port}", "users": [
                                   {"name": "nas", "password": "nas-pw"},
                                   {"name": "agent-b", "password": "b-pw"}]},
                               actions=[{"type": "shutdown", "name": "room", "ups": "rack-ups", "on_battery_for": "1s",
                                         "grace": "1s", "nut_primary": True, "hostsync": "30s",
                                         "command": _marker(tmp_path, "primary", shutdowns)}])
    target = f"rack-ups@127.0.0.1:{port}"
    wait_for(lambda: upsc_vars(target).get("ups.status") == "OL", timeout=20, what="primary serving the UPS")
    upsmon = nut_clients.upsmon(target, "nas", "nas-pw", "secondary")
    follower, _ = agent_factory(None, agent_id="agent-b", host={"enabled": False},
                                devices=[{"name": "room-ups", "driver": "nut", "port": port, "ups": "rack-ups",
                                          "username": "agent-b", "password": "b-pw", "interval": "300ms",
                                          "timeout": "2s"}],
                                actions=[{"type": "shutdown", "name": "follow", "ups": "room-ups", "fsd_delay": "500ms",
                                          "command": _marker(tmp_path, "follower", shutdowns)}])
    wait_for(lambda: len(upsc("-c", target).stdout.split()) == 2, timeout=20, what="both secondaries logged in")
    ups.set_var("rack", "ups.status", "OB DISCHRG")
    lines = wait_lines(lambda: _lines(shutdowns) + upsmon.shutdowns(), 3, timeout=60)
    order = [line.split()[0] for line in sorted(lines, key=lambda line: float(line.split()[1]))]
    assert order[-1] == "primary" and sorted(order[:2]) == ["follower", "secondary"], lines
    log = primary.log()
    assert "SHUTDOWN STEP 2/4 (action room): FSD set on UPS rack-ups; secondaries logged in: " in log
    assert "SHUTDOWN STEP 3/4 (action room): every secondary logged out after" in log
    flog = follower.log()
    assert "the UPS shows forced shutdown (FSD) set by its NUT primary" in flog
    assert "logged out from upsd 127.0.0.1:" in flog
    assert "FSD" in upsc(target, "ups.status").stdout
    assert upsc("-c", target).stdout.split() == []  # nobody is logged in any more


def _snmprec(writable: dict[str, tuple[int, Any]], fixed: dict[str, tuple[int, Any]]) -> str:
    """A recording: ``fixed`` OIDs read-only, ``writable`` ones behind snmpsim's writecache module."""
    rows = {oid: f"{oid}|{tag}|{value}" for oid, (tag, value) in fixed.items()}
    rows.update({oid: f"{oid}|{tag}:writecache|value={value}" for oid, (tag, value) in writable.items()})
    key = lambda oid: tuple(int(p) for p in oid.split("."))  # noqa: E731
    return "\n".join(rows[o] for o in sorted(rows, key=key)) + "\n"


UPS_MIB = "1.3.6.1.2.1.33.1"
UPS_MIB_UNIT = _snmprec(
    writable={f"{UPS_MIB}.4.1.0": (2, 3), f"{UPS_MIB}.2.1.0": (2, 2), f"{UPS_MIB}.8.2.0": (2, -1),
              f"{UPS_MIB}.8.5.0": (2, 2), f"{UPS_MIB}.7.1.0": (6, f"{UPS_MIB}.7.7.1"), f"{UPS_MIB}.7.3.0": (2, 6)},
    fixed={"1.3.6.1.2.1.1.2.0": (6, "1.3.6.1.4.1.99999"), f"{UPS_MIB}.1.1.0": (4, "Test"), f"{UPS_MIB}.1.2.0": (4, "T1"),
           f"{UPS_MIB}.2.3.0": (2, 30), f"{UPS_MIB}.2.4.0": (2, 100), f"{UPS_MIB}.3.3.1.3.1": (2, 230)})


def _snmp(cmd: str, port: int, community: str, *args: str) -> str:
    out = subprocess.run([cmd, "-v2c", "-c", community, "-On", "-Oqvt", "-t", "1", "-r", "1", f"127.0.0.1:{port}", *args],
                         capture_output=True, text=True, timeout=15, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.peer("snmpsim")
def test_ups_told_to_switch_off_and_return_over_rfc1628(snmpsim_factory: Any, agent_factory: Any,
                                                         tmp_path: Path) -> None:
    """On battery with low battery: upsAutoRestart on(1) and upsShutdownAfterDelay 180 reach the card
    (snmpsim's writecache keeps SET values), before the host's own command runs."""
    sim = snmpsim_factory({"ups": UPS_MIB_UNIT})
    shutdowns = tmp_path / "shutdowns.log"
    proc, _ = agent_factory(None, host={"enabled": False},
                            devices=[{"name": "ups1", "driver": "snmp", "host": "127.0.0.1", "port": sim.port,
                                      "community": "ups", "profile": "ups-mib", "interval": "300ms"}],
                            actions=[{"type": "shutdown", "name": "off", "ups": "ups1", "grace": "0s",
                                      "host_shutdown_time": "1m", "ups_off": {"delay": "3m"},
                                      "command": _marker(tmp_path, "host", shutdowns)}])
    assert _snmp("snmpget", sim.port, "ups", f"{UPS_MIB}.8.2.0") == "-1"
    _snmp("snmpset", sim.port, "ups", f"{UPS_MIB}.4.1.0", "i", "5", f"{UPS_MIB}.2.1.0", "i", "3")
    wait_lines(lambda: _lines(shutdowns), 1, timeout=30)
    assert _snmp("snmpget", sim.port, "ups", f"{UPS_MIB}.8.2.0") == "180"
    assert _snmp("snmpget", sim.port, "ups", f"{UPS_MIB}.8.5.0") == "1"
    log = proc.log()
    assert "told the UPS to switch UPS ups1 off in 3m, back on when mains returns" in log
    assert log.index("SHUTDOWN STEP 2/3") < log.index("SHUTDOWN STEP 3/3 (action off): running")


@pytest.mark.peer("snmpsim")
def test_apc_card_gets_powernet_sleep_command(snmpsim_factory: Any, agent_factory: Any, tmp_path: Path) -> None:
    """The real APC recording, its status objects and control objects made writable: the agent picks the APC
    dialect from the profile (upsAdvConfigShutoffDelay in TimeTicks, upsBasicControlConserveBattery 2)."""
    from tests.helpers import require_fixtures

    rec = require_fixtures() / "devices" / "snmp" / "apc_smt750x-nmc2.snmprec"
    apc = "1.3.6.1.4.1.318.1.1.1"
    writable = {f"{apc}.4.1.1.0": "2", f"{apc}.2.1.1.0": "2", f"{apc}.5.2.10.0": "2000", f"{apc}.6.1.1.0": "1"}
    tags = {f"{apc}.5.2.10.0": "67"}
    rows = {}
    for line in rec.read_text().splitlines():
        oid = line.split("|", 1)[0]
        rows[oid] = line
    for oid, value in writable.items():
        rows[oid] = f"{oid}|{tags.get(oid, '2')}:writecache|value={value}"
    text = "\n".join(rows[o] for o in sorted(rows, key=lambda o: tuple(int(p) for p in o.split(".")))) + "\n"
    sim = snmpsim_factory({"apc": text})
    shutdowns = tmp_path / "shutdowns.log"
    proc, _ = agent_factory(None, host={"enabled": False},
                            devices=[{"name": "apc1", "driver": "snmp", "host": "127.0.0.1", "port": sim.port,
                                      "community": "apc", "interval": "300ms"}],
                            actions=[{"type": "shutdown", "name": "off", "ups": "apc1", "grace": "0s",
                                      "host_shutdown_time": "30s", "ups_off": {"delay": "90s"},
                                      "command": _marker(tmp_path, "host", shutdowns)}])
    _snmp("snmpset", sim.port, "apc", f"{apc}.4.1.1.0", "i", "3", f"{apc}.2.1.1.0", "i", "3")
    wait_lines(lambda: _lines(shutdowns), 1, timeout=30)
    assert _snmp("snmpget", sim.port, "apc", f"{apc}.5.2.10.0") == "9000"
    assert _snmp("snmpget", sim.port, "apc", f"{apc}.6.1.1.0") == "2"
    assert "SNMP (apc) to apc1" in proc.log()


@pytest.mark.peer("upsd", "snmpsim")
def test_dry_run_logs_every_step_and_changes_nothing(nut_factory: Any, agent_factory: Any,
                                                     nut_clients: Any, tmp_path: Path) -> None:
    """dry_run with nut_primary and ups_off: each step is logged with what it would do (who is logged in,
    which SETs), yet FSD is not set, the secondary stays, and nothing is sent or run."""
    ups = nut_factory({"rack": write_dev(tmp_path / "rack.dev", ONLINE)})
    shutdowns = tmp_path / "shutdowns.log"
    port = free_port()
    proc, _ = agent_factory(None, host={"enabled": False},
                            devices=[{"name": "rack-ups", "driver": "nut", "port": ups.port, "ups": "rack",
                                      "username": "monitor", "password": "monpass", "interval": "300ms"}],
                            nut_server={"listen": f"127.0.0.1:{port}", "users": [{"name": "nas", "password": "pw"}]},
                            actions=[{"type": "shutdown", "name": "room", "ups": "rack-ups", "grace": "0s",
                                      "nut_primary": True, "dry_run": True,
                                      "ups_off": {"delay": "5m", "username": "admin", "password": "adminpass"},
                                      "command": _marker(tmp_path, "primary", shutdowns)}])
    target = f"rack-ups@127.0.0.1:{port}"
    wait_for(lambda: upsc_vars(target).get("ups.status") == "OL", timeout=20, what="served data")
    upsmon = nut_clients.upsmon(target, "nas", "pw", "secondary")
    wait_for(lambda: upsc("-c", target).stdout.strip(), timeout=20, what="upsmon logged in")
    ups.set_var("rack", "ups.status", "OB DISCHRG LB")
    wait_for(lambda: "DRY RUN STEP 6/6" in proc.log(), timeout=30, what="the last dry-run step")
    log = proc.log()
    for expected in ("DRY RUN STEP 1/6 (action room): shutdown_started pushed",
                     "DRY RUN STEP 2/6 (action room): would set FSD on UPS rack-ups; logged in now: nas@127.0.0.1",
                     "DRY RUN STEP 3/6 (action room): would wait up to 1m for 1 secondaries to log out",
                     "DRY RUN STEP 4/6 (action room): would switch UPS rack-ups off in 5m, back on when mains "
                     "returns: NUT to rack-ups: SET VAR ups.delay.shutdown 300; INSTCMD shutdown.return",
                     "DRY RUN STEP 5/6 (action room): would run",
                     "DRY RUN STEP 6/6 (action room): would log out from upsd 127.0.0.1:"):
        assert expected in log, expected
    assert "FSD" not in upsc(target, "ups.status").stdout
    assert upsmon.shutdowns() == [] and _lines(shutdowns) == []
    assert upsc("-c", target).stdout.strip()  # the secondary is still logged in


@pytest.mark.peer("upsd")
async def test_nut_ups_off_refused_by_upsd_is_reported_and_the_host_still_goes_down(
        nut_factory: Any, tmp_path: Path) -> None:
    """dummy-ups has no shutdown.return: upsd's ERR CMD-NOT-SUPPORTED is logged and pushed as
    shutdown_failed, and the command still runs."""
    from roomwatch.agent.config import AgentConfig
    from roomwatch.agent.runtime import Agent

    ups = await asyncio.to_thread(nut_factory, {"rack": write_dev(tmp_path / "rack.dev", ONLINE)})
    shutdowns = tmp_path / "shutdowns.log"
    agent = Agent(AgentConfig.model_validate({
        "agent": {"id": "t", "spool": None}, "host": {"enabled": False},
        "devices": [{"name": "rack-ups", "driver": "nut", "port": ups.port, "ups": "rack", "interval": "300ms"}],
        "actions": [{"type": "shutdown", "ups": "rack-ups", "grace": "0s",
                     "ups_off": {"delay": "3m", "username": "admin", "password": "adminpass"},
                     "command": _marker(tmp_path, "host", shutdowns)}]}))
    events: list[Any] = []
    action = agent.actions[0]
    action._event = lambda kind, message: events.append((kind, message))  # type: ignore[method-assign]
    dev = agent.devices["rack-ups"]
    try:
        await asyncio.to_thread(ups.set_var, "rack", "ups.status", "OB LB")
        for _ in range(2):
            await agent.poll_device(dev)
        for _ in range(100):
            if _lines(shutdowns):
                break
            await asyncio.sleep(0.05)
        assert _lines(shutdowns)
        assert ("shutdown_failed", "UPS off not sent: upsd refused INSTCMD shutdown.return for rack: "
                "ERR CMD-NOT-SUPPORTED") in events
    finally:
        await agent.stop()
