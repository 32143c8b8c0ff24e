"""Push loop: seal buffered samples into batches and deliver them to the collector.

Every ``push_interval`` (or at once when an event arrives) the buffer becomes
one or more batches with increasing ``seq`` in the :class:`~roomwatch.agent.outbox.Outbox`
(events in batches of their own); batches leave the outbox only on the
collector's 200 (or, counted, on a 400: the collector would refuse them forever). HTTP runs in a worker
thread with :mod:`http.client` (keeps the agent small: no aiohttp import).
Intervals, backoff and stamps read the injected :class:`~roomwatch.core.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import random
import secrets
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from roomwatch import __version__
from roomwatch.agent.config import CollectorTarget
from roomwatch.agent.outbox import MemoryOutbox, Outbox
from roomwatch.core.clock import SYSTEM, Clock
from roomwatch.core.plural import plural
from roomwatch.core.tls import client_context
from roomwatch.core.wire import MAX_EVENTS, PUSH_PATH, Batch, EventRecord, SampleRecord, encode_batch

__all__ = ["PushResult", "Pusher"]

log = logging.getLogger("roomwatch.agent.push")

_MIN_GAP = 0.2  # s between attempts, even when events keep kicking
_REJECT_LOG_EVERY = 60.0  # s: a collector refusing every batch logs one line a minute (each one is counted)
_PLAUSIBLE_US = 946_684_800_000_000  # 2000-01-01: an earlier clock was never set


@dataclass(slots=True)
class PushResult:
    status: int  # HTTP status, 0 = no answer
    reason: str
    retry_after: float | None = None
    #: the reply is the collector's own JSON {"error": …}, not a page from a proxy in between
    from_collector: bool = False
    #: samples of an accepted batch the collector did not store, by reason (a 200's "rejected")
    rejected: dict[str, int] | None = None


def _ssl_context(target: CollectorTarget) -> ssl.SSLContext:
    tls = target.tls
    return client_context(tls.ca_file, tls.cert_file, tls.key_file, tls.insecure_skip_verify)


def _seq_start() -> int:
    """Where a fresh agent numbers its batches from: its clock in µs.

    A clock never set (1970 on a board without a battery-backed clock) would restart the
    count in the same range at every boot, and without a persistent spool the collector
    would drop the new batches as ones it already has; such a boot starts at a random
    point far above any clock's range instead (2**61 µs is the year 75 000)."""
    now_us = time.time_ns() // 1000
    if now_us >= _PLAUSIBLE_US:
        return now_us
    return (1 << 61) + secrets.randbits(60)


class _Sender:
    """One keep-alive connection per collector URL; used from a single worker thread at a time."""

    def __init__(self, target: CollectorTarget):
        self.target = target
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self._ssl = _ssl_context(target) if any(u.startswith("https:") for u in target.urls) else None

    def _conn(self, url: str) -> http.client.HTTPConnection:
        conn = self._conns.get(url)
        if conn is None:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443,
                                                   timeout=self.target.timeout, context=self._ssl)
            else:
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=self.target.timeout)
            self._conns[url] = conn
        return conn

    def post(self, url: str, body: bytes, compressed: bool) -> PushResult:
        path = urllib.parse.urlsplit(url).path.rstrip("/") + PUSH_PATH
        headers = {
            "Authorization": f"Bearer {self.target.token.get_secret_value()}",
            "Content-Type": "application/json",
            "User-Agent": f"roomwatch-agent/{__version__}",
        }
        if compressed:
            headers["Content-Encoding"] = "gzip"
        for attempt in (1, 2):  # a kept-alive socket the server closed fails once; retry on a fresh one
            conn = self._conn(url)
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read(65536)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._conns.pop(url, None)
                if attempt == 2 or isinstance(exc, (TimeoutError, ssl.SSLError, ConnectionRefusedError)):
                    return PushResult(0, f"{type(exc).__name__}: {exc}")
                continue
            reason = ""
            ours = False
            rejected = None
            try:
                doc = json.loads(data) if data else {}
                reason = str(doc.get("error") or doc.get("reason") or "") if isinstance(doc, dict) else ""
                ours = isinstance(doc, dict) and isinstance(doc.get("error"), str)
                if isinstance(doc, dict) and isinstance(doc.get("rejected"), dict):
                    rejected = {str(k): int(n) for k, n in doc["rejected"].items() if isinstance(n, int)}
            except ValueError:
                reason = data[:200].decode("utf-8", "replace")
            retry_after = None
            if resp.status in (429, 503) and (ra := resp.getheader("Retry-After")):
                try:
                    retry_after = float(ra)
                except ValueError:
                    retry_after = None
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                self._conns.pop(url, None)
            return PushResult(resp.status, reason or resp.reason, retry_after, ours, rejected)
        return PushResult(0, "unreachable")

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


