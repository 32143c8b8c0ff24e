"""`roomwatch setup`: scripted answers (and options) against the recorded-reply chat stubs.

The first test is the issue's goal, measured: from an installed roomwatch to a test message at the
(stub) WeCom robot, with a person's answers typed in — its duration is printed as a figure, not asserted.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, run_cli
from tests.peers.chat_stubs import DingtalkStub, WecomRobotStub
from tests.peers.nut import NutServer, write_dev

ROBOT_KEY = "693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa"
DING_TOKEN, DING_SECRET = "dt-access-token-0123456789", "SEC0123456789abcdef0123456789abcdef"

pytestmark = pytest.mark.peer  # every test runs `roomwatch setup` as a process


async def _setup(args: list[str], answers: str = "", lang_env: str = "") -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CREDENTIALS_DIRECTORY", None)
    if lang_env:
        env["LANG"] = lang_env
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "roomwatch", "setup", *args, cwd=ROOT, env=env,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(answers.encode()), 120)
    return proc.returncode or 0, out.decode()


async def test_first_run_in_chinese_reaches_the_wecom_robot(tmp_path: Path) -> None:
    stub = await WecomRobotStub(ROBOT_KEY).start()
    try:
        etc, state = tmp_path / "etc", tmp_path / "state"
        answers = "\n".join([
            "",                      # role: both (the default)
            "county-it",             # site
            "server room",           # a room name with a space: refused, asked again
            "room-1",
            "",                      # look for devices: not now
            "",                      # channel: wecom (the default)
            "not a url",             # refused, asked again
            f"{stub.url}/cgi-bin/webhook/send?key={ROBOT_KEY}",  # pasted from the group's robot settings
        ]) + "\n"
        started = time.monotonic()
        code, out = await _setup(["--etc", str(etc), "--state", str(state)], answers, lang_env="zh_CN.UTF-8")
        took = time.monotonic() - started
        assert code == 0, out
        print(f"\n[figure] roomwatch setup, typed answers to a delivered test message: {took:.1f} s "
              f"(7 answers, 2 of them corrected)")
        assert "测试消息已送达" in out and "输入无效" in out and "systemctl enable --now" in out
        assert len(stub.received) == 1
        body = stub.received[0]
        assert body["msgtype"] == "markdown"
        assert any("\u4e00" <= ch <= "\u9fff" for ch in body["markdown"]["content"])  # in Chinese, as asked
        # The files: checked, private, a generated token whose hash the collector holds.
        agent, coll = etc / "agent.yaml", etc / "collector.yaml"
        check = run_cli("check-config", str(agent), str(coll))
        assert check.returncode == 0, check.stderr
        token = (etc / "agent-token").read_text().strip()
        assert len(token) >= 40
        assert f"sha256:{hashlib.sha256(token.encode()).hexdigest()}" in coll.read_text()
        for f in (etc / "agent-token", etc / "wecom-robot.key"):
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 in (0, 0o040), f  # never world-readable
        assert ROBOT_KEY not in coll.read_text()  # the key lives in its own file
        assert "county-it-room-1" in agent.read_text()
        # Again (e.g. after a re-install): nothing replaced, the token kept.
        code, out = await _setup(["--etc", str(etc), "--state", str(state), "--yes", "--site", "county-it", "--room",
                                  "room-1", "--channel", "wecom", "--wecom-url",
                                  f"{stub.url}/cgi-bin/webhook/send?key={ROBOT_KEY}", "--no-test", "--lang", "en"])
        assert code == 0, out
        assert out.count("exists, kept as it is") == 2
        assert (etc / "agent-token").read_text().strip() == token
    finally:
        await stub.stop()


async def test_scripted_setup_with_options_dingtalk_signed(tmp_path: Path) -> None:
    stub = await DingtalkStub(DING_TOKEN, DING_SECRET).start()
    try:
        etc = tmp_path / "etc"
        code, out = await _setup(["--yes", "--lang", "en", "--etc", str(etc), "--state", str(tmp_path / "s"),
                                  "--role", "collector", "--site", "county-it", "--channel", "dingtalk",
                                  "--dingtalk-url", f"{stub.url}/robot/send?access_token={DING_TOKEN}",
                                  "--dingtalk-secret", DING_SECRET])
        assert code == 0, out
        assert "Test message delivered" in out and len(stub.received) == 1
        # The first agent's token is printed as a ready command for the room's machine.
        first = (etc / "first-agent.token").read_text().strip()
        assert f"--token {first}" in out and "--role agent" in out
        assert DING_SECRET not in (etc / "collector.yaml").read_text()
    finally:
        await stub.stop()


async def test_agent_role_takes_the_collectors_token_and_says_when_it_is_unreachable(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    code, out = await _setup(["--yes", "--lang", "en", "--etc", str(etc), "--state", str(tmp_path / "s"),
                              "--role", "agent", "--site", "county-it", "--room", "room-2",
                              "--collector-url", "http://127.0.0.1:1", "--token", "t" * 43])
    assert code == 0, out
    assert (etc / "agent-token").read_text().strip() == "t" * 43
    assert "cannot reach the collector yet" in out and "roomwatch-agent" in out
    assert not (etc / "collector.yaml").exists()
    code, out = await _setup(["--yes", "--lang", "en", "--etc", str(tmp_path / "e2"), "--role", "agent"])
    assert code != 0 and "required with --yes" in out


@pytest.mark.peer("upsd")
async def test_setup_offers_discover_and_writes_what_it_found(tmp_path: Path, nut_factory: Any) -> None:
    """The devices question runs ``roomwatch discover``; its entries (with their comments) land in agent.yaml."""
    ups = {"ups.status": "OL", "battery.charge": "97", "ups.mfr": "Kehua", "ups.model": "KR1000"}
    nut: NutServer = nut_factory({"rack": write_dev(tmp_path / "rack.dev", ups)})
    etc = tmp_path / "etc"
    answers = "\n".join(["agent", "county-it", "room-3", "http://127.0.0.1:1", "t" * 43,
                          f"nut:127.0.0.1:{nut.port}"]) + "\n"
    code, out = await _setup(["--lang", "en", "--etc", str(etc), "--state", str(tmp_path / "s")], answers)
    assert code == 0, out
    assert "devices found and written to agent.yaml: rack" in out and "Devices: none yet" not in out
    text = (etc / "agent.yaml").read_text()
    assert "Kehua KR1000" in text  # discover's comment above the entry: what was read
    check = run_cli("check-config", str(etc / "agent.yaml"))
    assert check.returncode == 0, check.stderr
    import yaml

    devices = yaml.safe_load(text)["devices"]
    assert [(d["driver"], d["ups"], d["port"]) for d in devices] == [("nut", "rack", nut.port)]
    # Nothing answers: said, and the file is written without devices (and says how to add them).
    code, out = await _setup(["--yes", "--lang", "en", "--etc", str(tmp_path / "e2"), "--state", str(tmp_path / "s2"),
                              "--role", "agent", "--collector-url", "http://127.0.0.1:1", "--token", "t" * 43,
                              "--discover", "nut:127.0.0.1:1"])
    assert code == 0, out
    assert "no device found" in out and "Devices: none yet" in out
    assert run_cli("check-config", str(tmp_path / "e2" / "agent.yaml")).returncode == 0


@pytest.mark.parametrize("bad", [["--role", "agent", "--token", "short"], ["--site", "a b"]])
async def test_bad_options_are_refused_before_anything_is_written(tmp_path: Path, bad: list[str]) -> None:
    etc = tmp_path / "etc"
    code, out = await _setup(["--yes", "--lang", "en", "--etc", str(etc), "--collector-url", "http://127.0.0.1:1",
                              "--channel", "none", *bad])
    assert code != 0 and "Not valid" in out, out
    assert not (etc / "agent.yaml").exists() and not (etc / "collector.yaml").exists()
