"""Run every benchmark and rewrite BENCHMARKS.md from their results.

    python -m bench [--quick] [--only NAME ...] [--list] [--doc FILE] [--results DIR]

Each benchmark is a module ``bench/<name>.py`` listed in :data:`BENCHMARKS`, with

* ``main()``, run as ``python -m bench.<name> [args]`` in its own process (so one
  cannot disturb another's memory figures), that prints a table and writes
  ``bench/results/<name>.json`` with :func:`bench.common.write_result`;
* ``--quick``: a small run of the same thing (a smoke check, not figures to quote);
* ``markdown(result) -> str``: its BENCHMARKS.md section, starting with
  :func:`bench.common.header` (title, exact command, date, machine, versions).

BENCHMARKS.md keeps one section per benchmark between ``<!-- bench:NAME -->``
markers, in the order of :data:`BENCHMARKS`; a run rewrites the sections of the
benchmarks it ran and leaves the others (and any text outside the markers) as
they were. Comparisons inside a benchmark are ratios of runs alternated A/B/A/B
in the same process or session, never against figures of another day.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT, machine


@dataclass(frozen=True)
class Benchmark:
    name: str
    full: list[str] = field(default_factory=list)  # arguments of a full run (default: the module's defaults)


#: In BENCHMARKS.md order: agent side, collector side, alerting, then the profiles.
BENCHMARKS: list[Benchmark] = [
    Benchmark("agent_footprint", ["--minutes", "10"]),  # issue 2: agent RSS/CPU beside node_exporter
    Benchmark("snmp"),             # issue 3: one agent polling 100 UPS agents vs snmp_exporter
    Benchmark("traps"),            # issue 13: agent memory with the trap listener, trap → collector latency
    Benchmark("mqtt"),             # issue 4: MQTT ingest rate, CPU per 1k messages, memory per sensor
    Benchmark("spool"),            # issue 6: spool throughput, backlog drain, history cost
    Benchmark("collector"),        # issue 2: ingest and /metrics render vs prometheus_client
    Benchmark("hotpath"),          # issue 8: the ingest path stage by stage
    Benchmark("fleet", ["--seconds", "45", "--also-agents", "2000"]),  # issue 8: one collector, 1,000 agents
                                                                       # history on/off; 2,000 for sizing
    Benchmark("rules"),            # issue 5: rule evaluation cost (issue 15: --baseline REF for before/after)
    Benchmark("nut_server"),       # issue 15: the agent's NUT server vs upsd, 50 upsmon-like clients
    Benchmark("alert_latency"),    # issue 5: push → webhook vs Prometheus + Alertmanager
    Benchmark("e2e_door"),         # issue 5: MQTT publish → agent → collector → webhook, end to end
    Benchmark("profiles"),         # issue 8: before/after of the profiled hot spots
    Benchmark("oncall"),           # issue 14: one-tap links, reply codes and rotas per message
    Benchmark("attacks"),          # issue 12: /healthz under attack; the limits' cost, A/B against the commit before
    Benchmark("discover"),         # issue 13: discover of a /24 beside nmap and snmpget loops
]

DOC = ROOT / "BENCHMARKS.md"
HEADER = """# Benchmarks

Produced by `python -m bench` (every benchmark) or `python -m bench.<name>` (one); each
section says the exact command, the machine and the versions. The machine is a shared
2-core VM: absolute times drift ±30 % between runs, so comparisons are ratios measured
A/B/A/B in one run. Raw results: `bench/results/<name>.json` (not committed).
`python -m bench --quick` runs everything small (a smoke check; do not quote its figures).
Sizing for large fleets from these figures: [docs/scaling.md](docs/scaling.md).
"""


def _marker(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)


def update_doc(doc: Path, name: str, body: str) -> None:
    """Replace the section of ``name`` (or insert it after the nearest earlier section present)."""
    text = doc.read_text() if doc.exists() else HEADER
    block = f"<!-- bench:{name} -->\n{body.rstrip()}\n<!-- /bench:{name} -->"
    pattern = _marker(name)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        names = [b.name for b in BENCHMARKS]
        earlier = names[: names.index(name)] if name in names else names
        at = len(text.rstrip())  # no earlier section: at the end
        for prev in reversed(earlier):
            found = _marker(prev).search(text)
            if found:
                at = found.end()
                break
        text = text[:at] + "\n\n" + block + (text[at:] or "\n")
    doc.write_text(text)


def _present(name: str) -> bool:
    return importlib.util.find_spec(f"bench.{name}") is not None


def main() -> int:
    ap = argparse.ArgumentParser(description="Run roomwatch benchmarks and update BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="small runs of everything (smoke check)")
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to update (default BENCHMARKS.md)")
    ap.add_argument("--results", type=Path, default=None, help="directory for the JSON results (default bench/results)")
    args = ap.parse_args()
    known = {b.name for b in BENCHMARKS}
    if args.list:
        for b in BENCHMARKS:
            print(b.name + ("" if _present(b.name) else " (missing)"))
        return 0
    unknown = sorted(set(args.only or []) - known)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.results is not None:
        env["ROOMWATCH_BENCH_RESULTS"] = str(args.results.resolve())
    results = Path(env.get("ROOMWATCH_BENCH_RESULTS") or ROOT / "bench" / "results")
    failed: list[str] = []
    started = time.monotonic()
    for b in BENCHMARKS:
        if args.only and b.name not in args.only:
            continue
        if not _present(b.name):
            print(f"!! {b.name}: bench/{b.name}.py is missing", file=sys.stderr)
            failed.append(b.name)
            continue
        argv = [sys.executable, "-m", f"bench.{b.name}", *(["--quick"] if args.quick else b.full)]
        print(f"== {b.name}: {' '.join(argv[1:])}", flush=True)
        t = time.monotonic()
        out = results / f"{b.name}.json"
        before = out.stat().st_mtime if out.exists() else None
        res = subprocess.run(argv, cwd=ROOT, env=env, check=False)
        if res.returncode != 0 or not out.exists() or out.stat().st_mtime == before:
            print(f"!! {b.name} failed (exit code {res.returncode})", file=sys.stderr)
            failed.append(b.name)
            continue
        result = json.loads(out.read_text())
        module = importlib.import_module(f"bench.{b.name}")
        update_doc(args.doc, b.name, module.markdown(result))
        print(f"== {b.name} done in {time.monotonic() - t:.0f}s", flush=True)
    m = machine()
    print(f"\n{args.doc} updated in {(time.monotonic() - started) / 60:.1f} min "
          f"({m['cpu']}, {m['cores']} cores, Python {m['python']})." + (f" Failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
