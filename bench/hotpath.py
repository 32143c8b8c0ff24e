"""The collector's ingest path stage by stage, in process, under the fleet simulator's load shape.

    python -m bench.hotpath [--agents 1000] [--rounds 7] [--profile] [--quick]

``--agents`` agents × 100 series (the series of ``bench.fleet``: temperature,
humidity, UPS charge and runtime, device_up on 20 devices; 100k series for
1,000 agents), one push body per agent per round, steady state (warm-up rounds
create the series first). Per round and stage, CPU time of this process:

* decode — ``roomwatch.core.wire.decode_batch`` of the uncompressed JSON body;
* series — admission (place, names, series limits) and ``Collector.ingest`` without listeners (dedup,
  clock skew, current values);
* alerts — the same ingest with the alert service listening (default rule pack), minus "series";
* history — ``IngestStore.commit`` of every batch (SQLite writer thread included, one fsync per group);
* render — ``/metrics`` of all series (``Collector.families`` + ``render``), and the 1 s housekeeping ``tick``.

Also the collector's memory per series (RSS growth while the series are created,
alert service and history store included). ``--profile`` prints the top functions
of each stage (cProfile; the history stage profiles the writer thread). Used
for the before/after figures of BENCHMARKS.md's "Profiles" (``bench.profiles``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.common import median, table, write_result

SERIES = 100
STAGES = ["decode", "series", "alerts", "history", "render", "tick"]


def _bodies(agents: int, rnd: int, t_ms: int) -> list[bytes]:
    from bench.fleet import KINDS, agent_name
    from roomwatch.core.wire import Batch, SampleRecord, encode_batch

    out = []
    ts = t_ms + rnd * 10_000
    for a in range(agents):
        agent = agent_name(a)
        site = f"site-{a % 50}"
        samples = [SampleRecord(KINDS[j % len(KINDS)][0], {"agent": agent, "site": site, "room": "room-1",
                                                           "device": f"dev-{j // len(KINDS)}"},
                                KINDS[j % len(KINDS)][1] + (rnd % 10) * 0.01, ts) for j in range(SERIES)]
        out.append(encode_batch(Batch(agent, rnd + 1, samples, []), compress=False))
    return out


def _config(tmp: Path, name: str, agents: int) -> Any:
    from bench.fleet import agent_name, token_of
    from roomwatch.collector.config import CollectorConfig

    return CollectorConfig.model_validate({
        "storage": str(tmp / f"{name}.db"), "agent_timeout": "1h",
        "agents": [{"id": agent_name(i), "token": token_of(i)} for i in range(agents)]})


class _Profiles:
    def __init__(self, on: bool):
        self.on = on
        self.by_stage: dict[str, cProfile.Profile] = {}

    def get(self, stage: str) -> cProfile.Profile | None:
        if not self.on:
            return None
        return self.by_stage.setdefault(stage, cProfile.Profile())

    def report(self, top: int = 12) -> str:
        out = []
        for stage, prof in self.by_stage.items():
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
            body = buf.getvalue()
            out.append(f"--- {stage} ---\n" + body[body.find("   ncalls"):].rstrip())
        return "\n\n".join(out)


def _timed(fn: Any, prof: cProfile.Profile | None) -> float:
    gc.collect()
    gc.disable()
    try:
        c0 = time.process_time()
        if prof is not None:
            prof.enable()
        fn()
        if prof is not None:
            prof.disable()
        return time.process_time() - c0
    finally:
        gc.enable()


def run(agents: int, rounds: int, profile: bool) -> dict[str, Any]:

    from roomwatch.collector.core import Collector
    from roomwatch.collector.main import build_alert_service
    from roomwatch.collector.store import IngestStore
    from roomwatch.core.exposition import render
    from roomwatch.core.wire import decode_batch

    profs = _Profiles(profile)
    t_ms = int(time.time() * 1000) - 3_600_000
    samples = agents * SERIES
    cpu: dict[str, list[float]] = {s: [] for s in STAGES}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        plain = Collector(_config(tmp, "plain", agents))
        alerting = Collector(_config(tmp, "alerting", agents))
        clock = [0.0]
        svc = build_alert_service(alerting, clock=lambda: clock[0])
        store = IngestStore(str(tmp / "history.db"))
        if profile:  # the writer thread is not the thread cProfile watches: wrap its commit
            hprof = profs.get("history")
            orig = store._commit_group

            def commit_group(group: list[Any]) -> None:
                hprof.enable()  # type: ignore[union-attr]
                try:
                    orig(group)
                finally:
                    hprof.disable()  # type: ignore[union-attr]

            store._commit_group = commit_group  # type: ignore[method-assign]
        loop = asyncio.new_event_loop()

        async def commit_all(batches: list[Any]) -> None:
            await asyncio.gather(*(store.commit(b.agent, b, 0) for b in batches))

        heap = 0
        for rnd in range(rounds + 2):
            measure = rnd >= 2  # two warm-up rounds: every series, alias and rule state exists
            now = clock[0] = (t_ms + rnd * 10_000) / 1000 + 0.5
            bodies = _bodies(agents, rnd, t_ms)
            if rnd == 0:  # what the alerting collector and the history store keep per series (Python heap)
                tracemalloc.start()
            batches: list[Any] = []
            dt = _timed(lambda bodies=bodies, batches=batches: batches.extend(decode_batch(b) for b in bodies),
                        profs.get("decode") if measure else None)
            if measure:
                cpu["decode"].append(dt)
            for col, stage in ((alerting, "alerts"), (plain, "series")):
                fresh = [decode_batch(b) for b in bodies]  # ingest may adjust timestamps in place
                states = [col.agents.agents[b.agent] for b in fresh]

                def ingest(col: Any = col, fresh: list[Any] = fresh, states: list[Any] = states, t: float = now) -> None:
                    admit = getattr(getattr(col, "admission", None), "admit", None)  # none before issue 12
                    for st, b in zip(states, fresh, strict=True):
                        if admit is not None:
                            admit(st, b)
                        col.ingest(st, b, now=t)

                dt = _timed(ingest, profs.get(stage) if measure else None)
                if measure:
                    cpu[stage].append(dt)
                if stage == "alerts":
                    dt = _timed(lambda batches=batches: loop.run_until_complete(commit_all(batches)), None)
                    if measure:
                        cpu["history"].append(dt)
                    if rnd == 0:
                        fresh.clear()  # the decoded batches: not the collector's
                        batches.clear()
                        gc.collect()
                        heap = tracemalloc.get_traced_memory()[0]
                        tracemalloc.stop()
            if measure:
                cpu["alerts"][-1] -= cpu["series"][-1]
                cpu["render"].append(_timed(lambda t=now: render(plain.families(t)), profs.get("render")))
                cpu["tick"].append(_timed(lambda t=now: plain.tick(t), profs.get("tick")))
        store.close()
        svc.store.close()
        loop.close()
    res: dict[str, Any] = {"agents": agents, "series": samples, "rounds": rounds,
                           "heap_bytes_per_series": heap / samples}
    for stage in STAGES:
        med = median(cpu[stage])
        if stage in ("render", "tick"):
            res[f"{stage}_ms"] = med * 1000
        else:
            res[f"{stage}_us_per_sample"] = med * 1e6 / samples
    res["push_path_us_per_sample"] = sum(res[f"{s}_us_per_sample"] for s in ("decode", "series", "alerts", "history"))
    if profile:
        res["profile"] = profs.report()
    return res


def rows(res: dict[str, Any]) -> list[list[str]]:
    return [
        ["decode (JSON + validation), µs per sample", f"{res['decode_us_per_sample']:.2f}"],
        ["series (dedup, current values), µs per sample", f"{res['series_us_per_sample']:.2f}"],
        ["alert rules (default pack), µs per sample", f"{res['alerts_us_per_sample']:.2f}"],
        ["history (SQLite commit, writer thread), µs per sample", f"{res['history_us_per_sample']:.2f}"],
        ["push path total, µs per sample", f"{res['push_path_us_per_sample']:.2f}"],
        [f"/metrics render of {res['series']:,} series, ms", f"{res['render_ms']:.0f}"],
        ["housekeeping tick, ms", f"{res['tick_ms']:.1f}"],
        ["memory per series (Python heap: current values, rule states, history ids), bytes",
         f"{res['heap_bytes_per_series']:,.0f}"],
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="print cProfile's top functions per stage")
    ap.add_argument("--quick", action="store_true", help="100 agents, 3 rounds")
    ap.add_argument("--no-write", action="store_true", help="print JSON to stdout only (used by bench.profiles)")
    args = ap.parse_args()
    if args.quick:
        args.agents, args.rounds = min(args.agents, 100), min(args.rounds, 3)
    res = run(args.agents, args.rounds, args.profile)
    if args.no_write:
        import json

        print(json.dumps(res))
        return
    path = write_result("hotpath", res)
    print(table(["stage", "cost"], rows(res)))
    if args.profile:
        print("\n" + res["profile"])
    print(f"\nwrote {path}")


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    from bench.common import header

    return "\n".join([
        header(res, "Collector ingest path, stage by stage (issue 8)"), table(["stage", "cost"], rows(res)), "",
        f"In process, {res['agents']:,} agents × {SERIES} series (the fleet simulator's series), one push per agent per "
        f"round, medians of {res['rounds']} rounds after two warm-up rounds; CPU of this process. \"alerts\" is ingest "
        "with the alert service listening minus ingest alone; \"history\" includes the SQLite writer thread. "
        "Memory: Python heap (tracemalloc) the collector with alerting and the history store keep after the first "
        "round created every series, divided by the series count; the process RSS per agent is in the fleet "
        "section."])


if __name__ == "__main__":
    main()
