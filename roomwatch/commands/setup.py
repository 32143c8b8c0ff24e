"""``roomwatch setup``: the first run in plain words — a few questions, working files, a test message.

Asks (or takes as options, for scripts) the role of this machine (agent, collector, both), the site
and room names, the collector's address, where to look for devices (run through ``roomwatch
discover``; what it finds is written into agent.yaml with its comments), and one notification channel (WeCom group robot,
DingTalk group robot, Aliyun SMS, or a GSM modem), then writes agent.yaml / collector.yaml,
the agent token (generated once, mode 0600, never replaced) and the channel's secret (mode
0600/0640), validates them as ``check-config`` does, sends a test message through the channel and
says what to do next. Questions and messages in Simplified Chinese or English (``--lang``, else
the locale). Existing files are kept (``--force`` replaces them, keeping a ``.bak`` copy).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["add_arguments", "run_setup"]

CHANNELS = ("wecom", "dingtalk", "aliyun_sms", "gsm_modem", "none")

T: dict[str, tuple[str, str]] = {  # key → (zh-CN, en)
    "hello": ("roomwatch 首次设置：回答几个问题（直接回车取方括号中的默认值）。",
              "roomwatch first-run setup: a few questions (Enter takes the default in brackets)."),
    "role": ("这台机器做什么？agent=机房采集端，collector=汇总告警端，both=两者都在这台机器上",
             "What does this machine do? agent = reads the room, collector = gathers and alerts, both = both here"),
    "site": ("单位/站点名称（英文字母、数字、短横线）", "Site name (letters, digits, dashes)"),
    "room": ("机房名称（英文字母、数字、短横线）", "Room name (letters, digits, dashes)"),
    "collector_url": ("汇总端地址（例如 http://192.168.1.10:9640）", "Collector address (e.g. http://192.168.1.10:9640)"),
    "token": ("汇总端给这台采集端的令牌（在汇总端运行 roomwatch setup 时显示）",
              "The token the collector gave this agent (shown by roomwatch setup on the collector)"),
    "channel": ("告警通知方式：wecom=企业微信群机器人，dingtalk=钉钉群机器人，aliyun_sms=阿里云短信，"
                "gsm_modem=4G 短信猫，none=暂不设置",
                "How to notify: wecom = WeCom group robot, dingtalk = DingTalk group robot, aliyun_sms = Aliyun SMS, "
                "gsm_modem = 4G/GSM modem, none = later"),
    "wecom_url": ("企业微信群机器人的 Webhook 地址（群设置 → 群机器人 → 复制地址）",
                  "WeCom robot webhook address (group settings → robots → copy address)"),
    "dingtalk_url": ("钉钉群机器人的 Webhook 地址", "DingTalk robot webhook address"),
    "dingtalk_secret": ("钉钉机器人的加签密钥（SEC 开头；没有就直接回车）",
                        "DingTalk robot signing secret (starts with SEC; Enter if none)"),
    "sms_key_id": ("阿里云 AccessKey ID", "Aliyun AccessKey ID"),
    "sms_key_secret": ("阿里云 AccessKey Secret", "Aliyun AccessKey Secret"),
    "sms_sign": ("短信签名", "SMS signature name"),
    "sms_template": ("短信模板 CODE（SMS_ 开头）", "SMS template code (SMS_…)"),
    "phones": ("接收告警的手机号（多个用逗号隔开）", "Phone numbers to alert (comma-separated)"),
    "modem_port": ("短信猫的串口（例如 /dev/ttyUSB0）", "The modem's serial port (e.g. /dev/ttyUSB0)"),
    "bad": ("输入无效：", "Not valid: "),
    "kept": ("已存在，保留不动（--force 可覆盖）：", "exists, kept as it is (--force replaces it): "),
    "wrote": ("已写入", "wrote"),
    "checked": ("配置检查通过", "configuration checked: OK"),
    "sending": ("正在发送测试消息……", "sending a test message…"),
    "sent": ("测试消息已送达，请查看手机。", "Test message delivered: look at your phone."),
    "not_sent": ("测试消息未送达：", "The test message did not get through: "),
    "no_channel": ("未设置通知方式：之后在 collector.yaml 的 channels 中添加（docs/channels.md）。",
                   "No channel yet: add one to channels: in collector.yaml later (docs/channels.md)."),
    "devices": ("设备：尚未添加。运行 roomwatch discover --snmp 192.168.1.0/24 查找，或在 agent.yaml 的 devices: "
                "下手动添加（docs/discover.md、docs/snmp.md、docs/nut.md、docs/modbus.md、docs/mqtt.md）。",
                "Devices: none yet. Find them with roomwatch discover --snmp 192.168.1.0/24, or add them under "
                "devices: in agent.yaml (docs/discover.md, docs/snmp.md, docs/nut.md, docs/modbus.md, docs/mqtt.md)."),
    "discover": ("现在查找机房里的设备吗？输入 UPS 卡和传感器所在的网段（例如 192.168.1.0/24），"
                 "NUT 主机写 nut:地址，MQTT 写 mqtt://地址，Modbus 串口写 /dev/ttyUSB0；多个用空格隔开；直接回车跳过",
                 "Look for the room's devices now? The network of the UPS cards and sensors (e.g. 192.168.1.0/24), "
                 "nut:HOST for a upsd, mqtt://HOST for a broker, /dev/ttyUSB0 for a Modbus line; several with "
                 "spaces; Enter skips"),
    "discovering": ("正在查找设备（roomwatch discover）……", "looking for devices (roomwatch discover)…"),
    "found": ("找到并写入 agent.yaml 的设备：", "devices found and written to agent.yaml: "),
    "found_none": ("没有找到设备：", "no device found: "),
    "found_hint": ("请在 agent.yaml 中核对名称（每个设备上方的注释是读到的数值）；之后可随时再运行 roomwatch discover。",
                   "Check their names in agent.yaml (the comment above each shows what was read); run roomwatch "
                   "discover again any time."),
    "give_token": ("在每台机房采集端上运行：", "On each room's agent machine run:"),
    "next": ("下一步：", "Next:"),
    "reach": ("汇总端可以访问", "the collector answers at"),
    "no_reach": ("暂时连不上汇总端（数据会先存在本机，连通后补发）：",
                 "cannot reach the collector yet (data waits on disk and is sent once it can): "),
    "elapsed": ("用时", "took"),
}


def _lang(choice: str | None) -> str:
    if choice:
        return choice
    loc = os.environ.get("LC_ALL") or os.environ.get("LC_MESSAGES") or os.environ.get("LANG") or ""
    return "en" if loc.lower().startswith("en") else "zh-CN"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``roomwatch setup``: every question can be answered by one (for scripts)."""
    p.add_argument("--lang", choices=["zh-CN", "en"], help="questions and messages (default: by the locale, else zh-CN)")
    p.add_argument("--role", choices=["agent", "collector", "both"])
    p.add_argument("--site")
    p.add_argument("--room")
    p.add_argument("--agent-id", help="this agent's name (default: SITE-ROOM)")
    p.add_argument("--collector-url", help="the collector the agent pushes to")
    p.add_argument("--token", help="role agent: the token the collector's setup printed")
    p.add_argument("--channel", choices=CHANNELS)
    p.add_argument("--wecom-url", help="WeCom group robot webhook address")
    p.add_argument("--dingtalk-url", help="DingTalk robot webhook address")
    p.add_argument("--dingtalk-secret", help="DingTalk robot signing secret (SEC…)")
    p.add_argument("--sms-key-id")
    p.add_argument("--sms-key-secret")
    p.add_argument("--sms-sign")
    p.add_argument("--sms-template")
    p.add_argument("--phones", help="comma-separated phone numbers (SMS and modem)")
    p.add_argument("--modem-port")
    p.add_argument("--discover", metavar="WHERE",
                   help="look for devices with roomwatch discover: networks/addresses (SNMP), nut:HOST, mqtt://HOST, "
                        "/dev/ttyUSB0 (Modbus), space-separated; or discover's own options (starting with --)")
    p.add_argument("--etc", default="/etc/roomwatch", help="where the files go (default /etc/roomwatch)")
    p.add_argument("--state", default="/var/lib/roomwatch", help="data folder (default /var/lib/roomwatch)")
    p.add_argument("--listen", help="collector listen address (default 127.0.0.1:9640 for both, else 0.0.0.0:9640)")
    p.add_argument("-y", "--yes", action="store_true", help="never ask: take options and defaults (for scripts)")
    p.add_argument("--force", action="store_true", help="replace existing agent.yaml/collector.yaml (keeps a .bak)")
    p.add_argument("--no-test", action="store_true", help="do not send the test message")


