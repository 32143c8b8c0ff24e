"""Store-and-forward figures (issue 6): spool write/replay throughput, backlog drain, ingest with history on/off.

    python -m bench.spool [--quick]

* spool write: ``Spool.put`` on disk (WAL, synchronous=FULL: one fsync per batch), for
  batches as the agent seals them (one per push interval, all devices together) and for
  one tiny batch per device poll (the fsync-bound worst case);
* spool replay: ``next_batches(1)`` + ``ack`` until empty (decode + delete, no network);
* backlog drain: one hour of 100 devices polled every 10 s, pushed by a real ``Pusher``
  to a real collector process (history on), unpaced; and the time the default pacing
  (``backlog_rate`` 2000 samples/s) takes for it;
* collector ingest with history on vs off: 4 pusher processes, 500-sample gzip batches,
  collector processes A/B/A/B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, proc_cpu_seconds, table, write_result

DEVICES = 100
POLL = 10.0  # s
SAMPLES_PER_POLL = 16  # a UPS over SNMP: ~12 readings + 4 device-health series
HOUR_POLLS = int(3600 / POLL)


def _hour(agent: str, seq0: int, per_device_batches: bool) -> list[Any]:
    """One hour of DEVICES devices as batches, timestamps over the past hour."""
    from roomwatch.core.wire import Batch, SampleRecord

    start = int(time.time() * 1000) - 3_600_000
    out: list[Any] = []
    seq = seq0
    for p in range(HOUR_POLLS):
        ts = start + int(p * POLL * 1000)
        polls = []
        for d in range(DEVICES):
            labels = {"agent": agent, "site": "county", "room": "r1", "device": f"ups{d:03d}"}
            polls.append([SampleRecord(f"roomwatch_bench_value_{k}", labels, float(p + k), ts)
                          for k in range(SAMPLES_PER_POLL)])
        if per_device_batches:
            for samples in polls:
                seq += 1
                out.append(Batch(agent, seq, samples, []))
        else:
            seq += 1
            out.append(Batch(agent, seq, [s for poll in polls for s in poll], []))
    return out


def bench_spool(tmp: Path, per_device: bool, limit: int | None) -> dict[str, Any]:
    from roomwatch.agent.spool import Spool

    batches = _hour("bench", 1, per_device)[: limit or None]
    samples = sum(len(b.samples) for b in batches)
    path = tmp / f"spool-{int(per_device)}.db"
    s = Spool(str(path), "bench", max_bytes=10**10)
    t0 = time.perf_counter()
    for b in batches:
        s.put(b)
    write = time.perf_counter() - t0
    size = path.stat().st_size + (Path(str(path) + "-wal").stat().st_size if Path(str(path) + "-wal").exists() else 0)
    stored = s.stats()["bytes"]
    t0 = time.perf_counter()
    n = 0
    while True:
        got = s.next_batches(1)
        if not got:
            break
        n += len(got[0].samples)
        s.ack(got[0].seq)
    replay = time.perf_counter() - t0
    s.close()
    assert n == samples
    return {"batches": len(batches), "samples": samples, "write_s": write, "replay_s": replay,
            "write_samples_per_s": samples / write, "write_batches_per_s": len(batches) / write,
            "replay_samples_per_s": samples / replay, "stored_bytes": stored, "file_bytes": size}


def _start_collector(tmp: Path, name: str, agents: list[dict[str, str]], history: bool) -> tuple[Any, str]:
    import yaml

    from tests.helpers import free_port, http_get, wait_for

    port = free_port()
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump({
        "listen": f"127.0.0.1:{port}", "storage": str(tmp / f"{name}.db"), "agents": agents, "log_level": "warning",
        "history": {"enabled": history}, "rate_limit": {"per_agent": 0, "per_address": 0}}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "roomwatch", "collector", "-c", str(tmp / f"{name}.yaml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_get(url + "/readyz", timeout=1)[0] == 200, proc=proc, what="collector")
    return proc, url


def bench_drain(tmp: Path, limit: int | None) -> dict[str, Any]:
    """A real Pusher drains an hour of backlog from a disk spool into a real collector (history on)."""
    from roomwatch.agent.config import CollectorTarget
    from roomwatch.agent.push import Pusher
    from roomwatch.agent.spool import Spool

    token = "bench-token-xxxxxxxxxxxx"
    proc, url = _start_collector(tmp, "drain", [{"id": "bench", "token": token}], history=True)
    try:
        batches = _hour("bench", 10**12, per_device_batches=False)[: limit or None]
        samples = sum(len(b.samples) for b in batches)
        spool = Spool(str(tmp / "drain-spool.db"), "bench", max_bytes=10**10, backlog_rate=0)
        for b in batches:
            spool.put(b)
        target = CollectorTarget(urls=[url], token=token, push_interval="1h")
        pusher = Pusher("bench", target, outbox=spool)
        cpu0 = proc_cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        ok = asyncio.run(pusher.drain())
        wall = time.perf_counter() - t0
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        pusher.close()
        assert ok and spool.depth() == 0, "drain did not finish"
        spool.close()
    finally:
        proc.terminate()
        proc.wait(10)
    on_disk = sum(p.stat().st_size for p in tmp.glob("drain.db*"))
    return {"batches": len(batches), "samples": samples, "drain_s": wall, "samples_per_s": samples / wall,
            "collector_cpu_s": cpu, "paced_default_s": samples / 2000.0, "history_bytes_per_sample": on_disk / samples}


def _pusher(url: str, token: str, bodies: list[bytes], q: Any) -> None:
    from bench.collector import _pusher as push

    push(url, token, "", bodies, q)


def bench_ingest(tmp: Path, batches_each: int, rounds: int) -> dict[str, Any]:
    from bench.collector import _batches

    agents = [{"id": f"p{i}", "token": f"token-{i:04d}-xxxxxxxx"} for i in range(4)]
    runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in ("on", "off"):  # A/B/A/B
            proc, url = _start_collector(tmp, f"ingest-{mode}-{r}", agents, history=mode == "on")
            try:
                work = {a["id"]: _batches(a["id"], batches_each, 500, 100) for a in agents}
                cpu0 = proc_cpu_seconds(proc.pid)
                q: Any = mp.Queue()
                ps = [mp.Process(target=_pusher, args=(url, a["token"], work[a["id"]], q)) for a in agents]
                t0 = time.perf_counter()
                for p in ps:
                    p.start()
                accepted = sum(q.get() for _ in ps)
                for p in ps:
                    p.join()
                wall = time.perf_counter() - t0
                cpu = proc_cpu_seconds(proc.pid) - cpu0
            finally:
                proc.terminate()
                proc.wait(10)
            samples = accepted * 500
            runs[mode].append({"samples": samples, "wall_s": wall, "cpu_s": cpu, "per_s": samples / wall,
                               "per_cpu_s": samples / cpu})
    out: dict[str, Any] = {"runs": runs}
    for mode in ("on", "off"):
        out[mode] = {"samples_per_s": median([x["per_s"] for x in runs[mode]]),
                     "samples_per_cpu_s": median([x["per_cpu_s"] for x in runs[mode]]),
                     "samples": runs[mode][0]["samples"]}
    out["cpu_ratio_on_off"] = out["off"]["samples_per_cpu_s"] / out["on"]["samples_per_cpu_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    q = ap.parse_args().quick
    tmp = Path(tempfile.mkdtemp(prefix="rw-bench-spool-"))
    res: dict[str, Any] = {"devices": DEVICES, "poll_s": POLL, "samples_per_poll": SAMPLES_PER_POLL,
                           "hour_samples": DEVICES * HOUR_POLLS * SAMPLES_PER_POLL,
                           "hour_batches_push": HOUR_POLLS, "hour_batches_per_poll": DEVICES * HOUR_POLLS}
    res["spool_push_batches"] = bench_spool(tmp, per_device=False, limit=60 if q else None)
    res["spool_device_batches"] = bench_spool(tmp, per_device=True, limit=2000 if q else 8000)
    res["drain"] = bench_drain(tmp, limit=60 if q else None)
    res["ingest"] = bench_ingest(tmp, 10 if q else 40, 1 if q else 2)
    path = write_result("spool", res)
    print(markdown(json.loads(path.read_text())))
    print(f"\nwrote {path}")


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    from bench.common import header

    a, b, d, i = res["spool_push_batches"], res["spool_device_batches"], res["drain"], res["ingest"]
    out = [header(res, "Store-and-forward: spool, backlog drain, history (issue 6)")]
    out.append(f"One hour of {res['devices']} devices polled every {res['poll_s']:g} s at {res['samples_per_poll']} samples "
               f"per poll = {res['hour_samples']:,} samples: {res['hour_batches_push']} batches when the agent seals "
               f"one per 10 s push (the default), or {res['hour_batches_per_poll']:,} if every poll were its own batch.")
    out.append("")
    out.append(table(["spool (disk, WAL, synchronous=FULL)", "batches", "samples", "write samples/s", "write batches/s",
                      "replay samples/s", "stored bytes/sample"], [
        ["one batch per push (1,600 samples)", f"{a['batches']:,}", f"{a['samples']:,}", f"{a['write_samples_per_s']:,.0f}",
         f"{a['write_batches_per_s']:,.0f}", f"{a['replay_samples_per_s']:,.0f}", f"{a['stored_bytes'] / a['samples']:.1f}"],
        ["one batch per device poll (16 samples)", f"{b['batches']:,}", f"{b['samples']:,}",
         f"{b['write_samples_per_s']:,.0f}", f"{b['write_batches_per_s']:,.0f}", f"{b['replay_samples_per_s']:,.0f}",
         f"{b['stored_bytes'] / b['samples']:.1f}"],
    ]))
    out.append("")
    out.append(table(["backlog drain into a real collector (history on)", "value"], [
        ["batches / samples", f"{d['batches']:,} / {d['samples']:,}"],
        ["unpaced drain time (s)", f"{d['drain_s']:.1f}"],
        ["unpaced samples/s", f"{d['samples_per_s']:,.0f}"],
        ["collector CPU during the drain (s)", f"{d['collector_cpu_s']:.1f}"],
        ["drain time at the default backlog_rate 2000 samples/s (s, computed)", f"{d['paced_default_s']:.0f}"],
        ["collector file size per stored sample (bytes; history + dedup + series)",
         f"{d.get('history_bytes_per_sample', 0):.1f}"],
    ]))
    out.append("")
    out.append(table(["collector ingest, 4 pushers, 500-sample gzip batches", "samples", "samples/s wall (median)",
                      "samples per collector CPU-second (median)"], [
        ["history on", f"{i['on']['samples']:,}", f"{i['on']['samples_per_s']:,.0f}", f"{i['on']['samples_per_cpu_s']:,.0f}"],
        ["history off (dedup record only)", f"{i['off']['samples']:,}", f"{i['off']['samples_per_s']:,.0f}",
         f"{i['off']['samples_per_cpu_s']:,.0f}"],
    ]))
    out.append("")
    out.append(f"History costs {i['cpu_ratio_on_off']:.2f}× the collector CPU per sample (A/B/A/B runs, medians). "
               "Each push is committed (group commit, one fsync per transaction) before its 200.")
    return "\n".join(out)


if __name__ == "__main__":
    main()
