"""Before/after of the profiled hot spots: ``bench.hotpath`` on an older commit and on this tree, A/B/A/B.

    python -m bench.profiles [--before REV] [--agents 1000] [--rounds 5] [--pairs 2] [--quick]

The older commit is exported with ``git archive`` into a temporary directory and
this tree's ``bench/`` is laid over it, so the same measuring code drives both
versions of the collector code; runs alternate (before, after, before, after)
in one session, and the figures are the medians per side. The profiles that
found the hot spots are reproduced with ``python -m bench.hotpath --profile``
(per stage, cProfile) and ``python -m bench.fleet --history on --profile FILE``
(the collector process under cProfile).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROOT, median, table, write_result

#: The last commit before the profile-driven changes of issue 8.
BEFORE = "bfaa347"

FIGURES = [  # (result key, label); lower is better for all
    ("decode_us_per_sample", "decode (JSON + validation), µs per sample"),
    ("series_us_per_sample", "series (dedup, current values), µs per sample"),
    ("alerts_us_per_sample", "alert rules, µs per sample"),
    ("history_us_per_sample", "history (SQLite writer thread), µs per sample"),
    ("push_path_us_per_sample", "push path total, µs per sample"),
    ("render_ms", "/metrics render, ms"),
    ("tick_ms", "housekeeping tick (every second), ms"),
    ("heap_bytes_per_series", "memory per series (Python heap), bytes"),
]

CHANGES = [
    ("decode", "`roomwatch/core/wire.py`", "label and metric names already validated are remembered in a bounded set "
     "(the regex ran 5× per sample and was half of decode); the error position (`samples[i]`) is formatted only "
     "for an error; the value is checked by its exact JSON type. Found with `bench.hotpath --profile`: "
     "`_labels` and `re.Pattern.match` at the top of the decode stage."),
    ("history", "`collector/store.py`", "the series id is looked up by the label pairs as they arrive (one dict "
     "lookup); the canonical sorted JSON of the labels, built for every sample before, is now built only for a "
     "series not seen since the start (then looked up in SQLite), and the store no longer loads every series id "
     "at start. Found in the writer thread's profile: `json.dumps` took half of it."),
    ("tick", "`collector/series.py`", "series expiry keeps a lower bound of the sample times and skips its scan "
     "of every series (each second) while nothing can be old enough."),
    ("memory", "`roomwatch/core/interning.py`", "the label pairs and strings of the keys that live as long as a series "
     "(current values, rule states, history ids) are shared instead of one copy per index per series. Found with "
     "tracemalloc: four copies of each series' label tuples."),
    ("alerts", "`alerts/inhibit.py`", "inhibition remembers per active alert whether each rule's source/target "
     "matchers match, and recomputes (on every alert transition) over the alerts a rule concerns only. Found in "
     "the fleet profile: `Inhibitor.compute` re-ran every matcher on every active alert at every transition "
     "(~5 ms with a thousand open doors; it grows with active alerts × transitions)."),
    ("garbage collection", "`collector/gcfreeze.py`", "while the series count grows, the collector moves its "
     "long-lived objects to the permanent generation (`gc.freeze`). A full collection walked ~10 tracked objects "
     "per series: with 200k series it stopped the event loop for 0.5–0.75 s (seen with `gc.callbacks` in the "
     "collector process), now 5–20 ms. Measured with `bench.fleet --agents 2000 --procs 4 --seconds 40 --history "
     "on`, freeze/no-freeze/freeze/no-freeze: push round trip p99 212 / 387 / 162 / 895 ms, event → notification "
     "p99 260 / 396 / 189 / 1,351 ms, max 399 / 742 / 339 / 1,604 ms, collector CPU unchanged (0.36–0.44 cores)."),
    ("scrape", "`roomwatch/core/exposition.py`, `collector/http.py`", "a `/metrics` scrape is rendered in pieces of "
     "4096 lines with the event loop free between pieces (pushes waited for whole scrapes: the fleet's slow pushes "
     "all fell on scrapes); the series snapshot skips its per-series staleness test while nothing can be stale. "
     "A render thread was tried first and did not help (with the GIL, every push waits for the thread's time "
     "slices). Measured with `bench.fleet --seconds 30 --history on`, 1,000 agents, pieces/whole/pieces/whole: "
     "push round trip p99 46 / 107 / 37 / 69 ms, event → notification p99 39 / 101 / 35 / 82 ms."),
]


def _export(rev: str, dest: Path) -> str:
    """``git archive REV`` into ``dest`` with this tree's ``bench/`` over it; returns the full commit id."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    tar = dest / "src.tar"
    with open(tar, "wb") as f:
        subprocess.run(["git", "archive", commit], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(tar) as t:
        t.extractall(dest / "tree", filter="data")
    tar.unlink()
    shutil.rmtree(dest / "tree" / "bench", ignore_errors=True)
    shutil.copytree(ROOT / "bench", dest / "tree" / "bench", ignore=shutil.ignore_patterns("results", "__pycache__"))
    return commit


def _hotpath(tree: Path, agents: int, rounds: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-m", "bench.hotpath", "--no-write", "--agents", str(agents), "--rounds",
                          str(rounds)], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _head() -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    # BENCHMARKS.md is being rewritten by the run itself: not a change of the measured code
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    return rev + ("+changes" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="older commit (default: the one before the changes)")
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=2, help="before/after pairs (A/B/A/B)")
    ap.add_argument("--quick", action="store_true", help="100 agents, 3 rounds, one pair")
    args = ap.parse_args()
    if args.quick:
        args.agents, args.rounds, args.pairs = min(args.agents, 100), min(args.rounds, 3), 1
    with tempfile.TemporaryDirectory(prefix="rw-profiles-") as d:
        before_rev = _export(args.before, Path(d))
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for i in range(args.pairs):
            for side, tree in (("before", Path(d) / "tree"), ("after", ROOT)):
                runs[side].append(_hotpath(tree, args.agents, args.rounds))
                print(f"pair {i + 1} {side}: push path {runs[side][-1]['push_path_us_per_sample']:.2f} µs/sample",
                      flush=True)
    res: dict[str, Any] = {"before_rev": before_rev, "after_rev": _head(), "agents": args.agents,
                           "rounds": args.rounds, "pairs": args.pairs, "runs": runs}
    for key, _ in FIGURES:
        b, a = median([r[key] for r in runs["before"]]), median([r[key] for r in runs["after"]])
        res[key] = {"before": b, "after": a}
    path = write_result("profiles", res)
    print(_table(res))
    print(f"\nwrote {path}")


