"""Acknowledging by SMS reply through the pseudo-terminal modem: the alert SMS carries its code, the reply
("1", "ACK 4821", "确认 4821") is read with AT+CMGL, accepted only from a number alerts go to, deleted, and
confirmed back by SMS; voice calls repeat until acknowledged, and a queued call is dropped after it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roomwatch.alerts.replies import parse_reply
from roomwatch.channels.gsm_modem import Modem
from tests.alert_harness import Harness
from tests.peers.fake_modem import FakeModem
from tests.peers.voice_stubs import AliyunVoiceStub

DUTY = "+8613800138000"
LEAK = {"site": "县政务中心", "room": "1号机房", "device": "leak1"}
SMOKE = {"site": "县政务中心", "room": "2号机房", "device": "smoke1"}


@pytest.fixture(autouse=True)
def _no_pin_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Modem, "PIN_SETTLE", 0.0)


@pytest.fixture
def modem() -> Iterator[FakeModem]:
    m = FakeModem()
    yield m
    m.stop()


def sms_harness(tmp_path: Path, modem: FakeModem, **over: Any) -> Harness:
    conf: dict[str, Any] = {
        "channels": [{"name": "sms", "type": "gsm_modem", "port": modem.path, "phone_numbers": [DUTY], "timeout": "2s",
                      "send_timeout": "2s", "replies": True, "check_interval": "0s"}],
        "routes": [{"channels": ["sms"], "group_by": ["site", "room"], "repeat_interval": "30m"}],
        "oncall": {"people": [{"name": "李娜", "phone": "13800138000"}]},
        "alerts": {"external_url": "http://10.1.2.3:9640"},
        **over,
    }
    return Harness(tmp_path, **conf)


def test_reply_words() -> None:
    assert parse_reply("1") == ("last", None)
    assert parse_reply(" 确认。") == ("last", None)
    assert parse_reply("ACK 4821") == ("code", "4821")
    assert parse_reply("ack4821") == ("code", "4821")
    assert parse_reply("确认 4821") == ("code", "4821")
    assert parse_reply("确认：４８２１") == ("code", "4821")  # full-width digits from a Chinese keyboard
    assert parse_reply("4821") == ("code", "4821")
    assert parse_reply("谁在值班？") == ("unknown", None)
    assert parse_reply("11") == ("unknown", None)


async def test_ack_by_code_reply_is_confirmed_by_sms(tmp_path: Path, modem: FakeModem) -> None:
    h = sms_harness(tmp_path, modem)
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    [n] = h.queued()
    code = re.search(r"回复 1 或 ACK (\d{4}) 确认", n.text).group(1)  # type: ignore[union-attr]
    assert n.text.index("ACK") < n.text.index("位置")  # near the top: a long SMS is cut from the end
    await h.svc.outbox._deliver_next("sms")  # the alert SMS goes out through the modem
    [(_, sent)] = modem.messages().items()
    assert f"ACK {code}" in sent and "http://10.1.2.3:9640/ack/" in sent
    watch = h.svc.watches[0]
    modem.deliver(DUTY, f"ACK {code}")
    assert await watch.poll_once() == 1
    alert = h.alert("WaterLeak")
    assert alert["acknowledged"] and alert["ack"]["via"] == "sms" and alert["ack"]["by"] == "李娜"  # type: ignore[index]
    assert alert["ack"]["channel"] == "sms"  # type: ignore[index]
    assert modem.inbox == {}  # read and deleted
    answers = [p.text for p in modem.received if p.text.startswith("已确认")]
    assert answers == ["已确认：机房漏水（县政务中心 / 1号机房 / leak1）。不再重复提醒和升级。"]
    # acknowledged: no reminder after repeat_interval
    h.advance(31 * 60, step=30)
    assert h.queued() == []
    families = {f.name: dict(f.samples) for f in h.svc.families()}
    assert families["roomwatch_sms_replies_total"] == {'{result="acknowledged"}': 1.0}
    assert families["roomwatch_acknowledgements_total"] == {'{via="sms"}': 1.0}


async def test_reply_1_acknowledges_the_last_message_and_strangers_are_ignored(tmp_path: Path, modem: FakeModem) -> None:
    h = sms_harness(tmp_path, modem)
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    h.push([("roomwatch_smoke_detected", SMOKE, 1.0)])  # another room: a message of its own, sent last
    assert [a.labels["alertname"] for n in h.queued() for a in n.alerts] == ["WaterLeak", "SmokeDetected"]
    watch = h.svc.watches[0]
    sent_before = len(modem.received)
    modem.deliver("+8613999999999", "1")  # not a number alerts go to: nothing acknowledged, no answer
    assert await watch.poll_once() == 1
    assert len(modem.received) == sent_before and modem.inbox == {}
    assert not h.alert("WaterLeak")["acknowledged"] and not h.alert("SmokeDetected")["acknowledged"]  # type: ignore[index]
    modem.deliver("13800138000", "1")  # the same number written without +86
    await watch.poll_once()
    assert h.alert("SmokeDetected")["acknowledged"] and not h.alert("WaterLeak")["acknowledged"]  # type: ignore[index]
    modem.deliver(DUTY, "确认 1234")  # a code nobody has
    modem.deliver(DUTY, "谁在值班")
    assert await watch.poll_once() == 2
    texts = [p.text for p in modem.received if not p.text.startswith("【")]
    assert any("没有告警码 1234" in t for t in texts) and any("回复 1 确认最近一条告警短信" in t for t in texts)
    families = {f.name: dict(f.samples) for f in h.svc.families()}
    assert families["roomwatch_sms_replies_total"]['{result="ignored"}'] == 1.0


def test_a_modem_that_loses_registration_raises_the_alert_within_its_check_interval(tmp_path: Path,
                                                                                     modem: FakeModem) -> None:
    """The check runs every check_interval (3 min): registration lost after one check is found by the next, and
    NotificationChannelFailing goes out through the other channels with the reason; the clock is the harness's."""
    import asyncio

    h = Harness(tmp_path, channels=[
        {"name": "duty", "type": "webhook", "url": "http://127.0.0.1:9/duty"},
        {"name": "sms", "type": "gsm_modem", "port": modem.path, "phone_numbers": [DUTY], "timeout": "2s",
         "check_interval": "3m"}],
        routes=[{"channels": ["sms", "duty"], "group_wait": "0s"}])
    [watch] = h.svc.watches
    assert watch.check_interval == 180
    status = asyncio.run(watch.check_once())
    assert status.ok and status.signal_dbm == -73.0 and status.registered
    families = {f.name: dict(f.samples) for f in h.svc.families()}
    port = modem.path
    assert families["roomwatch_modem_signal_dbm"] == {f'{{channel="sms",port="{port}"}}': -73.0}
    assert families["roomwatch_modem_registered"] == {f'{{channel="sms",port="{port}"}}': 1.0}
    h.advance(10)
    modem.creg = 3  # the SIM's registration is denied (an expired SIM)
    h.advance(watch.check_interval - 10)  # the next check is due: within one interval of the loss
    asyncio.run(watch.check_once())
    h.advance(1)
    failing = h.alert("NotificationChannelFailing")
    assert failing is not None and failing["state"] == "firing" and failing["labels"]["channel"] == "sms"
    assert "registration denied" in failing["annotations"]["reason"]
    [n] = h.queued()
    assert n.receiver == "duty" and "registration denied" in n.text  # through the other channel, with the reason
    families = {f.name: dict(f.samples) for f in h.svc.families()}
    assert families["roomwatch_modem_registered"] == {f'{{channel="sms",port="{port}"}}': 0.0}
    assert families["roomwatch_notification_channel_up"]['{channel="sms"}'] == 0.0
    modem.creg, modem.cpin = 5, "READY"  # roaming is registered too
    asyncio.run(watch.check_once())
    h.advance(1)
    assert h.alert("NotificationChannelFailing") is None
    modem.cpin = "SIM PIN"  # a SIM swapped for one asking for a PIN
    asyncio.run(watch.check_once())
    h.advance(1)
    assert "SIM not ready" in h.alert("NotificationChannelFailing")["annotations"]["reason"]  # type: ignore[index]


