"""Chat channels (WeCom robot and app, DingTalk, Feishu, ServerChan) against test servers that check
what the real services check and answer with their codes; no secret in details or logs."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from roomwatch.channels.base import Channel, Outcome, get_channel_type
from roomwatch.channels.config import ChannelBase
from tests.channel_helpers import assert_no_leak, notification
from tests.helpers import free_port
from tests.peers.chat_stubs import DingtalkStub, FeishuStub, ServerchanStub, WecomAppStub, WecomRobotStub
from tests.peers.stub_http import StubServer

ROBOT_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
APP_SECRET = "app-secret-3f9a1c7e5b2d4a6c8e0f"
DING_TOKEN = "ding-token-1b2c3d4e5f60718293a4"
DING_SECRET = "SECd0c1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0"
FEISHU_HOOK = "2b8c0d3e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"
FEISHU_SECRET = "feishu+secret/with=odd-chars"
SCT_KEY = "SCT123456TAbCdEfGhIjKlMnOpQrStUv"
SC3_KEY = "sctp4321tAbCdEfGhIjKlMnOpQrSt"


def make(kind: str, **conf: Any) -> Channel:
    cls = get_channel_type(kind)
    model: type[ChannelBase] = cls.config_model
    return cls(model.model_validate({"name": f"test-{kind}", "type": kind, **conf}))


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the no-leak checks read every log line, debug included


@pytest.fixture
async def stubs() -> AsyncIterator[list[StubServer]]:
    started: list[StubServer] = []
    yield started
    for s in started:
        await s.stop()


async def start(stubs: list[StubServer], stub: StubServer) -> Any:
    stubs.append(await stub.start())
    return stub


# ------------------------------------------------------------------ WeCom robot


async def test_wecom_robot_markdown_and_limits(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    stub = await start(stubs, WecomRobotStub(ROBOT_KEY))
    # The whole webhook address may be pasted as the key.
    ch = make("wecom_robot", key=f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={ROBOT_KEY}",
              api_url=stub.url + "/cgi-bin/webhook/send")
    results = [await ch.send(notification())]
    assert results[0].outcome is Outcome.DELIVERED, results[0]
    assert stub.received[0]["msgtype"] == "markdown"
    assert "机房温度过高" in stub.received[0]["markdown"]["content"]
    # Over 4096 bytes of markdown: cut on a character boundary with an ellipsis, and accepted.
    results.append(await ch.send(notification(markdown="温度" * 1000)))
    assert results[-1].outcome is Outcome.DELIVERED
    content = stub.received[-1]["markdown"]["content"]
    assert len(content.encode()) <= 4096 and content.endswith("…") and content.startswith("温度")
    await ch.close()
    assert ch.rate_limit == (20, 60.0)
    assert_no_leak([ROBOT_KEY], results, caplog)


async def test_wecom_robot_text_mentions_and_cut(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    stub = await start(stubs, WecomRobotStub(ROBOT_KEY))
    ch = make("wecom_robot", key=ROBOT_KEY, message_type="text", mentioned_mobile_list=["13800138000"],
              api_url=stub.url + "/cgi-bin/webhook/send")
    res = await ch.send(notification("值班" * 600))
    assert res.outcome is Outcome.DELIVERED
    text = stub.received[0]["text"]
    assert text["mentioned_mobile_list"] == ["13800138000"]
    assert len(text["content"].encode()) <= 2048 and text["content"].endswith("…")
    assert text["content"].startswith("【严重】机房温度过高\n")  # the title leads the plain text
    await ch.close()


async def test_wecom_robot_errors(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    stub = await start(stubs, WecomRobotStub(ROBOT_KEY))
    url = stub.url + "/cgi-bin/webhook/send"
    ch = make("wecom_robot", key=ROBOT_KEY, api_url=url, timeout="1s")
    results = []
    # Rate limited (20/min per robot): retry, after a minute.
    stub.fail_next = [45009]
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.RETRY and results[-1].retry_after == 60.0
    assert "45009" in results[-1].detail
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.DELIVERED
    # No answer in time: retry.
    stub.hang_for = 3.0
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.RETRY and "no answer" in results[-1].detail
    stub.hang_for = 0.0
    await ch.close()
    # Wrong key: 93000, give up (it will not get better), key not shown.
    bad = make("wecom_robot", key=ROBOT_KEY[::-1], api_url=url)
    results.append(await bad.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "93000" in results[-1].detail
    await bad.close()
    # Nothing listening: retry.
    gone = make("wecom_robot", key=ROBOT_KEY, api_url=f"http://127.0.0.1:{free_port()}/cgi-bin/webhook/send")
    results.append(await gone.send(notification()))
    assert results[-1].outcome is Outcome.RETRY
    await gone.close()
    assert_no_leak([ROBOT_KEY, ROBOT_KEY[::-1]], results, caplog)


# -------------------------------------------------------------------- WeCom app


async def test_wecom_app_token_cached_and_refreshed(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    stub = await start(stubs, WecomAppStub("ww0123456789abcdef", APP_SECRET, 1000002))
    ch = make("wecom_app", corp_id="ww0123456789abcdef", agent_id=1000002, secret=APP_SECRET, to_user="zhangsan|lisi",
              api_url=stub.url + "/cgi-bin/")
    results = [await ch.send(notification()), await ch.send(notification())]
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 2
    assert stub.gettoken_calls == 1  # cached: gettoken is throttled
    assert stub.received[0]["touser"] == "zhangsan|lisi" and stub.received[0]["msgtype"] == "text"
    assert stub.received[0]["text"]["content"].startswith("【严重】机房温度过高")
    # WeCom ends the token early: 42001 → drop it, fetch another, send once more.
    stub.expire_tokens()
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.DELIVERED, results[-1]
    assert stub.gettoken_calls == 2 and len(stub.received) == 3
    # 40014 (invalid token) even after the refresh: retry later, not a loop of refreshes.
    stub.fail_next = [40014, 40014]
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.RETRY and "40014" in results[-1].detail
    assert stub.gettoken_calls == 3
    # Oversized text: cut to 2048 bytes, accepted.
    results.append(await ch.send(notification("告警" * 2000)))
    assert results[-1].outcome is Outcome.DELIVERED
    assert len(stub.received[-1]["text"]["content"].encode()) <= 2048
    await ch.close()
    tokens = list(stub.valid | stub.expired)
    assert_no_leak([APP_SECRET, *tokens], results, caplog)


async def test_wecom_app_invalid_member_is_partial_and_logged(stubs: list[StubServer],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """WeCom accepts a message with errcode 0 even when a member id is unknown (it lists it in invaliduser):
    the others get it, the outcome is partial (not delivered), the member is named once in the log, and a
    retry would not help so there is none. With no valid member at all WeCom says 81013: give up."""
    stub = await start(stubs, WecomAppStub("wwcorp", APP_SECRET, 1000002, members={"zhangsan", "lisi"}))
    ch = make("wecom_app", corp_id="wwcorp", agent_id=1000002, secret=APP_SECRET, to_user="zhangsan|wangwu|lisi",
              api_url=stub.url + "/cgi-bin/")
    results = [await ch.send(notification())]
    assert results[0].outcome is Outcome.PARTIAL, results[0]
    assert "invaliduser wangwu" in results[0].detail and "可见范围" in results[0].detail
    assert stub.delivered_to == [["zhangsan", "lisi"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "wangwu" in w]) == 1, warnings
    await ch.close()
    nobody = make("wecom_app", corp_id="wwcorp", agent_id=1000002, secret=APP_SECRET, to_user="wangwu",
                  api_url=stub.url + "/cgi-bin/")
    results.append(await nobody.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "81013" in results[-1].detail
    await nobody.close()
    everyone = make("wecom_app", corp_id="wwcorp", agent_id=1000002, secret=APP_SECRET, to_user="zhangsan|lisi",
                    api_url=stub.url + "/cgi-bin/")
    results.append(await everyone.send(notification()))
    assert results[-1].outcome is Outcome.DELIVERED and stub.delivered_to[-1] == ["zhangsan", "lisi"]
    await everyone.close()
    assert_no_leak([APP_SECRET, *stub.valid], results, caplog)


async def test_wecom_app_config_errors(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    stub = await start(stubs, WecomAppStub("wwcorp", APP_SECRET, 1000002))
    results = []
    bad = make("wecom_app", corp_id="wwcorp", agent_id=1000002, secret="wrong-secret-value", api_url=stub.url + "/cgi-bin/")
    results.append(await bad.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "40001" in results[-1].detail
    assert not stub.received
    await bad.close()
    ch = make("wecom_app", corp_id="wwcorp", agent_id=1000002, secret=APP_SECRET, message_type="markdown",
              api_url=stub.url + "/cgi-bin/")
    stub.fail_next = [60020]  # server IP not in the app's trusted IP list
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "企业可信IP" in results[-1].detail
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.DELIVERED and stub.received[-1]["msgtype"] == "markdown"
    await ch.close()
    assert_no_leak([APP_SECRET, "wrong-secret-value", *stub.valid], results, caplog)


# --------------------------------------------------------------------- DingTalk


async def test_dingtalk_signed_markdown(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    stub = await start(stubs, DingtalkStub(DING_TOKEN, DING_SECRET, keyword="机房"))
    ch = make("dingtalk", access_token=f"https://oapi.dingtalk.com/robot/send?access_token={DING_TOKEN}", secret=DING_SECRET,
              at_mobiles=["13800138000"], keyword="机房", api_url=stub.url + "/robot/send")
    results = [await ch.send(notification())]
    assert results[0].outcome is Outcome.DELIVERED, results[0]
    body = stub.received[0]
    assert body["msgtype"] == "markdown" and body["at"]["atMobiles"] == ["13800138000"]
    assert "@13800138000" in body["markdown"]["text"]  # DingTalk needs the mention in the markdown text too
    # A message without the robot's keyword gets it added (else 310000 "keywords not in content").
    results.append(await ch.send(notification("UPS on battery", title="UPS", markdown="UPS on battery")))
    assert results[-1].outcome is Outcome.DELIVERED
    # Bigger than the 20000-byte body limit: cut to fit, accepted.
    results.append(await ch.send(notification(markdown="告警详情\n" * 3000)))
    assert results[-1].outcome is Outcome.DELIVERED
    assert stub.received[-1]["markdown"]["text"].endswith("…")
    # 130101 send too fast: the robot is throttled for 10 minutes.
    stub.fail_next = [130101]
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.RETRY and results[-1].retry_after == 600.0
    await ch.close()
    assert_no_leak([DING_TOKEN, DING_SECRET], results, caplog)


async def test_dingtalk_bad_signature_and_clock(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    stub = await start(stubs, DingtalkStub(DING_TOKEN, DING_SECRET))
    results = []
    wrong = make("dingtalk", access_token=DING_TOKEN, secret="SECwrongwrongwrong", api_url=stub.url + "/robot/send")
    results.append(await wrong.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "310000" in results[-1].detail
    await wrong.close()
    ch = make("dingtalk", access_token=DING_TOKEN, secret=DING_SECRET, message_type="text", api_url=stub.url + "/robot/send")
    ch.clock = lambda: time.time() - 7200  # type: ignore[attr-defined]  # this host's clock is two hours behind
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "timestamp" in results[-1].detail
    ch.clock = time.time  # type: ignore[attr-defined]
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.DELIVERED and stub.received[-1]["msgtype"] == "text"
    await ch.close()
    no_token = make("dingtalk", access_token="not-the-token", api_url=stub.url + "/robot/send")
    results.append(await no_token.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "300001" in results[-1].detail
    await no_token.close()
    assert_no_leak([DING_TOKEN, DING_SECRET, "SECwrongwrongwrong", "not-the-token"], results, caplog)


# ----------------------------------------------------------------------- Feishu


async def test_feishu_signed_post(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    stub = await start(stubs, FeishuStub(FEISHU_HOOK, FEISHU_SECRET))
    ch = make("feishu", hook=f"https://open.feishu.cn/open-apis/bot/v2/hook/{FEISHU_HOOK}", secret=FEISHU_SECRET,
              api_url=stub.url + "/open-apis/bot/v2/hook/")
    results = [await ch.send(notification())]
    assert results[0].outcome is Outcome.DELIVERED, results[0]
    post = stub.received[0]["content"]["post"]["zh_cn"]
    assert post["title"] == "【严重】机房温度过高"
    assert post["content"][0] == [{"tag": "text", "text": "一号机房 env1 温度 31.5°C，超过阈值 30°C"}]
    # Over 20 KB: cut to fit, accepted.
    results.append(await ch.send(notification("很长的告警说明" * 2000)))
    assert results[-1].outcome is Outcome.DELIVERED
    # 11232 frequency limited: retry soon.
    stub.fail_next = [11232]
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.RETRY and results[-1].retry_after == 1.0
    await ch.close()
    assert_no_leak([FEISHU_HOOK, FEISHU_SECRET], results, caplog)


async def test_feishu_rejections(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    stub = await start(stubs, FeishuStub(FEISHU_HOOK, FEISHU_SECRET, keyword="值班室"))
    url = stub.url + "/open-apis/bot/v2/hook/"
    results = []
    wrong = make("feishu", hook=FEISHU_HOOK, secret="not-the-secret", api_url=url)
    results.append(await wrong.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "19021" in results[-1].detail
    await wrong.close()
    ch = make("feishu", hook=FEISHU_HOOK, secret=FEISHU_SECRET, message_type="text", api_url=url)
    results.append(await ch.send(notification()))  # the bot wants a keyword the message lacks
    assert results[-1].outcome is Outcome.GIVE_UP and "19024" in results[-1].detail
    await ch.close()
    ch = make("feishu", hook=FEISHU_HOOK, secret=FEISHU_SECRET, message_type="text", keyword="值班室", api_url=url)
    ch.clock = lambda: time.time() + 4000  # type: ignore[attr-defined]  # clock ahead by more than an hour
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.GIVE_UP and "19021" in results[-1].detail
    ch.clock = time.time  # type: ignore[attr-defined]
    results.append(await ch.send(notification()))
    assert results[-1].outcome is Outcome.DELIVERED
    assert stub.received[-1]["content"]["text"].startswith("值班室 ")
    await ch.close()
    assert_no_leak([FEISHU_HOOK, FEISHU_SECRET, "not-the-secret"], results, caplog)


async def test_feishu_keeps_to_five_per_second(stubs: list[StubServer]) -> None:
    stub = await start(stubs, FeishuStub(FEISHU_HOOK))
    arrivals: list[float] = []
    ch = make("feishu", hook=FEISHU_HOOK, api_url=stub.url + "/open-apis/bot/v2/hook/")
    for _ in range(6):
        assert (await ch.send(notification())).outcome is Outcome.DELIVERED
        arrivals.append(time.monotonic())
    await ch.close()
    # The 6th request may only start once the 1st is a second old.
    assert arrivals[5] - arrivals[0] >= 0.9


# ------------------------------------------------------------------- ServerChan


async def test_serverchan_turbo_and_sc3(stubs: list[StubServer], caplog: pytest.LogCaptureFixture) -> None:
    results = []
    for key in (SCT_KEY, SC3_KEY):
        stub = await start(stubs, ServerchanStub(key))
        ch = make("serverchan", sendkey=key, api_url=stub.url)
        results.append(await ch.send(notification(title="【严重】机房温度过高，一号机房 env1 温度 31.5°C，超过阈值 30°C")))
        assert results[-1].outcome is Outcome.DELIVERED, results[-1]
        form = stub.received[0]
        assert len(form["title"]) <= 32 and form["title"].endswith("…")
        assert "机房温度过高" in form["desp"]
        # Busy server: retry.
        stub.fail_next = [503]
        results.append(await ch.send(notification()))
        assert results[-1].outcome is Outcome.RETRY
        await ch.close()
        bad = make("serverchan", sendkey=key[:-3] + "zzz", api_url=stub.url)
        results.append(await bad.send(notification()))
        assert results[-1].outcome is Outcome.GIVE_UP
        await bad.close()
    assert_no_leak([SCT_KEY, SC3_KEY, SCT_KEY[:-3] + "zzz", SC3_KEY[:-3] + "zzz"], results, caplog)


def test_serverchan_urls() -> None:
    from roomwatch.channels.serverchan import send_url

    assert send_url(SCT_KEY) == f"https://sctapi.ftqq.com/{SCT_KEY}.send"
    assert send_url(SC3_KEY) == f"https://4321.push.ft07.com/send/{SC3_KEY}.send"
