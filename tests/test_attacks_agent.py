"""Attacks from the LAN against a real agent process: its SNMP trap listener, its NUT server and its HTTP
endpoint, each test named after what it proves (the collector's side: tests/test_attacks.py).

The UPS is snmpsim on mains (tests/data/snmp/ups-mib-online.snmprec); whatever says otherwise is the attacker.
"""

from __future__ import annotations

import json
import os
import select
import socket
from pathlib import Path
from typing import Any

import pytest

from roomwatch.agent import http as agent_http
from roomwatch.agent import nut_server as ns
from roomwatch.core import vocabulary as v
from tests.conftest import CollectorHandle
from tests.helpers import free_port, http_get, wait_for
from tests.test_snmp_traps import UPS_ONLINE, _agent_metric, send

pytestmark = pytest.mark.peer

UPS_TRAP_ON_BATTERY = "1.3.6.1.2.1.33.2.1"  # UPS-MIB upsTrapOnBattery
APC_LOW_BATTERY = "1.3.6.1.4.1.318.0.7"  # PowerNet-MIB lowBattery
SNMP_TRAP_ADDRESS = "1.3.6.1.6.3.18.1.3.0"  # snmpTrapAddress.0: "I speak for this card"
PRIMARY, PRIMARY_PASSWORD = "upsmaster", "Primary-pass-7"


def _events(collector: CollectorHandle) -> int:
    """Events of agent-a at the collector."""
    status, body = http_get(collector.url + "/api/v1/agents")
    agents = json.loads(body)["agents"] if status == 200 else []
    return int(next((a["events"] for a in agents if a["id"] == "agent-a"), 0))