def _table(res: dict[str, Any]) -> str:
    rows = []
    for key, label in FIGURES:
        b, a = res[key]["before"], res[key]["after"]
        fmt = "{:,.0f}" if b >= 100 else "{:.2f}"
        rows.append([label, fmt.format(b), fmt.format(a), f"{b / a:.2f}×" if a > 0 else "—"])
    return table(["stage (bench.hotpath)", f"before ({res['before_rev']})", f"after ({res['after_rev']})",
                  "before / after"], rows)


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    from bench.common import header

    out = [header(res, "Profiles: hot spots found and fixed (issue 8)"), _table(res), "",
           f"`bench.hotpath` ({res['agents']:,} agents × 100 series, {res['rounds']} rounds) on commit "
           f"{res['before_rev']} (the last before these changes) and on {res['after_rev']} (which also carries the "
           f"changes merged from main since), {res['pairs']} before/after pairs alternated in one session; medians per "
           "side (same measuring code for both). How the hot spots were found: "
           "`python -m bench.hotpath --profile` (cProfile per stage; the history stage profiles the SQLite writer "
           "thread) and `python -m bench.fleet --history on --profile /tmp/fleet.prof` (the real collector process "
           "under cProfile, then `pstats`). What changed — behaviour identical, the test suite unchanged and green:",
           ""]
    out += [f"* **{what}** ({where}): {text}" for what, where, text in CHANGES]
    return "\n".join(out)


if __name__ == "__main__":
    main()
