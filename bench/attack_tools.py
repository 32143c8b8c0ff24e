"""What the attack tests (tests/test_attacks.py) and bench/attacks.py send: raw HTTP, bombs, memory of a process.

Raw sockets, not an HTTP client library: an attacker does not wait for an answer before
sending the body, does not finish bodies, and sends headers libraries would refuse.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from roomwatch.core.wire import Batch, SampleRecord, encode_batch

MiB = 1 << 20


@lru_cache(maxsize=4)
def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of ``inflated`` zero bytes (about inflated/1000 on the wire)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MiB)
    parts = [c.compress(block) for _ in range(inflated // MiB)]
    parts.append(c.flush())
    return b"".join(parts)


def rss(pid: int) -> tuple[int, int]:
    """(resident, peak resident) bytes of process ``pid`` from /proc (VmRSS, VmHWM)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def send_raw(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"",
             chunked: bool = False, source: str | None = None, timeout: float = 30.0,
             body_delay: float = 0.0) -> tuple[int, bytes, bool]:
    """Send a request as an attacker would; return (status or 0 if none, answer body, connection closed after it).

    The body goes in pieces while the answer may already be on its way (the answer is read
    whatever happened to the sending); ``body_delay`` seconds pass between pieces.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    try:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
        try:
            s.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            for i in range(0, len(body), 64 * 1024):
                piece = body[i:i + 64 * 1024]
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if body_delay:
                    time.sleep(body_delay)
            if chunked:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed while the body was still going out: read its answer
        return _read_answer(s)
    finally:
        s.close()


def _read_answer(s: socket.socket) -> tuple[int, bytes, bool]:
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            got = s.recv(65536)
            if not got:
                break
            data += got
    except OSError:
        return (_status(data), b"", True) if data else (0, b"", True)
    head, _, rest = data.partition(b"\r\n\r\n")
    length, close = 0, False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
        elif k.strip().lower() == b"connection":
            close = v.strip().lower() == b"close"
    try:
        while len(rest) < length:
            got = s.recv(65536)
            if not got:
                break
            rest += got
        if not close:
            return _status(data), rest[:length], False  # kept alive: nothing more to wait for
        s.settimeout(10)
        closed = s.recv(1) == b""
    except (TimeoutError, OSError) as exc:
        closed = not isinstance(exc, TimeoutError)
    return _status(data), rest[:length], closed


def _status(data: bytes) -> int:
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def batch_body(agent: str, seq: int, samples: list[tuple[str, dict[str, str], float]] | None = None,
               compress: bool = True) -> bytes:
    """A push body of ``agent`` with ``samples`` (metric, labels, value), stamped now."""
    now = int(time.time() * 1000)
    recs = [SampleRecord(m, labels, v, now) for m, labels, v in
            (samples or [("roomwatch_temperature_celsius", {"device": "t1"}, 21.5)])]
    return encode_batch(Batch(agent, seq, recs, [], now), compress=compress)


def raw_json_body(doc: str) -> bytes:
    """A gzip push body from JSON text written by hand (lone surrogates, huge integers)."""
    return gzip.compress(doc.encode())


def series_batches(agent: str, total: int, per_push: int, start_seq: int = 1) -> Iterator[tuple[int, bytes]]:
    """``total`` distinct series of ``agent`` in pushes of ``per_push`` samples: (seq, gzip body)."""
    now = int(time.time() * 1000)
    seq = start_seq
    for first in range(0, total, per_push):
        doc = {"agent": agent, "seq": seq, "sent": now, "events": [],
               "samples": [{"metric": "roomwatch_temperature_celsius", "labels": {"device": f"d{i}"}, "value": 1.0,
                            "ts": now} for i in range(first, min(total, first + per_push))]}
        yield seq, gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 5)
        seq += 1
