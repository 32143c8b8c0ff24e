"""A GSM/4G modem ringing a phone (``ATD<number>;``, hung up with ``ATH``): no speech, the ring wakes the person.

Standards: ITU-T V.250 (``ATD``, ``ATH``; a trailing ``;`` makes it a voice call), 3GPP TS 27.007
§7.18 (``AT+CLCC``: the calls in progress as ``+CLCC: <id>,<dir>,<stat>,<mode>,<mpty>,<number>,<type>``,
stat 2 dialing, 3 alerting, 0 active) and §6.5 (``AT+CHUP``). Most modules (Quectel, SIMCom, Huawei)
answer ``OK`` to a voice ``ATD`` at once and report the call's end as ``NO CARRIER``/``BUSY``/``NO ANSWER``.

The channel dials each number in turn, polls ``AT+CLCC`` once a second, and hangs up once the
phone rang for ``ring_for`` (or at once when someone answers: there is nothing to say, the SMS
channel of the route says why). A call that rang (alerting or answered, or rejected while
ringing) is delivered; one that never rang (no network, switched off, unknown number) is
retried for that number alone. It shares the port with the ``gsm_modem`` SMS channel (one
:class:`~roomwatch.channels.gsm_modem.Modem` per port, one AT exchange at a time). Collector and
agent alike can use it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from roomwatch.channels.aliyun_voice import firing_only
from roomwatch.channels.base import Channel, Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import Redactor
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.gsm_modem import Modem, ModemError, get_modem, release_modem
from roomwatch.channels.recipients import Failure, Recipients, addressed
from roomwatch.core.configbase import Duration, Secret, iter_secret_values

__all__ = ["CallReport", "GsmCallChannel", "GsmCallConfig", "ring"]

log = logging.getLogger("roomwatch.channels.gsm_call")

#: Result codes that end a call (or a dial attempt); as answers to ATD they are final, later they are notices.
_CALL_END = {"NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE"}
_CLCC = re.compile(r'^\+CLCC:\s*(\d+)\s*,\s*(\d)\s*,\s*(\d)\s*,')
POLL = 1.0  # s between AT+CLCC polls


class GsmCallConfig(ChannelBase):
    """The modem's AT port and who to ring, for how long."""

    type: Literal["gsm_call"]
    send_resolved: bool = False  # nobody is rung for a resolution
    port: str = Field(min_length=1)
    baudrate: int = Field(default=115200, ge=300)
    #: Numbers to ring; may be empty when the channel is used only through duty rotas (oncall: targets).
    phone_numbers: list[str] = Field(default_factory=list, max_length=20)
    pin: Secret | None = None
    smsc: str | None = None
    #: Let the phone ring this long, then hang up (a phone's voicemail usually takes over after 20–30 s).
    ring_for: Duration = Field(default=25.0, ge=1, le=120)
    #: Longest wait for the network to start a call (dialing → alerting), and the outbox's bound per number.
    send_timeout: Duration = Field(default=60.0, gt=0)
    init_commands: list[str] = Field(default_factory=list)
    check_interval: Duration = Field(default=180.0, ge=0)

    @field_validator("phone_numbers")
    @classmethod
    def _numbers(cls, numbers: list[str]) -> list[str]:
        for num in numbers:
            if not num.lstrip("+").isdigit():
                raise ValueError(f"{num!r} is not a phone number (e.g. +8613800138000)")
        return numbers

    @model_validator(mode="after")
    def _times(self) -> GsmCallConfig:
        if self.ring_for >= self.send_timeout:
            raise ValueError(f"ring_for ({self.ring_for:g}s) must be shorter than send_timeout ({self.send_timeout:g}s)")
        return self


@dataclass(slots=True)
class CallReport:
    """What one call did."""

    rang: bool = False  # the callee's phone rang (alerting), or it was answered
    answered: bool = False
    end: str = ""  # how it ended: hung up (ATH), NO CARRIER, BUSY … from the network
    seconds: float = 0.0

    def text(self) -> str:
        how = "answered, hung up" if self.answered else "rang, hung up" if self.rang and self.end == "ATH" else (
            f"rang, ended by the callee ({self.end})" if self.rang else f"did not ring ({self.end or 'no call'})")
        return f"{how} after {self.seconds:.0f}s"