async def test_voice_call_repeats_until_acknowledged_then_a_queued_call_is_dropped(tmp_path: Path) -> None:
    stub = await AliyunVoiceStub("LTAI5tVoiceKey00000000", "vS3cretVoiceKeyAbCdEfGhIjKlMnOp",
                                 {"TTS_1": ["alert", "room"]}).start()
    stub.limits.windows = ()  # the harness clock runs minutes in milliseconds
    h = Harness(tmp_path, channels=[
            {"name": "call", "type": "aliyun_voice", "access_key_id": "LTAI5tVoiceKey00000000",
             "access_key_secret": "vS3cretVoiceKeyAbCdEfGhIjKlMnOp", "tts_code": "TTS_1",
             "phone_numbers": ["13800138000"], "endpoint": stub.url + "/", "timeout": "2s"}],
            routes=[{"channels": ["call"], "repeat_interval": "5m"}])
    try:
        h.svc.channels["call"].pace.windows = []  # type: ignore[attr-defined]
        h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
        await h.svc.outbox._deliver_next("call")
        h.advance(5 * 60 + 1)
        await h.svc.outbox._deliver_next("call")
        assert len(stub.received) == 2  # rung again: not acknowledged
        h.advance(5 * 60 + 1)  # a third call is queued …
        assert [n.reason for n in h.queued()] == ["firing", "repeat", "repeat"]
        h.svc.commands.ack(h.alert("WaterLeak")["id"], "李娜", via="link")  # type: ignore[index]
        await h.svc.outbox._deliver_next("call")  # … and dropped: acknowledged meanwhile
        assert len(stub.received) == 2
        assert h.svc.outbox.status["call"].cancelled == 1
        h.advance(20 * 60, step=30)
        assert h.queued() == []  # and no more repeats
        h.push([("roomwatch_water_leak_detected", LEAK, 0.0)])
        h.advance(2)
        assert h.queued() == []  # a resolution rings nobody (send_resolved false for voice)
    finally:
        await h.svc.channels["call"].close()
        await stub.stop()
