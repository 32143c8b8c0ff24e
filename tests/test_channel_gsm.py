"""gsm_modem against a fake modem on a pseudo-terminal that speaks AT and decodes every PDU it gets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from roomwatch.channels.base import Outcome, remember_progress
from roomwatch.channels.gsm_modem import GsmModemChannel, GsmModemConfig, Modem
from tests.channel_helpers import assert_no_leak, notification
from tests.peers.fake_modem import FakeModem

NUMBERS = ["+8613800138000", "13900139000"]
PIN = "4711"


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(Modem, "PIN_SETTLE", 0.0)


@pytest.fixture
def modem() -> Iterator[FakeModem]:
    m = FakeModem(pin=PIN)
    yield m
    m.stop()


def channel(m: FakeModem, **over: Any) -> GsmModemChannel:
    conf = {"name": "sms-local", "type": "gsm_modem", "port": m.path, "phone_numbers": NUMBERS, "timeout": "2s",
            "send_timeout": "2s", **over}
    return GsmModemChannel(GsmModemConfig.model_validate(conf))


async def test_chinese_sms_round_trips(modem: FakeModem) -> None:
    ch = channel(modem)
    res = await ch.send(notification("一号机房温度31.5°C", title="机房告警"))
    await ch.close()
    assert res.outcome is Outcome.DELIVERED, res
    assert not modem.errors
    # Set-up before the first CMGS: echo off, numeric errors, SIM, registration, PDU mode.
    setup = [c for c in modem.commands if not c.startswith("AT+CMGS")]
    assert setup[-5:] == ["ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CREG?", "AT+CMGF=0"]
    assert [(p.number, p.dcs, p.total) for p in modem.received] == [("+8613800138000", 8, 1), ("13900139000", 8, 1)]
    assert {p.text for p in modem.received} == {"机房告警\n一号机房温度31.5°C"}


async def test_long_message_arrives_in_numbered_parts(modem: FakeModem) -> None:
    text = "一号机房精密空调回风温度持续超过阈值，请值班人员立即到场处理。" * 5  # 150 characters: 3 parts
    ch = channel(modem, phone_numbers=["+8613800138000"])
    res = await ch.send(notification(text, title="机房告警"))
    assert res.outcome is Outcome.DELIVERED and "3 part(s)" in res.detail
    assert [(p.seq, p.total) for p in modem.received] == [(1, 3), (2, 3), (3, 3)]
    assert len({p.ref for p in modem.received}) == 1
    assert modem.messages() == {("+8613800138000", modem.received[0].ref): "机房告警\n" + text}
    # The next long message gets another reference, so phones do not mix the two.
    res = await ch.send(notification(text + "二", title="机房告警"))
    assert res.outcome is Outcome.DELIVERED and len(modem.messages()) == 2
    await ch.close()
    assert not modem.errors


async def test_gsm7_text_and_cut_to_max_parts(modem: FakeModem) -> None:
    ch = channel(modem, phone_numbers=["+8613800138000"], max_parts=2)
    res = await ch.send(notification("UPS on battery, room 1 [rack A]; load 41% {ok} " * 3, title="UPS"))
    assert res.outcome is Outcome.DELIVERED
    assert {p.dcs for p in modem.received} == {0}  # GSM 7-bit when the text allows
    res = await ch.send(notification("告警" * 500, title="机房告警"))
    assert res.outcome is Outcome.DELIVERED
    texts = modem.messages()
    assert any(t.startswith("UPS\nUPS on battery, room 1 [rack A]") for t in texts.values())
    cut = next(t for t in texts.values() if t.startswith("机房告警"))
    assert cut.endswith("…") and len(cut) == 134  # two parts of 67
    await ch.close()


@pytest.mark.parametrize(("code", "outcome"), [(330, Outcome.RETRY), (331, Outcome.RETRY), (304, Outcome.GIVE_UP),
                                                (1, Outcome.GIVE_UP), (500, Outcome.RETRY)])
async def test_cms_errors(modem: FakeModem, code: int, outcome: Outcome) -> None:
    ch = channel(modem, phone_numbers=["+8613800138000"])
    modem.cms_errors = [code]
    res = await ch.send(notification("短信测试"))
    assert res.outcome is outcome and f"+CMS ERROR: {code}" in res.detail
    # After a failure the modem is set up again and the next try goes through.
    res = await ch.send(notification("短信测试"))
    assert res.outcome is Outcome.DELIVERED
    await ch.close()


async def test_retry_sends_only_the_missing_parts(modem: FakeModem) -> None:
    text = "机" * 150  # 3 parts with the title
    ch = channel(modem)
    modem.cms_errors = [None, None, None, None, 331]  # number 1 all three parts, number 2 part 1, then no network
    res = await ch.send(notification(text, title="告警"))
    assert res.outcome is Outcome.RETRY and "4 part(s) sent so far" in res.detail
    res = await ch.send(notification(text, title="告警"))
    assert res.outcome is Outcome.DELIVERED
    # Each number got each part exactly once, under one reference (messages() fails on duplicates).
    assert sorted(modem.messages().values()) == ["告警\n" + text] * 2
    assert len(modem.received) == 6
    await ch.close()


async def test_one_bad_number_does_not_stop_the_others(modem: FakeModem, caplog: pytest.LogCaptureFixture) -> None:
    """CMS 1 (unassigned number) for the first number: the second still gets it; partial, logged once."""
    ch = channel(modem)
    modem.cms_errors = [1]
    res = await ch.send(notification("短信测试"))
    await ch.close()
    assert res.outcome is Outcome.PARTIAL, res
    assert [p.number for p in modem.received] == ["13900139000"]
    assert caplog.text.count("+8613800138000 will not get this notification") == 1


async def test_numbers_reached_are_not_sent_again_after_a_restart(modem: FakeModem) -> None:
    """The outbox keeps who has it with the queued notification: a new channel (a restarted collector) resumes."""
    n = notification("短信测试")
    ch = channel(modem)
    modem.cms_errors = [None, 331]  # the first number gets it, then the network is gone
    res = await ch.send(n)
    await ch.close()
    assert res.outcome is Outcome.RETRY and remember_progress(n, res)
    ch = channel(modem)  # a restart: nothing in memory
    res = await ch.send(n)
    await ch.close()
    assert res.outcome is Outcome.DELIVERED, res
    assert sorted(p.number for p in modem.received) == ["+8613800138000", "13900139000"]  # once each


async def test_no_answer_is_retried(modem: FakeModem) -> None:
    ch = channel(modem, phone_numbers=["+8613800138000"], send_timeout="1s")
    modem.silent_cmgs = True
    res = await ch.send(notification("短信测试"))
    assert res.outcome is Outcome.RETRY and "no +CMGS answer within 1s" in res.detail
    modem.silent_cmgs = False
    modem.mute = True  # the modem hangs completely
    res = await ch.send(notification("短信测试"))
    assert res.outcome is Outcome.RETRY and "no answer" in res.detail
    modem.mute = False
    res = await ch.send(notification("短信测试"))
    assert res.outcome is Outcome.DELIVERED
    await ch.close()


async def test_sim_pin_and_registration(caplog: pytest.LogCaptureFixture) -> None:
    locked = FakeModem(pin=PIN, sim_locked=True)
    try:
        results = []
        ch = channel(locked)
        results.append(await ch.send(notification("短信测试")))
        assert results[-1].outcome is Outcome.GIVE_UP and "SIM PIN" in results[-1].detail
        await ch.close()
        ch = channel(locked, pin=PIN)
        locked.creg = 2  # searching for a network
        results.append(await ch.send(notification("短信测试")))
        assert results[-1].outcome is Outcome.RETRY and "not registered" in results[-1].detail
        locked.creg = 5  # roaming is registered too
        results.append(await ch.send(notification("短信测试")))
        assert results[-1].outcome is Outcome.DELIVERED
        await ch.close()
        assert_no_leak([PIN], results, caplog)
    finally:
        locked.stop()


async def test_one_owner_per_port_and_unsolicited_codes(modem: FakeModem) -> None:
    modem.urc = True  # ^RSSI lines between answers must not confuse the channel
    a, b = channel(modem, name="a", phone_numbers=["+8613800138000"]), channel(modem, name="b", phone_numbers=["+8613900139000"])
    assert a.modem is b.modem
    results = await asyncio.gather(*(ch.send(notification("机" * 100, title=ch.name)) for ch in (a, b, a, b)))
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 4, results
    assert not modem.errors  # the fake would see interleaved CMGS exchanges as bad PDUs
    assert len(modem.messages()) == 4
    await a.close()
    assert b.modem._ser is not None  # still open for b
    await b.close()
    assert b.modem._ser is None


async def test_missing_port_is_retried() -> None:
    ch = GsmModemChannel(GsmModemConfig(name="x", type="gsm_modem", port="/dev/nonexistent-modem", phone_numbers=["10086"]))
    res = await ch.send(notification("短信测试"))
    assert res.outcome is Outcome.RETRY and "cannot open /dev/nonexistent-modem" in res.detail
    await ch.close()


async def test_standalone_use_as_in_the_docs(modem: FakeModem) -> None:
    """The agent's fallback builds the channel from its config model alone and sends a bare notification."""
    from roomwatch.channels.base import Notification

    sms = GsmModemChannel(GsmModemConfig(name="local", type="gsm_modem", port=modem.path, phone_numbers=["+8613800138000"]))
    result = await sms.send(Notification(group_key="g", status="firing", receiver="local", alerts=[], title="机房告警",
                                         text="一号机房温度 31.5°C"))
    await sms.close()
    assert result.outcome is Outcome.DELIVERED
    assert list(modem.messages().values()) == ["机房告警\n一号机房温度 31.5°C"]
