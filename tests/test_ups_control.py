"""UPS commands on the wire: the NUT requests a upsd receives, SNMP SETs a card (snmpsim) keeps, v1/v2c/v3."""

from __future__ import annotations

import asyncio
import subprocess
from types import SimpleNamespace
from typing import Any

import pytest

from roomwatch.agent.ups_control import UpsCommandError, UpsControl, family_of, off_plan, self_test_plan
from roomwatch.drivers.nut import NutConfig
from roomwatch.drivers.snmp import SnmpConfig


class FakeUpsd:
    """A upsd stand-in for commands dummy-ups cannot take (shutdown.return): records every line, answers
    as upsd does (OK, or ERR for the commands listed in ``refuse``)."""

    def __init__(self, refuse: dict[str, str] | None = None):
        self.lines: list[str] = []
        self.refuse = refuse or {}
        self.server: Any = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            text = line.decode().rstrip("\n")
            self.lines.append(text)
            if text == "LOGOUT":
                writer.write(b"OK Goodbye\n")
                break
            err = next((code for prefix, code in self.refuse.items() if text.startswith(prefix)), None)
            writer.write(f"ERR {err}\n".encode() if err else b"OK\n")
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def _nut_device(port: int, **extra: Any) -> Any:
    cfg = NutConfig.model_validate({"name": "rack-ups", "driver": "nut", "port": port, "ups": "rack", **extra})
    return SimpleNamespace(name="rack-ups", cfg=cfg, driver=None)


async def test_nut_shutdown_return_on_the_wire() -> None:
    upsd = FakeUpsd()
    await upsd.start()
    try:
        control = UpsControl(_nut_device(upsd.port), username="admin", password=SimpleNamespace(
            get_secret_value=lambda: "s3cret pw"))
        assert control.family == "nut"
        done = await control.run(off_plan("nut", 180, True))
        assert upsd.lines == ["USERNAME admin", 'PASSWORD "s3cret pw"', "SET VAR rack ups.delay.shutdown 180",
                              "INSTCMD rack shutdown.return", "LOGOUT"]
        assert done == ["SET VAR ups.delay.shutdown 180", "INSTCMD shutdown.return"]
        upsd.lines.clear()
        await control.run(self_test_plan("nut"))
        assert "INSTCMD rack test.battery.start.quick" in upsd.lines
    finally:
        await upsd.stop()


async def test_nut_optional_refusal_goes_on_and_main_refusal_fails() -> None:
    upsd = FakeUpsd(refuse={"SET VAR": "VAR-NOT-SUPPORTED", "INSTCMD rack shutdown.stayoff": "ACCESS-DENIED"})
    await upsd.start()
    try:
        control = UpsControl(_nut_device(upsd.port, username="a", password="b"))
        with pytest.raises(UpsCommandError, match=r"shutdown\.stayoff for rack: ERR ACCESS-DENIED"):
            await control.run(off_plan("nut", 60, False))
        assert any(line.startswith("SET VAR") for line in upsd.lines)  # tried, refused, went on
    finally:
        await upsd.stop()
    closed = UpsControl(_nut_device(1, username="a", password="b"))
    with pytest.raises(UpsCommandError, match="cannot connect"):
        await closed.run(off_plan("nut", 60, True))
    with pytest.raises(UpsCommandError, match=r"need a upsd\.users login"):
        await UpsControl(_nut_device(1)).run(off_plan("nut", 60, True))


def test_plans_and_families() -> None:
    rfc = off_plan("rfc1628", 180.4, True)
    assert [(w.oid, w.value, w.optional) for w in rfc] == [("1.3.6.1.2.1.33.1.8.5.0", 1, True),
                                                           ("1.3.6.1.2.1.33.1.8.2.0", 180, False)]
    assert off_plan("rfc1628", 60, False)[0].value == 2
    apc = off_plan("apc", 90, True)
    assert (apc[0].kind, apc[0].value, apc[1].oid, apc[1].value) == ("ticks", 9000, "1.3.6.1.4.1.318.1.1.1.6.1.1.0", 2)
    assert off_plan("apc", 90, False)[1].oid == "1.3.6.1.4.1.318.1.1.1.6.2.1.0"
    assert [w.oid for w in off_plan("xppc", 90, True)] == ["1.3.6.1.4.1.935.1.1.1.5.2.10.0",
                                                           "1.3.6.1.4.1.935.1.1.1.6.2.3.0"]
    assert self_test_plan("rfc1628")[0].value == "1.3.6.1.2.1.33.1.7.7.4"
    snmp = SnmpConfig.model_validate({"name": "u", "driver": "snmp", "host": "h", "community": "c", "profile": "apc"})
    assert family_of(SimpleNamespace(cfg=snmp, driver=None)) == "apc"
    assert family_of(SimpleNamespace(cfg=snmp.model_copy(update={"profile": "ups-mib"}), driver=None)) == "rfc1628"
    with pytest.raises(UpsCommandError, match="only snmp and nut"):
        UpsControl(SimpleNamespace(name="m", cfg=SimpleNamespace(driver="modbus"), driver=None))


XPPC = "1.3.6.1.4.1.935.1.1.1"
XPPC_REC = (f"1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.935.10\n{XPPC}.5.2.10.0|2:writecache|value=60\n"
            f"{XPPC}.6.2.3.0|2:writecache|value=1\n{XPPC}.7.2.2.0|2:writecache|value=1\n")


def _get(port: int, oid: str, *auth: str) -> str:
    out = subprocess.run(["snmpget", *auth, "-On", "-Oqv", "-t", "1", "-r", "1", f"127.0.0.1:{port}", oid],
                         capture_output=True, text=True, timeout=15, check=False)
    return out.stdout.strip()


@pytest.mark.peer("snmpsim")
async def test_snmp_sets_reach_the_card_v2c_and_v3(snmpsim_factory: Any) -> None:
    sim = await asyncio.to_thread(snmpsim_factory, {"xppc": XPPC_REC})
    v2 = SnmpConfig.model_validate({"name": "x", "driver": "snmp", "host": "127.0.0.1", "port": sim.port,
                                    "community": "wrong", "profile": "ups-mib"})
    control = UpsControl(SimpleNamespace(name="x", cfg=v2, driver=None), method="xppc",
                         community=SimpleNamespace(get_secret_value=lambda: "xppc"))
    await control.run(off_plan("xppc", 240, True))
    assert await asyncio.to_thread(_get, sim.port, f"{XPPC}.5.2.10.0", "-v2c", "-c", "xppc") == "240"
    assert await asyncio.to_thread(_get, sim.port, f"{XPPC}.6.2.3.0", "-v2c", "-c", "xppc") == "2"
    v3 = SnmpConfig.model_validate({"name": "x", "driver": "snmp", "host": "127.0.0.1", "port": sim.port, "version": 3,
                                    "user": "monitor", "auth_key": "authpass123", "priv_key": "privpass123",
                                    "context": "xppc"})
    await UpsControl(SimpleNamespace(name="x", cfg=v3, driver=None), method="xppc").run(self_test_plan("xppc"))
    assert await asyncio.to_thread(_get, sim.port, f"{XPPC}.7.2.2.0", "-v2c", "-c", "xppc") == "2"
    wrong = UpsControl(SimpleNamespace(name="x", cfg=v2, driver=None), method="rfc1628",
                       community=SimpleNamespace(get_secret_value=lambda: "xppc"))
    with pytest.raises(UpsCommandError, match="refused SET upsShutdownAfterDelay"):
        await wrong.run(off_plan("rfc1628", 60, True))  # the card has no such object
