"""SMS through a GSM/4G modem on a serial line (AT commands, PDU mode): works with the internet link down.

Standards: 3GPP TS 27.005 (AT+CMGF/AT+CMGS, +CMS ERROR codes §3.2.5), TS 27.007 (+CPIN, +CREG,
+CMEE); PDUs in :mod:`roomwatch.channels.sms_pdu`; CHANNELS.md §7. Serial I/O is pyserial in a worker
thread. Each port has one owner (:class:`Modem`), shared by every channel that names the port and
serialised by a lock. No collector imports: the agent can use this channel on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from roomwatch.channels.base import Channel, Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import Redactor, message_text
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.recipients import Failure, Recipients, addressed
from roomwatch.channels.sms_pdu import Deliver, decode_deliver, encode_sms, fit_text
from roomwatch.core.configbase import Duration, Secret, iter_secret_values

__all__ = ["GsmModemChannel", "GsmModemConfig", "Modem", "ModemError", "ModemStatus", "get_modem", "release_modem"]

log = logging.getLogger("roomwatch.channels.gsm_modem")

CTRL_Z, ESC = b"\x1a", b"\x1b"
#: +CMS ERROR codes that do not heal by themselves (TS 27.005 §3.2.5, TS 24.011 causes): a wrong number,
#: barring, an invalid PDU (often a wrong CMGS length), SIM missing/locked. Every other code (330 SMSC unknown,
#: 331 no network, 332 network timeout, 38 network out of order, 42 congestion, 500 unknown …) is retried.
CMS_GIVE_UP = {1, 8, 10, 21, 29, 96, 97, 98, 99, 111, 127, 195, 196, 302, 303, 304, 305, 310, 311, 312, 313, 315, 316,
               317, 318}
_FINAL = re.compile(r"^(OK|ERROR|NO CARRIER|\+CM[ES] ERROR:.*)$")


class ModemError(Exception):
    """The modem answered with an error, said something unexpected, or did not answer in time."""

    def __init__(self, message: str, outcome: Outcome = Outcome.RETRY):
        super().__init__(message)
        self.outcome = outcome


class GsmModemConfig(ChannelBase):
    """A modem's AT port (e.g. /dev/ttyUSB2, or a pyserial URL such as rfc2217://host:port)."""

    type: Literal["gsm_modem"]
    port: str = Field(min_length=1)
    baudrate: int = Field(default=115200, ge=300)
    phone_numbers: list[str] = Field(min_length=1)
    #: SIM PIN, when the SIM asks for one.
    pin: Secret | None = None
    #: SMS centre; default: the one stored on the SIM.
    smsc: str | None = None
    #: Longest text in SMS parts (67 Chinese characters each); longer texts are cut with an ellipsis.
    max_parts: int = Field(default=4, ge=1, le=10)
    #: How long to wait for +CMGS after the PDU: the network can take tens of seconds.
    send_timeout: Duration = Field(default=60.0, gt=0)
    #: Extra modem-specific commands after the standard set-up (e.g. AT^CURC=0 to quiet Huawei sticks).
    init_commands: list[str] = Field(default_factory=list)
    #: Check the modem while idle this often (AT, signal, registration, SIM; collector only); 0s = never.
    check_interval: Duration = Field(default=180.0, ge=0)
    #: Read SMS sent to the modem: a recipient's reply "1", "ACK 4821" or "确认 4821" acknowledges (collector only).
    replies: bool = False
    #: How often the modem's inbox is read for replies (a +CMTI notice makes it sooner).
    reply_poll: Duration = Field(default=15.0, gt=0)

    @field_validator("phone_numbers")
    @classmethod
    def _numbers(cls, numbers: list[str]) -> list[str]:
        for num in numbers:
            if not num.lstrip("+").isdigit():
                raise ValueError(f"{num!r} is not a phone number (e.g. +8613800138000)")
        return numbers