class Pusher:
    """Buffers samples/events, seals batches and drains the outbox to the collector."""

    def __init__(self, agent_id: str, target: CollectorTarget, outbox: Outbox | None = None,
                 extra_samples: Callable[[int], list[SampleRecord]] | None = None, clock: Clock = SYSTEM):
        self.agent_id = agent_id
        self.clock = clock
        self.target = target
        self.outbox: Outbox = outbox or MemoryOutbox(target.queue_max_samples)
        self.extra_samples = extra_samples
        self.stats: dict[str, int] = {"ok": 0, "error": 0, "rejected": 0, "duplicate": 0}
        self.last_ok: float | None = None
        self._samples: list[SampleRecord] = []
        self._events: list[EventRecord] = []
        # µs at start, and above the highest seq a persistent spool ever stored: a restarted agent never
        # reuses a seq, even after the clock was set back.
        self._seq = max(_seq_start(), int(getattr(self.outbox, "last_seq", 0)))
        self._kick = asyncio.Event()
        self._sender = _Sender(target)
        self._url_index = 0
        self._on_fallback_since: float | None = None
        self._failures = 0
        self._next_try = 0.0
        self._next_seal = self.clock.monotonic() + target.push_interval
        self._state_ok: bool | None = None
        self._stopping = False
        self._rejects_unlogged = 0
        self._partial_logged_at: float | None = None
        self._reject_logged_at: float | None = None
        #: Called with each batch the collector accepted (200), e.g. so local alerting knows what it has seen.
        self.on_accepted: list[Callable[[Batch], None]] = []

    # -- input ------------------------------------------------------------
    def add(self, samples: list[SampleRecord]) -> None:
        self._samples.extend(samples)

    def add_events(self, events: list[EventRecord]) -> None:
        """Queue events and push them now, not at the next interval."""
        self._events.extend(events)
        self._kick.set()

    def add_notice(self, event: EventRecord) -> None:
        """Queue a ``fallback_notified`` event in a batch of its own and push it now.

        Alone, because the outbox sends such batches ahead of the rest (roomwatch/core/notice.py): the
        collector must learn what the agent already told people before the backlog that raises the
        alert, and buffered samples must not overtake older spooled ones.
        """
        self.outbox.put(Batch(self.agent_id, self.next_seq(), [], [event]))
        self._kick.set()

    def kick(self) -> None:
        self._kick.set()

    # -- batching -----------------------------------------------------------
    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def seal(self) -> None:
        """Move buffered samples and events into the outbox as batches.

        Events go in batches of their own, sealed first, with only the samples of the devices the
        events are about (the door's new value, the UPS's readings of that poll): the collector gets
        the event and the new value in one request. The outbox sends event batches ahead of
        everything and in order; the rest of the interval's samples riding along would jump the
        backlog's pacing after an outage. Alone, the other samples queue as fresh or backlog.
        """
        now_ms = int(self.clock.time() * 1000)
        if self.extra_samples is not None:
            self._samples.extend(self.extra_samples(now_ms))
        samples, events = self._samples, self._events
        self._samples, self._events = [], []
        along: list[SampleRecord] = []
        if events:
            devices = {e.labels.get("device") for e in events} - {None}
            along = [r for r in samples if r.labels.get("device") in devices]
            samples = [r for r in samples if r.labels.get("device") not in devices]
        for start in range(0, len(events), MAX_EVENTS):  # more would be refused as malformed (wire.MAX_EVENTS)
            self.outbox.put(Batch(self.agent_id, self.next_seq(), along if start == 0 else [],
                                  events[start:start + MAX_EVENTS]))
        step = self.target.max_batch_samples
        for start in range(0, len(samples), step):
            self.outbox.put(Batch(self.agent_id, self.next_seq(), samples[start:start + step], []))

    # -- delivery -------------------------------------------------------------
    def _url(self) -> str:
        urls = self.target.urls
        since = self._on_fallback_since
        if self._url_index and since and self.clock.monotonic() - since > self.target.failback_after:
            self._url_index, self._on_fallback_since = 0, None  # give the preferred collector another chance
        return urls[self._url_index % len(urls)]

    def _fail_over(self) -> None:
        if len(self.target.urls) > 1:
            self._url_index = (self._url_index + 1) % len(self.target.urls)
            self._on_fallback_since = self.clock.monotonic() if self._url_index else None

    async def _send(self, batch: Batch) -> PushResult:
        batch.sent = int(self.clock.time() * 1000)
        body = encode_batch(batch, self.target.compress)
        last = PushResult(0, "no collector URL")
        for _ in range(len(self.target.urls)):
            url = self._url()
            last = await asyncio.to_thread(self._sender.post, url, body, self.target.compress)
            if last.status == 0 or last.status >= 500:
                log.debug("push to %s failed: %s", url, last.reason)
                self._fail_over()
                continue
            return last
        return last

    def _split(self, batch: Batch) -> None:
        """413: split the batch in two under fresh seqs (the old seq was never accepted).

        Events and samples part first (a batch sealed by an older agent may hold both); then halves.
        """
        self.outbox.ack(batch.seq)
        samples, events = batch.samples, batch.events
        if samples and events:
            parts = [([], events), (samples, [])]
        elif len(samples) > 1:
            half = len(samples) // 2
            parts = [(samples[:half], []), (samples[half:], [])]
        else:
            half = len(events) // 2
            parts = [([], events[:half]), ([], events[half:])]
        for part_samples, part_events in parts:
            self.outbox.put(Batch(batch.agent, self.next_seq(), part_samples, part_events))

    def _set_state(self, ok: bool, reason: str = "") -> None:
        if ok and self._state_ok is not True:
            if self._state_ok is False:
                log.info("collector reachable again; %s queued", plural(self.outbox.depth(), "batch", "batches"))
        elif not ok and self._state_ok is not False:
            log.warning("cannot push to the collector: %s (will retry with backoff; data is kept)", reason)
        self._state_ok = ok

    async def drain(self) -> bool:
        """Send queued batches until the queue is empty or an attempt fails; True if all went."""
        while True:
            if self.clock.monotonic() >= self._next_seal:  # a long backlog drain must not hold back fresh data
                self.seal()
                self._next_seal = self.clock.monotonic() + self.target.push_interval
            batches = self.outbox.next_batches(1)
            if not batches:
                return True
            batch = batches[0]
            res = await self._send(batch)
            if res.status == 200:
                self.outbox.ack(batch.seq)
                if res.rejected:
                    self._log_partial(batch, res.rejected)
                for hook in self.on_accepted:
                    hook(batch)
                self.stats["ok"] += 1
                self.last_ok = self.clock.time()
                self._failures = 0
                self._set_state(True)
                continue
            if res.status == 413 and len(batch.samples) + len(batch.events) > 1:
                log.warning("collector refused a batch of %d samples and %d events as too large; splitting it",
                            len(batch.samples), len(batch.events))
                self._split(batch)
                continue
            if res.status == 400 and res.from_collector:
                # The one exception to "a batch leaves only on a 200" (docs/reliability.md): the collector
                # would refuse this batch forever (e.g. an older collector with stricter limits), and
                # retrying it would block everything behind it. Dropped, counted and logged, never silent.
                self.outbox.drop(batch.seq, "rejected")
                self.stats["rejected"] += 1
                self._log_rejected(batch, res.reason)
                continue
            self.stats["error"] += 1
            self._failures += 1
            if res.status == 429:
                self._set_state(False, f"collector asks to slow down (HTTP 429, retry after {res.retry_after or '?'}s)")
            elif res.status in (401, 403):
                self._set_state(False, f"HTTP {res.status} {res.reason} (check collector.token and agent.id)")
            elif res.status == 400:  # not the collector's JSON: a proxy or another server; keep the batch
                self._set_state(False, f"HTTP 400 {res.reason[:100]} from something that is not a roomwatch "
                                       "collector (a proxy? http:// to an https:// port?)")
            else:
                self._set_state(False, f"HTTP {res.status} {res.reason}" if res.status else res.reason)
            delay = min(self.target.backoff_max, 2 ** min(self._failures, 6)) * random.uniform(0.5, 1.0)
            if res.retry_after:
                delay = max(delay, res.retry_after)
            self._next_try = self.clock.monotonic() + delay
            return False

    def _log_partial(self, batch: Batch, rejected: dict[str, int]) -> None:
        """The collector stored a batch but not all its samples (its series limits): one line a minute."""
        now = time.monotonic()
        if self._partial_logged_at is not None and now - self._partial_logged_at < _REJECT_LOG_EVERY:
            return
        self._partial_logged_at = now
        what = ", ".join(f"{n} {reason}" for reason, n in sorted(rejected.items()))
        log.warning("collector stored batch seq=%d but refused some of its samples (%s): see the collector's "
                    "limits and roomwatch_collector_samples_rejected_total (logged once a minute)", batch.seq, what)

    def _log_rejected(self, batch: Batch, reason: str) -> None:
        """Log a 400 with the collector's reason: at once, then at most once a minute with a count."""
        now = self.clock.monotonic()
        if self._reject_logged_at is not None and now - self._reject_logged_at < _REJECT_LOG_EVERY:
            self._rejects_unlogged += 1
            return
        stamps = [r.ts for r in batch.samples] + [e.ts for e in batch.events]
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(min(stamps) / 1000)) if stamps else "?"
        more = f"; {self._rejects_unlogged} more batches were rejected since the last such line" \
            if self._rejects_unlogged else ""
        log.error("collector refused batch seq=%d (%d samples, %d events, data from %s on) with HTTP 400: %s. "
                  "DROPPED: it would be refused forever; counted in roomwatch_agent_spool_dropped_total"
                  "{reason=\"rejected\"}%s",
                  batch.seq, len(batch.samples), len(batch.events), since, reason, more)
        self._reject_logged_at = now
        self._rejects_unlogged = 0

    async def run(self) -> None:
        """Seal every interval (or on kick) and drain, with backoff after failures."""
        interval = self.target.push_interval
        self._next_seal = self.clock.monotonic() + interval
        last_attempt = 0.0
        while not self._stopping:
            now = self.clock.monotonic()
            wake = self._next_seal
            if self.outbox.depth():
                wake = min(wake, max(self._next_try, now + self._ready_in()))
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=max(0.0, wake - now))
            except TimeoutError:
                pass
            kicked = self._kick.is_set()
            self._kick.clear()
            now = self.clock.monotonic()
            if now >= self._next_seal:
                self.seal()
                self._next_seal = now + interval
            elif kicked and self._events:
                self.seal()  # events go out now (the buffered samples with them, in a fresh batch of their own)
            if now - last_attempt < _MIN_GAP:
                await asyncio.sleep(_MIN_GAP - (now - last_attempt))
            if self.outbox.depth() and (kicked or self.clock.monotonic() >= self._next_try):
                last_attempt = self.clock.monotonic()
                await self.drain()

    def _ready_in(self) -> float:
        """Seconds until the outbox has a batch to send now (a spool paces its backlog)."""
        hint = getattr(self.outbox, "ready_in", None)
        if hint is not None:
            return float(hint())
        return 0.0 if self.outbox.depth() else float("inf")

    async def flush(self, timeout: float = 5.0) -> None:
        """Seal and try to deliver what is buffered (used at shutdown)."""
        self.seal()
        try:
            await asyncio.wait_for(self.drain(), timeout)
        except TimeoutError:
            log.warning("shutdown: %s not delivered", plural(self.outbox.depth(), "batch", "batches"))

    def stop(self) -> None:
        self._stopping = True
        self._kick.set()

    def close(self) -> None:
        self._sender.close()
