"""Fleet simulator: N simulated agents pushing to one real collector, as several processes on loopback.

    python -m bench.fleet [--agents 1000] [--series 100] [--interval 10] [--seconds 60] [--procs 3]
                          [--event-every 60] [--history on|off|both] [--quick]

Each simulated agent pushes ``--series`` samples every ``--interval`` seconds
(gzip JSON, its own token, increasing seq), its start spread at random over the
interval, the way ``agent/push.py`` pushes. Now and then (exponential, mean
``--event-every`` seconds per agent) a door opens or closes, or a UPS goes on
battery or back on mains: that push goes out at once with the new sample and
its event, as the agent's state events do.

The collector runs with its alerting on: the default rule pack plus a rule file
firing at once (``for: 0s``) on ``roomwatch_door_open == 1`` and
``roomwatch_ups_on_battery == 1``, routed (``group_wait: 0s``, one group per
agent and device) to a ``webhook`` channel whose receiver runs in this
process. Event → notification latency is the receiver's clock minus the
simulated agent's clock just before the push that carried the event.

Reported: the collector's sustained ingest, CPU (cores), RSS, ``/metrics``
scrape time and size, push round trip, event → notification p50/p99; with
``--history both``, the same run with the collector's SQLite history off, so
the cost of history (every push committed to disk before its 200) is a ratio
of the same run.
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

from bench.common import (
    ROOT,
    Receiver,
    free_port,
    median,
    percentile,
    proc_cpu_seconds,
    proc_rss_bytes,
    table,
    versions,
    write_result,
)

KINDS = [("roomwatch_temperature_celsius", 24.0), ("roomwatch_humidity_ratio", 0.45),
         ("roomwatch_ups_battery_charge_ratio", 1.0), ("roomwatch_ups_battery_runtime_seconds", 1800.0),
         ("roomwatch_device_up", 1.0)]
#: state metric → (event when it turns 1, event when it turns 0), as vocabulary.STATE_EVENTS
STATES = {"roomwatch_door_open": ("door", "door_open", "door_close"),
          "roomwatch_ups_on_battery": ("ups", "ups_on_battery", "ups_on_mains")}
RULES = {"rules": [
    {"alert": "FleetDoorOpen", "metric": "roomwatch_door_open", "when": "== 1", "for": "0s", "severity": "warning"},
    {"alert": "FleetUPSOnBattery", "metric": "roomwatch_ups_on_battery", "when": "== 1", "for": "0s",
     "severity": "critical"},
]}


def token_of(i: int) -> str:
    return f"fleet-token-{i:06d}-abcdefgh"


def agent_name(i: int) -> str:
    return f"fleet-{i:05d}"


def _body(agent: str, idx: int, seq: int, series: int, now_ms: int, events: list[dict[str, Any]],
          extra: list[dict[str, Any]]) -> bytes:
    samples = []
    site = f"site-{idx % 50}"
    for j in range(series):
        metric, base = KINDS[j % len(KINDS)]
        samples.append({"metric": metric, "labels": {"agent": agent, "site": site, "room": "room-1",
                                                      "device": f"dev-{j // len(KINDS)}"},
                        "value": base + (seq % 10) * 0.01, "ts": now_ms})
    samples.extend(extra)
    doc = {"agent": agent, "seq": seq, "sent": now_ms, "samples": samples, "events": events}
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)


async def _agent_loop(session: Any, url: str, idx: int, series: int, interval: float, stop_at: float,
                      rtts: list[tuple[float, float]], errors: list[int], event_every: float,
                      fired: list[tuple[str, str, float]]) -> None:
    agent = agent_name(idx)
    headers = {"Authorization": f"Bearer {token_of(idx)}", "Content-Encoding": "gzip", "Content-Type": "application/json"}
    seq = int(time.time() * 1e6)
    rng = random.Random(idx)
    await asyncio.sleep(rng.uniform(0, interval))
    state = dict.fromkeys(STATES, 0)
    next_event = time.time() + rng.expovariate(1 / event_every) if event_every else float("inf")
    next_push = time.time()
    while time.time() < stop_at:
        now = time.time()
        events, extra = [], []
        fire: tuple[str, str] | None = None
        if now >= next_event:
            metric = rng.choice(list(STATES))
            device, on, off = STATES[metric]
            state[metric] = value = 1 - state[metric]
            labels = {"agent": agent, "site": f"site-{idx % 50}", "room": "room-1", "device": device}
            ms = int(now * 1000)
            events.append({"type": on if value else off, "labels": labels, "ts": ms, "value": value})
            extra.append({"metric": metric, "labels": labels, "value": value, "ts": ms})
            # at least 2 s apart: a flap faster than the route's group_interval (1 s) is absorbed by
            # grouping (the channel still knows the alert as firing), which is right but not a latency
            next_event = now + max(2.0, rng.expovariate(1 / event_every))
            if value:
                fire = (agent, device)
        due = now >= next_push
        if due or events:
            seq += 1
            body = _body(agent, idx, seq, series if due else 0, int(now * 1000), events, extra)
            t = time.perf_counter()
            sent_at = time.time()
            try:
                async with session.post(url + "/api/v1/push", data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors.append(resp.status)
            except Exception:
                errors.append(0)
            rtts.append((sent_at, time.perf_counter() - t))
            if fire is not None:
                fired.append((*fire, sent_at))
            if due:
                next_push += interval
        await asyncio.sleep(max(0.0, min(next_push, next_event, stop_at) - time.time()))


def _worker(url: str, indices: list[int], series: int, interval: float, stop_at: float, event_every: float,
            out: Any) -> None:
    import aiohttp

    async def run() -> None:
        rtts: list[tuple[float, float]] = []
        errors: list[int] = []
        fired: list[tuple[str, str, float]] = []
        conn = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(_agent_loop(session, url, i, series, interval, stop_at, rtts, errors, event_every,
                                               fired) for i in indices))
        out.put({"rtts": rtts, "errors": errors, "fired": fired})

    asyncio.run(run())


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class _Notifications:
    """Firing notifications by (agent, device), as the receiver gets them."""

    def __init__(self) -> None:
        self.firing: dict[tuple[str, str], list[float]] = {}
        self.resolved = 0
        self.posts = 0

    def on_post(self, at: float, path: str, body: dict[str, Any]) -> None:
        self.posts += 1
        for a in body.get("alerts", []):
            if a["status"] == "firing":
                key = (a["labels"].get("agent", ""), a["labels"].get("device", ""))
                self.firing.setdefault(key, []).append(at)
            else:
                self.resolved += 1

    def latency(self, agent: str, device: str, sent_at: float) -> float | None:
        for at in self.firing.get((agent, device), []):
            if at >= sent_at:
                return at - sent_at
        return None


def collector_config(tmp: Path, port: int, agents: int, interval: float, history: bool, hook: str) -> Path:
    """The fleet collector's file: every simulated agent, alerting to ``hook``."""
    (tmp / "fleet-rules.yaml").write_text(yaml.safe_dump(RULES))
    conf = {"listen": f"127.0.0.1:{port}", "storage": str(tmp / "c.db"), "log_level": "warning",
            "agent_timeout": f"{int(interval * 3)}s",
            # every simulated agent comes from 127.0.0.1: the per-address limit is for the real world
            "rate_limit": {"per_address": 0},
            "history": {"enabled": history},
            "agents": [{"id": agent_name(i), "token": token_of(i)} for i in range(agents)],
            "rules": {"files": [str(tmp / "fleet-rules.yaml")]},
            "channels": [{"name": "hook", "type": "webhook", "url": hook}],
            "routes": [{"matchers": ['alertname=~"Fleet.*"'], "channels": ["hook"], "group_by": ["agent", "device"],
                        "group_wait": "0s", "group_interval": "1s", "repeat_interval": "24h"}]}
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def run_fleet(agents: int, series: int, interval: float, seconds: float, procs: int, event_every: float,
              history: bool = True, profile: str | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="rw-fleet-"))
    notes = _Notifications()
    recv = Receiver(on_post=notes.on_post)
    port = free_port()
    conf = collector_config(tmp, port, agents, interval, history, recv.url + "/fleet")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    coll = subprocess.Popen([sys.executable, *prof, "-m", "roomwatch", "collector", "-c", str(conf)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "collector.log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                _get(url + "/readyz")
                break
            except OSError:
                if coll.poll() is not None:
                    raise SystemExit((tmp / "collector.log").read_text()[-3000:]) from None
                time.sleep(0.1)
        warmup = max(interval * 1.5, 10.0)
        stop_at = time.time() + warmup + seconds + 2
        out: Any = mp.Queue()
        chunks = [list(range(agents))[k::procs] for k in range(procs)]
        workers = [mp.Process(target=_worker, args=(url, c, series, interval, stop_at, event_every, out))
                   for c in chunks]
        for w in workers:
            w.start()
        time.sleep(warmup)
        m0 = _get(url + "/metrics").decode()
        cpu0, t0, wall0 = proc_cpu_seconds(coll.pid), time.monotonic(), time.time()
        scrapes = []
        body = b""
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
        time.sleep(2.0)  # the last notifications
    finally:
        coll.terminate()
        coll.wait(15)
        recv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    window = t1 - t0
    # pushes sent inside the measured window (the warm-up creates 100k series: GC pauses of a growing heap)
    rtts = [rtt for r in results for at, rtt in r["rtts"] if wall0 <= at <= wall0 + window]
    errors = [x for r in results for x in r["errors"]]
    received = "roomwatch_collector_samples_received_total"
    ingested = _counter(m1, received) - _counter(m0, received)
    commit_s = _counter(m1, "roomwatch_collector_store_commit_seconds_total") - _counter(
        m0, "roomwatch_collector_store_commit_seconds_total")
    commits = _counter(m1, "roomwatch_collector_store_commits_total") - _counter(m0, "roomwatch_collector_store_commits_total")
    # events of the measured window (the collector had every agent by then); unmatched ones were not notified
    fired = [f for r in results for f in r["fired"] if wall0 <= f[2] <= wall0 + window]
    lat = [x for x in (notes.latency(*f) for f in fired) if x is not None]
    res: dict[str, Any] = {
        "history": history,
        "agents": agents, "series_per_agent": series, "interval_s": interval, "window_s": window, "procs": procs,
        "offered_samples_per_s": agents * (series + 0.0) / interval,
        "ingested_samples_per_s": ingested / window,
        "collector_cpu_cores": (cpu1 - cpu0) / window,
        "collector_rss_mib": rss / 2**20,
        "series_exposed": sum(1 for line in m1.splitlines() if line and not line.startswith("#")),
        "metrics_scrape_ms_median": median(scrapes) * 1000, "metrics_scrape_ms_max": max(scrapes) * 1000,
        "metrics_bytes": len(m1),
        "push_rtt_ms_p50": percentile(rtts, 50) * 1000, "push_rtt_ms_p99": percentile(rtts, 99) * 1000,
        "pushes": len(rtts), "push_errors": len(errors),
        "store_commits_per_s": commits / window, "store_commit_busy_ratio": commit_s / window,
        "events_fired": len(fired), "notified": len(lat), "resolved_notifications": notes.resolved,
    }
    if lat:
        res.update({"notify_latency_ms_p50": percentile(lat, 50) * 1000, "notify_latency_ms_p99": percentile(lat, 99) * 1000,
                    "notify_latency_ms_max": max(lat) * 1000})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window after warm-up")
    ap.add_argument("--procs", type=int, default=3, help="load-generator processes")
    ap.add_argument("--event-every", type=float, default=60.0, help="mean seconds between events per agent")
    ap.add_argument("--history", choices=["on", "off", "both"], default="both",
                    help="collector history (both: A/B, history on first)")
    ap.add_argument("--also-agents", type=int, nargs="*", default=[], metavar="N",
                    help="then one run with history on for each of these fleet sizes (sizing: CPU, memory, scrape vs agents)")
    ap.add_argument("--quick", action="store_true", help="200 agents, 20 s, history on only (smoke test)")
    ap.add_argument("--profile", metavar="FILE", help="run the collector under cProfile, stats to FILE (its main thread)")
    args = ap.parse_args()
    if args.quick:
        args.agents, args.seconds, args.history, args.also_agents = min(args.agents, 200), min(args.seconds, 20.0), "on", []
    plan = [(args.agents, hist, args.procs) for hist in {"on": [True], "off": [False], "both": [True, False]}[args.history]]
    # one load-generator process per 500 agents at least (each is one Python event loop)
    plan += [(n, True, max(args.procs, -(-n // 500))) for n in args.also_agents]
    runs = []
    for agents, hist, procs in plan:
        runs.append(run_fleet(agents, args.series, args.interval, args.seconds, procs, args.event_every, hist,
                              args.profile and f"{args.profile}.{agents}.{'on' if hist else 'off'}"))
        print(_table(runs[-1]), flush=True)
    res: dict[str, Any] = {"versions": versions("aiohttp"), "runs": runs}
    path = write_result("fleet", res)
    print(f"\nwrote {path}")


def _rows(r: dict[str, Any]) -> list[list[str]]:
    rows = [
        ["agents × series / interval", f"{r['agents']:,} × {r['series_per_agent']} / {r['interval_s']:g} s"],
        ["offered samples/s", f"{r['offered_samples_per_s']:,.0f}"],
        ["ingested samples/s (collector counter)", f"{r['ingested_samples_per_s']:,.0f}"],
        ["collector CPU (cores)", f"{r['collector_cpu_cores']:.2f}"],
        ["collector CPU per 1,000 agents (cores)", f"{r['collector_cpu_cores'] * 1000 / r['agents']:.2f}"],
        ["collector RSS (MiB)", f"{r['collector_rss_mib']:.0f}"],
        ["collector RSS per 1,000 agents (MiB)", f"{r['collector_rss_mib'] * 1000 / r['agents']:.0f}"],
        ["series on /metrics", f"{r['series_exposed']:,}"],
        ["/metrics scrape, median / max (ms)", f"{r['metrics_scrape_ms_median']:.0f} / {r['metrics_scrape_ms_max']:.0f}"],
        ["/metrics size (bytes)", f"{r['metrics_bytes']:,}"],
        ["push round trip p50 / p99 (ms)", f"{r['push_rtt_ms_p50']:.1f} / {r['push_rtt_ms_p99']:.1f}"],
        ["pushes in the window / errors in the whole run", f"{r['pushes']:,} / {r['push_errors']}"],
        ["store commits/s; share of time committing", f"{r['store_commits_per_s']:.0f}; {r['store_commit_busy_ratio']:.0%}"],
        ["events (door open, UPS on battery) / notified", f"{r['events_fired']} / {r['notified']}"],
    ]
    if "notify_latency_ms_p50" in r:
        rows.append(["event → notification p50 / p99 / max (ms)",
                     f"{r['notify_latency_ms_p50']:.0f} / {r['notify_latency_ms_p99']:.0f} / {r['notify_latency_ms_max']:.0f}"])
    return rows


def _head(r: dict[str, Any]) -> str:
    return f"{r['agents']:,} agents, history {'on' if r.get('history', True) else 'off'}"


def _table(r: dict[str, Any]) -> str:
    return table(["figure", _head(r)], _rows(r))


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    from bench.common import header

    runs = res.get("runs") or [res]
    heads = ["figure"] + [_head(r) for r in runs]
    by_run = [dict(_rows(r)) for r in runs]
    rows = [[name] + [cells.get(name, "") for cells in by_run] for name, _ in _rows(runs[0])]
    out = [header(res, "Fleet simulator: one collector under many agents (issue 8)"), table(heads, rows), ""]
    r = runs[0]
    full = r["agents"] >= 1000 and r["series_per_agent"] >= 100 and r["interval_s"] <= 10
    met = r["collector_cpu_cores"] < 1.0 and r.get("notify_latency_ms_p99", 1e9) < 1000 and r["notified"] == r["events_fired"]
    verdict = ("met" if met else "NOT met") if full else "not judged on this smaller run"
    out.append(f"Simulated agents in {r['procs']}+ load-generator processes push gzip JSON over HTTP to one real "
               f"collector process on loopback (history, alerting and the default rules on); measured over "
               f"{r['window_s']:.0f} s after a warm-up that creates every series. Events: each agent opens/closes a door "
               "or switches a UPS to battery/mains about once a minute; a rule file fires at once (`for: 0s`) and a "
               "route with `group_wait: 0s` sends it to a webhook receiver in the benchmark process. Latency = receiver "
               "clock − agent clock just before the push carrying the event; the benchmark scrapes `/metrics` every "
               f"~{r['window_s'] / 6:.0f} s during the window (a scrape delays the pushes it overlaps). The load "
               "generators share the 2 cores with the collector. Target (1,000 agents × 100 series at 10 s, collector "
               f"under one core, p99 event → notification under 1 s, every event notified): **{verdict}**.")
    bigger = [x for x in runs if x["agents"] > r["agents"] and x["history"] == r["history"]]
    if bigger:
        b = bigger[-1]
        k = (b["agents"] - r["agents"]) / 1000
        out.append("")
        out.append(f"Growth from {r['agents']:,} to {b['agents']:,} agents (history on): "
                   f"{(b['collector_cpu_cores'] - r['collector_cpu_cores']) / k:.2f} cores and "
                   f"{(b['collector_rss_mib'] - r['collector_rss_mib']) / k:.0f} MiB per further 1,000 agents "
                   f"(100,000 series); `/metrics` scrape {r['metrics_scrape_ms_median']:.0f} → "
                   f"{b['metrics_scrape_ms_median']:.0f} ms for {r['series_exposed']:,} → {b['series_exposed']:,} series.")
    pair = [x for x in runs if x["agents"] == r["agents"]]
    if len(pair) == 2 and pair[0]["history"] != pair[1]["history"]:
        on, off = pair if pair[0]["history"] else pair[::-1]
        out.append("")
        out.append(f"History on costs {on['collector_cpu_cores'] / max(off['collector_cpu_cores'], 1e-9):.2f}× the "
                   "collector CPU of history off here (one run each, one after the other; the spool section has the "
                   "A/B/A/B figure per sample). With history on every push waits for its SQLite commit (group commit, "
                   "one fsync per group) before its 200.")
    return "\n".join(out)


if __name__ == "__main__":
    main()
