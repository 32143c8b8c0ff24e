"""Channel rate limits as a window ("at most N per period"), not as spacing, on a controllable clock: a burst up to N
goes at once, the next waits in the outbox (not lost) until the window frees, and a restart does not reopen it.
The limits are the real channel types' (``aliyun_sms`` 50/day, ``wecom_robot`` 20/min, ``wecom_app`` 30/min and
1000/h at once)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from roomwatch.alerts.outbox import Outbox
from roomwatch.alerts.store import AlertStore
from roomwatch.channels.aliyun_sms import AliyunSmsChannel
from roomwatch.channels.base import Channel, Notification, Outcome, SendResult
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.tencent_sms import TencentSmsChannel
from roomwatch.channels.wecom_app import WecomAppChannel
from roomwatch.channels.wecom_robot import WecomRobotChannel
from tests.alert_harness import T0, Clock
from tests.test_alert_channels import item, notification


class _Config(ChannelBase):
    type: Literal["limited"]


class Limited(Channel):
    """Delivers everything; records the (controllable) clock at each send. ``rate_limit`` set per test."""

    type: ClassVar[str] = "limited"
    config_model = _Config

    def __init__(self, rate_limit: tuple[int, float], clock: Clock, more: tuple[tuple[int, float], ...] = ()):
        super().__init__(_Config(name="sms", type="limited", timeout="1s"))
        self.rate_limit = rate_limit  # type: ignore[misc]
        self.more_rate_limits = more  # type: ignore[misc]
        self.clock = clock
        self.sent: list[float] = []

    async def send(self, notification: Notification) -> SendResult:
        self.sent.append(self.clock())
        return SendResult(Outcome.DELIVERED, "ok")


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def settle(check: Any, ob: Outbox, name: str = "sms") -> None:
    """``check`` holds and the channel's sender waits: nothing more happens until a wake or its own timer."""
    await _until(lambda: check() and ob.parked[name])


async def looked(ob: Outbox, name: str = "sms") -> None:
    """Wake the sender and wait until it has looked at its queue and gone back to waiting."""
    await _until(lambda: ob.parked[name])
    before = ob.waits[name]
    ob.wake(name)
    await _until(lambda: ob.waits[name] > before and ob.parked[name])


def _enqueue(ob: Outbox, n: int, now: float, start: int = 0) -> None:
    for i in range(start, start + n):
        ob.enqueue("sms", notification([item(f"{i:016x}")], "sms"), now)


def _states(store: AlertStore) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT state FROM outbox ORDER BY id")]


def test_the_limits_are_the_services_documented_ones() -> None:
    assert AliyunSmsChannel.rate_limit == (50, 86400.0)
    assert TencentSmsChannel.rate_limit == (1, 30.0)
    assert WecomRobotChannel.rate_limit == (20, 60.0)
    assert (WecomAppChannel.rate_limit, WecomAppChannel.more_rate_limits) == ((30, 60.0), ((1000, 3600.0),))


async def test_aliyun_sms_sends_a_burst_at_once_and_the_51st_waits_for_the_day(tmp_path: Path) -> None:
    clock = Clock(T0)
    ch = Limited(AliyunSmsChannel.rate_limit, clock)
    store = AlertStore(str(tmp_path / "o.db"))
    ob = Outbox(store.conn, {"sms": ch}, clock)
    await ob.start()
    try:
        _enqueue(ob, 5, clock())
        ob.wake("sms")
        await settle(lambda: len(ch.sent) == 5, ob)
        assert ch.sent == [T0] * 5  # five in a row go out at once: no spacing (not ~29 min apart)
        clock.t += 3600
        _enqueue(ob, 46, clock(), start=5)  # 45 more fill the day's 50, the 51st is over
        ob.wake("sms")
        await settle(lambda: len(ch.sent) == 50, ob)
        assert ch.sent[5:] == [T0 + 3600] * 45
        assert _states(store) == ["delivered"] * 50 + ["pending"] and ob.pending()["sms"] == 1
        clock.t = T0 + 86400 - 1  # a second before the first send leaves the window
        await looked(ob)
        assert len(ch.sent) == 50 and _states(store)[-1] == "pending"  # still waiting, still there
        clock.t = T0 + 86400 + 1
        ob.wake("sms")
        await settle(lambda: len(ch.sent) == 51, ob)
        assert _states(store) == ["delivered"] * 51 and ob.status["sms"].expired == 0
    finally:
        await ob.stop()


