"""E-mail over SMTP (channel type ``email``): STARTTLS on 587, implicit TLS on 465, AUTH, UTF-8.

Uses the standard library's smtplib in a worker thread: no extra dependency, and one
message per notification is far from needing a pooled async client. CHANNELS.md §9.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import Literal

from pydantic import Field, model_validator

from roomwatch.channels.base import Channel, Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import DETAIL_MAX, Redactor, message_text
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.recipients import Failure, Recipients, addressed
from roomwatch.core.configbase import Secret, iter_secret_values

__all__ = ["EmailChannel", "EmailConfig", "build_message"]

log = logging.getLogger("roomwatch.channels.email")


class EmailConfig(ChannelBase):
    """An SMTP submission account. QQ/163/企业邮箱 want an app authorization code (授权码) as the password."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    #: starttls (587), implicit (465, SMTPS) or none (a trusted relay on the local network only).
    #: Unset: implicit on port 465, starttls elsewhere.
    tls: Literal["starttls", "implicit", "none"] | None = None
    username: str | None = None
    password: Secret | None = None
    sender: str = Field(alias="from", min_length=3)
    to: list[str] = Field(min_length=1)
    #: A CA bundle to trust (a private CA or a self-signed server certificate).
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    hello: str | None = Field(default=None, description="name sent in EHLO; default: this host's FQDN")

    @model_validator(mode="after")
    def _auth(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.tls == "none" and self.password is not None:
            raise ValueError("tls: none would send the password in clear; use starttls or implicit")
        return self

    @property
    def mode(self) -> str:
        return self.tls or ("implicit" if self.port == 465 else "starttls")


def build_message(config: EmailConfig, n: Notification) -> EmailMessage:
    """A UTF-8 text/plain message; the subject is RFC 2047-encoded by the SMTP policy."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = n.title or n.text.split("\n", 1)[0]
    msg["From"] = config.sender
    msg["To"] = ", ".join(addressed(n, "email", config.to)) or ", ".join(config.to)
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=config.sender.rpartition("@")[2] or None)
    # base64: 7-bit clean, so no relay needs 8BITMIME to pass Chinese text unchanged.
    msg.set_content(message_text(n), charset="utf-8", cte="base64")
    return msg


class _Failed(Exception):
    def __init__(self, outcome: Outcome, detail: str):
        super().__init__(detail)
        self.outcome = outcome


def _by_code(code: int, what: str) -> _Failed:
    """SMTP reply codes: 4xx is transient (retry), 5xx permanent (give up)."""
    return _Failed(Outcome.RETRY if 400 <= code < 500 else Outcome.GIVE_UP, what)


@register_channel
class EmailChannel(Channel):
    """One message to all ``to`` addresses per notification."""

    type = "email"
    config_model = EmailConfig
    rate_limit = None
    max_bytes = None
    person_key = "email"
    config: EmailConfig

    def __init__(self, config: EmailConfig):
        super().__init__(config)
        self.redact = Redactor(iter_secret_values(config))

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.config.ca_file)
        if self.config.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _send_blocking(self, msg: EmailMessage, to: list[str]) -> dict[str, tuple[int, bytes]]:
        """Send ``msg`` to the ``to`` addresses; the ones the server refused, with its reply."""
        c = self.config
        ctx = self._context()
        smtp: smtplib.SMTP
        if c.mode == "implicit":
            smtp = smtplib.SMTP_SSL(c.host, c.port, local_hostname=c.hello, timeout=c.timeout, context=ctx)
        else:
            smtp = smtplib.SMTP(c.host, c.port, local_hostname=c.hello, timeout=c.timeout)
        with smtp:
            smtp.ehlo()
            if c.mode == "starttls":
                if not smtp.has_extn("starttls"):
                    raise _Failed(Outcome.GIVE_UP, "the server does not offer STARTTLS (set tls: implicit for port 465)")
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if c.username is not None and c.password is not None:
                smtp.login(c.username, c.password.get_secret_value())
            try:
                return smtp.send_message(msg, to_addrs=to)
            except smtplib.SMTPRecipientsRefused as exc:  # every one refused: judged per address like a partial
                return exc.recipients

    async def send(self, notification: Notification) -> SendResult:
        msg = build_message(self.config, notification)
        # Only the addresses that do not have it yet: a retry after one mailbox's 4xx must not
        # send the others a second copy; a 5xx address never gets it and is not retried.
        who = Recipients(notification, addressed(notification, "email", self.config.to))
        if not who.pending and not who.reached:
            return SendResult(Outcome.GIVE_UP, "no address (the person on duty has no email)")
        if not who.pending:
            return self._settled(who, [], [])
        try:
            # smtplib's timeout covers each socket operation; bound the whole exchange as well.
            refused = await asyncio.wait_for(asyncio.to_thread(self._send_blocking, msg, who.pending),
                                             self.config.timeout * 3)
            failures = [Failure(addr, self.redact(f"{code} {_text(reply)}"), 400 <= code < 500)
                        for addr, (code, reply) in refused.items()]
            return self._settled(who, [a for a in who.pending if a not in refused], failures)
        except _Failed as exc:
            outcome, detail = exc.outcome, str(exc)
        except smtplib.SMTPAuthenticationError as exc:
            outcome, detail = Outcome.GIVE_UP, f"login refused: {exc.smtp_code} {exc.smtp_error!r} (check username/password; " \
                                               "QQ/163 mailboxes need the authorization code)"
        except smtplib.SMTPResponseException as exc:
            failed = _by_code(exc.smtp_code, f"{type(exc).__name__}: {exc.smtp_code} {exc.smtp_error!r}")
            outcome, detail = failed.outcome, str(failed)
        except smtplib.SMTPNotSupportedError as exc:
            outcome, detail = Outcome.GIVE_UP, f"not supported by the server: {exc}"
        except ssl.SSLCertVerificationError as exc:
            outcome, detail = Outcome.GIVE_UP, f"server certificate not trusted: {exc.verify_message} (see ca_file)"
        except ssl.SSLError as exc:
            outcome, detail = Outcome.GIVE_UP, f"TLS failed: {exc} (does tls: match the port? 465 implicit, 587 starttls)"
        except TimeoutError:
            outcome, detail = Outcome.RETRY, f"no answer within {self.config.timeout:g}s"
        except (smtplib.SMTPException, OSError) as exc:
            outcome, detail = Outcome.RETRY, f"{type(exc).__name__}: {exc}"
        detail = self.redact(detail)[:DETAIL_MAX]
        log.debug("%s %s: %s", self.name, outcome.value, detail)
        return SendResult(outcome, detail)

    def _settled(self, who: Recipients, ok: list[str], failures: list[Failure]) -> SendResult:
        r = who.settle(ok, failures, log, self.name)
        detail = r.detail[:DETAIL_MAX]
        log.debug("%s %s: %s", self.name, r.outcome.value, detail)
        return SendResult(r.outcome, detail, r.retry_after, r.progress)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
