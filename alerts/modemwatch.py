"""The GSM modem watched while idle, and SMS replies read from it.

One watcher per serial port that a ``gsm_modem`` or ``gsm_call`` channel names:

* every ``check_interval`` (3 min by default): ``AT``, ``AT+CPIN?`` (SIM), ``AT+CSQ`` (signal),
  ``AT+CREG?`` (registration) through :meth:`~roomwatch.channels.gsm_modem.Modem.check`. A
  failed check marks the port's channels as failing at once, with the reason — so
  ``NotificationChannelFailing`` goes out through the other channels within one interval, not
  during the outage the modem was bought for — and a passing one clears it.
  ``roomwatch_modem_signal_dbm`` and ``roomwatch_modem_registered`` show the last check.
* with ``replies: true`` on a ``gsm_modem`` channel, every ``reply_poll`` (and soon after a
  ``+CMTI`` notice): the stored SMS (``AT+CMGL=4``) are read, each handed to the reply
  callback on the event loop, deleted (``AT+CMGD``), and the callback's answer sent back. A
  message from a number the collector does not send to gets no answer (the callback returns None).

Serial I/O runs in a worker thread under the port's lock (shared with the channels); the
callbacks run on the loop, where the alert state lives. Tests call :meth:`ModemWatch.check_once`
and :meth:`ModemWatch.poll_once` directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from roomwatch.channels.gsm_modem import Modem, ModemError, ModemStatus, get_modem, release_modem
from roomwatch.channels.sms_pdu import Deliver

__all__ = ["MODEM_TYPES", "ModemWatch", "build_watches"]

log = logging.getLogger("roomwatch.alerts.modemwatch")

MODEM_TYPES = ("gsm_modem", "gsm_call")
#: Parts of a long reply still incomplete after this many reads are dropped.
MAX_PARTIAL_READS = 10


class ModemWatch:
    """Checks one port and reads its replies."""

    def __init__(self, configs: list[Any], on_status: Callable[[list[str], ModemStatus], None],
                 on_reply: Callable[[str, str, str], str | None]):
        self.configs = configs
        self.names = [c.name for c in configs]
        sms = [c for c in configs if c.type == "gsm_modem"]
        self.cfg = sms[0] if sms else configs[0]  # set-up (PIN, init commands) and replies go through this one
        self.port = self.cfg.port
        self.replies = any(getattr(c, "replies", False) for c in sms)
        intervals = [c.check_interval for c in configs if c.check_interval > 0]
        self.check_interval = min(intervals) if intervals else 0.0
        self.reply_poll = min((c.reply_poll for c in sms if c.replies), default=15.0)
        self.on_status = on_status
        self.on_reply = on_reply
        self.modem: Modem = get_modem(self.port, self.cfg.baudrate)
        self.status: ModemStatus | None = None
        self.checked_at: float | None = None
        self.replies_handled = 0
        self._partial_reads: dict[tuple[str, int], int] = {}
        self._task: asyncio.Task[None] | None = None

    # -- one step each --------------------------------------------------------------
    def _check_blocking(self) -> ModemStatus:
        with self.modem.lock:
            return self.modem.check(self.cfg)

    async def check_once(self) -> ModemStatus:
        """Check the modem now; report the result to ``on_status``."""
        status = await asyncio.to_thread(self._check_blocking)
        self.status, self.checked_at = status, time.time()
        if not status.ok:
            log.warning("modem %s: %s", self.port, status.reason)
        self.on_status(self.names, status)
        return status

    def _read_blocking(self) -> list[tuple[list[int], Deliver]]:
        with self.modem.lock:
            stored = self.modem.read_inbox(self.cfg)
        whole: list[tuple[list[int], Deliver]] = []
        parts: dict[tuple[str, int], list[tuple[int, Deliver]]] = {}
        for index, d in stored:
            if d.ref is None or d.total <= 1:
                whole.append(([index], d))
            else:
                parts.setdefault((d.sender, d.ref), []).append((index, d))
        for key, got in parts.items():
            seqs = {d.seq for _, d in got}
            total = got[0][1].total
            reads = self._partial_reads[key] = self._partial_reads.get(key, 0) + 1
            if seqs == set(range(1, total + 1)) or reads >= MAX_PARTIAL_READS:
                text = "".join(d.text for _, d in sorted(got, key=lambda p: p[1].seq))
                whole.append(([i for i, _ in got], Deliver(key[0], text)))
                self._partial_reads.pop(key, None)
        return whole

    def _answer_blocking(self, done: list[tuple[list[int], str, str | None]]) -> None:
        with self.modem.lock:
            for indexes, sender, answer in done:
                for index in indexes:
                    self.modem.delete(index, self.cfg)
                if answer:
                    try:
                        self.modem.send_text(sender, answer, self.cfg)
                    except ModemError as exc:
                        log.warning("modem %s: the answer to %s was not sent: %s", self.port, sender, exc)

    async def poll_once(self) -> int:
        """Read the stored SMS, act on each, delete them and answer; the number of messages handled."""
        try:
            messages = await asyncio.to_thread(self._read_blocking)
        except ModemError as exc:
            log.info("modem %s: inbox not read: %s", self.port, exc)
            return 0
        done = []
        for indexes, d in messages:
            try:
                answer = self.on_reply(d.sender, d.text, self.cfg.name)
            except Exception:  # a bug must not leave the message to be read again and again
                log.exception("modem %s: the reply from %s failed", self.port, d.sender)
                answer = None
            done.append((indexes, d.sender, answer))
        if done:
            try:
                await asyncio.to_thread(self._answer_blocking, done)
            except ModemError as exc:
                log.warning("modem %s: replies handled, but deleting or answering failed: %s", self.port, exc)
        self.replies_handled += len(done)
        return len(done)

    # -- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        next_check = 0.0
        while True:
            now = time.monotonic()
            if self.check_interval and now >= next_check:
                try:
                    await self.check_once()
                except Exception:
                    log.exception("modem %s: check failed", self.port)
                next_check = now + self.check_interval
            if self.replies:
                try:
                    await self.poll_once()
                except Exception:
                    log.exception("modem %s: reading replies failed", self.port)
            waits = [self.reply_poll] if self.replies else []
            if self.check_interval:
                waits.append(max(0.0, next_check - time.monotonic()))
            await asyncio.sleep(min(waits) if waits else 3600.0)

    def start(self) -> None:
        if (self.check_interval or self.replies) and self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"modem-watch-{self.port}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.to_thread(release_modem, self.modem)


def build_watches(channel_configs: list[Any], on_status: Callable[[list[str], ModemStatus], None],
                  on_reply: Callable[[str, str, str], str | None]) -> list[ModemWatch]:
    """One watcher per port named by a modem channel that checks or reads replies."""
    by_port: dict[str, list[Any]] = {}
    for c in channel_configs:
        if c.type in MODEM_TYPES:
            by_port.setdefault(c.port, []).append(c)
    watches = []
    for configs in by_port.values():
        if any(c.check_interval > 0 or getattr(c, "replies", False) for c in configs):
            watches.append(ModemWatch(configs, on_status, on_reply))
    return watches
