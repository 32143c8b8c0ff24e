"""Shared channel code: cutting to size, redaction, SMS template fields, the registry and the config union."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomwatch.channels.base import channel_types
from roomwatch.channels.common import Redactor, fit_json, render_params, template_fields, truncate_chars, truncate_utf8
from tests.channel_helpers import alert, notification
from tests.helpers import ROOT, run_cli

CHANNELS = {"wecom_robot", "wecom_app", "dingtalk", "feishu", "aliyun_sms", "tencent_sms", "gsm_modem", "email", "serverchan",
            "aliyun_voice", "tencent_voice", "gsm_call"}


@pytest.mark.parametrize("limit", range(14))
def test_truncate_utf8_on_character_boundary(limit: int) -> None:
    text = "机房A温度过高"  # mixed 3-byte and 1-byte characters
    out = truncate_utf8(text, limit)
    assert len(out.encode()) <= limit
    out.encode().decode("utf-8")  # valid UTF-8
    if len(text.encode()) > limit >= 4:
        assert out.endswith("…") and text.startswith(out[:-1])
    if len(text.encode()) <= limit:
        assert out == text


def test_truncate_chars_and_fit_json() -> None:
    assert truncate_chars("一二三四五", 5) == "一二三四五"
    assert truncate_chars("一二三四五六", 5) == "一二三四…"
    # JSON escaping makes quotes and newlines bigger than they are: the body still fits.
    text = '"引号"\n' * 500
    body = fit_json(lambda t: {"msgtype": "text", "text": {"content": t}}, text, 1000)
    assert len(body) <= 1000
    assert json.loads(body)["text"]["content"].endswith("…")
    with pytest.raises(ValueError):
        fit_json(lambda t: {"pad": "x" * 100, "t": t}, "abc", 50)


def test_redactor_covers_encoded_forms() -> None:
    r = Redactor(["a+b/c=d", "abc"])  # secrets under 4 characters are ignored (too many false hits)
    assert r("key=a+b/c=d&k2=a%2Bb%2Fc%3Dd&k3=a%2Bb%2Fc%3Dd abc") == "key=***&k2=***&k3=*** abc"
    r.add("TOKEN123")
    assert r("https://x/send?access_token=TOKEN123") == "https://x/send?access_token=***"


def test_template_fields() -> None:
    n = notification(alerts=[alert(), alert("RoomHumidityHigh", 80.0)])
    f = template_fields(n)
    assert f["alert"] == "机房温度过高 等2条" and f["room"] == "一号机房" and f["site"] == "县政府"
    assert f["value"] == "31.5" and f["threshold"] == "30" and f["since"] == "07-01 10:30"  # Beijing time
    assert f["labels.device"] == "env1" and f["status_text"] == "告警"
    assert render_params(["{site}{room}", "{value}°C", "{labels.none}"], n, 6) == ["县政府一号…", "31.5°C", "-"]
    resolved = template_fields(notification(status="resolved"))
    assert resolved["alert"].endswith("（已恢复）") and resolved["status_text"] == "恢复"


def test_every_channel_registered_with_limits() -> None:
    types = channel_types()
    assert set(types) >= CHANNELS
    for name in CHANNELS:
        cls = types[name]
        assert cls.config_model.model_fields["type"].annotation.__args__ == (name,)
        assert cls.rate_limit is None or (cls.rate_limit[0] >= 1 and cls.rate_limit[1] > 0)
        assert all(n >= 1 and per > 0 for n, per in cls.more_rate_limits)
    assert types["wecom_robot"].rate_limit == (20, 60.0) and types["wecom_robot"].max_bytes == 4096
    assert types["dingtalk"].rate_limit == (20, 60.0)
    assert types["feishu"].rate_limit == (100, 60.0) and types["feishu"].max_bytes == 20 * 1024


@pytest.mark.parametrize("module", ["roomwatch.channels.gsm_modem", "roomwatch.channels.base", "roomwatch.alerts.config",
                                    "roomwatch.collector.config"])
@pytest.mark.peer
def test_any_import_order_builds_the_full_union(module: str) -> None:
    """Whichever module a program imports first, every channel type is in the config union; gsm_modem alone
    (the agent's local fallback) loads neither aiohttp nor pyserial nor the collector until it sends."""
    code = (f"import sys, {module}\n"
            "import roomwatch.channels.config as c\n"
            "print(sorted(m.model_fields['type'].annotation.__args__[0] for m in c.CHANNEL_MODELS))\n"
            "print('aiohttp' in sys.modules, 'serial' in sys.modules, 'roomwatch.collector.core' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert set(eval(out[0])) >= CHANNELS
    if module == "roomwatch.channels.gsm_modem":
        assert out[1] == "False False False"


@pytest.mark.peer
def test_check_config_accepts_every_channel(tmp_path: Path) -> None:
    conf = tmp_path / "collector.yaml"
    conf.write_text(
        "agents: []\n"
        "channels:\n"
        "  - {name: robot, type: wecom_robot, key: k-123456}\n"
        "  - {name: app, type: wecom_app, corp_id: ww1, agent_id: 1000002, secret_file: " + str(tmp_path / "s") + "}\n"
        "  - {name: ding, type: dingtalk, access_token: t, secret: SECx}\n"
        "  - {name: fs, type: feishu, hook: h, secret: s}\n"
        "  - {name: ali, type: aliyun_sms, access_key_id: a, access_key_secret: b, phone_numbers: ['13800138000'],"
        " sign_name: 县信息中心, template_code: SMS_1}\n"
        "  - {name: tc, type: tencent_sms, secret_id: a, secret_key: b, sdk_app_id: '1400006666', sign_name: x,"
        " template_id: '1110', phone_numbers: ['13800138000']}\n"
        "  - {name: gsm, type: gsm_modem, port: /dev/ttyUSB2, phone_numbers: ['+8613800138000']}\n"
        "  - {name: mail, type: email, host: smtp.qq.com, port: 465, username: a@qq.com, password: p, from: a@qq.com,"
        " to: [b@qq.com]}\n"
        "  - {name: sc, type: serverchan, sendkey: SCTabc}\n"
        "routes:\n"
        "  - channels: [robot, gsm]\n")
    (tmp_path / "s").write_text("app-secret\n")
    res = run_cli("check-config", str(conf))
    assert res.returncode == 0, res.stderr
    # A mistake in a channel names the file line and the key.
    conf.write_text(conf.read_text().replace("template_code: SMS_1", "template_code: 1234"))
    res = run_cli("check-config", str(conf))
    assert res.returncode != 0 and "channels[4].template_code" in res.stderr and ":7:" in res.stderr


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from('ab"\\\n\t机😀\x01'), max_size=600), st.integers(40, 900))
def test_fit_json_always_fits(text: str, limit: int) -> None:
    body = fit_json(lambda t: {"k": "v", "content": t}, text, limit)
    assert len(body) <= limit
    content = json.loads(body)["content"]
    assert content == text or (content.endswith("…") and text.startswith(content[:-1]))


def test_commented_channel_examples_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commented examples in config/collector.example.yaml pass check-config once uncommented."""
    from roomwatch.collector.config import load_collector_config

    text = (ROOT / "config" / "collector.example.yaml").read_text(encoding="utf-8")
    block = text.split("# --- channel examples", 1)[1].split("\n", 1)[1].split("# --- end of channel examples", 1)[0]
    uncommented = "\n".join(line[2:] for line in block.splitlines())
    for var in ("WECOM_ROBOT_KEY", "WECOM_APP_SECRET", "DINGTALK_TOKEN", "DINGTALK_SECRET", "FEISHU_HOOK", "FEISHU_SECRET",
                "ALIYUN_AK_ID", "ALIYUN_AK_SECRET", "TENCENT_SECRET_ID", "TENCENT_SECRET_KEY", "SMTP_AUTH_CODE",
                "SERVERCHAN_KEY"):
        monkeypatch.setenv(var, f"value-of-{var}")
    text = text.replace("# --- channel examples", uncommented + "\n# --- channel examples", 1)
    conf = tmp_path / "collector.yaml"
    conf.write_text(text, encoding="utf-8")
    cfg = load_collector_config(str(conf))
    assert {c.type for c in cfg.channels} == CHANNELS | {"webhook"}
