"""Helpers for the fault-injection tests: agent processes with the counter device, a lossy TCP proxy,
and readers of what was produced (the counter log) and delivered (the collector's store)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, STARTED, free_port, http_get, metric_value, wait_for, write_yaml

AGENT_BOOT = ("import sys, tests.counter_driver; from roomwatch.cli import main; "
              "sys.exit(main(sys.argv[1:]))")


class Proc:
    """A child process with its output appended to a log file (restarts keep earlier output)."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True)
        STARTED.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)
        self._log.close()

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class CounterAgent:
    """An agent with one ``test-counter`` device; each start is a new run (counter values run*1e6+n)."""

    def __init__(self, tmp: Path, urls: list[str], token: str, agent_id: str = "agent-a", interval: str = "200ms",
                 push_interval: str = "300ms", fanout: int = 0, door_every: int = 0, **extra: Any):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.spool = tmp / "agent-spool.db"
        self.produced_log = tmp / "produced.log"
        self.log_path = tmp / "agent.log"
        self.run = 0
        self.proc: Proc | None = None
        collector = {"urls": urls, "token": token, "push_interval": push_interval, "timeout": "2s",
                     "backoff_max": "1s", **extra.pop("collector", {})}
        conf = {"agent": {"id": agent_id, "listen": f"127.0.0.1:{self.port}", "spool": str(self.spool),
                          **extra.pop("agent", {})},
                "collector": collector, "host": {"enabled": False},
                "devices": [{"name": "ctr", "driver": "test-counter", "interval": interval, "log": str(self.produced_log),
                             "fanout": fanout, "door_every": door_every}], **extra}
        self.config = write_yaml(tmp / "agent.yaml", conf)

    def start(self, wait: bool = True) -> None:
        self.run += 1
        self.proc = Proc([sys.executable, "-c", AGENT_BOOT, "agent", "-c", str(self.config)], self.log_path,
                         env={"ROOMWATCH_TEST_RUN": str(self.run)})
        if wait:
            wait_for(lambda: http_get(self.url + "/healthz", timeout=1)[0] == 200, proc=self.proc.proc,
                     what="agent /healthz", timeout=30)

    def metric(self, name: str, **labels: str) -> float | None:
        status, body = http_get(self.url + "/metrics", timeout=5)
        return metric_value(body.decode(), name, **labels) if status == 200 else None

    def wait_drained(self, timeout: float = 60) -> None:
        """Until the spool is empty (checked twice, a push interval apart)."""
        def empty() -> bool:
            return self.metric("roomwatch_agent_spool_batches") == 0
        wait_for(empty, timeout=timeout, interval=0.3, what="the agent spool to drain")
        wait_for(empty, timeout=timeout, interval=0.3, what="the agent spool to stay drained")


def produced(log: Path) -> list[tuple[int, int, int]]:
    """(value, ts_ms, door) lines written by the counter device (a torn last line is skipped)."""
    out = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def delivered(db: Path, metric: str = "roomwatch_test_counter") -> list[tuple[int, int]]:
    """(value, ts_ms) of ``metric`` in the collector's history, read from the file (collector stopped)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(int(v), ts) for ts, v in conn.execute(
            "SELECT s.ts, s.value FROM history_samples s JOIN history_series h ON h.id = s.series "
            "WHERE h.metric = ? ORDER BY s.ts", (metric,))]
    finally:
        conn.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(str(db))
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def check_runs_are_prefixes(prod: list[tuple[int, int, int]], got: list[tuple[int, int]],
                            complete_runs: set[int]) -> dict[int, int]:
    """Exactly-once and no-loss: per agent run, the delivered values are a prefix of the produced ones
    (a kill -9 may lose only the unsealed tail of a run), with the original timestamps, each once;
    runs in ``complete_runs`` (ended by a clean stop) are delivered whole. Returns lost counts per run."""
    counts = Counter(v for v, _ in got)
    dups = {v: n for v, n in counts.items() if n > 1}
    assert not dups, f"delivered more than once: {sorted(dups)[:10]}"
    prod_ts = {v: ts for v, ts, _ in prod}
    got_ts = dict(got)
    unknown = sorted(set(got_ts) - set(prod_ts))
    assert not unknown, f"delivered values nobody produced: {unknown[:10]}"
    wrong_ts = [v for v, ts in got_ts.items() if prod_ts[v] != ts]
    assert not wrong_ts, f"timestamps changed for {wrong_ts[:10]}"
    lost: dict[int, int] = {}
    by_run: dict[int, list[int]] = {}
    for v, _, _ in prod:
        by_run.setdefault(v // 1_000_000, []).append(v)
    for run, values in sorted(by_run.items()):
        have = [v in got_ts for v in values]
        k = have.index(False) if False in have else len(have)
        assert all(have[:k]) and not any(have[k:]), (
            f"run {run}: gap in the middle: delivered {sum(have)} of {len(values)}, first missing {values[k]}")
        if run in complete_runs:
            assert k == len(values), f"run {run} ended cleanly but lost {len(values) - k} values"
        lost[run] = len(values) - k
    return lost


class LossyProxy:
    """TCP proxy on 127.0.0.1 that, per forwarded chunk (seeded), delays, stalls, truncates or cuts."""

    def __init__(self, target_port: int, seed: int, p_cut: float = 0.08, p_stall: float = 0.04, stall: float = 2.5,
                 max_delay: float = 0.05):
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.p_cut, self.p_stall, self.stall, self.max_delay = p_cut, p_stall, stall, max_delay
        self.faulty = True
        self.stats: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> LossyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            async with self._server:
                await self._server.serve_forever()

        try:
            self._loop.run_until_complete(main())
        except (asyncio.CancelledError, RuntimeError):
            pass
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_w))
        done = asyncio.Event()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, way: str) -> None:
            try:
                while not done.is_set():
                    data = await src.read(65536)
                    if not data:
                        break
                    if self.faulty:
                        r = self.rng.random()
                        if r < self.p_cut:
                            self.stats[f"cut_{way}"] += 1
                            if self.rng.random() < 0.5:  # part of it first: a torn request or response
                                dst.write(data[: self.rng.randrange(len(data))])
                                await dst.drain()
                            break
                        if r < self.p_cut + self.p_stall:
                            self.stats["stall"] += 1
                            await asyncio.sleep(self.stall)
                        else:
                            await asyncio.sleep(self.rng.uniform(0, self.max_delay))
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                done.set()
                for w in (writer, up_w):  # the other direction's read then ends too
                    w.close()
                    self._writers.discard(w)

        await asyncio.gather(pump(reader, up_w, "up"), pump(up_r, writer, "down"))

    def heal(self) -> None:
        self.faulty = False

    def stop(self) -> None:
        def shutdown() -> None:
            for w in list(self._writers):
                w.close()
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(10)
