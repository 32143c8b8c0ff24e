"""Aliyun and Tencent Cloud SMS against test servers that recompute the request signature, check the
time window, nonce, template and its variables, and answer with the services' codes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from roomwatch.alerts.outbox import Outbox
from roomwatch.alerts.store import AlertStore
from roomwatch.channels.aliyun_sms import AliyunSmsChannel, AliyunSmsConfig
from roomwatch.channels.base import Outcome, remember_progress
from roomwatch.channels.tencent_sms import TencentSmsChannel, TencentSmsConfig
from tests.alert_harness import T0, Clock
from tests.channel_helpers import alert, assert_no_leak, notification
from tests.peers.sms_stubs import AliyunSmsStub, TencentSmsStub
from tests.test_outbox_rate_limit import settle

AK_ID, AK_SECRET = "LTAI5tAbCdEfGhIjKlMnOpQr", "kT9sVx2Yz8qW3eR5tY7uI0oP1aS4dF"
TC_ID, TC_KEY = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLEkey"
TEMPLATE = "SMS_465830123"  # 机房告警：${alert}，位置：${room}，当前值：${value}


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@pytest.fixture
async def aliyun() -> AsyncIterator[AliyunSmsStub]:
    stub = await AliyunSmsStub(AK_ID, AK_SECRET, "县信息中心", {TEMPLATE: ["alert", "room", "value"]}).start()
    yield stub
    await stub.stop()


@pytest.fixture
async def tencent() -> AsyncIterator[TencentSmsStub]:
    stub = await TencentSmsStub(TC_ID, TC_KEY, "1400006666", "县信息中心", {"1110": 3}).start()
    yield stub
    await stub.stop()


def aliyun_channel(stub: AliyunSmsStub, **over: Any) -> AliyunSmsChannel:
    conf = {"name": "sms", "type": "aliyun_sms", "access_key_id": AK_ID, "access_key_secret": AK_SECRET,
            "phone_numbers": ["13800138000", "13900139000"], "sign_name": "县信息中心", "template_code": TEMPLATE,
            "endpoint": stub.url + "/", "timeout": "2s", **over}
    return AliyunSmsChannel(AliyunSmsConfig.model_validate(conf))


def tencent_channel(stub: TencentSmsStub, **over: Any) -> TencentSmsChannel:
    conf = {"name": "sms", "type": "tencent_sms", "secret_id": TC_ID, "secret_key": TC_KEY, "sdk_app_id": "1400006666",
            "sign_name": "县信息中心", "template_id": "1110", "phone_numbers": ["13800138000", "+8613900139000"],
            "endpoint": stub.url + "/", "timeout": "2s", **over}
    return TencentSmsChannel(TencentSmsConfig.model_validate(conf))


# ------------------------------------------------------------------------ Aliyun


async def test_aliyun_sends_template_variables(aliyun: AliyunSmsStub, caplog: pytest.LogCaptureFixture) -> None:
    ch = aliyun_channel(aliyun)
    results = [await ch.send(notification()), await ch.send(notification(status="resolved"))]
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 2, results
    # One request per number: Aliyun answers a request with one Code, which could not say which number failed.
    assert sorted(r["numbers"] for r in aliyun.received[:2]) == [["13800138000"], ["13900139000"]]
    first, second = aliyun.received[0], aliyun.received[2]
    assert first["format"] == "JSON"
    assert first["params"] == {"alert": "机房温度过高", "room": "县政府一号机房", "value": "31.5"}
    assert second["params"]["alert"] == "机房温度过高（已恢复）"
    # A group of three, with a summary longer than a variable may be: cut to 35 characters.
    many = notification(alerts=[alert(), alert("RoomHumidityHigh"), alert("UPSOnBattery")])
    many.alerts[0].annotations = {"summary": "一号机房精密空调回风温度持续超过告警阈值且湿度同时偏高需要立即处理请值班人员到场"}
    results.append(await ch.send(many))
    assert results[-1].outcome is Outcome.DELIVERED
    cut = aliyun.received[-1]["params"]["alert"]
    assert len(cut) == 35 and cut.endswith("…")
    await ch.close()
    assert_no_leak([AK_ID, AK_SECRET], results, caplog)


async def test_aliyun_rejections(aliyun: AliyunSmsStub, caplog: pytest.LogCaptureFixture) -> None:
    results = []
    for over, code in [({"access_key_secret": "wrong-secret-0123456789"}, "SignatureDoesNotMatch"),
                       ({"access_key_id": "LTAI5tNoSuchKey000000"}, "InvalidAccessKeyId.NotFound"),
                       ({"template_params": {"alert": "{alert}", "room": "{room}"}}, "isv.TEMPLATE_MISSING_PARAMETERS"),
                       ({"sign_name": "未审核签名"}, "isv.SMS_SIGNATURE_ILLEGAL")]:
        ch = aliyun_channel(aliyun, **over)
        results.append(await ch.send(notification()))
        await ch.close()
        assert results[-1].outcome is Outcome.GIVE_UP and code in results[-1].detail, results[-1]
    # This host's clock 20 minutes off: the service refuses the timestamp (±15 min).
    ch = aliyun_channel(aliyun)
    ch.clock = lambda: time.time() - 1200
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "InvalidTimeStamp.Expired" in results[-1].detail
    assert "clock" in results[-1].detail
    await ch.close()
    assert not aliyun.received
    assert_no_leak([AK_ID, AK_SECRET, "wrong-secret-0123456789", "LTAI5tNoSuchKey000000"], results, caplog)


async def test_aliyun_flow_control_and_outage(aliyun: AliyunSmsStub, caplog: pytest.LogCaptureFixture) -> None:
    ch = aliyun_channel(aliyun, phone_numbers=["13800138000"])
    aliyun.fail_next = [("isv.BUSINESS_LIMIT_CONTROL", "触发小时级流控Permits:5"), ("isp.SYSTEM_ERROR", "isp.SYSTEM_ERROR")]
    results = [await ch.send(notification()), await ch.send(notification())]
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RETRY]
    assert results[0].retry_after == 600.0
    results.append(await ch.send(notification()))  # every request has a fresh nonce: a retry is not refused as a replay
    assert results[-1].outcome is Outcome.DELIVERED
    aliyun.hang_for = 4.0
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.RETRY and "no answer within 2s" in results[-1].detail
    await ch.close()
    assert_no_leak([AK_ID, AK_SECRET], results, caplog)


async def test_aliyun_retries_only_the_number_under_flow_control(aliyun: AliyunSmsStub,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """One number is over its hourly flow control, the other gets the SMS: the retry goes to that number alone."""
    ch = aliyun_channel(aliyun)
    n = notification()
    aliyun.number_codes["13900139000"] = ("isv.BUSINESS_LIMIT_CONTROL", "触发小时级流控Permits:5")
    first = await ch.send(n)
    assert first.outcome is Outcome.RETRY and first.retry_after == 600.0, first
    assert first.progress == {"reached": ["13800138000"], "missed": {}, "pending": ["13900139000"]}
    assert remember_progress(n, first)
    aliyun.number_codes.clear()
    second = await ch.send(n)
    assert second.outcome is Outcome.DELIVERED and "delivered to 2 of 2" in second.detail, second
    assert sorted(aliyun.requests[:2]) == [["13800138000"], ["13900139000"]] and aliyun.requests[2:] == [["13900139000"]]
    assert sorted(r["numbers"][0] for r in aliyun.received) == ["13800138000", "13900139000"]  # each number once
    await ch.close()
    assert_no_leak([AK_ID, AK_SECRET], [first, second], caplog)


async def test_aliyun_invalid_number_does_not_stop_the_others(aliyun: AliyunSmsStub,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """An invalid number is not retried and is logged once; the valid one gets the SMS: partial, not delivered."""
    ch = aliyun_channel(aliyun, phone_numbers=["13800138000", "1380013800"])  # a digit short
    aliyun.number_codes["1380013800"] = ("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
    result = await ch.send(notification())
    assert result.outcome is Outcome.PARTIAL, result
    assert "delivered to 1 of 2" in result.detail and "1380013800 isv.MOBILE_NUMBER_ILLEGAL" in result.detail
    assert [r["numbers"] for r in aliyun.received] == [["13800138000"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "1380013800 " in w and "a phone number is not valid" in w]) == 1, warnings
    # Every number invalid: nobody got it, give up.
    aliyun.number_codes["13800138000"] = ("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
    assert (await ch.send(notification())).outcome is Outcome.GIVE_UP
    await ch.close()


def test_aliyun_config_checks_fields() -> None:
    base = {"name": "sms", "type": "aliyun_sms", "access_key_id": AK_ID, "access_key_secret": AK_SECRET,
            "phone_numbers": ["13800138000"], "sign_name": "县信息中心", "template_code": TEMPLATE}
    with pytest.raises(ValidationError, match=r"unknown field \{temperature\}"):
        AliyunSmsConfig.model_validate({**base, "template_params": {"t": "{temperature}"}})
    with pytest.raises(ValidationError, match="not a phone number"):
        AliyunSmsConfig.model_validate({**base, "phone_numbers": ["138-0013"]})
    ok = AliyunSmsConfig.model_validate({**base, "template_params": {"t": "{labels.rack}/{annotations.value}"}})
    assert AK_SECRET not in repr(ok) and AK_SECRET not in str(ok.model_dump())


# ----------------------------------------------------------------------- Tencent


async def test_tencent_sends_positional_variables(tencent: TencentSmsStub, caplog: pytest.LogCaptureFixture) -> None:
    ch = tencent_channel(tencent)
    results = [await ch.send(notification())]
    assert results[0].outcome is Outcome.DELIVERED, results[0]
    assert [r["number"] for r in tencent.received] == ["+8613800138000", "+8613900139000"]
    assert tencent.received[0]["params"] == ["机房温度过高", "县政府一号机房", "31.5"]
    # Every number limited: retry after the limit's window, nobody has it yet.
    tencent.number_codes = dict.fromkeys(["+8613800138000", "+8613900139000"], "LimitExceeded.PhoneNumberThirtySecondLimit")
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.RETRY and results[-1].retry_after == 30.0
    assert results[-1].progress == {"reached": [], "missed": {}, "pending": ["+8613800138000", "+8613900139000"]}
    # Every number blacklisted (the user sent TD): no retry helps.
    tencent.number_codes = dict.fromkeys(tencent.number_codes, "FailedOperation.PhoneNumberInBlacklist")
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "PhoneNumberInBlacklist" in results[-1].detail
    assert len(tencent.received) == 2  # only the first send reached anybody
    await ch.close()
    assert_no_leak([TC_ID, TC_KEY], results, caplog)


async def test_tencent_retries_only_the_number_over_its_limit(tencent: TencentSmsStub,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """One number hits its own 30-second limit, the other gets the SMS: not delivered yet. The retry goes to
    that number alone (the other must not get a second SMS) and then it has the message too."""
    ch = tencent_channel(tencent)
    n = notification()
    tencent.number_codes["+8613900139000"] = "LimitExceeded.PhoneNumberThirtySecondLimit"
    first = await ch.send(n)
    assert first.outcome is Outcome.RETRY and first.retry_after == 30.0, first
    assert first.progress == {"reached": ["+8613800138000"], "missed": {}, "pending": ["+8613900139000"]}
    assert "delivered to 1 of 2" in first.detail and "+8613900139000 LimitExceeded" in first.detail
    assert remember_progress(n, first)  # what the outbox keeps with the queued notification
    tencent.number_codes.clear()  # the 30 seconds are over
    second = await ch.send(n)
    assert second.outcome is Outcome.DELIVERED and "delivered to 2 of 2" in second.detail, second
    assert tencent.requests == [["+8613800138000", "+8613900139000"], ["+8613900139000"]]
    assert [r["number"] for r in tencent.received] == ["+8613800138000", "+8613900139000"]  # each number once
    await ch.close()
    assert_no_leak([TC_ID, TC_KEY], [first, second], caplog)


async def test_tencent_invalid_number_is_partial_and_logged_once(tencent: TencentSmsStub,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A blacklisted number never gets it (not retried), the others do: partial, with the number logged once,
    also when another number needed a retry first."""
    ch = tencent_channel(tencent, phone_numbers=["13800138000", "13900139000", "13700137000"])
    n = notification()
    tencent.number_codes = {"+8613900139000": "FailedOperation.PhoneNumberInBlacklist",
                            "+8613700137000": "LimitExceeded.PhoneNumberOneHourLimit"}
    first = await ch.send(n)
    assert first.outcome is Outcome.RETRY and first.progress is not None
    assert first.progress["pending"] == ["+8613700137000"] and "+8613900139000" in first.progress["missed"]
    remember_progress(n, first)
    tencent.number_codes = {"+8613900139000": "FailedOperation.PhoneNumberInBlacklist"}
    second = await ch.send(n)
    assert second.outcome is Outcome.PARTIAL, second
    assert "delivered to 2 of 3" in second.detail and "+8613900139000 FailedOperation.PhoneNumberInBlacklist" in second.detail
    assert tencent.requests[-1] == ["+8613700137000"]  # the blacklisted number is not tried again
    assert sorted(r["number"] for r in tencent.received) == ["+8613700137000", "+8613800138000"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "+8613900139000" in w]) == 1, warnings
    await ch.close()


