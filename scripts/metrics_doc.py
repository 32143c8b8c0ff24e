#!/usr/bin/env python3
"""Write the metric table of docs/metrics.md from the vocabulary (roomwatch/core/vocabulary.py).

    python scripts/metrics_doc.py           # rewrite the table between the markers
    python scripts/metrics_doc.py --check   # exit 1 if the doc and the vocabulary differ (tests run this check)

The vocabulary is the one list of names (agent, collector and alerts import it); the doc
shows it to users, grouped by the vocabulary's own section comments.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "roomwatch" / "core" / "vocabulary.py"
DOC = ROOT / "docs" / "metrics.md"
BEGIN, END = "<!-- metrics:begin (scripts/metrics_doc.py) -->", "<!-- metrics:end -->"
_SECTION = re.compile(r"^# --- (.+?) -{3,}\s*$")
_NAME = re.compile(r'_def\(\s*"(roomwatch_[a-z0-9_]+)"')


def sections() -> list[tuple[str, list[str]]]:
    """(section title, metric names) in the vocabulary's order."""
    out: list[tuple[str, list[str]]] = []
    text = SOURCE.read_text(encoding="utf-8")
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            out.append((m.group(1).strip(), []))
            continue
        for name in _NAME.findall(line):
            out[-1][1].append(name)
    # a _def( whose name is on the next line
    joined = re.sub(r"_def\(\s*\n\s*", "_def(", text)
    found = _NAME.findall(joined)
    listed = [n for _, names in out for n in names]
    missing = [n for n in found if n not in listed]
    if missing:  # names on a continuation line: attach them to the section they appear in
        out = []
        for block in re.split(r"(?m)^(?=# --- )", joined):
            m = _SECTION.match(block.splitlines()[0]) if block.startswith("# --- ") else None
            if m:
                out.append((m.group(1).strip(), _NAME.findall(block)))
    return [(title, names) for title, names in out if names]


def table() -> str:
    sys.path.insert(0, str(ROOT))
    from roomwatch.core.vocabulary import METRICS

    parts = []
    for title, names in sections():
        parts.append(f"### {title[0].upper()}{title[1:]}\n\n| metric | type | meaning |\n| --- | --- | --- |")
        for name in names:
            d = METRICS[name]
            meaning = d.help.replace("|", "\\|")
            parts.append(f"| `{name}` | {d.type} | {meaning} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def render(doc: str) -> str:
    head, sep, rest = doc.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{DOC}: markers {BEGIN} … {END} missing")
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


def main(argv: list[str]) -> int:
    doc = DOC.read_text(encoding="utf-8")
    new = render(doc)
    if "--check" in argv:
        if new != doc:
            print(f"{DOC.relative_to(ROOT)} is not the vocabulary's: run python scripts/metrics_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
