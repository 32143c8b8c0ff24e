"""The agent's NUT server against Debian's real NUT clients: upsc, upslog, upsmon (primary and secondary).

The agent is a real ``roomwatch agent`` process; the UPS units behind it are
real SNMP recordings served by snmpsim (compared with their truth files) or a
real upsd with dummy-ups read through the ``nut`` driver.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, require_fixtures, wait_for
from tests.peers.nut import NutServer, write_dev
from tests.peers.nut_clients import upsc, upsc_vars, wait_lines

#: truth key → (NUT variable, factor from the truth's unit to NUT's)
TRUTH_VARS = {
    "battery_charge_percent": "battery.charge",
    "battery_runtime_seconds": "battery.runtime",
    "input_voltage_v": "input.voltage",
    "output_load_percent": "ups.load",
    "battery_voltage_v": "battery.voltage",
    "battery_temperature_c": "battery.temperature",
}


def _ups_recordings() -> list[tuple[Path, dict[str, Any]]]:
    fx = require_fixtures()
    out = []
    for rec in sorted((fx / "devices" / "snmp").glob("*.snmprec")):
        truth = json.loads((fx / "devices" / "truth" / f"{rec.stem}.json").read_text())
        if truth.get("kind") == "ups":
            out.append((rec, truth))
    return out


def _check(served: dict[str, str], truth: dict[str, Any]) -> list[str]:
    problems = []
    metrics = truth["metrics"]
    for key, var in TRUTH_VARS.items():
        entry = metrics.get(key) or {"available": False}
        got = served.get(var)
        if entry.get("available") is False or entry.get("value") is None:
            if got is not None:
                problems.append(f"{var} served as {got!r} but the unit has no such value")
            continue
        if got is None:
            problems.append(f"{var} missing (truth {entry['value']})")
            continue
        accept = entry.get("accept")
        value = float(got)
        if accept:
            ok = accept["min"] - 1e-6 <= value <= accept["max"] + 1e-6
        else:
            ok = math.isclose(value, float(entry["value"]), abs_tol=0.051)
        if not ok:
            problems.append(f"{var} = {got}, truth {entry['value']}")
    on_battery = (metrics.get("on_battery") or {}).get("value")
    status = served.get("ups.status", "").split()
    if on_battery is False and "OL" not in status:
        problems.append(f"ups.status {served.get('ups.status')!r} lacks OL for a unit on mains")
    if on_battery is True and "OB" not in status:
        problems.append(f"ups.status {served.get('ups.status')!r} lacks OB for a unit on battery")
    return problems


@pytest.mark.peer("snmpsim", "upsc")
def test_upsc_lists_and_reads_every_snmp_ups_recording(snmpsim_factory: Any, agent_factory: Any) -> None:
    """Acceptance: every SNMP UPS recording, read by one agent with nut_server on, is listed by
    `upsc -l` under its device name, and `upsc NAME@…` gives the unit's real values (truth files)."""
    recordings = _ups_recordings()
    sim = snmpsim_factory({rec.stem: rec for rec, _ in recordings})
    port = free_port()
    devices = [{"name": rec.stem, "driver": "snmp", "host": "127.0.0.1", "port": sim.port, "community": rec.stem,
                "interval": "2s"} for rec, _ in recordings]
    proc, _ = agent_factory(None, host={"enabled": False}, devices=devices,
                            nut_server={"listen": f"127.0.0.1:{port}"})
    server = f"127.0.0.1:{port}"
    names = {rec.stem for rec, _ in recordings}
    listed = upsc("-l", server)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == names
    problems = {}
    for rec, truth in recordings:
        served = wait_for(lambda r=rec: upsc_vars(f"{r.stem}@{server}"), timeout=30, what=f"{rec.stem} data")
        found = _check(served, truth)
        if found:
            problems[rec.stem] = found
        assert served["device.type"] == "ups"
    assert not problems, json.dumps(problems, indent=1)
    one = upsc(f"{recordings[0][0].stem}@{server}", "ups.status")
    assert one.returncode == 0 and one.stdout.strip().split()[0] in ("OL", "OB")
    assert "Traceback" not in proc.log()


ONLINE = {"ups.status": "OL CHRG", "battery.charge": "96", "battery.runtime": "2220", "battery.voltage": "27.3",
          "input.voltage": "229.5", "output.voltage": "230.1", "ups.load": "31", "battery.temperature": "24.5",
          "ups.mfr": "Eaton", "ups.model": "5PX 2000", "ups.serial": "G123", "battery.date": "2021/06/01"}