class Modem:
    """The owner of one serial port: opens it on first use, knows whether the modem is set up."""

    #: Seconds the SIM needs after AT+CPIN="…" before it registers.
    PIN_SETTLE = 2.0

    def __init__(self, port: str, baudrate: int):
        self.port, self.baudrate = port, baudrate
        self.lock = threading.Lock()  # one AT exchange at a time, across threads and event loops
        self.users = 0
        self.ready = False
        self._ser: Any = None
        self._buf = b""
        self._ref = random.randrange(256)

    def next_ref(self) -> int:
        self._ref = (self._ref + 1) % 256
        return self._ref

    # ------------------------------------------------------------ wire

    def _open(self) -> None:
        if self._ser is None:
            import serial  # lazily: the agent only pays for pyserial when it uses a modem

            try:
                self._ser = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.1, write_timeout=5)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise ModemError(f"cannot open {self.port}: {exc}") from None
            self._buf = b""
            self.ready = False

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            finally:
                self._ser, self.ready = None, False

    def _write(self, data: bytes) -> None:
        try:
            self._ser.write(data)
            self._ser.flush()
        except Exception as exc:  # pyserial raises SerialException/SerialTimeoutException/OSError
            self.close()
            raise ModemError(f"write to {self.port} failed: {exc}") from None

    def _line(self, deadline: float) -> str:
        """The next non-empty line, or ``>`` for the PDU prompt (which has no line end)."""
        while True:
            head, sep, rest = self._buf.partition(b"\n")
            if sep:
                self._buf = rest
                text = head.strip(b"\r ").decode("ascii", errors="replace")
                if text:
                    return text
                continue
            if self._buf.lstrip(b"\r\n").startswith(b">"):
                self._buf = b""
                return ">"
            left = deadline - time.monotonic()
            if left <= 0:
                raise ModemError("no answer from the modem in time")
            try:  # the port's read timeout is 0.1 s: wait in short steps, check the deadline between them
                self._buf += self._ser.read(self._ser.in_waiting or 1)
            except Exception as exc:
                self.close()
                raise ModemError(f"read from {self.port} failed: {exc}") from None

    def _final(self, deadline: float, prompt: bool = False) -> tuple[str, list[str]]:
        """Lines up to a final result code (or the ``>`` prompt); unsolicited codes end up in the info list."""
        info: list[str] = []
        while True:
            line = self._line(deadline)
            if (prompt and line == ">") or _FINAL.match(line):
                return line, info
            info.append(line)

    def command(self, cmd: str, timeout: float, secret: bool = False) -> list[str]:
        """Send ``cmd``; return its information lines; raise :class:`ModemError` on an error result."""
        self._write(cmd.encode("ascii") + b"\r")
        final, info = self._final(time.monotonic() + timeout)
        if final != "OK":
            raise ModemError(f"{'AT+CPIN=…' if secret else cmd}: {final}", _outcome(final))
        return info

    # ---------------------------------------------------------- set-up

    def prepare(self, cfg: GsmModemConfig) -> None:
        """Echo off, numeric errors, SIM ready (PIN if asked), registered, PDU mode."""
        self._open()
        if self.ready:
            return
        self._write(ESC)  # leave a half-finished CMGS prompt, if a previous run was cut off there
        time.sleep(0.05)
        self._ser.reset_input_buffer()
        self._buf = b""
        for attempt in range(3):  # the first AT after power-up or autobaud may be lost
            try:
                self.command("AT", min(1.0, cfg.timeout))
                break
            except ModemError:
                if attempt == 2:
                    self.close()  # a re-plugged USB modem is a new device: open the port afresh next time
                    raise
        self.command("ATE0", cfg.timeout)
        self.command("AT+CMEE=1", cfg.timeout)
        state = " ".join(self.command("AT+CPIN?", cfg.timeout))
        if "SIM PIN" in state and cfg.pin is not None:
            self.command(f'AT+CPIN="{cfg.pin.get_secret_value()}"', cfg.timeout, secret=True)
            time.sleep(self.PIN_SETTLE)
            state = " ".join(self.command("AT+CPIN?", cfg.timeout))
        if "READY" not in state:
            raise ModemError(f"SIM not ready: {state or 'no answer'} (set pin: if it asks for a PIN)", Outcome.GIVE_UP)
        if not self._registered(cfg):
            raise ModemError("not registered on a network (no signal, or no service for this SIM)")
        self.command("AT+CMGF=0", cfg.timeout)
        for extra in cfg.init_commands:
            self.command(extra, cfg.timeout)
        self.ready = True

    # ---------------------------------------------------------- health

    def check(self, cfg: Any) -> ModemStatus:
        """Is the modem usable right now? AT, SIM state, signal, registration; never raises."""
        status = ModemStatus()
        try:
            self._open()
            try:
                self.command("AT", min(2.0, cfg.timeout))
            except ModemError:
                self.command("AT", min(2.0, cfg.timeout))  # the first AT after a quiet hour may be lost
            self.command("ATE0", cfg.timeout)  # a modem that reset echoes again
            cpin = [ln for ln in self.command("AT+CPIN?", cfg.timeout) if ln.startswith("+CPIN:")]
            status.sim = cpin[0].split(":", 1)[1].strip() if cpin else "?"
            for line in self.command("AT+CSQ", cfg.timeout):
                m = re.match(r"^\+CSQ:\s*(\d+)\s*,", line)
                if m and int(m.group(1)) <= 31:
                    status.signal_dbm = -113.0 + 2 * int(m.group(1))
            status.registration = self._registration(cfg)
            status.registered = status.registration in {"1", "5"}
        except ModemError as exc:
            self.ready = False
            status.reason = f"modem does not answer: {exc}"
            return status
        if status.sim != "READY":
            status.reason = f"SIM not ready: {status.sim} (no SIM, PIN asked, or blocked)"
        elif not status.registered:
            status.reason = f"not registered on a network: {REGISTRATION.get(status.registration, status.registration)}"
        elif status.signal_dbm is None:
            status.reason = "no signal (AT+CSQ 99)"
        if status.reason:
            self.ready = False
        status.ok = not status.reason
        return status

    def _registration(self, cfg: Any) -> str:
        """The +CREG (or +CEREG) <stat>: 1 home, 5 roaming, 0 not searching, 2 searching, 3 denied, 4 unknown."""
        found = "?"
        for query in ("AT+CREG?", "AT+CEREG?"):
            try:
                for line in self.command(query, cfg.timeout):
                    m = re.match(r"^\+C(?:E)?REG:\s*\d+\s*,\s*(\d+)", line)
                    if m:
                        found = m.group(1)
                        if found in {"1", "5"}:
                            return found
            except ModemError:
                continue
        return found

    # ---------------------------------------------------------- inbox

    def read_inbox(self, cfg: Any) -> list[tuple[int, Deliver]]:
        """Every SMS stored on the modem (AT+CMGL=4 in PDU mode); unreadable PDUs are deleted and skipped."""
        self.prepare(cfg)
        lines = self.command("AT+CMGL=4", max(cfg.timeout, 10.0))
        out: list[tuple[int, Deliver]] = []
        for i, line in enumerate(lines):
            m = re.match(r"^\+CMGL:\s*(\d+)\s*,", line)
            if not m or i + 1 >= len(lines):
                continue
            index = int(m.group(1))
            try:
                out.append((index, decode_deliver(lines[i + 1])))
            except ValueError as exc:
                log.warning("modem %s: SMS %d cannot be read (%s); deleted", self.port, index, exc)
                self.delete(index, cfg)
        return out

    def delete(self, index: int, cfg: Any) -> None:
        self.command(f"AT+CMGD={index}", cfg.timeout)

    def send_text(self, number: str, text: str, cfg: Any) -> None:
        """One SMS (of up to ``max_parts`` parts) to ``number``, e.g. the confirmation of a reply."""
        self.prepare(cfg)
        for part in encode_sms(number, fit_text(text, getattr(cfg, "max_parts", 2)), self.next_ref(), cfg.smsc):
            self.send_part(part.length, part.pdu, cfg)

    def _registered(self, cfg: GsmModemConfig) -> bool:
        """+CREG (or +CEREG for LTE-only modems) stat 1 = home network, 5 = roaming."""
        for query in ("AT+CREG?", "AT+CEREG?"):
            try:
                for line in self.command(query, cfg.timeout):
                    m = re.match(r"^\+C(?:E)?REG:\s*\d+\s*,\s*(\d+)", line)
                    if m and m.group(1) in {"1", "5"}:
                        return True
            except ModemError:
                continue
        return False

    # ------------------------------------------------------------ send

    def send_part(self, length: int, pdu: str, cfg: GsmModemConfig) -> str:
        """One AT+CMGS exchange; returns the message reference from ``+CMGS: <mr>``."""
        self._write(f"AT+CMGS={length}\r".encode())
        final, _ = self._final(time.monotonic() + cfg.timeout, prompt=True)
        if final != ">":
            raise ModemError(f"AT+CMGS={length}: {final}", _outcome(final))
        self._write(pdu.encode("ascii") + CTRL_Z)
        try:
            final, info = self._final(time.monotonic() + cfg.send_timeout)
        except ModemError:
            self._write(ESC)
            self.ready = False
            raise ModemError(f"no +CMGS answer within {cfg.send_timeout:g}s") from None
        if final != "OK":
            raise ModemError(final, _outcome(final))
        return next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("+CMGS:")), "?")


