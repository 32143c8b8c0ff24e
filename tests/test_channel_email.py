"""The email channel against a real SMTP server (aiosmtpd): STARTTLS or implicit TLS with a self-signed
certificate, AUTH, and a message that decodes to the Chinese text."""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from roomwatch.channels.base import Outcome, remember_progress
from roomwatch.channels.mail import EmailChannel, EmailConfig
from tests.channel_helpers import assert_no_leak, notification
from tests.helpers import free_port
from tests.peers.smtp import SmtpServer

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

USER, PASSWORD = "alert@example.cn", "ab12cd34ef56gh78"  # QQ/163 style app authorization code


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    started: list[SmtpServer] = []

    def start(mode: str = "starttls") -> SmtpServer:
        srv = SmtpServer(tmp_path, mode, {USER: PASSWORD}).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def channel(srv: SmtpServer, **over: Any) -> EmailChannel:
    conf = {"name": "mail", "type": "email", "host": "127.0.0.1", "port": srv.port, "username": USER, "password": PASSWORD,
            "from": "机房监控 <alert@example.cn>", "to": ["duty@example.cn", "boss@example.cn"], "ca_file": str(srv.cert),
            "timeout": "5s", **over}
    return EmailChannel(EmailConfig.model_validate(conf))


def decoded(srv: SmtpServer, index: int = -1) -> email.message.EmailMessage:
    raw = srv.handler.envelopes[index].original_content
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_delivers_utf8_message(servers: Any, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    srv = servers(mode)
    ch = channel(srv, tls=mode)
    res = await ch.send(notification())
    await ch.close()
    assert res.outcome is Outcome.DELIVERED, res
    env = srv.handler.envelopes[0]
    assert env.rcpt_tos == ["duty@example.cn", "boss@example.cn"] and env.mail_from == "alert@example.cn"
    msg = decoded(srv)
    assert msg["Subject"] == "【严重】机房温度过高"
    assert "=?utf-8?" in env.original_content.decode("ascii").lower()  # RFC 2047 on the wire, 7-bit clean
    body = msg.get_content().replace("\r\n", "\n").rstrip("\n")  # MIME canonical text has CRLF line ends
    assert body == "【严重】机房温度过高\n" + notification().text
    assert msg["From"].addresses[0].display_name == "机房监控"
    assert_no_leak([PASSWORD], [res], caplog)


async def test_wrong_password_gives_up(servers: Any, caplog: pytest.LogCaptureFixture) -> None:
    srv = servers("starttls")
    ch = channel(srv, password="wrong-code-0000")
    res = await ch.send(notification())
    assert res.outcome is Outcome.GIVE_UP and "535" in res.detail and "authorization code" in res.detail
    assert not srv.handler.envelopes
    assert_no_leak([PASSWORD, "wrong-code-0000"], [res], caplog)


async def test_tls_problems_give_up(servers: Any, caplog: pytest.LogCaptureFixture) -> None:
    srv = servers("starttls")
    results = [await channel(srv, ca_file=None).send(notification())]  # self-signed, not trusted
    assert results[-1].outcome is Outcome.GIVE_UP and "certificate" in results[-1].detail
    plain = servers("plain")
    results.append(await channel(plain).send(notification()))  # STARTTLS required but not offered
    assert results[-1].outcome is Outcome.GIVE_UP and "STARTTLS" in results[-1].detail
    assert not plain.handler.envelopes  # the password was not sent in clear either
    assert_no_leak([PASSWORD], results, caplog)


async def test_refused_recipients(servers: Any, caplog: pytest.LogCaptureFixture) -> None:
    """5xx for an address: it never gets it (partial, logged); 4xx: only that address is tried again."""
    srv = servers("starttls")
    srv.handler.refuse = {"boss@example.cn": "550 5.1.1 no such user"}
    with caplog.at_level(logging.WARNING):
        res = await channel(srv).send(notification())
    assert res.outcome is Outcome.PARTIAL and "boss@example.cn 550" in res.detail  # one of two got it
    assert "boss@example.cn will not get this notification" in caplog.text
    srv.handler.refuse = {"duty@example.cn": "451 4.3.0 try again later", "boss@example.cn": "451 4.3.0 try again later"}
    res = await channel(srv).send(notification())
    assert res.outcome is Outcome.RETRY
    srv.handler.refuse = {"duty@example.cn": "550 no", "boss@example.cn": "550 no"}
    res = await channel(srv).send(notification())
    assert res.outcome is Outcome.GIVE_UP
    # one mailbox full for now: the other has it; the retry goes to the full one only
    srv.handler.envelopes.clear()
    srv.handler.refuse = {"boss@example.cn": "452 4.2.2 mailbox full"}
    n = notification()
    res = await channel(srv).send(n)
    assert res.outcome is Outcome.RETRY and remember_progress(n, res)
    srv.handler.refuse = {}
    res = await channel(srv).send(n)
    assert res.outcome is Outcome.DELIVERED
    assert [e.rcpt_tos for e in srv.handler.envelopes] == [["duty@example.cn"], ["boss@example.cn"]]


async def test_unreachable_server_is_retried() -> None:
    conf = EmailConfig.model_validate({"name": "m", "type": "email", "host": "127.0.0.1", "port": free_port(),
                                       "from": "a@example.cn", "to": ["b@example.cn"], "timeout": "2s"})
    res = await EmailChannel(conf).send(notification())
    assert res.outcome is Outcome.RETRY


def test_config_rules() -> None:
    base = {"name": "m", "type": "email", "host": "smtp.qq.com", "from": "a@qq.com", "to": ["b@qq.com"]}
    assert EmailConfig.model_validate({**base, "port": 465}).mode == "implicit"
    assert EmailConfig.model_validate(base).mode == "starttls"
    with pytest.raises(ValidationError, match="password in clear"):
        EmailConfig.model_validate({**base, "tls": "none", "username": "a", "password": "p"})
    with pytest.raises(ValidationError, match="both username and password"):
        EmailConfig.model_validate({**base, "username": "a"})
