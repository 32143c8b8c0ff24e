"""Forward accepted samples, backfill included, to Prometheus remote-write 1.0 endpoints.

The wire format is the standard one (https://prometheus.io/docs/concepts/remote_write_spec/):
a protobuf ``prometheus.WriteRequest``, snappy *block* compressed, POSTed with
``Content-Encoding: snappy``, ``Content-Type: application/x-protobuf`` and
``X-Prometheus-Remote-Write-Version: 0.1.0``. Protobuf comes from the ``protobuf``
package (the messages are declared below as a descriptor, so no ``protoc`` step
is needed), snappy from ``cramjam``.

The queue is durable: ingest appends every accepted sample to ``rw_log`` in the
same transaction as its history (see :mod:`roomwatch.collector.store`), and each endpoint
keeps a cursor in ``rw_cursor``, so a collector restart or a remote outage loses
nothing up to ``queue_max_samples`` (beyond it the oldest are dropped, counted
and logged). Retries follow the spec: 5xx, 429 and network errors are retried
with exponential backoff (honouring ``Retry-After``); other 4xx drop the request,
counted, as retrying cannot help.

Prometheus accepts samples older than its newest sample of a series only within
``storage.tsdb.out_of_order_time_window`` (off by default): set it to the longest
outage you want backfilled (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
import urllib.parse
from collections import Counter
from functools import cache
from typing import Any

from roomwatch import __version__
from roomwatch.collector.config import RemoteWriteTarget
from roomwatch.collector.store import IngestStore
from roomwatch.core import vocabulary as v
from roomwatch.core.exposition import Family, render_labels
from roomwatch.core.tls import client_context

__all__ = ["RemoteWriter", "encode_write_request", "target_name"]

log = logging.getLogger("roomwatch.collector.remote_write")


def target_name(target: RemoteWriteTarget) -> str:
    """The endpoint's name in metrics and logs: ``name``, else host:port (never the URL's user:password)."""
    if target.name:
        return target.name
    parts = urllib.parse.urlsplit(target.url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


@cache
def _write_request_class() -> Any:
    """``prometheus.WriteRequest`` of prompb/remote.proto + types.proto (the fields remote-write 1.0 uses)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="roomwatch/prompb_remote.proto", package="prometheus", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name

    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message("Sample", ("value", 1, f.TYPE_DOUBLE, opt, ""), ("timestamp", 2, f.TYPE_INT64, opt, ""))
    message("Label", ("name", 1, f.TYPE_STRING, opt, ""), ("value", 2, f.TYPE_STRING, opt, ""))
    message("TimeSeries", ("labels", 1, f.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("samples", 2, f.TYPE_MESSAGE, rep, ".prometheus.Sample"))
    message("WriteRequest", ("timeseries", 1, f.TYPE_MESSAGE, rep, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()  # our own pool: no clash with another "prometheus" package
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


def encode_write_request(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    """Serialize and snappy-compress a WriteRequest; labels must include ``__name__``."""
    import cramjam

    req = _write_request_class()()
    for labels, samples in series:
        ts = req.timeseries.add()
        for name in sorted(labels):  # the spec wants label names sorted; empty values mean "no label"
            if labels[name] != "":
                ts.labels.add(name=name, value=labels[name])
        for t, value in sorted(samples):  # samples of a series in time order
            ts.samples.add(value=value, timestamp=t)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def decode_write_request(body: bytes) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """Inverse of :func:`encode_write_request` (tests, debugging)."""
    import cramjam

    req = _write_request_class()()
    req.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [({lab.name: lab.value for lab in ts.labels}, [(s.timestamp, s.value) for s in ts.samples])
            for ts in req.timeseries]


def _ssl_context(target: RemoteWriteTarget) -> ssl.SSLContext | None:
    if not target.url.startswith("https:"):
        return None
    tls = target.tls
    return client_context(tls.ca_file, tls.cert_file, tls.key_file, tls.insecure_skip_verify)


class RemoteWriter:
    """Sends ``rw_log`` to one endpoint from its cursor on, in order, with retries."""

    def __init__(self, target: RemoteWriteTarget, store: IngestStore, poll_interval: float = 0.5):
        self.target = target
        self.name = target_name(target)
        self.store = store
        self.poll_interval = poll_interval
        self.samples: Counter[str] = Counter()  # sent | rejected | dropped
        self.pending = 0
        self.last_success: float | None = None
        self._labels: dict[int, dict[str, str]] = {}
        self._failing = False
        self._session: Any = None
        self._ssl = _ssl_context(target)

    # -- reading the queue ------------------------------------------------------------
    def _read(self, limit: int) -> tuple[int, int, list[tuple[int, int, int, float]]]:
        conn = self.store.reader()
        try:
            cursor = conn.execute("SELECT last_id FROM rw_cursor WHERE name = ?", (self.name,)).fetchone()
            last = cursor[0] if cursor else 0
            top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'rw_log'").fetchone()[0]
            rows = conn.execute("SELECT id, series, ts, value FROM rw_log WHERE id > ? ORDER BY id LIMIT ?",
                                (last, limit)).fetchall()
            missing = {r[1] for r in rows} - self._labels.keys()
            for sid in missing:
                row = conn.execute("SELECT metric, labels FROM history_series WHERE id = ?", (sid,)).fetchone()
                if row is not None:
                    self._labels[sid] = {**json.loads(row[1]), "__name__": row[0]}
        finally:
            conn.close()
        return last, top, rows

    async def _advance(self, last_id: int) -> None:
        name = self.name

        def advance(conn: Any) -> None:
            conn.execute("UPDATE rw_cursor SET last_id = MAX(last_id, ?) WHERE name = ?", (last_id, name))
            conn.execute("DELETE FROM rw_log WHERE id <= (SELECT MIN(last_id) FROM rw_cursor)")

        await self.store.run(advance)

    # -- sending --------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        t = self.target
        headers = {**t.headers, "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                   "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": f"roomwatch-collector/{__version__}"}
        if t.bearer_token is not None:
            headers["Authorization"] = f"Bearer {t.bearer_token.get_secret_value()}"
        elif t.basic_auth is not None:
            import base64

            pair = f"{t.basic_auth.username}:{t.basic_auth.password.get_secret_value()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    async def _post(self, body: bytes) -> tuple[int, str, float | None]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.target.timeout))
        try:
            async with self._session.post(self.target.url, data=body, headers=self._headers(),
                                          ssl=self._ssl or True) as resp:
                text = (await resp.content.read(512)).decode("utf-8", "replace").strip()
                ra = resp.headers.get("Retry-After")
                retry = float(ra) if ra and ra.isdigit() else None
                return resp.status, text, retry
        except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
            return 0, f"{type(exc).__name__}: {exc}", None

    async def run(self) -> None:
        """Forever; a bug in one round is logged and the sender goes on (the queue is on disk)."""
        while True:
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("remote_write %s: sender failed; restarting it in 5s", self.name)
                await asyncio.sleep(5.0)

    async def _loop(self) -> None:
        """Read from the cursor, send, advance; back off on failure."""
        backoff = self.target.min_backoff
        while True:
            last, top, rows = await asyncio.to_thread(self._read, self.target.batch_samples)
            self.pending = top - last
            if self.pending > self.target.queue_max_samples:
                skip_to = top - self.target.queue_max_samples
                self.samples["dropped"] += skip_to - last
                log.warning("remote_write %s: queue over %d samples; dropped the oldest %d", self.name,
                            self.target.queue_max_samples, skip_to - last)
                await self._advance(skip_to)
                continue
            if not rows:
                await asyncio.sleep(self.poll_interval)
                continue
            series: dict[int, list[tuple[int, float]]] = {}
            for _id, sid, ts, value in rows:
                series.setdefault(sid, []).append((ts, value))
            body = encode_write_request([(self._labels.get(sid, {"__name__": "roomwatch_unknown"}), s)
                                         for sid, s in series.items()])
            status, text, retry_after = await self._post(body)
            log.debug("remote_write %s: %d samples in %d series → HTTP %d %s", self.name, len(rows), len(series),
                      status, text[:100])
            if 200 <= status < 300:
                if self._failing:
                    log.info("remote_write %s: delivering again (%d samples pending)", self.name, self.pending)
                self._failing = False
                self.samples["sent"] += len(rows)
                self.last_success = time.time()
                backoff = self.target.min_backoff
                await self._advance(rows[-1][0])
                continue
            if status == 0 or status >= 500 or status == 429:
                if not self._failing:
                    log.warning("remote_write %s: %s; retrying with backoff (samples stay queued)", self.name,
                                f"HTTP {status} {text[:200]}" if status else text)
                self._failing = True
                delay = max(retry_after or 0.0, backoff * random.uniform(0.8, 1.2))
                backoff = min(self.target.max_backoff, backoff * 2)
                await asyncio.sleep(delay)
                continue
            # Any other 4xx: the endpoint refuses this data (out of order, bad labels); retrying cannot help.
            self.samples["rejected"] += len(rows)
            log.error("remote_write %s refused %d samples: HTTP %d %s", self.name, len(rows), status, text[:300])
            await self._advance(rows[-1][0])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def remote_write_families(writers: list[RemoteWriter]) -> list[Family]:
    """Per-endpoint counters for /metrics."""
    sent, pending, last = [], [], []
    for w in writers:
        for result in ("sent", "rejected", "dropped"):
            sent.append((render_labels({"endpoint": w.name, "result": result}), float(w.samples[result])))
        pending.append((render_labels({"endpoint": w.name}), float(w.pending)))
        if w.last_success is not None:
            last.append((render_labels({"endpoint": w.name}), w.last_success))
    return [
        Family(v.COLLECTOR_RW_SAMPLES, v.METRICS[v.COLLECTOR_RW_SAMPLES].help, "counter", sent),
        Family(v.COLLECTOR_RW_PENDING, v.METRICS[v.COLLECTOR_RW_PENDING].help, "gauge", pending),
        Family(v.COLLECTOR_RW_LAST_SUCCESS, v.METRICS[v.COLLECTOR_RW_LAST_SUCCESS].help, "gauge", last),
    ]