#: +CREG <stat> for people (TS 27.007 §7.2).
REGISTRATION = {"0": "not registered, not searching (no service for this SIM?)", "2": "searching for a network",
                "3": "registration denied (SIM barred or expired?)", "4": "unknown", "?": "no answer to AT+CREG?"}


@dataclass(slots=True)
class ModemStatus:
    """The result of :meth:`Modem.check`."""

    ok: bool = False
    reason: str = ""
    sim: str = ""
    signal_dbm: float | None = None
    registered: bool | None = None
    registration: str = ""


def _outcome(final: str) -> Outcome:
    m = re.match(r"^\+CMS ERROR:\s*(\d+)", final)
    if m:
        return Outcome.GIVE_UP if int(m.group(1)) in CMS_GIVE_UP else Outcome.RETRY
    return Outcome.RETRY


_MODEMS: dict[str, Modem] = {}
_MODEMS_LOCK = threading.Lock()


def get_modem(port: str, baudrate: int) -> Modem:
    """The one :class:`Modem` of ``port``, shared by every user (SMS and call channels, the collector's check)."""
    with _MODEMS_LOCK:
        modem = _MODEMS.setdefault(port, Modem(port, baudrate))
        modem.users += 1
        return modem


def release_modem(modem: Modem) -> None:
    """One user less; the last one closes the port (in the caller's thread: it may wait for the lock)."""
    with _MODEMS_LOCK:
        modem.users -= 1
        last = modem.users <= 0
        if last and _MODEMS.get(modem.port) is modem:
            del _MODEMS[modem.port]
    if last:
        with modem.lock:
            modem.close()


