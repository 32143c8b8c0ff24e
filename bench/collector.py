"""Collector: samples ingested per second (batches of 500) and /metrics render time vs prometheus_client.

    python -m bench.collector [--quick]

* ingest, in process: decode (JSON) + dedup + store for batches of 500 samples,
  on one core, over a fleet of series that already exist (the steady state);
* ingest over HTTP: a real ``roomwatch collector`` process fed by 4 pusher
  processes; samples accepted per CPU-second of the collector;
* render: roomwatch's exposition of 10k and 100k series beside
  ``prometheus_client.generate_latest`` with a custom collector on the same
  series (the fastest way to use prometheus_client), A/B/A/B in one run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    median,
    proc_cpu_seconds,
    proc_rss_bytes,
    table,
    versions,
    write_result,
)

METRICS = ["roomwatch_temperature_celsius", "roomwatch_humidity_ratio", "roomwatch_ups_battery_charge_ratio",
           "roomwatch_door_open", "roomwatch_device_up"]


def _batches(agent: str, n_batches: int, batch_size: int, series_per_agent: int, start_seq: int = 1) -> list[bytes]:
    """Encoded (uncompressed) push bodies cycling over ``series_per_agent`` series."""
    from roomwatch.core.wire import Batch, SampleRecord, encode_batch

    now = int(time.time() * 1000)
    out = []
    k = 0
    for b in range(n_batches):
        samples = []
        for _ in range(batch_size):
            i = k % series_per_agent
            samples.append(SampleRecord(METRICS[i % len(METRICS)], {
                "agent": agent, "site": "county-1", "room": f"room-{i % 7}", "device": f"dev-{i // len(METRICS)}"},
                20.0 + (k % 100) / 10, now + b))
            k += 1
        out.append(encode_batch(Batch(agent, start_seq + b, samples, [], now), compress=False))
    return out


def bench_ingest_inprocess(n_agents: int, batches_per_agent: int) -> dict[str, Any]:
    from roomwatch.collector.config import CollectorConfig
    from roomwatch.collector.core import Collector
    from roomwatch.core.wire import decode_batch

    cfg = CollectorConfig.model_validate({"agents": [{"id": f"a{i}", "token": f"t{i:06d}xxxx"} for i in range(n_agents)],
                                          "storage": ":memory:"})
    c = Collector(cfg)
    bodies = {f"a{i}": _batches(f"a{i}", batches_per_agent, 500, 100) for i in range(n_agents)}
    # warm up: create every series once
    for aid, bs in bodies.items():
        c.ingest(c.agents.agents[aid], decode_batch(bs[0]))
    total = 0
    t_cpu = time.process_time()
    t0 = time.perf_counter()
    for j in range(1, batches_per_agent):
        for aid, bs in bodies.items():
            batch = decode_batch(bs[j])
            c.ingest(c.agents.agents[aid], batch)
            total += len(batch.samples)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - t_cpu
    return {"samples": total, "wall_s": wall, "cpu_s": cpu, "samples_per_cpu_s": total / cpu,
            "series": len(c.series)}


def _pusher(url: str, token: str, agent: str, bodies: list[bytes], q: Any) -> None:
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    ok = 0
    for body in bodies:
        gz = gzip.compress(body, 5)
        conn.request("POST", "/api/v1/push", gz, {"Authorization": f"Bearer {token}", "Content-Encoding": "gzip",
                                                 "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        ok += r.status == 200
    q.put(ok)


def bench_ingest_http(n_pushers: int, batches_each: int) -> dict[str, Any]:
    import subprocess

    import yaml

    from tests.helpers import free_port, http_get, wait_for

    tmp = Path(tempfile.mkdtemp(prefix="rw-bench-"))
    port = free_port()
    agents = [{"id": f"p{i}", "token": f"token-{i:04d}-xxxxxxxx"} for i in range(n_pushers)]
    (tmp / "c.yaml").write_text(yaml.safe_dump({"listen": f"127.0.0.1:{port}", "storage": str(tmp / "c.db"),
                                                "agents": agents, "log_level": "warning"}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "roomwatch", "collector", "-c", str(tmp / "c.yaml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(url + "/readyz", timeout=1)[0] == 200, proc=proc, what="collector")
        work = {a["id"]: _batches(a["id"], batches_each, 500, 100) for a in agents}
        cpu0 = proc_cpu_seconds(proc.pid)
        q: Any = mp.Queue()
        ps = [mp.Process(target=_pusher, args=(url, a["token"], a["id"], work[a["id"]], q)) for a in agents]
        t0 = time.perf_counter()
        for p in ps:
            p.start()
        accepted = sum(q.get() for _ in ps)
        for p in ps:
            p.join()
        wall = time.perf_counter() - t0
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        rss = proc_rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    samples = accepted * 500
    return {"pushers": n_pushers, "batches": accepted, "samples": samples, "wall_s": wall, "collector_cpu_s": cpu,
            "samples_per_s_wall": samples / wall, "samples_per_collector_cpu_s": samples / cpu, "collector_rss_mib": rss / 2**20}


def bench_render(n_series: int, repeat: int) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector as PCCollector

    from roomwatch.collector.series import SeriesStore
    from roomwatch.core.exposition import render
    from roomwatch.core.wire import SampleRecord

    store = SeriesStore(3600)
    now = int(time.time() * 1000)
    per_metric = n_series // len(METRICS)
    samples = []
    for m in METRICS:
        for i in range(per_metric):
            samples.append(SampleRecord(m, {"agent": f"agent-{i // 100}", "site": "county-1", "room": f"room-{i % 9}",
                                            "device": f"dev-{i}"}, 20.0 + i % 17, now))
    store.apply("x", samples)

    class Custom(PCCollector):
        def collect(self) -> Any:
            for metric, fam in store.by_metric.items():
                g = GaugeMetricFamily(metric, "help", labels=["agent", "device", "room", "site"])
                for s in fam.values():
                    lb = s.labels
                    g.add_metric([lb["agent"], lb["device"], lb["room"], lb["site"]], s.value)
                yield g

    reg = CollectorRegistry()
    reg.register(Custom())
    ours, theirs = [], []
    size_ours = size_theirs = 0
    for _ in range(repeat):  # A/B/A/B
        t = time.perf_counter()
        body = render(store.families())
        ours.append(time.perf_counter() - t)
        size_ours = len(body)
        t = time.perf_counter()
        body = generate_latest(reg)
        theirs.append(time.perf_counter() - t)
        size_theirs = len(body)
    return {"series": len(store), "roomwatch_ms": median(ours) * 1000, "prometheus_client_ms": median(theirs) * 1000,
            "ratio": median(theirs) / median(ours), "bytes_roomwatch": size_ours, "bytes_prometheus_client": size_theirs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (CI smoke)")
    args = ap.parse_args()
    q = args.quick
    res: dict[str, Any] = {"versions": versions("aiohttp", "prometheus-client")}
    res["ingest_inprocess"] = bench_ingest_inprocess(20 if q else 100, 5 if q else 21)
    res["ingest_http"] = bench_ingest_http(4, 10 if q else 60)
    res["render"] = [bench_render(n, 3 if q else 7) for n in (10_000, 100_000)]
    path = write_result("collector", res)
    ii, ih = res["ingest_inprocess"], res["ingest_http"]
    print(table(["ingest", "samples", "samples per CPU-second", "notes"], [
        ["in process (decode+dedup+store), batches of 500", ii["samples"], f"{ii['samples_per_cpu_s']:,.0f}",
         f"{ii['series']} series"],
        ["HTTP, real collector, 4 pushers, gzip", ih["samples"], f"{ih['samples_per_collector_cpu_s']:,.0f}",
         f"{ih['samples_per_s_wall']:,.0f}/s wall, RSS {ih['collector_rss_mib']:.0f} MiB"],
    ]))
    print()
    print(table(["series", "roomwatch render ms", "prometheus_client generate_latest ms", "speed-up"], [
        [f"{r['series']:,}", f"{r['roomwatch_ms']:.1f}", f"{r['prometheus_client_ms']:.1f}", f"{r['ratio']:.1f}x"]
        for r in res["render"]]))
    print(f"\nwrote {path}")
    json.dumps(res)


if __name__ == "__main__":
    main()


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    from bench.common import header

    ii, ih = res["ingest_inprocess"], res["ingest_http"]
    out = [header(res, "Collector: ingest and /metrics render (issue 2)")]
    out.append(table(["ingest path", "samples", "samples per CPU-second of the collector", "notes"], [
        ["in process: decode + dedup + store, batches of 500", f"{ii['samples']:,}", f"{ii['samples_per_cpu_s']:,.0f}",
         f"{ii['series']:,} series, steady state"],
        ["HTTP: real collector process, 4 pusher processes, gzip", f"{ih['samples']:,}",
         f"{ih['samples_per_collector_cpu_s']:,.0f}",
         f"{ih['samples_per_s_wall']:,.0f} samples/s wall; collector RSS {ih['collector_rss_mib']:.0f} MiB"],
    ]))
    out.append("")
    out.append(table(["series", "roomwatch render (ms)", "prometheus_client generate_latest, custom collector (ms)",
                      "roomwatch faster by"],
                     [[f"{r['series']:,}", f"{r['roomwatch_ms']:.1f}", f"{r['prometheus_client_ms']:.1f}",
                       f"{r['ratio']:.1f}×"] for r in res["render"]]))
    out.append("")
    out.append("Render: medians of A/B/A/B runs on the same series (5 metrics, 4 labels each). roomwatch keeps each "
               "series' label block rendered once, so a scrape is a join; prometheus_client rebuilds every line.")
    return "\n".join(out)