class Asker:
    """Questions on the terminal (or answers from options / defaults when ``--yes``)."""

    def __init__(self, lang: str, interactive: bool, out: Callable[[str], None] = print):
        self.i = 0 if lang == "zh-CN" else 1
        self.interactive = interactive
        self.out = out
        self.asked = 0

    def t(self, key: str) -> str:
        return T[key][self.i]

    def ask(self, key: str, given: str | None, default: str = "", check: Callable[[str], str | None] | None = None,
            optional: bool = False) -> str:
        """``given`` if set, else the answer to the question ``key`` (re-asked until ``check`` passes)."""
        if given is not None:
            problem = check(given) if check else None
            if problem:
                raise SystemExit(f"{self.t('bad')}{key}: {problem}")
            return given
        if not self.interactive:
            if default or optional:
                return default
            raise SystemExit(f"{self.t('bad')}--{key.replace('_', '-')} is required with --yes")
        while True:
            self.asked += 1
            try:
                answer = input(f"{self.t(key)}{f' [{default}]' if default else ''}: ").strip() or default
            except EOFError:
                raise SystemExit(f"{self.t('bad')}{key}: no answer") from None
            problem = check(answer) if check else (None if answer or optional else "empty")
            if not problem:
                return answer
            self.out(f"{self.t('bad')}{problem}")