def _clcc(modem: Modem, timeout: float) -> tuple[list[int], list[str]]:
    """States of our (mobile-originated) calls, and call-end notices read meanwhile."""
    modem._write(b"AT+CLCC\r")
    deadline = time.monotonic() + timeout
    states: list[int] = []
    notices: list[str] = []
    while True:
        line = modem._line(deadline)
        if line == "OK":
            return states, notices
        if line == "ERROR" or line.startswith("+CME ERROR"):
            raise ModemError(f"AT+CLCC: {line}")
        m = _CLCC.match(line)
        if m and m.group(2) == "0":
            states.append(int(m.group(3)))
        elif line in _CALL_END:
            notices.append(line)


def ring(modem: Modem, number: str, cfg: Any, clock: Any = time.monotonic) -> CallReport:
    """Dial ``number``, let it ring for ``cfg.ring_for``, hang up. Call with ``modem.lock`` held.

    Raises :class:`ModemError` when the modem refuses or stops answering.
    """
    modem.prepare(cfg)
    report = CallReport()
    start = clock()
    modem._write(f"ATD{number};\r".encode("ascii"))
    deadline = time.monotonic() + cfg.timeout
    while True:
        line = modem._line(deadline)
        if line == "OK":
            break
        if line in _CALL_END or line == "ERROR" or line.startswith("+CME ERROR"):
            report.end = line
            report.seconds = clock() - start
            return report
    try:
        while clock() - start < cfg.send_timeout:
            states, notices = _clcc(modem, cfg.timeout)
            if 3 in states or 0 in states:
                report.rang = True
            if 0 in states:
                report.answered = True
                break  # someone answered: nothing to say, the SMS says why
            if not states:
                report.end = notices[-1] if notices else "NO CARRIER"
                break
            if report.rang and clock() - start >= cfg.ring_for:
                break
            time.sleep(POLL)
    finally:
        if not report.end:
            try:
                modem.command("ATH", cfg.timeout)
                report.end = "ATH"
            except ModemError:
                modem.command("AT+CHUP", cfg.timeout)  # modules that keep ATH for data calls
                report.end = "ATH"
        report.seconds = clock() - start
    if not report.rang and report.end == "ATH":
        report.end = f"no ring within {cfg.send_timeout:g}s"
    return report


@register_channel
class GsmCallChannel(Channel):
    """Rings each number in turn; a number whose phone rang is done, the others are retried."""

    type = "gsm_call"
    config_model = GsmCallConfig
    person_key = "phone"
    calls = True
    config: GsmCallConfig

    def __init__(self, config: GsmCallConfig):
        super().__init__(config)
        self.redact = Redactor(iter_secret_values(config))
        self.modem = get_modem(config.port, config.baudrate)
        self._closed = False

    def _ring_blocking(self, pending: list[str]) -> tuple[list[str], list[Failure], list[str]]:
        ok: list[str] = []
        failures: list[Failure] = []
        reports: list[str] = []
        with self.modem.lock:
            for number in pending:
                try:
                    report = ring(self.modem, number, self.config)
                except ModemError as exc:
                    self.modem.ready = False
                    reason = self.redact(str(exc))
                    failures += [Failure(n, reason, exc.outcome is Outcome.RETRY) for n in pending
                                 if n not in ok and n not in {f.recipient for f in failures}]
                    break
                reports.append(f"{number}: {report.text()}")
                if report.rang:
                    ok.append(number)
                else:
                    failures.append(Failure(number, report.text(), True, 60.0))
        return ok, failures, reports

    async def send(self, notification: Notification) -> SendResult:
        if not firing_only(notification):
            return SendResult(Outcome.DELIVERED, "nothing to call for: no firing alert")
        who = Recipients(notification, addressed(notification, "phone", self.config.phone_numbers))
        if not who.pending and not who.reached:
            return SendResult(Outcome.GIVE_UP, "no number to ring (the person on duty has no phone)")
        ok, failures, reports = await asyncio.to_thread(self._ring_blocking, who.pending)
        r = who.settle(ok, failures, log, self.name)
        detail = "; ".join(reports) + (f"; {r.detail}" if reports else r.detail)
        log.debug("%s %s: %s", self.name, r.outcome.value, detail)
        return SendResult(r.outcome, detail, r.retry_after, r.progress)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(release_modem, self.modem)
