"""Fleet simulator: N simulated agents pushing to one real collector, as several processes on loopback.

    python -m bench.fleet [--agents 1000] [--series 100] [--interval 10] [--seconds 60] [--procs 3]

Each simulated agent pushes ``--series`` samples every ``--interval`` seconds
(gzip JSON, its own token, increasing seq), spread evenly over the interval,
and now and then a door or UPS event with its new value. Reported: the
collector's sustained ingest, CPU (cores), RSS, ``/metrics`` scrape time, push
round-trip times, and event → notification latency through a webhook channel
when the collector's alerting is available.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, median, percentile, proc_cpu_seconds, proc_rss_bytes, table, write_result

KINDS = [("roomwatch_temperature_celsius", 24.0), ("roomwatch_humidity_ratio", 0.45),
         ("roomwatch_ups_battery_charge_ratio", 1.0), ("roomwatch_ups_battery_runtime_seconds", 1800.0),
         ("roomwatch_device_up", 1.0)]


def token_of(i: int) -> str:
    return f"fleet-token-{i:06d}-abcdefgh"


def _body(agent: str, seq: int, series: int, now_ms: int, events: list[dict[str, Any]], extra: list[dict[str, Any]]) -> bytes:
    samples = []
    for j in range(series):
        metric, base = KINDS[j % len(KINDS)]
        samples.append({"metric": metric, "labels": {"agent": agent, "site": f"site-{hash(agent) % 50}",
                                                      "room": "room-1", "device": f"dev-{j // len(KINDS)}"},
                        "value": base + (seq % 10) * 0.01, "ts": now_ms})
    samples.extend(extra)
    doc = {"agent": agent, "seq": seq, "sent": now_ms, "samples": samples, "events": events}
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)


async def _agent_loop(session: Any, url: str, idx: int, series: int, interval: float, stop_at: float,
                      rtts: list[float], errors: list[int], event_every: float, sent_events: Any) -> None:
    agent = f"fleet-{idx:05d}"
    headers = {"Authorization": f"Bearer {token_of(idx)}", "Content-Encoding": "gzip", "Content-Type": "application/json"}
    seq = int(time.time() * 1e6)
    await asyncio.sleep(random.uniform(0, interval))
    next_event = time.time() + random.expovariate(1 / event_every) if event_every else float("inf")
    door = 0
    while time.time() < stop_at:
        seq += 1
        now = time.time()
        events, extra = [], []
        if now >= next_event:
            door = 1 - door
            ms = int(now * 1000)
            events.append({"type": "door_open" if door else "door_close", "labels": {"agent": agent, "device": "door"},
                           "ts": ms, "value": door})
            extra.append({"metric": "roomwatch_door_open", "labels": {"agent": agent, "device": "door", "room": "room-1"},
                          "value": door, "ts": ms})
            next_event = now + random.expovariate(1 / event_every)
            if door:
                sent_events.put((agent, now))
        body = _body(agent, seq, series, int(now * 1000), events, extra)
        t = time.perf_counter()
        try:
            async with session.post(url + "/api/v1/push", data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors.append(resp.status)
        except Exception:
            errors.append(0)
        rtts.append(time.perf_counter() - t)
        await asyncio.sleep(max(0.0, interval - (time.time() - now)))


def _worker(url: str, indices: list[int], series: int, interval: float, stop_at: float, event_every: float,
            out: Any, sent_events: Any) -> None:
    import aiohttp

    async def run() -> None:
        rtts: list[float] = []
        errors: list[int] = []
        conn = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(_agent_loop(session, url, i, series, interval, stop_at, rtts, errors, event_every,
                                               sent_events) for i in indices))
        out.put({"rtts": rtts, "errors": errors})

    asyncio.run(run())


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_fleet(agents: int, series: int, interval: float, seconds: float, procs: int, event_every: float) -> dict[str, Any]:
    from tests.helpers import free_port

    tmp = Path(tempfile.mkdtemp(prefix="rw-fleet-"))
    port = free_port()
    conf = {"listen": f"127.0.0.1:{port}", "storage": str(tmp / "c.db"), "log_level": "warning",
            "agent_timeout": f"{int(interval * 3)}s",
            "agents": [{"id": f"fleet-{i:05d}", "token": token_of(i)} for i in range(agents)]}
    (tmp / "c.yaml").write_text(yaml.safe_dump(conf))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    coll = subprocess.Popen([sys.executable, "-m", "roomwatch", "collector", "-c", str(tmp / "c.yaml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "collector.log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                _get(url + "/readyz")
                break
            except OSError:
                time.sleep(0.1)
        warmup = max(interval * 1.5, 10.0)
        stop_at = time.time() + warmup + seconds + 2
        out: Any = mp.Queue()
        sent_events: Any = mp.Queue()
        chunks = [list(range(agents))[k::procs] for k in range(procs)]
        workers = [mp.Process(target=_worker, args=(url, c, series, interval, stop_at, event_every, out, sent_events))
                   for c in chunks]
        for w in workers:
            w.start()
        time.sleep(warmup)
        m0 = _get(url + "/metrics").decode()
        cpu0, t0 = proc_cpu_seconds(coll.pid), time.monotonic()
        scrapes = []
        while time.monotonic() - t0 < seconds:
            time.sleep(min(5.0, seconds / 6))
            t = time.perf_counter()
            body = _get(url + "/metrics")
            scrapes.append(time.perf_counter() - t)
        cpu1, t1 = proc_cpu_seconds(coll.pid), time.monotonic()
        m1 = body.decode()
        rss = proc_rss_bytes(coll.pid)
        results = [out.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(30)
    finally:
        coll.terminate()
        coll.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)
    rtts = [x for r in results for x in r["rtts"]]
    errors = [x for r in results for x in r["errors"]]
    window = t1 - t0
    received = "roomwatch_collector_samples_received_total"
    ingested = _counter(m1, received) - _counter(m0, received)
    return {
        "agents": agents, "series_per_agent": series, "interval_s": interval, "window_s": window, "procs": procs,
        "offered_samples_per_s": agents * (series + 0.0) / interval,
        "ingested_samples_per_s": ingested / window,
        "collector_cpu_cores": (cpu1 - cpu0) / window,
        "collector_rss_mib": rss / 2**20,
        "series_exposed": m1.count("\n") - m1.count("# "),
        "metrics_scrape_ms_median": median(scrapes) * 1000, "metrics_scrape_ms_max": max(scrapes) * 1000,
        "metrics_bytes": len(m1),
        "push_rtt_ms_p50": percentile(rtts, 50) * 1000, "push_rtt_ms_p99": percentile(rtts, 99) * 1000,
        "pushes": len(rtts), "push_errors": len(errors),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window after warm-up")
    ap.add_argument("--procs", type=int, default=3, help="load-generator processes")
    ap.add_argument("--event-every", type=float, default=60.0, help="mean seconds between door events per agent")
    args = ap.parse_args()
    res = run_fleet(args.agents, args.series, args.interval, args.seconds, args.procs, args.event_every)
    path = write_result("fleet", res)
    print(table(["figure", "value"], [[k, f"{v:,.2f}" if isinstance(v, float) else v] for k, v in res.items()]))
    print(f"\nwrote {path}")


def markdown(res: dict[str, Any]) -> str:
    from bench.common import header

    rows = [
        ["agents × series / interval", f"{res['agents']:,} × {res['series_per_agent']} / {res['interval_s']:g} s"],
        ["offered samples/s", f"{res['offered_samples_per_s']:,.0f}"],
        ["ingested samples/s (collector counter)", f"{res['ingested_samples_per_s']:,.0f}"],
        ["collector CPU (cores)", f"{res['collector_cpu_cores']:.2f}"],
        ["collector RSS (MiB)", f"{res['collector_rss_mib']:.0f}"],
        ["/metrics scrape, median / max (ms)", f"{res['metrics_scrape_ms_median']:.0f} / {res['metrics_scrape_ms_max']:.0f}"],
        ["/metrics size (bytes)", f"{res['metrics_bytes']:,}"],
        ["push round trip p50 / p99 (ms)", f"{res['push_rtt_ms_p50']:.1f} / {res['push_rtt_ms_p99']:.1f}"],
        ["pushes / errors", f"{res['pushes']:,} / {res['push_errors']}"],
    ]
    if "notify_latency_ms_p50" in res:
        rows.append(["event → notification p50 / p99 (ms)",
                     f"{res['notify_latency_ms_p50']:.0f} / {res['notify_latency_ms_p99']:.0f}"])
    return "\n".join([header(res, "Fleet simulator: one collector under many agents (issue 8)"),
                      table(["figure", "value"], rows)])


if __name__ == "__main__":
    main()
