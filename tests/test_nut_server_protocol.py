"""The agent's NUT server, line by line: upsd's replies and errors, logins, FSD, and hostile clients.

The server runs in-process on a loopback port, fed by the same observer hook the
agent uses; clients are raw TCP sockets, so every byte on the wire is checked.
The last test replays one transcript against Debian's real upsd and against
the agent and compares them reply for reply.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from roomwatch.agent import nut_server as ns
from roomwatch.agent.nut_server import NutServer, NutServerConfig
from roomwatch.agent.nut_view import UpsTable, format_number, nut_name, variables_from
from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import ConfigError, load_model
from roomwatch.core.wire import SampleRecord
from tests.helpers import write_yaml

BASE = {"agent": "a1", "device": "ups1"}


def _dev(name: str = "ups1", up: bool = True, driver: str = "snmp") -> Any:
    return SimpleNamespace(name=name, labels={"agent": "a1", "device": name}, up=up, interval=1.0,
                           cfg=SimpleNamespace(driver=driver))


def _samples(device: str = "ups1", ob: float = 0.0, **extra: float) -> list[SampleRecord]:
    base = {"agent": "a1", "device": device}
    values = {v.UPS_BATTERY_CHARGE: 0.87, v.UPS_BATTERY_RUNTIME: 1234.0, v.UPS_INPUT_VOLTAGE: 229.9,
              v.UPS_LOAD: 0.351, v.UPS_BATTERY_VOLTAGE: 27.3, v.UPS_ON_BATTERY: ob, v.UPS_BATTERY_LOW: 0.0}
    values.update({getattr(v, k): x for k, x in extra.items()})
    out = [SampleRecord(m, dict(base), x, 0) for m, x in values.items()]
    out.append(SampleRecord(v.UPS_INFO, {**base, "manufacturer": 'APC "x"', "model": "SMT750"}, 1.0, 0))
    out.append(SampleRecord(v.DEVICE_UP, {**base, "driver": "snmp"}, 1.0, 0))
    return out


class Line:
    """A blocking line client (run in a thread by the async tests)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rwb")

    def ask(self, command: str, lines: int = 1) -> list[str]:
        self.file.write(command.encode() + b"\n")
        self.file.flush()
        return [self.file.readline().decode().rstrip("\n") for _ in range(lines)]

    def list(self, command: str) -> list[str]:
        self.file.write(command.encode() + b"\n")
        self.file.flush()
        out = [self.file.readline().decode().rstrip("\n")]
        while out[-1] and not out[-1].startswith(("END ", "ERR ")):
            out.append(self.file.readline().decode().rstrip("\n"))
        return out

    def closed(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    def close(self) -> None:
        self.file.close()  # the file holds a reference: the socket closes only once both are
        self.sock.close()


@pytest.fixture
async def served() -> Any:
    """A running server with ups1 (on mains) and a second device, and users mon (secondary), boss (primary)."""
    table = UpsTable(SimpleNamespace(devices={}))
    table.observe(_dev(), _samples(), [])
    table.observe(_dev("ups2"), _samples("ups2"), [])
    cfg = NutServerConfig.model_validate({"listen": "127.0.0.1:0", "users": [
        {"name": "mon", "password": "monpass"}, {"name": "boss", "password": "bosspass", "upsmon": "primary"}]})
    fsd: list[tuple[str, str]] = []
    server = NutServer(cfg, table, on_fsd=lambda ups, by: fsd.append((ups.name, by)))
    await server.start()
    yield SimpleNamespace(server=server, table=table, port=server.port, fsd=fsd)
    await server.stop()


async def _client(port: int) -> Line:
    return await asyncio.to_thread(Line, port)


async def test_reads_like_upsd(served: Any) -> None:
    """Values in NUT's units and names, sorted LIST VAR, quoting, case-blind commands and names."""
    c = await _client(served.port)
    try:
        lines = await asyncio.to_thread(c.list, "LIST VAR ups1")
        assert lines == [
            "BEGIN LIST VAR ups1",
            'VAR ups1 battery.charge "87"', 'VAR ups1 battery.runtime "1234"', 'VAR ups1 battery.voltage "27.3"',
            'VAR ups1 device.mfr "APC \\"x\\""', 'VAR ups1 device.model "SMT750"', 'VAR ups1 device.type "ups"',
            'VAR ups1 input.voltage "229.9"', 'VAR ups1 ups.load "35.1"', 'VAR ups1 ups.mfr "APC \\"x\\""',
            'VAR ups1 ups.model "SMT750"', 'VAR ups1 ups.status "OL"', "END LIST VAR ups1"]
        assert await asyncio.to_thread(c.list, "LIST UPS") == [
            "BEGIN LIST UPS", 'UPS ups1 "roomwatch snmp device ups1"', 'UPS ups2 "roomwatch snmp device ups2"',
            "END LIST UPS"]
        assert await asyncio.to_thread(c.ask, "get var UPS1 ups.status") == ['VAR UPS1 ups.status "OL"']
        assert await asyncio.to_thread(c.ask, 'GET VAR "ups1" "battery.charge"') == ['VAR ups1 battery.charge "87"']
        assert await asyncio.to_thread(c.ask, "GET UPSDESC ups1") == ['UPSDESC ups1 "roomwatch snmp device ups1"']
        assert await asyncio.to_thread(c.ask, "GET NUMLOGINS ups1") == ["NUMLOGINS ups1 0"]
        assert await asyncio.to_thread(c.ask, "GET TYPE ups1 ups.status") == ["TYPE ups1 ups.status STRING:64"]
        assert await asyncio.to_thread(c.ask, "GET TYPE ups1 battery.charge") == ["TYPE ups1 battery.charge NUMBER"]
        assert await asyncio.to_thread(c.ask, "GET DESC ups1 ups.load") == [
            'DESC ups1 ups.load "Load on UPS (percent of full)"']
        assert await asyncio.to_thread(c.ask, "NETVER") == ["1.3"]
        assert (await asyncio.to_thread(c.ask, "VER"))[0].startswith("Network UPS Tools upsd compatible - roomwatch")
        assert await asyncio.to_thread(c.ask, "HELP") == [ns.HELP]
        for sub in ("RW", "CMD"):
            assert await asyncio.to_thread(c.list, f"LIST {sub} ups1") == [f"BEGIN LIST {sub} ups1", f"END LIST {sub} ups1"]
        assert await asyncio.to_thread(c.list, "LIST ENUM ups1 ups.status") == [
            "BEGIN LIST ENUM ups1 ups.status", "END LIST ENUM ups1 ups.status"]
        assert await asyncio.to_thread(c.list, "LIST RANGE ups1 ups.load") == [
            "BEGIN LIST RANGE ups1 ups.load", "END LIST RANGE ups1 ups.load"]
        assert (await asyncio.to_thread(c.ask, "GET VAR ups1 server.version"))[0].startswith("VAR ups1 server.version")
        assert await asyncio.to_thread(c.ask, "GET TRACKING") == ["OFF"]
        assert await asyncio.to_thread(c.ask, "LOGOUT") == ["OK Goodbye"]
        assert await asyncio.to_thread(c.closed)
    finally:
        c.close()


async def test_error_replies_are_upsd_s(served: Any) -> None:
    c = await _client(served.port)
    try:
        cases = [
            ("GET VAR nope ups.status", "ERR UNKNOWN-UPS"),
            ("GET VAR ups1 input.frequency", "ERR VAR-NOT-SUPPORTED"),
            ("GET VAR ups1 server.nope", "ERR VAR-NOT-SUPPORTED"),
            ("GET", "ERR INVALID-ARGUMENT"),
            ("GET VAR ups1", "ERR INVALID-ARGUMENT"),
            ("GET FOO ups1 x", "ERR INVALID-ARGUMENT"),
            ("LIST", "ERR INVALID-ARGUMENT"),
            ("LIST VAR", "ERR INVALID-ARGUMENT"),
            ("LIST ENUM ups1 nope", "ERR VAR-NOT-SUPPORTED"),
            ("LIST CLIENT nope", "ERR UNKNOWN-UPS"),
            ("VER x", "ERR INVALID-ARGUMENT"),
            ("FROB", "ERR UNKNOWN-COMMAND"),
            ("", "ERR UNKNOWN-COMMAND"),
            ("LOGIN ups1", "ERR USERNAME-REQUIRED"),
            ("FSD ups1", "ERR USERNAME-REQUIRED"),
            ("INSTCMD ups1 test.battery.start", "ERR USERNAME-REQUIRED"),
            ("STARTTLS", "ERR FEATURE-NOT-CONFIGURED"),
            ("USERNAME mon", "OK"),
            ("USERNAME again", "ERR ALREADY-SET-USERNAME"),
            ("PRIMARY ups1", "ERR PASSWORD-REQUIRED"),
            ("PASSWORD monpass", "OK"),
            ("PASSWORD again", "ERR ALREADY-SET-PASSWORD"),
            ("LOGIN nope", "ERR UNKNOWN-UPS"),
            ("FSD ups1", "ERR ACCESS-DENIED"),  # a secondary may not
            ("MASTER ups1", "ERR ACCESS-DENIED"),
            ("SET VAR ups1 ups.status OB", "ERR ACCESS-DENIED"),
            ("INSTCMD ups1 test.battery.start", "ERR CMD-NOT-SUPPORTED"),
            ("INSTCMD nope test.battery.start", "ERR UNKNOWN-UPS"),
            ("LOGIN ups1", "OK"),
        ]
        for command, want in cases:
            assert await asyncio.to_thread(c.ask, command) == [want], command
        assert await asyncio.to_thread(c.ask, "LOGIN ups1") == ["ERR ALREADY-LOGGED-IN"]
        assert await asyncio.to_thread(c.ask, "GET NUMLOGINS ups1") == ["NUMLOGINS ups1 1"]
        assert await asyncio.to_thread(c.list, "LIST CLIENT ups1") == [
            "BEGIN LIST CLIENT ups1", "CLIENT ups1 127.0.0.1", "END LIST CLIENT ups1"]
        assert served.fsd == []
    finally:
        c.close()
    for _ in range(100):  # the disconnect is seen by the server's task
        if not served.table.get("ups1").logins:
            break
        await asyncio.sleep(0.02)
    assert served.table.get("ups1").logins == {}


async def test_primary_sets_fsd_and_waits_for_logouts(served: Any) -> None:
    """FSD by a primary latches "FSD" in front of ups.status for every client; wait_logouts sees them go."""
    secondary, primary = await _client(served.port), await _client(served.port)
    try:
        for cmd in ("USERNAME mon", "PASSWORD monpass", "LOGIN ups1"):
            assert await asyncio.to_thread(secondary.ask, cmd) == ["OK"]
        for cmd in ("USERNAME boss", "PASSWORD bosspass"):
            assert await asyncio.to_thread(primary.ask, cmd) == ["OK"]
        assert await asyncio.to_thread(primary.ask, "PRIMARY ups1") == ["OK PRIMARY-GRANTED"]
        assert await asyncio.to_thread(primary.ask, "MASTER ups1") == ["OK MASTER-GRANTED"]
        ups = served.table.get("ups1")
        assert not await served.server.wait_logouts(ups, 0.05)  # the secondary is still there
        assert await asyncio.to_thread(primary.ask, "FSD ups1") == ["OK FSD-SET"]
        assert served.fsd == [("ups1", "boss@127.0.0.1")]
        assert await asyncio.to_thread(secondary.ask, "GET VAR ups1 ups.status") == ['VAR ups1 ups.status "FSD OL"']
        assert await asyncio.to_thread(secondary.ask, "GET VAR ups2 ups.status") == ['VAR ups2 ups.status "OL"']
        waiter = asyncio.create_task(served.server.wait_logouts(ups, 10.0))
        await asyncio.to_thread(secondary.close)
        assert await waiter
        served.table.observe(_dev(), _samples(ob=1.0), [])  # new readings keep the latch
        assert await asyncio.to_thread(primary.ask, "GET VAR ups1 ups.status") == [
            'VAR ups1 ups.status "FSD OB DISCHRG"']
    finally:
        primary.close()


async def test_stale_device_answers_data_stale(served: Any) -> None:
    c = await _client(served.port)
    try:
        served.table.observe(_dev(up=False), [], [])
        for command in ("GET VAR ups1 ups.status", "LIST VAR ups1", "GET NUMLOGINS ups1", "LIST RW ups1"):
            assert await asyncio.to_thread(c.ask, command) == ["ERR DATA-STALE"], command
        assert (await asyncio.to_thread(c.list, "LIST UPS"))[1].startswith("UPS ups1 ")  # still listed
        served.table.observe(_dev(), _samples(), [])
        assert await asyncio.to_thread(c.ask, "GET VAR ups1 ups.status") == ['VAR ups1 ups.status "OL"']
        served.table.get("ups1").updated = time.monotonic() - 60  # polls stopped: too old
        assert await asyncio.to_thread(c.ask, "GET VAR ups1 ups.status") == ["ERR DATA-STALE"]
    finally:
        c.close()


async def test_wrong_password_is_refused_at_login_and_brute_force_is_cut(served: Any) -> None:
    c = await _client(served.port)
    try:
        assert await asyncio.to_thread(c.ask, "USERNAME mon") == ["OK"]
        assert await asyncio.to_thread(c.ask, "PASSWORD wrong") == ["OK"]  # upsd checks at LOGIN, not here
        for _ in range(ns.MAX_DENIED - 1):
            assert await asyncio.to_thread(c.ask, "LOGIN ups1") == ["ERR ACCESS-DENIED"]
        assert await asyncio.to_thread(c.ask, "LOGIN ups1") == ["ERR ACCESS-DENIED"]
        assert await asyncio.to_thread(c.closed)
        assert served.server.refused["access_denied"] == ns.MAX_DENIED
    finally:
        c.close()


async def test_overlong_line_is_refused_and_closed(served: Any) -> None:
    c = await _client(served.port)
    try:
        await asyncio.to_thread(c.file.write, b"GET VAR ups1 " + b"x" * (ns.MAX_LINE + 10) + b"\n")
        await asyncio.to_thread(c.file.flush)
        assert (await asyncio.to_thread(c.file.readline)) == b"ERR TOO-LONG\n"
        assert await asyncio.to_thread(c.closed)
        many = await _client(served.port)
        assert await asyncio.to_thread(many.ask, "GET " + " ".join(["x"] * 40)) == ["ERR INVALID-ARGUMENT"]
        assert await asyncio.to_thread(many.ask, "GET VAR ups1 ups.status") == ['VAR ups1 ups.status "OL"']
        many.close()
    finally:
        c.close()


async def test_max_clients_and_idle_timeout() -> None:
    table = UpsTable(SimpleNamespace(devices={}))
    table.observe(_dev(), _samples(), [])
    server = NutServer(NutServerConfig.model_validate({"listen": "127.0.0.1:0", "max_clients": 2, "idle_timeout": "300ms"}),
                       table)
    await server.start()
    clients = []
    try:
        clients = [await _client(server.port) for _ in range(2)]
        for c in clients:
            assert await asyncio.to_thread(c.ask, "NETVER") == ["1.3"]
        third = await _client(server.port)
        assert await asyncio.to_thread(third.closed)  # refused: closed at once
        third.close()
        assert server.refused["max_clients"] == 1
        assert await asyncio.to_thread(clients[0].closed)  # silent for idle_timeout: closed
        assert server.refused["idle"] >= 1
        for _ in range(100):
            if server.clients == 0:
                break
            await asyncio.sleep(0.02)
        assert server.clients == 0
        again = await _client(server.port)  # the slots are free again
        assert await asyncio.to_thread(again.ask, "NETVER") == ["1.3"]
        again.close()
    finally:
        for c in clients:
            c.close()
        await server.stop()


async def test_client_that_never_reads_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipelined LIST VAR requests never read: the server's buffer stays bounded and the client is dropped."""
    monkeypatch.setattr(ns, "WRITE_TIMEOUT", 0.5)
    table = UpsTable(SimpleNamespace(devices={}))
    table.observe(_dev(), _samples(), [])
    server = NutServer(NutServerConfig.model_validate({"listen": "127.0.0.1:0"}), table)
    await server.start()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        request = b"LIST VAR ups1\n" * 2000

        def flood() -> None:
            # Until the server hangs up: a send blocked because the server is slow (a loaded machine) is not
            # the end; a flood cut short by a short timeout never fills the server's buffer, and it never refuses.
            sock.settimeout(60)
            try:
                for _ in range(50):
                    sock.sendall(request)
            except OSError:
                pass  # the server hung up: what we want

        await asyncio.to_thread(flood)
        for _ in range(200):
            if server.refused.get("slow_reader"):
                break
            await asyncio.sleep(0.05)
        assert server.refused.get("slow_reader") == 1
    finally:
        sock.close()
        await server.stop()


async def test_allow_from_refuses_other_networks() -> None:
    table = UpsTable(SimpleNamespace(devices={}))
    server = NutServer(NutServerConfig.model_validate({"listen": "127.0.0.1:0", "allow_from": ["10.0.0.0/8"]}), table)
    await server.start()
    try:
        c = await _client(server.port)
        assert await asyncio.to_thread(c.closed)
        c.close()
        assert server.refused["not_allowed"] == 1
    finally:
        await server.stop()


def test_variables_and_names() -> None:
    got = variables_from(_samples(ob=1.0, UPS_BATTERY_LOW=1.0, UPS_BATTERY_AGE=86400.0 * 10), BASE)
    assert got[None]["ups.status"] == "OB DISCHRG LB"
    assert got[None]["battery.date"].count("/") == 2
    # A NUT-sourced UPS: its own tokens, in its order; an upstream FSD is not passed on.
    flags = [SampleRecord(v.UPS_STATUS_FLAG, {**BASE, "ups": "r1", "flag": f}, 1.0, 0) for f in ("FSD", "OL", "CHRG")]
    flags.append(SampleRecord(v.UPS_BATTERY_CHARGE, {**BASE, "ups": "r1"}, 0.5, 0))
    flags.append(SampleRecord(v.UPS_INPUT_VOLTAGE, {**BASE, "ups": "r1", "phase": "2"}, 231.0, 0))  # per phase: skipped
    nut = variables_from(flags, BASE)
    assert nut == {"r1": {"ups.status": "OL CHRG", "battery.charge": "50", "device.type": "ups"}}
    assert nut_name("rack", "r1") == "rack-r1" and nut_name("a:b") == "a_b"
    assert [format_number(x) for x in (237.0, 54.7, 0.1 + 0.2, -0.0001, 1e-7)] == ["237", "54.7", "0.3", "0", "0"]
    test = variables_from(_samples(UPS_SELF_TEST_IN_PROGRESS=1.0), BASE)
    assert test[None]["ups.test.result"] == "In progress"


def test_environment_monitor_on_a_ups_driver_is_not_served() -> None:
    from roomwatch.drivers.snmp import SnmpConfig

    cfg = SnmpConfig.model_validate({"name": "env1", "driver": "snmp", "host": "127.0.0.1", "community": "p"})
    dev = SimpleNamespace(name="env1", labels={"device": "env1"}, up=None, interval=1.0, cfg=cfg)
    table = UpsTable(SimpleNamespace(devices={"env1": dev}))
    assert [u.name for u in table.all()] == ["env1"]  # listed, stale, until it answers
    dev.up = True
    table.observe(dev, [SampleRecord(v.TEMPERATURE, {"device": "env1"}, 22.0, 0),
                        SampleRecord(v.DEVICE_UP, {"device": "env1"}, 1.0, 0)], [])
    assert table.all() == []


def test_config(tmp_path: Path) -> None:
    ok = NutServerConfig.model_validate({"listen": "0.0.0.0", "users": [{"name": "m", "password": "p",
                                                                         "upsmon": "master"}]})
    assert ok.host_port() == ("0.0.0.0", 3493) and ok.users[0].upsmon == "primary"
    assert NutServerConfig.model_validate({"listen": "::"}).host_port() == ("::", 3493)
    (tmp_path / "pw").write_text("s3cret\n")
    path = write_yaml(tmp_path / "a.yaml", {"nut_server": {"listen": "127.0.0.1:3493", "users": [
        {"name": "m", "password_file": str(tmp_path / "pw")}]}})
    from roomwatch.agent.config import AgentConfig

    cfg = load_model(path, AgentConfig)
    assert cfg.nut_server is not None and cfg.nut_server.users[0].password.get_secret_value() == "s3cret"
    bad = write_yaml(tmp_path / "b.yaml", {"nut_server": {"listen": "1.2.3.4:99999", "allow_from": ["nonsense"],
                                                          "users": [{"name": "m", "password": "p", "upsmon": "boss"}]}})
    with pytest.raises(ConfigError) as err:
        load_model(bad, AgentConfig)
    text = str(err.value)
    assert "nut_server.listen" in text and "allow_from" in text and "upsmon" in text
