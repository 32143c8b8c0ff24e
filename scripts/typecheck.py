#!/usr/bin/env python3
"""Type-check roomwatch with mypy: strict on the shared core, the channels and alerting; no new errors elsewhere.

``./dev test`` runs it before pytest (so CI does). Usage::

    python scripts/typecheck.py            # exit 1 on an error not in the baseline
    python scripts/typecheck.py --shrink   # rewrite the baseline after fixing errors (it may only shrink)

Why a symlink tree: the folders ``agent/``, ``collector/``, ``drivers/`` and ``alerts/``
are installed as ``roomwatch.agent`` … through setuptools' ``package-dir``, and the
editable install maps them with an import hook that mypy cannot follow. The script
links them under ``.typecheck/roomwatch/`` (gitignored) so mypy sees the package as it
is installed, and prints paths as they are in the checkout.

The baseline (``scripts/mypy-baseline.txt``) counts the errors each file may still
have, per error code; a file with more (or a new file with any) fails. Settings and
the strict modules are in ``pyproject.toml`` (``[tool.mypy]``).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FARM = ROOT / ".typecheck"
BASELINE = ROOT / "scripts" / "mypy-baseline.txt"
MAPPED = ("agent", "collector", "drivers", "alerts")  # roomwatch.<name> lives in the top-level folder <name>/
LINE = re.compile(r"^(?P<path>[^:\s]+\.py):\d+(?::\d+)?: error: .*\[(?P<code>[\w-]+)\]$")


def build_farm() -> None:
    """``.typecheck/roomwatch/`` = roomwatch/'s entries + the mapped folders, as symlinks (rebuilt each run)."""
    pkg = FARM / "roomwatch"
    pkg.mkdir(parents=True, exist_ok=True)
    for old in pkg.iterdir():
        old.unlink()
    for entry in (ROOT / "roomwatch").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name in MAPPED:
        (pkg / name).symlink_to(ROOT / name)


def real_path(path: str) -> str:
    """A path mypy printed, as it is in the checkout."""
    prefix = ".typecheck/roomwatch/"
    if not path.startswith(prefix):
        return path
    rest = path[len(prefix):]
    return rest if rest.split("/", 1)[0] in MAPPED else "roomwatch/" + rest


def run_mypy() -> tuple[int, list[str]]:
    env = {**os.environ, "MYPYPATH": str(FARM)}
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(FARM / "cache"), "-p", "roomwatch"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    lines = []
    for line in proc.stdout.splitlines():
        path, sep, rest = line.partition(":")
        lines.append(real_path(path) + sep + rest if sep else line)
    if proc.returncode not in (0, 1) or proc.stderr.strip():
        print(proc.stderr.strip(), file=sys.stderr)
    return proc.returncode, lines


def count(lines: list[str]) -> collections.Counter[tuple[str, str]]:
    out: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in lines:
        m = LINE.match(line)
        if m:
            out[(m["path"], m["code"])] += 1
    return out


def read_baseline() -> collections.Counter[tuple[str, str]]:
    out: collections.Counter[tuple[str, str]] = collections.Counter()
    if BASELINE.exists():
        for line in BASELINE.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                n, path, code = line.split()
                out[(path, code)] = int(n)
    return out


def main(argv: list[str]) -> int:
    import importlib.util

    if importlib.util.find_spec("mypy") is None:
        print("mypy is not installed in this Python (pip install -e '.[test]')", file=sys.stderr)
        return 2
    build_farm()
    code, lines = run_mypy()
    if code not in (0, 1):
        print("\n".join(lines))
        return 2
    now, allowed = count(lines), read_baseline()
    over = {k: n for k, n in now.items() if n > allowed.get(k, 0)}
    if "--shrink" in argv:
        if over and BASELINE.exists():
            print("refusing to grow the baseline; fix these first:", file=sys.stderr)
        else:
            BASELINE.write_text("# mypy errors still allowed: count, file, error code (scripts/typecheck.py); only shrinks\n"
                                + "".join(f"{n} {p} {c}\n" for (p, c), n in sorted(now.items())))
            print(f"baseline: {sum(now.values())} errors in {len({p for p, _ in now})} files")
            return 0
    if over:
        for line in lines:
            m = LINE.match(line)
            if m and (m["path"], m["code"]) in over:
                print(line)
        print(f"mypy: {sum(over.values())} error(s) beyond scripts/mypy-baseline.txt", file=sys.stderr)
        return 1
    fixed = sum(allowed.values()) - sum(now.values())
    print(f"mypy: clean against the baseline ({sum(now.values())} known errors left"
          + (f"; {fixed} fixed: run scripts/typecheck.py --shrink)" if fixed > 0 else ")"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