async def test_tencent_rejections(tencent: TencentSmsStub, caplog: pytest.LogCaptureFixture) -> None:
    results = []
    for over, code in [({"secret_key": "wrong-key-0123456789abcdef"}, "AuthFailure.SignatureFailure"),
                       ({"secret_id": "AKIDnosuchid0000000000"}, "AuthFailure.SecretIdNotFound"),
                       ({"template_params": ["{alert}", "{room}"]}, "TemplateParameterFormatError"),
                       ({"template_id": "9999"}, "TemplateIncorrectOrUnapproved")]:
        ch = tencent_channel(tencent, **over)
        results.append(await ch.send(notification()))
        await ch.close()
        assert results[-1].outcome is Outcome.GIVE_UP and code in results[-1].detail, results[-1]
    ch = tencent_channel(tencent)
    ch.clock = lambda: time.time() + 600  # ten minutes ahead: outside the ±5 min window
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "SignatureExpire" in results[-1].detail
    ch.clock = time.time
    tencent.fail_next = [("RequestLimitExceeded", "too many requests"), ("InternalError.Timeout", "timeout")]
    results += [await ch.send(notification()), await ch.send(notification())]
    assert [r.outcome for r in results[-2:]] == [Outcome.RETRY, Outcome.RETRY]
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.DELIVERED
    await ch.close()
    assert_no_leak([TC_ID, TC_KEY, "wrong-key-0123456789abcdef", "AKIDnosuchid0000000000"], results, caplog)


