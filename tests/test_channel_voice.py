"""Voice calls: Aliyun SingleCallByTts and Tencent SendTtsVoice against servers that recompute the signature and
check what the services check; the GSM modem ringing a number (ATD…;, AT+CLCC, ATH) on the pseudo-terminal modem."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from roomwatch.channels.aliyun_voice import AliyunVoiceChannel, AliyunVoiceConfig
from roomwatch.channels.base import Outcome
from roomwatch.channels.gsm_call import GsmCallChannel, GsmCallConfig
from roomwatch.channels.gsm_modem import GsmModemChannel, GsmModemConfig, Modem
from roomwatch.channels.recipients import PERSON
from roomwatch.channels.tencent_voice import TencentVoiceChannel, TencentVoiceConfig
from tests.channel_helpers import alert, assert_no_leak, notification
from tests.peers.fake_modem import FakeModem
from tests.peers.voice_stubs import AliyunVoiceStub, TencentVoiceStub

AK_ID, AK_SECRET = "LTAI5tVoiceKey00000000", "vS3cretVoiceKeyAbCdEfGhIjKlMnOp"
TC_ID, TC_KEY = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLEkey"
TTS = "TTS_284950123"  # ${room}发生${alert}，请立即查看短信并处理。


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(Modem, "PIN_SETTLE", 0.0)


@pytest.fixture
async def aliyun() -> AsyncIterator[AliyunVoiceStub]:
    stub = await AliyunVoiceStub(AK_ID, AK_SECRET, {TTS: ["alert", "room"]}).start()
    yield stub
    await stub.stop()


@pytest.fixture
async def tencent() -> AsyncIterator[TencentVoiceStub]:
    stub = await TencentVoiceStub(TC_ID, TC_KEY, "1400006666", {"1026001": 2}).start()
    yield stub
    await stub.stop()


def aliyun_channel(stub: AliyunVoiceStub, **over: Any) -> AliyunVoiceChannel:
    conf = {"name": "call", "type": "aliyun_voice", "access_key_id": AK_ID, "access_key_secret": AK_SECRET,
            "phone_numbers": ["13800138000", "+8613900139000"], "tts_code": TTS, "endpoint": stub.url + "/",
            "timeout": "2s", **over}
    return AliyunVoiceChannel(AliyunVoiceConfig.model_validate(conf))


def tencent_channel(stub: TencentVoiceStub, **over: Any) -> TencentVoiceChannel:
    conf = {"name": "call", "type": "tencent_voice", "secret_id": TC_ID, "secret_key": TC_KEY,
            "voice_sdk_app_id": "1400006666", "template_id": "1026001", "phone_numbers": ["13800138000"],
            "endpoint": stub.url + "/", "timeout": "2s", **over}
    return TencentVoiceChannel(TencentVoiceConfig.model_validate(conf))


# ------------------------------------------------------------------------ Aliyun


async def test_aliyun_calls_each_number_with_the_template(aliyun: AliyunVoiceStub,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    ch = aliyun_channel(aliyun)
    n = notification()
    n.alerts[0].annotations = {"summary": "机房漏水 http://10.1.2.3:9640/ack/x"}  # a link is never read out
    result = await ch.send(n)
    assert result.outcome is Outcome.DELIVERED and "delivered to 2 of 2" in result.detail, result
    assert sorted(r["number"] for r in aliyun.received) == ["13800138000", "13900139000"]  # +86 dropped
    assert aliyun.received[0]["params"] == {"alert": "机房漏水 10.1.2.3:9640/ack/x", "room": "县政府一号机房"}
    assert aliyun.received[0]["play_times"] == "3" and aliyun.received[0]["show"] == ""  # shared pool (公共模式)
    # A resolution rings nobody.
    resolved = await ch.send(notification(status="resolved"))
    assert resolved.outcome is Outcome.DELIVERED and "nothing to call" in resolved.detail
    assert len(aliyun.received) == 2
    await ch.close()
    assert_no_leak([AK_ID, AK_SECRET], [result, resolved], caplog)


async def test_aliyun_keeps_each_numbers_limit_and_retries_only_that_number(aliyun: AliyunVoiceStub) -> None:
    """1 call per number per minute: the next notification within the minute is held back for that number without
    asking the service (which would refuse it and count it); only numbers still due are called on the retry."""
    ch = aliyun_channel(aliyun, phone_numbers=["13800138000"])
    first = await ch.send(notification())
    assert first.outcome is Outcome.DELIVERED
    requests = len(aliyun.received) + len(aliyun.rejected)
    second = await ch.send(notification())
    assert second.outcome is Outcome.RETRY and second.retry_after is not None and 0 < second.retry_after <= 60.001
    assert len(aliyun.received) + len(aliyun.rejected) == requests  # not asked at all
    # Without the channel's own pacing the service refuses: flow control is a retry, by its window.
    ch.pace.windows = []
    third = await ch.send(notification())
    assert third.outcome is Outcome.RETRY and "isv.BUSINESS_LIMIT_CONTROL" in third.detail and third.retry_after == 60.0
    await ch.close()


async def test_aliyun_rejections_and_bad_numbers(aliyun: AliyunVoiceStub, caplog: pytest.LogCaptureFixture) -> None:
    results = []
    for over, code, outcome in [
        ({"access_key_secret": "wrong-secret-0123456789"}, "SignatureDoesNotMatch", Outcome.GIVE_UP),
        ({"tts_code": "TTS_999"}, "isv.TTS_TEMPLATE_ILLEGAL", Outcome.GIVE_UP),
        ({"tts_params": {"alert": "{alert}"}}, "isv.TEMPLATE_MISSING_PARAMETERS", Outcome.GIVE_UP),
    ]:
        ch = aliyun_channel(aliyun, **over)
        results.append(await ch.send(notification()))
        await ch.close()
        assert results[-1].outcome is outcome and code in results[-1].detail, results[-1]
    assert not aliyun.received
    aliyun.fail_next = [("isv.OUT_OF_SERVICE", "业务停机")]
    ch = aliyun_channel(aliyun, phone_numbers=["13800138000"])
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "overdue" in results[-1].detail
    aliyun.fail_next = [("isp.SYSTEM_ERROR", "系统错误")]
    ch.pace.windows = []
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.RETRY
    await ch.close()
    # A number the service calls invalid does not stop the others: partial, logged, not retried.
    ch = aliyun_channel(aliyun, phone_numbers=["13800138000", "1380013800"])
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.PARTIAL and "isv.MOBILE_NUMBER_ILLEGAL" in results[-1].detail
    await ch.close()
    assert_no_leak([AK_ID, AK_SECRET, "wrong-secret-0123456789"], results, caplog)


async def test_aliyun_calls_the_person_on_duty(aliyun: AliyunVoiceStub) -> None:
    ch = aliyun_channel(aliyun, phone_numbers=[])
    n = notification()
    n.extra[PERSON] = {"name": "李四", "phone": "13700137000"}
    assert (await ch.send(n)).outcome is Outcome.DELIVERED
    assert [r["number"] for r in aliyun.received] == ["13700137000"]
    nobody = notification()
    nobody.extra[PERSON] = {"name": "王五"}  # no phone: nothing to call, said plainly
    res = await ch.send(nobody)
    assert res.outcome is Outcome.GIVE_UP and "no phone" in res.detail
    await ch.close()


# ------------------------------------------------------------------------ Tencent


async def test_tencent_calls_and_judges_codes(tencent: TencentVoiceStub, caplog: pytest.LogCaptureFixture) -> None:
    ch = tencent_channel(tencent)
    results = [await ch.send(notification())]
    assert results[0].outcome is Outcome.DELIVERED, results[0]
    assert tencent.received == [{"number": "+8613800138000", "params": ["县政府一号机房", "机房温度过高"], "play_times": 2}]
    # The service's own frequency limit (1 per 30 s) when the channel's pacing is off: retried after 10 minutes.
    ch.pace.windows = []
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.RETRY and "DeliveryFrequencyLimit" in results[-1].detail
    assert results[-1].retry_after == 600.0
    await ch.close()
    for over, code in [({"secret_key": "wrong-key-0123456789abcdef"}, "AuthFailure.SignatureFailure"),
                       ({"voice_sdk_app_id": "1400000000"}, "UnauthorizedOperation.VoiceSdkAppidVerifyFail"),
                       ({"template_params": ["{alert}"]}, "FailedOperation.TemplateIncorrectOrUnapproved")]:
        ch = tencent_channel(tencent, phone_numbers=["13900139000"], **over)
        results.append(await ch.send(notification()))
        await ch.close()
        assert results[-1].outcome is Outcome.GIVE_UP and code in results[-1].detail, results[-1]
    tencent.fail_next = [("FailedOperation.InsufficientBalanceInVoicePackage", "套餐包余量不足")]
    ch = tencent_channel(tencent, phone_numbers=["13600136000"])
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "used up" in results[-1].detail
    ch.clock = lambda: time.time() - 600  # this host's clock 10 minutes off
    ch.pace.windows = []
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "clock" in results[-1].detail
    await ch.close()
    assert_no_leak([TC_KEY, "wrong-key-0123456789abcdef"], results, caplog)


def test_voice_config_errors() -> None:
    with pytest.raises(ValidationError, match="TTS_"):
        AliyunVoiceConfig.model_validate({"name": "c", "type": "aliyun_voice", "access_key_id": "a",
                                          "access_key_secret": "b", "tts_code": "SMS_1"})
    with pytest.raises(ValidationError, match="play_times"):
        TencentVoiceConfig.model_validate({"name": "c", "type": "tencent_voice", "secret_id": "a", "secret_key": "b",
                                           "voice_sdk_app_id": "1", "template_id": "2", "play_times": 5})
    with pytest.raises(ValidationError, match="ring_for"):
        GsmCallConfig.model_validate({"name": "c", "type": "gsm_call", "port": "/dev/x", "ring_for": "90s",
                                      "send_timeout": "60s"})


# ------------------------------------------------------------------------ GSM modem call


@pytest.fixture
def modem() -> Iterator[FakeModem]:
    m = FakeModem()
    yield m
    m.stop()


def call_channel(m: FakeModem, **over: Any) -> GsmCallChannel:
    conf = {"name": "ring", "type": "gsm_call", "port": m.path, "phone_numbers": ["+8613800138000"], "timeout": "2s",
            "ring_for": "1s", "send_timeout": "5s", **over}
    return GsmCallChannel(GsmCallConfig.model_validate(conf))


async def test_modem_rings_then_hangs_up(modem: FakeModem) -> None:
    ch = call_channel(modem, phone_numbers=["+8613800138000", "13900139000"])
    res = await ch.send(notification())
    assert res.outcome is Outcome.DELIVERED and "rang, hung up" in res.detail, res
    assert [(c.number, c.ended_by) for c in modem.calls] == [("+8613800138000", "ATH"), ("13900139000", "ATH")]
    assert all(c.states[:2] == [2, 3] for c in modem.calls)  # dialing, then ringing at the callee
    assert not modem.errors  # a voice call (ATD…;), never a data call
    assert any(c.startswith("ATD+8613800138000;") for c in modem.commands)
    # A resolution rings nobody.
    again = await ch.send(notification(status="resolved"))
    assert again.outcome is Outcome.DELIVERED and len(modem.calls) == 2
    await ch.close()


async def test_modem_call_answered_or_rejected_counts_as_reached(modem: FakeModem) -> None:
    ch = call_channel(modem, ring_for="30s", send_timeout="60s")
    modem.call_mode = "answer"
    res = await ch.send(notification())
    assert res.outcome is Outcome.DELIVERED and "answered" in res.detail and modem.calls[-1].ended_by == "ATH"
    modem.call_mode = "reject"
    res = await ch.send(notification())
    assert res.outcome is Outcome.DELIVERED and "ended by the callee (BUSY)" in res.detail, res
    assert modem.calls[-1].ended_by == "remote"
    await ch.close()


async def test_modem_call_that_never_rings_is_retried_for_that_number(modem: FakeModem) -> None:
    ch = call_channel(modem, phone_numbers=["+8613800138000", "+8613900139000"])
    modem.call_mode = "unreachable"
    n = notification()
    res = await ch.send(n)
    assert res.outcome is Outcome.RETRY and "did not ring (NO CARRIER)" in res.detail, res
    modem.call_mode = "busy"
    assert (await ch.send(notification())).outcome is Outcome.RETRY
    modem.creg = 3  # registration denied: the modem is not ready, nothing is dialled
    calls = len(modem.calls)
    assert (await ch.send(notification())).outcome is Outcome.RETRY
    assert len(modem.calls) == calls
    # Back in service, the phone rings; a number that already rang is not rung again.
    modem.creg, modem.call_mode = 1, "ring"
    assert (await ch.send(n)).outcome is Outcome.DELIVERED
    await ch.close()


async def test_modem_call_and_sms_share_the_port(modem: FakeModem) -> None:
    """One Modem per port: the SMS channel and the call channel take turns on it."""
    import asyncio

    sms = GsmModemChannel(GsmModemConfig.model_validate({"name": "sms", "type": "gsm_modem", "port": modem.path,
                                                         "phone_numbers": ["+8613800138000"], "timeout": "2s",
                                                         "send_timeout": "2s"}))
    ring = call_channel(modem)
    assert sms.modem is ring.modem
    n = notification(alerts=[alert("WaterLeak")])
    sent, rang = await asyncio.gather(sms.send(n), ring.send(n))
    assert sent.outcome is Outcome.DELIVERED and rang.outcome is Outcome.DELIVERED
    assert len(modem.messages()) == 1 and len(modem.calls) == 1 and not modem.errors
    await sms.close()
    await ring.close()
