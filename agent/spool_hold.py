"""Spooled batches as stored (compressed), and the spool's bounded fallback in RAM.

:class:`Entry` is one batch as the spool keeps it: the compressed body and the figures the
delivery order needs. :class:`Hold` keeps entries in memory while SQLite refuses to write
(disk full, I/O error): compressed, because a sample costs ~5 bytes there and some hundreds as
Python objects, and bounded, because the agent must keep monitoring within its memory budget
however long the disk stays full. At the bound it drops by the same policy as the spool's
size cap (oldest plain batches, then the samples of event batches, events last, never the
newest) and reports what it dropped; :class:`roomwatch.agent.spool.Spool` counts and logs it.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

from roomwatch.core.notice import carries_notice
from roomwatch.core.wire import Batch, WireError, decode_batch, encode_batch

__all__ = ["Entry", "Hold", "decode_body", "encode_body", "span"]


def encode_body(batch: Batch) -> bytes:
    """The stored form of ``batch`` (without ``sent``, set at each attempt)."""
    # zlib level 1: label-heavy JSON shrinks ~8x at a few µs per sample, so the cap holds hours more.
    return zlib.compress(encode_batch(Batch(batch.agent, batch.seq, batch.samples, batch.events), compress=False), 1)


def decode_body(body: bytes) -> Batch:
    """Inverse of :func:`encode_body`; raises :class:`WireError` (or ``zlib.error``) for a damaged body."""
    return decode_batch(zlib.decompress(body))


def span(batch: Batch) -> tuple[int, int]:
    """(oldest, newest) timestamp in ms of the batch's samples and events (now for an empty batch)."""
    stamps = [s.ts for s in batch.samples] + [e.ts for e in batch.events]
    if not stamps:
        now = int(time.time() * 1000)
        return now, now
    return min(stamps), max(stamps)


@dataclass(slots=True)
class Entry:
    """One stored batch: a row of the spool's ``batches`` table, or a held one."""

    seq: int
    body: bytes
    n_samples: int
    n_events: int
    oldest_ms: int
    newest_ms: int
    priority: int  # 1: carries a fallback notice (roomwatch/core/notice.py), sent before everything

    @classmethod
    def of(cls, batch: Batch) -> Entry:
        oldest, newest = span(batch)
        return cls(batch.seq, encode_body(batch), len(batch.samples), len(batch.events), oldest, newest,
                   int(carries_notice(batch)))

    @property
    def records(self) -> int:
        return self.n_samples + self.n_events


class Hold:
    """Entries SQLite refused, in put order, bounded to ``max_records`` samples plus events."""

    def __init__(self, max_records: int):
        self.max_records = max_records
        self.entries: list[Entry] = []
        self.records = 0
        self.samples = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry) -> tuple[int, int, int | None]:
        """Keep ``entry``; at the bound drop per policy. Returns (samples, events, oldest ts) dropped."""
        self.entries.append(entry)
        self._count(entry, 1)
        if self.records > self.max_records:
            return self._shed(entry.seq)
        return 0, 0, None

    def get(self, seq: int) -> Entry | None:
        return next((e for e in self.entries if e.seq == seq), None)

    def remove(self, seq: int) -> Entry | None:
        entry = self.get(seq)
        if entry is not None:
            self.entries.remove(entry)
            self._count(entry, -1)
        return entry

    def clear(self) -> None:
        self.entries.clear()
        self.records = self.samples = self.bytes = 0

    def oldest_ms(self) -> int | None:
        entries = list(self.entries)  # stats() reads from another thread
        return min((e.oldest_ms for e in entries), default=None)

    def _count(self, entry: Entry, sign: int) -> None:
        self.records += sign * entry.records
        self.samples += sign * entry.n_samples
        self.bytes += sign * len(entry.body)

    def _shed(self, newest: int) -> tuple[int, int, int | None]:
        dropped_s = dropped_e = 0
        first: int | None = None
        while self.records > self.max_records and len(self.entries) > 1:
            others = [e for e in self.entries if e.seq != newest]
            victim = next((e for e in others if not e.n_events), None)
            if victim is None:  # only event batches left: shed their samples, keep their events
                part = next((e for e in others if e.n_samples), None)
                if part is not None:
                    n, oldest = part.n_samples, part.oldest_ms
                    if self._strip(part):
                        dropped_s += n
                        first = oldest if first is None else min(first, oldest)
                        continue
                victim = part or others[0]  # events go last (or a body we cannot strip goes whole)
            self.remove(victim.seq)
            dropped_s += victim.n_samples
            dropped_e += victim.n_events
            first = victim.oldest_ms if first is None else min(first, victim.oldest_ms)
        return dropped_s, dropped_e, first

    def _strip(self, entry: Entry) -> bool:
        try:
            batch = decode_body(entry.body)
        except (zlib.error, WireError):
            return False
        batch.samples = []
        self._count(entry, -1)
        entry.body = encode_body(batch)
        entry.n_samples = 0
        entry.oldest_ms, entry.newest_ms = span(batch)
        self._count(entry, 1)
        return True