# --------------------------------------------------------- Tencent through the outbox

A, B = "+8613800138000", "+8613900139000"


def _rows(store: AlertStore) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for state, payload in store.conn.execute("SELECT state, payload FROM outbox ORDER BY id"):
        out.append((state, json.loads(payload)["extra"].get("progress", {})))
    return out


async def test_outbox_retries_one_number_after_a_restart_without_holding_back(
        tencent: TencentSmsStub, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """B is over its hourly limit: the outbox keeps who has the message with the queued row, so B alone gets it
    later, even across a restart; meanwhile the next alert is not held back for A, and the channel stays up."""
    clock = Clock(T0)
    store = AlertStore(str(tmp_path / "o.db"))
    tencent.number_codes[B] = "LimitExceeded.PhoneNumberOneHourLimit"
    ob = Outbox(store.conn, {"sms": tencent_channel(tencent)}, clock)
    ob.enqueue("sms", notification(), clock())
    await ob.start()
    try:
        await settle(lambda: len(tencent.requests) == 1, ob)
        assert _rows(store) == [("pending", {"reached": [A], "missed": {}, "pending": [B]})]
        clock.t += 31  # Tencent's channel window (1 per 30 s) frees; B waits for its hour (retry_max 5 min)
        ob.enqueue("sms", notification(status="resolved"), clock())
        ob.wake("sms")
        await settle(lambda: len(tencent.requests) == 2, ob)
        assert tencent.requests[1] == [A, B]  # the resolved message went out while the first row waits for B
        assert ob.status["sms"].failing_since is None and ob.status["sms"].up(clock(), 60.0)
    finally:
        await ob.stop()
    assert [r["number"] for r in tencent.received] == [A, A]
    tencent.number_codes.clear()
    clock.t = T0 + 3601  # the collector restarts after B's hour
    ob = Outbox(store.conn, {"sms": tencent_channel(tencent)}, clock)
    await ob.start()
    try:
        await settle(lambda: len(tencent.requests) == 3, ob)
        clock.t += 31
        ob.wake("sms")
        await settle(lambda: len(tencent.requests) == 4, ob)
        assert [state for state, _ in _rows(store)] == ["delivered", "delivered"]
        assert ob.status["sms"].delivered == 2
    finally:
        await ob.stop()
    assert tencent.requests[2:] == [[B], [B]]  # A did not get either message twice
    assert [(r["number"], r["params"][0]) for r in tencent.received[2:]] == [(B, "机房温度过高"), (B, "机房温度过高（已恢复）")]


async def test_outbox_counts_an_invalid_number_as_partial(tencent: TencentSmsStub, tmp_path: Path) -> None:
    clock = Clock(T0)
    store = AlertStore(str(tmp_path / "o.db"))
    tencent.number_codes[B] = "InvalidParameterValue.IncorrectPhoneNumber"
    ob = Outbox(store.conn, {"sms": tencent_channel(tencent)}, clock)
    ob.enqueue("sms", notification(), clock())
    await ob.start()
    try:
        await settle(lambda: _rows(store)[0][0] != "pending", ob)
    finally:
        await ob.stop()
    assert [state for state, _ in _rows(store)] == ["partial"] and tencent.requests == [[A, B]]
    st = ob.status["sms"]
    assert (st.partial, st.delivered, st.given_up) == (1, 0, 0) and st.up(clock(), 60.0)
    [detail] = [r[0] for r in store.conn.execute("SELECT last_error FROM outbox")]
    assert f"not delivered to {B} InvalidParameterValue.IncorrectPhoneNumber" in detail