def _nut_agent(agent_factory: Any, ups: NutServer, port: int, **nut_server: Any) -> tuple[Any, str]:
    proc, _ = agent_factory(None, host={"enabled": False},
                            devices=[{"name": "rack-ups", "driver": "nut", "port": ups.port, "ups": "rack",
                                      "username": "monitor", "password": "monpass", "interval": "500ms",
                                      "timeout": "2s"}],
                            nut_server={"listen": f"127.0.0.1:{port}", **nut_server})
    return proc, f"rack-ups@127.0.0.1:{port}"


@pytest.mark.peer("upsd", "upsc")
def test_nut_sourced_ups_keeps_its_flags_and_goes_stale_with_its_upsd(nut_factory: Any, agent_factory: Any,
                                                                      tmp_path: Path) -> None:
    """A UPS read from another upsd is served with NUT's own flags (CHRG), identity and battery date;
    when that upsd stops, upsc gets "Data stale" (not old values), and the data returns with it."""
    ups = nut_factory({"rack": write_dev(tmp_path / "rack.dev", ONLINE)})
    port = free_port()
    _, target = _nut_agent(agent_factory, ups, port)
    served = wait_for(lambda: upsc_vars(target), timeout=20, what="served data")
    assert served["ups.status"] == "OL CHRG"
    assert served["battery.charge"] == "96" and served["battery.runtime"] == "2220"
    assert served["input.voltage"] == "229.5" and served["ups.load"] == "31"
    assert served["device.mfr"] == served["ups.mfr"] == "Eaton" and served["ups.serial"] == "G123"
    assert served["battery.date"] == "2021/06/01"
    assert "driver.name" not in served  # a value the agent does not have is not served
    ups.stop_upsd()
    wait_for(lambda: "Data stale" in upsc(target).stderr, timeout=20, what="DATA-STALE")
    ups.start_upsd()
    wait_for(lambda: upsc_vars(target).get("battery.charge") == "96", timeout=20, what="fresh data again")


@pytest.mark.peer("upsd", "upsmon")
def test_upsmon_primary_and_secondary_shut_down_in_order(nut_factory: Any, agent_factory: Any,
                                                        nut_clients: Any, tmp_path: Path) -> None:
    """Two real upsmon processes on the agent's server: when the UPS reports OB LB, the primary sets FSD,
    the secondary sees it and shuts down (then logs out), and only then does the primary shut down."""
    ups = nut_factory({"rack": write_dev(tmp_path / "rack.dev", ONLINE)})
    port = free_port()
    proc, target = _nut_agent(agent_factory, ups, port, users=[
        {"name": "host-a", "password": "pw-primary", "upsmon": "primary"},
        {"name": "host-b", "password": "pw-secondary", "upsmon": "secondary"}])
    wait_for(lambda: upsc_vars(target).get("ups.status") == "OL CHRG", timeout=20, what="served data")
    primary = nut_clients.upsmon(target, "host-a", "pw-primary", "primary")
    secondary = nut_clients.upsmon(target, "host-b", "pw-secondary", "secondary")
    wait_for(lambda: upsc("-c", target).stdout.count("127.0.0.1") == 2, timeout=20, what="both upsmon logged in")
    assert upsc(target, "ups.status").stdout.strip() == "OL CHRG"
    ups.set_var("rack", "ups.status", "OB DISCHRG LB")
    lines = wait_lines(lambda: primary.shutdowns() + secondary.shutdowns(), 2, timeout=60)
    first, second = sorted(lines, key=lambda line: float(line.split()[1]))
    assert first.startswith("secondary") and second.startswith("primary"), lines
    log = proc.log()
    assert "forced shutdown (FSD) set on UPS rack-ups by host-a@127.0.0.1" in log
    assert "host-b@127.0.0.1 logged out from UPS rack-ups" in log
    assert "FSD" in upsc(target, "ups.status").stdout  # the latch stays, as in upsd


@pytest.mark.peer("upsd", "upslog")
def test_upslog_logs_the_agents_values(nut_factory: Any, agent_factory: Any, nut_clients: Any,
                                       tmp_path: Path) -> None:
    """upslog's default format (charge, input voltage, load, [status], temperature, frequency) from the agent."""
    ups = nut_factory({"rack": write_dev(tmp_path / "rack.dev", ONLINE)})
    port = free_port()
    _, target = _nut_agent(agent_factory, ups, port)
    wait_for(lambda: upsc_vars(target), timeout=20, what="served data")
    log = nut_clients.upslog(target)
    lines = wait_lines(log.lines, 2, timeout=20)
    fields = lines[-1].split()
    # date time charge input.voltage ups.load [status] ups.temperature input.frequency
    assert fields[2:5] == ["96", "229.5", "31"] and "[OL CHRG]" in lines[-1] and fields[-1] == "NA", lines


