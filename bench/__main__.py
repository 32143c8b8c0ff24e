"""Run every benchmark and rewrite BENCHMARKS.md from their results.

    python -m bench [--quick] [--only NAME ...] [--list]

Each benchmark is a module ``bench/<name>.py`` with a ``main()`` (run as
``python -m bench.<name>`` in its own process, so one cannot disturb another's
memory figures) that writes ``bench/results/<name>.json``, and a
``markdown(result) -> str`` that renders its section. BENCHMARKS.md keeps one
section per benchmark between ``<!-- bench:NAME -->`` markers; sections of
benchmarks not run this time are left as they were.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import time

from bench.common import RESULTS, ROOT, machine

#: Run order (cheap first). Each entry: (module, extra args for --quick, args for a full run).
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("collector", ["--quick"], []),
    ("agent_footprint", ["--minutes", "1"], ["--minutes", "10"]),
    ("fleet", ["--agents", "200", "--seconds", "20"], []),
    ("spool", ["--quick"], []),
    ("rules", ["--rounds", "5"], []),
    ("alert_latency", ["--events", "20"], []),
    ("e2e_door", ["--events", "20"], []),
    ("snmp", ["--rounds", "2", "--blocks", "2", "--memory-seconds", "10"], []),
]

DOC = ROOT / "BENCHMARKS.md"
HEADER = """# Benchmarks

Produced by `python -m bench` (every benchmark) or `python -m bench.<name>` (one); each
section says the exact command, the machine and the versions. The machine is a shared
2-core VM: absolute times drift ±30 % between runs, so comparisons are ratios measured
A/B/A/B in one run. Raw results: `bench/results/<name>.json` (not committed).
"""


def _section(name: str, body: str) -> str:
    return f"<!-- bench:{name} -->\n{body.rstrip()}\n<!-- /bench:{name} -->"


def update_doc(name: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else HEADER
    block = _section(name, body)
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description="Run roomwatch benchmarks and update BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        for name, _, _ in BENCHMARKS:
            print(name)
        return 0
    failed = []
    for name, quick, full in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        argv = [sys.executable, "-m", f"bench.{name}", *(quick if args.quick else full)]
        print(f"== {name}: {' '.join(argv[1:])}", flush=True)
        t = time.monotonic()
        res = subprocess.run(argv, cwd=ROOT, check=False)
        if res.returncode != 0:
            print(f"!! {name} failed with exit code {res.returncode}", file=sys.stderr)
            failed.append(name)
            continue
        result = json.loads((RESULTS / f"{name}.json").read_text())
        module = importlib.import_module(f"bench.{name}")
        update_doc(name, module.markdown(result))
        print(f"== {name} done in {time.monotonic() - t:.0f}s", flush=True)
    m = machine()
    print(f"\nBENCHMARKS.md updated ({m['cpu']}, {m['cores']} cores, Python {m['python']}).")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