async def test_wecom_robot_21st_waits_until_the_minute_frees(tmp_path: Path) -> None:
    clock = Clock(T0)
    ch = Limited(WecomRobotChannel.rate_limit, clock)
    store = AlertStore(str(tmp_path / "o.db"))
    ob = Outbox(store.conn, {"sms": ch}, clock)
    await ob.start()
    try:
        _enqueue(ob, 21, clock())
        ob.wake("sms")
        await settle(lambda: len(ch.sent) == 20, ob)
        assert ch.sent == [T0] * 20 and _states(store)[-1] == "pending"
        clock.t = T0 + 59.5
        await looked(ob)
        assert len(ch.sent) == 20 and _states(store)[-1] == "pending"
        clock.t = T0 + 60.01  # the window frees
        ob.wake("sms")
        await settle(lambda: len(ch.sent) == 21, ob)
        assert ch.sent[-1] == T0 + 60.01 and _states(store) == ["delivered"] * 21
    finally:
        await ob.stop()


async def test_a_restart_does_not_reopen_the_window(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = AlertStore(str(tmp_path / "o.db"))
    ch = Limited(WecomRobotChannel.rate_limit, clock)
    ob = Outbox(store.conn, {"sms": ch}, clock)
    await ob.start()
    try:
        _enqueue(ob, 20, clock())
        ob.wake("sms")
        await settle(lambda: len(ch.sent) == 20, ob)
    finally:
        await ob.stop()
    clock.t = T0 + 30  # the collector restarts half a minute later with one more message
    ch2 = Limited(WecomRobotChannel.rate_limit, clock)
    ob2 = Outbox(store.conn, {"sms": ch2}, clock)
    _enqueue(ob2, 1, clock(), start=20)
    await ob2.start()
    try:
        await looked(ob2)
        assert ch2.sent == [] and _states(store)[-1] == "pending"  # the 20 of this minute still count
        clock.t = T0 + 60.01
        ob2.wake("sms")
        await settle(lambda: len(ch2.sent) == 1, ob2)
        assert _states(store) == ["delivered"] * 21
    finally:
        await ob2.stop()


async def test_wecom_app_keeps_30_a_minute_and_1000_an_hour_also_across_a_restart(tmp_path: Path) -> None:
    """WeCom drops what a member gets over 30/min or 1000/h without an error, so both windows hold: 30 go each
    minute until the hour has 1000; the 1001st waits (in the table, after a restart too) until the first
    minute's sends are an hour old, although every minute window is free long before."""
    clock = Clock(T0)
    store = AlertStore(str(tmp_path / "o.db"))
    ch = Limited(WecomAppChannel.rate_limit, clock, WecomAppChannel.more_rate_limits)
    ob = Outbox(store.conn, {"sms": ch}, clock)
    _enqueue(ob, 1001, clock())
    await ob.start()
    try:
        for minute in range(34):  # 33 full minutes of 30, then the last 10 of the hour's 1000
            clock.t = T0 + 60 * minute
            ob.wake("sms")
            await settle(lambda m=minute: len(ch.sent) == min(30 * (m + 1), 1000), ob)
        assert ch.sent[-1] == T0 + 60 * 33 and ob.pending()["sms"] == 1
    finally:
        await ob.stop()
    clock.t = T0 + 35 * 60  # restarted with the minute window empty, the hour full
    ch2 = Limited(WecomAppChannel.rate_limit, clock, WecomAppChannel.more_rate_limits)
    ob2 = Outbox(store.conn, {"sms": ch2}, clock)
    await ob2.start()
    try:
        await looked(ob2)
        clock.t = T0 + 3600 - 0.5
        await looked(ob2)
        assert ch2.sent == [] and _states(store)[-1] == "pending"  # waiting, not lost, not dropped by WeCom
        clock.t = T0 + 3600 + 0.01  # the first 30 leave the hour
        ob2.wake("sms")
        await settle(lambda: len(ch2.sent) == 1, ob2)
        assert _states(store) == ["delivered"] * 1001
    finally:
        await ob2.stop()