@pytest.mark.peer("upsd", "upsc")
def test_starttls_with_upsc_and_upsmon(nut_factory: Any, agent_factory: Any, nut_clients: Any,
                                       tmp_path: Path) -> None:
    """With tls configured, upsc's opportunistic STARTTLS succeeds and a upsmon with FORCESSL logs in."""
    from tests.tlsutil import CA

    ca = CA(tmp_path)
    pair = ca.issue("nut", "127.0.0.1", server=True)
    ups = nut_factory({"rack": write_dev(tmp_path / "rack.dev", ONLINE)})
    port = free_port()
    proc, target = _nut_agent(agent_factory, ups, port, tls={"cert_file": str(pair.cert), "key_file": str(pair.key)},
                              users=[{"name": "host-b", "password": "pw", "upsmon": "secondary"}])
    served = wait_for(lambda: upsc_vars(target), timeout=20, what="served data over TLS")
    assert served["battery.charge"] == "96"
    mon = nut_clients.upsmon(target, "host-b", "pw", "secondary", extra="FORCESSL 1\nCERTVERIFY 0\n")
    try:
        wait_for(lambda: "logged into UPS rack-ups (TLS)" in proc.log(), timeout=60, what="upsmon login over TLS")
    except AssertionError as exc:  # say why: upsmon's own log and the agent's
        raise AssertionError(f"{exc}\n--- upsmon\n{mon.log()[-3000:]}\n--- agent\n{proc.log()[-3000:]}") from None


TRANSCRIPT = [
    "GET VAR rack ups.status", "GET VAR rack battery.charge", "GET VAR rack input.voltage", "GET VAR nope ups.status",
    "GET VAR rack no.such.var", "GET", "GET VAR rack", "GET FOO rack x", "LIST", "LIST VAR", "FROB", "", "VER x",
    "NETVER", "HELP", "LOGIN rack", "FSD rack", "STARTTLS", "USERNAME monitor", "USERNAME again", "PRIMARY rack",
    "PASSWORD monpass", "PASSWORD again", "FSD rack", "MASTER rack", "LOGIN nope", "LOGIN rack", "LOGIN rack",
    "GET NUMLOGINS rack", "GET NUMLOGINS nope", "GET UPSDESC nope", "LIST CLIENT rack", "LIST CLIENT nope",
    "LIST ENUM rack no.such.var", "LIST RANGE nope x", "LIST ENUM rack ups.status", "INSTCMD nope x",
    "get var rack ups.status", "GET VAR RACK ups.status", 'GET VAR "rack" "ups.load"', "LOGOUT",
]


def _replay(port: int) -> list[list[str]]:
    import socket

    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, sock.makefile("rwb") as f:
        for command in TRANSCRIPT:
            f.write(command.encode() + b"\n")
            f.flush()
            lines = [f.readline().decode().rstrip("\n")]
            while lines[-1].startswith("BEGIN ") or (len(lines) > 1 and not lines[-1].startswith("END ")):
                lines.append(f.readline().decode().rstrip("\n"))
            out.append(lines)
    return out


@pytest.mark.peer("upsd")
def test_same_replies_as_upsd(nut_factory: Any, agent_factory: Any, tmp_path: Path) -> None:
    """One transcript (reads, every error path, login, FSD refused to a secondary, case-blind names) against
    Debian's upsd and against the agent serving the same dummy-ups UPS under the same name: same replies."""
    ups = nut_factory({"rack": write_dev(tmp_path / "rack.dev", {**ONLINE, "ups.status": "OL"})})
    port = free_port()
    agent_factory(None, host={"enabled": False},
                  devices=[{"name": "rack", "driver": "nut", "port": ups.port, "ups": "rack", "interval": "500ms"}],
                  nut_server={"listen": f"127.0.0.1:{port}",
                              "users": [{"name": "monitor", "password": "monpass", "upsmon": "secondary"}]})
    wait_for(lambda: upsc_vars(f"rack@127.0.0.1:{port}").get("ups.status") == "OL", timeout=20, what="agent data")
    theirs, ours = _replay(ups.port), _replay(port)
    for command, a, b in zip(TRANSCRIPT, theirs, ours, strict=True):
        assert a == b, f"{command!r}: upsd {a} / agent {b}"