def _nut(port: int, *lines: str, source: str = "127.0.0.1") -> list[str]:
    """Send ``lines`` on one connection to the NUT server; its answers until it closes or goes quiet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    try:
        s.sendall("".join(line + "\n" for line in lines).encode())
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(4096):
            got += chunk
    except OSError:
        pass
    finally:
        s.close()
    return got.decode().splitlines()


def _ups_agent(agent_factory: Any, collector: CollectorHandle | None, sim_port: int, tmp_path: Path,
               **extra: Any) -> tuple[Any, str, int, int, Path]:
    """An agent reading the simulated UPS, with a trap listener, a NUT server and a shutdown action (a marker file)."""
    trap_port, nut_port = free_port(socket.SOCK_DGRAM), free_port()
    marker = tmp_path / "shutdown-ran"
    pushing = {"collector": {"push_interval": "1s"}} if collector else {}
    proc, url = agent_factory(
        collector.url if collector else None, **pushing, host={"enabled": False},
        devices=[{"name": "ups1", "driver": "snmp", "host": "127.0.0.1", "port": sim_port, "community": "ups",
                  "interval": "1h", "client": "builtin"}],
        traps={"listen": f"127.0.0.1:{trap_port}", "communities": ["trapsecret"], "hold": "1h"},
        nut_server={"listen": f"127.0.0.1:{nut_port}",
                    "users": [{"name": PRIMARY, "password": PRIMARY_PASSWORD, "upsmon": "primary"}]},
        actions=[{"type": "shutdown", "ups": "ups1", "command": ["touch", str(marker)], "grace": "0s"}], **extra)
    wait_for(lambda: _agent_metric(url, v.UPS_ON_BATTERY, device="ups1") == 0, timeout=30,
             what="the first poll (on mains)")
    return proc, url, trap_port, nut_port, marker


# ----------------------------------------------------------------- SNMP traps

@pytest.mark.peer("snmpsim")
def test_forged_traps_shut_no_host_down_and_reach_no_nut_client(
        collector: CollectorHandle, agent_factory: Any, snmpsim_factory: Any, tmp_path: Path) -> None:
    """Anyone who knows the trap community (sent in clear by every card) could send "on battery" and "low battery"
    from any address, naming the card in snmpTrapAddress.0: the held state went to the shutdown action (the host
    was shut down within seconds) and to the NUT server (its clients saw LB). A trap is shown and pushed at once,
    and hastens a poll; what acts on the UPS's state — shutdown, the NUT server, battery health — hears only the
    card itself."""
    sim = snmpsim_factory({"ups": UPS_ONLINE})
    proc, url, trap_port, nut_port, marker = _ups_agent(agent_factory, collector, sim.port, tmp_path)
    for n in range(6):
        before = _events(collector)
        for oid in (UPS_TRAP_ON_BATTERY, APC_LOW_BATTERY):
            send(trap_port, "-v2c", "-c", "trapsecret", "--", "", oid, SNMP_TRAP_ADDRESS, "a", "127.0.0.1",
                 source="127.0.0.9")
        # A new event: from round 2 on (the states no longer change) the snmp_trap event of a poll made after
        # these traps, with the trap's state held — at least five such polls; two made the shutdown fire.
        wait_for(lambda before=before: _events(collector) > before, timeout=30, what=f"the poll of round {n}")
    assert _agent_metric(url, "roomwatch_snmp_traps_total", result="accepted") == 12
    assert _agent_metric(url, v.UPS_ON_BATTERY, device="ups1") == 1  # the trap's state is still shown at once
    assert not marker.exists() and "SHUTDOWN PENDING" not in proc.log()
    assert _nut(nut_port, "GET VAR ups1 ups.status") == ['VAR ups1 ups.status "OL"']


# ----------------------------------------------------------------- NUT server

@pytest.mark.peer("snmpsim")
def test_nut_password_guessing_is_cut_off_per_address(agent_factory: Any, snmpsim_factory: Any,
                                                      tmp_path: Path) -> None:
    """A connection sets its password once, so each guess was a new connection, thousands a second, and a primary's
    password sets FSD (the room's hosts shut down). Ten refused logins from an address: the right password from it
    is refused unchecked for five minutes; another address (the real primary) still logs in."""
    sim = snmpsim_factory({"ups": UPS_ONLINE})
    proc, _url, _trap, nut_port, _marker = _ups_agent(agent_factory, None, sim.port, tmp_path)
    guess = "127.0.0.11"
    for i in range(ns.ADDRESS_DENIED_LIMIT):
        assert _nut(nut_port, f"USERNAME {PRIMARY}", f"PASSWORD guess-{i}", "FSD ups1",
                    source=guess)[-1] == "ERR ACCESS-DENIED"
    answers = _nut(nut_port, f"USERNAME {PRIMARY}", f"PASSWORD {PRIMARY_PASSWORD}", "FSD ups1", "VER", source=guess)
    assert answers == ["OK", "OK", "ERR ACCESS-DENIED"]  # and closed: VER is not answered
    assert _nut(nut_port, "GET VAR ups1 ups.status") == ['VAR ups1 ups.status "OL"']  # no FSD was set
    assert _nut(nut_port, f"USERNAME {PRIMARY}", f"PASSWORD {PRIMARY_PASSWORD}", "LOGIN ups1", "LOGOUT",
                source="127.0.0.12") == ["OK", "OK", "OK", "OK Goodbye"]
    assert "without checking the password" in proc.log()


# ----------------------------------------------------------------- HTTP (/metrics, /healthz)

def _threads_and_fds(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def _closed_by_server(socks: list[socket.socket]) -> int:
    closed = 0
    for s in socks:
        if select.select([s], [], [], 0)[0]:
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
    return closed


def test_idle_connections_cannot_take_the_agents_threads_or_descriptors(agent_factory: Any) -> None:
    """The agent's threading server started a thread per connection and waited on it forever: 3,000 idle
    connections held 3,000 threads and descriptors (the agent has 4,096, and polls its devices with them), and
    each failed one printed a traceback. Now at most 16 are served at once, the rest closed when accepted."""
    proc, url = agent_factory(None, host={"enabled": False})
    port = int(url.rsplit(":", 1)[1])
    threads_before, fds_before = _threads_and_fds(proc.proc.pid)
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
            socks.append(s)
        wait_for(lambda: _closed_by_server(socks) >= 200 - agent_http.MAX_CONNECTIONS, timeout=30,
                 what="the connections over the limit closed")
        threads, fds = _threads_and_fds(proc.proc.pid)
        # a thread per connection served, and one for its deadline
        assert threads <= threads_before + 2 * agent_http.MAX_CONNECTIONS, threads
        assert fds <= fds_before + agent_http.MAX_CONNECTIONS + 4, fds
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: http_get(url + "/healthz")[0] == 200, timeout=30, what="/healthz once the attack is gone")
    assert "Traceback" not in proc.log()


def test_a_request_never_finished_is_dropped(agent_factory: Any) -> None:
    """A client that opens the request and goes quiet was waited on forever (a thread and a descriptor each)."""
    proc, url = agent_factory(None, host={"enabled": False})
    s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=agent_http.READ_TIMEOUT * 6)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert s.recv(4096) == b""  # closed by the agent after READ_TIMEOUT (the socket's own timeout is far above)
    finally:
        s.close()
    assert http_get(url + "/healthz")[0] == 200
    assert "Traceback" not in proc.log()