@register_channel
class GsmModemChannel(Channel):
    """Sends the notification text to each number; parts already sent are not sent again on a retry."""

    type = "gsm_modem"
    config_model = GsmModemConfig
    rate_limit = None  # the modem paces itself: one CMGS at a time, a few seconds each
    max_bytes = None  # limited in parts (max_parts), not bytes
    person_key = "phone"
    config: GsmModemConfig

    def __init__(self, config: GsmModemConfig):
        super().__init__(config)
        self.redact = Redactor(iter_secret_values(config))
        self.modem = get_modem(config.port, config.baudrate)
        self._closed = False
        # notification digest → number → (concatenation ref, parts sent); a retry continues where it stopped
        self._progress: OrderedDict[str, dict[str, tuple[int, set[int]]]] = OrderedDict()

    def _send_blocking(self, key: str, text: str, pending: list[str]) -> tuple[list[str], list[Failure], int]:
        """Send ``text`` to the ``pending`` numbers: (numbers that have it, failures, parts sent now)."""
        cfg = self.config
        ok: list[str] = []
        failures: list[Failure] = []
        sent_now = 0
        with self.modem.lock:
            progress = self._progress.setdefault(key, {})
            self._progress.move_to_end(key)
            while len(self._progress) > 64:
                self._progress.popitem(last=False)
            try:
                self.modem.prepare(cfg)
                for number in pending:
                    ref, done = progress.setdefault(number, (self.modem.next_ref(), set()))
                    try:
                        for part in encode_sms(number, text, ref, cfg.smsc):
                            if part.seq not in done:
                                self.modem.send_part(part.length, part.pdu, cfg)
                                done.add(part.seq)
                                sent_now += 1
                        ok.append(number)
                    except ModemError as exc:
                        if exc.outcome is Outcome.RETRY:
                            raise
                        # this number cannot get it (e.g. CMS 1, unassigned number): the others still can
                        failures.append(Failure(number, self.redact(str(exc)), False))
            except ModemError as exc:
                # the modem or the network: this number and the ones after it are tried again later
                self.modem.ready = False
                sent = sum(len(d) for _, d in progress.values())
                reason = self.redact(f"{exc} ({sent} part(s) sent so far)")
                settled = set(ok) | {f.recipient for f in failures}
                failures += [Failure(n, reason, exc.outcome is Outcome.RETRY) for n in pending if n not in settled]
            if not any(f.retry for f in failures):
                self._progress.pop(key, None)
        return ok, failures, sent_now

    async def send(self, notification: Notification) -> SendResult:
        text = fit_text(message_text(notification), self.config.max_parts)
        key = hashlib.sha256(f"{notification.group_key}\0{text}".encode()).hexdigest()
        # Numbers that already have it (kept with the queued notification, so also across a restart)
        # are not sent it again; parts of a number cut off mid-message are resumed from memory.
        who = Recipients(notification, addressed(notification, "phone", self.config.phone_numbers))
        ok, failures, parts = await asyncio.to_thread(self._send_blocking, key, text, who.pending)
        r = who.settle(ok, failures, log, self.name)
        detail = f"{parts} part(s) sent; {r.detail}"
        log.debug("%s %s: %s", self.name, r.outcome.value, detail)
        return SendResult(r.outcome, detail, r.retry_after, r.progress)

    async def close(self) -> None:
        """Let go of the port; the last channel using it closes it."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(release_modem, self.modem)