def _name(v: str) -> str | None:
    import re

    return None if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", v) else "letters, digits, . _ - (up to 63)"


def _url(v: str) -> str | None:
    u = urlsplit(v)
    return None if u.scheme in ("http", "https") and u.netloc else "an http:// or https:// address"


def _one_of(options: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda v: None if v in options else " / ".join(options)


def _phones(v: str) -> str | None:
    nums = [x.strip() for x in v.split(",") if x.strip()]
    return None if nums and all(x.lstrip("+").isdigit() and 5 <= len(x) <= 16 for x in nums) else "e.g. 13800138000"


def _hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class Writer:
    """Writes the files: secrets private (0600, or 0640 group roomwatch when that group exists and we are root)."""

    def __init__(self, etc: Path, out: Callable[[str], None], t: Callable[[str], str]):
        self.etc, self.out, self.t = etc, out, t
        self.group = None
        if os.geteuid() == 0:
            import grp

            try:
                self.group = grp.getgrnam("roomwatch").gr_gid
            except KeyError:
                self.group = None

    def secret(self, name: str, value: str, keep: bool = True) -> Path:
        path = self.etc / name
        if keep and path.exists() and path.read_text(encoding="utf-8").strip():
            return path
        self._write(path, value + "\n", shared=name != "agent-token")  # the agent's comes as a credential
        return path

    def config(self, name: str, data: dict[str, Any], force: bool, tail: str = "") -> bool:
        """Write ``data`` (and ``tail``, YAML text with its comments: discover's ``devices:``) unless kept."""
        import yaml

        path = self.etc / name
        if path.exists() and not force:
            self.out(f"{path}: {self.t('kept')}")
            return False
        if path.exists():
            shutil.copy2(path, path.with_name(f"{name}.bak-{time.strftime('%Y%m%d-%H%M%S')}"))
        head = (f"# Written by roomwatch setup. Every key is explained in the commented examples\n"
                f"# ({name.replace('.yaml', '.example.yaml')}, docs/); check with: roomwatch check-config {path}\n")
        body = yaml.safe_dump(data, allow_unicode=True, sort_keys=False) + ("\n" + tail if tail else "")
        self._write(path, head + body, shared=True)
        self.out(f"{self.t('wrote')} {path}")
        return True

    def _write(self, path: Path, text: str, shared: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if shared and self.group is not None:
            os.chown(tmp, 0, self.group)
            os.chmod(tmp, 0o640)
        os.replace(tmp, path)


def _channel(a: Asker, args: argparse.Namespace, w: Writer) -> dict[str, Any] | None:
    kind = a.ask("channel", args.channel, "wecom", _one_of(CHANNELS))
    if kind == "wecom":
        url = a.ask("wecom_url", args.wecom_url, check=lambda v: _url(v) or (None if parse_qs(urlsplit(v).query).get("key")
                                                                                 else "no key= in the address"))
        conf: dict[str, Any] = {"name": "duty", "type": "wecom_robot",
                                "key_file": str(w.secret("wecom-robot.key", parse_qs(urlsplit(url).query)["key"][0], False))}
        base = url.split("?", 1)[0]
        if base != "https://qyapi.weixin.qq.com/cgi-bin/webhook/send":
            conf["api_url"] = base
        return conf
    if kind == "dingtalk":
        url = a.ask("dingtalk_url", args.dingtalk_url,
                    check=lambda v: _url(v) or (None if parse_qs(urlsplit(v).query).get("access_token")
                                                else "no access_token= in the address"))
        secret = a.ask("dingtalk_secret", args.dingtalk_secret, optional=True)
        conf = {"name": "duty", "type": "dingtalk", "access_token_file": str(
            w.secret("dingtalk.token", parse_qs(urlsplit(url).query)["access_token"][0], False))}
        if secret:
            conf["secret_file"] = str(w.secret("dingtalk.secret", secret, False))
        base = url.split("?", 1)[0]
        if base != "https://oapi.dingtalk.com/robot/send":
            conf["api_url"] = base
        return conf
    if kind == "aliyun_sms":
        conf = {"name": "duty", "type": "aliyun_sms",
                "access_key_id_file": str(w.secret("aliyun.key-id", a.ask("sms_key_id", args.sms_key_id), False)),
                "access_key_secret_file": str(w.secret("aliyun.key-secret", a.ask("sms_key_secret", args.sms_key_secret),
                                                       False)),
                "sign_name": a.ask("sms_sign", args.sms_sign),
                "template_code": a.ask("sms_template", args.sms_template,
                                       check=lambda v: None if v.startswith("SMS_") and v[4:].isdigit() else "SMS_123456"),
                "phone_numbers": [x.strip() for x in a.ask("phones", args.phones, check=_phones).split(",") if x.strip()]}
        return conf
    if kind == "gsm_modem":
        return {"name": "duty", "type": "gsm_modem", "port": a.ask("modem_port", args.modem_port, "/dev/ttyUSB0"),
                "phone_numbers": [x.strip() for x in a.ask("phones", args.phones, check=_phones).split(",") if x.strip()]}
    return None


def run_setup(args: argparse.Namespace) -> int:
    """The whole first run; exit 0 done (test message delivered or not asked), 1 not delivered, 2 bad input/config."""
    started = time.monotonic()
    lang = _lang(args.lang)
    a = Asker(lang, interactive=not args.yes)
    out = a.out
    out(a.t("hello"))
    etc, state = Path(args.etc), Path(args.state)
    w = Writer(etc, out, a.t)
    role = a.ask("role", args.role, "both", _one_of(("agent", "collector", "both")))
    site = a.ask("site", args.site, "site-1", _name)
    room = a.ask("room", args.room, "room-1", _name) if role != "collector" else (args.room or "")
    agent_id = args.agent_id or (f"{site}-{room}" if role != "collector" else f"{site}-room-1")
    files: list[Path] = []
    if role in ("agent", "both"):
        url = ("http://127.0.0.1:9640" if role == "both" and args.collector_url is None
               else a.ask("collector_url", args.collector_url, check=_url))
        args.collector_url = url
        if role == "agent":
            token = a.ask("token", args.token, check=lambda v: None if len(v) >= 16 else "at least 16 characters")
            w.secret("agent-token", token, keep=False)
        else:
            w.secret("agent-token", secrets.token_urlsafe(32))
        agent = {"agent": {"id": agent_id, "site": site, "room": room, "listen": "127.0.0.1:9641",
                           "spool": str(state / "agent-spool.db")},
                 "collector": {"urls": [url.rstrip("/")],
                               "token_file": f"${{CREDENTIALS_DIRECTORY:-{etc}}}/agent-token"},
                 "host": {"enabled": True}, "devices": []}
        found = ""
        if not (etc / "agent.yaml").exists() or args.force:  # (a kept file keeps its devices: do not scan for nothing)
            found = _discover(a, args)
        if found:
            del agent["devices"]  # discover's own text instead: each entry with what was read, as comments
        w.config("agent.yaml", agent, args.force, tail=found)
        files.append(etc / "agent.yaml")
    channel = None
    if role in ("collector", "both"):
        if role == "both":
            token = (etc / "agent-token").read_text(encoding="utf-8").strip()
        else:  # the first remote agent's token, printed for its own setup
            token = w.secret("first-agent.token", secrets.token_urlsafe(32)).read_text(encoding="utf-8").strip()
        channel = _channel(a, args, w)
        listen = args.listen or ("127.0.0.1:9640" if role == "both" else "0.0.0.0:9640")
        coll: dict[str, Any] = {"listen": listen, "storage": str(state / "collector.db"),
                                "agents": [{"id": agent_id, "token_hash": _hash(token)}],
                                "channels": [channel] if channel else [],
                                "routes": [{"channels": ["duty"]}] if channel else [],
                                "web": {"language": lang}}
        w.config("collector.yaml", coll, args.force)
        files.append(etc / "collector.yaml")
    return _finish(a, args, files, role, channel, agent_id, started)


def _finish(a: Asker, args: argparse.Namespace, files: list[Path], role: str, channel: dict[str, Any] | None,
            agent_id: str, started: float) -> int:
    from roomwatch.core.configbase import ConfigError

    out = a.out
    for f in files:
        try:
            if f.name == "agent.yaml":
                from roomwatch.agent.config import load_agent_config

                load_agent_config(str(f))
            else:
                from roomwatch.collector.config import load_collector_config

                load_collector_config(str(f))
        except ConfigError as exc:
            out(str(exc))
            return 2
    out(a.t("checked"))
    code = 0
    if role in ("collector", "both") and channel and not args.no_test:
        out(a.t("sending"))
        import subprocess

        r = subprocess.run([sys.executable, "-m", "roomwatch", "test-alert", "-c", str(Path(args.etc) / "collector.yaml"),
                            "--channel", "duty", "--lang", "zh-CN" if a.i == 0 else "en"],
                           capture_output=True, text=True, check=False)
        if r.returncode == 0:
            out(a.t("sent"))
        else:
            out(a.t("not_sent") + (r.stdout + r.stderr).strip())
            code = 1
    elif role in ("collector", "both"):
        out(a.t("no_channel"))
    if role == "agent":
        _probe(a, args)
    if role != "collector" and not getattr(args, "found_devices", 0):
        out(a.t("devices"))
    if role == "collector":
        token = (Path(args.etc) / "first-agent.token").read_text(encoding="utf-8").strip()
        out(f"{a.t('give_token')}\n  sudo roomwatch setup --role agent --agent-id {agent_id} "
            f"--collector-url http://<{'this-host'}>:9640 --token {token}")
    units = {"agent": "roomwatch-agent", "collector": "roomwatch-collector",
             "both": "roomwatch-collector roomwatch-agent"}[role]
    out(f"{a.t('next')} sudo systemctl enable --now {units}")
    out(f"{a.t('elapsed')} {time.monotonic() - started:.1f} s")
    return code


def _probe(a: Asker, args: argparse.Namespace) -> None:
    import urllib.request

    url = (args.collector_url or "").rstrip("/") + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            a.out(f"{a.t('reach')} {url} ({resp.status})")
    except OSError as exc:
        a.out(f"{a.t('no_reach')}{url}: {exc}")


def discover_argv(where: str) -> list[str]:
    """``roomwatch discover`` arguments for the setup answer ``where``.

    Words are sorted by their look: ``nut:HOST`` → ``--nut``, ``mqtt(s)://`` → ``--mqtt``,
    ``/dev/…``, ``tcp://`` or ``modbus:HOST`` → ``--modbus``, anything else (an address, a CIDR
    block, a range) → ``--snmp``. An answer starting with ``--`` is discover's own options.
    """
    words = shlex.split(where)
    if not words or words[0].startswith("--"):
        return words
    argv: list[str] = []
    for w in words:
        low = w.lower()
        if low.startswith("nut:"):
            argv += ["--nut", w[4:]]
        elif low.startswith(("mqtt://", "mqtts://")):
            argv += ["--mqtt", w]
        elif low.startswith("modbus:"):
            argv += ["--modbus", w[7:]]
        elif low.startswith(("/dev/", "tcp://", "rtu-over-tcp://")):
            argv += ["--modbus", w]
        else:
            argv += ["--snmp", w]
    return argv


def _discover(a: Asker, args: argparse.Namespace) -> str:
    """Run ``roomwatch discover`` for the answer to the "discover" question: its YAML, or "" (said why)."""
    where = a.ask("discover", args.discover, optional=True).strip()
    if not where:
        return ""
    import subprocess

    import yaml

    a.out(a.t("discovering"))
    try:
        r = subprocess.run([sys.executable, "-m", "roomwatch", "discover", *discover_argv(where)],
                           capture_output=True, text=True, check=False, timeout=600)
    except (subprocess.TimeoutExpired, ValueError) as exc:  # ValueError: shlex, an unclosed quote
        a.out(f"{a.t('found_none')}{exc}")
        return ""
    try:
        devices = (yaml.safe_load(r.stdout) or {}).get("devices") or [] if r.returncode in (0, 1) else []
    except yaml.YAMLError:
        devices = []
    if not devices:
        a.out(a.t("found_none") + (r.stderr.strip().splitlines() or ["-"])[-1])
        return ""
    args.found_devices = len(devices)
    a.out(a.t("found") + ", ".join(str(d.get("name")) for d in devices))
    a.out(a.t("found_hint"))
    return r.stdout
