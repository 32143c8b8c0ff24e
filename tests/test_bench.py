"""``python -m bench``: one entry point that reruns benchmarks and rewrites their BENCHMARKS.md sections."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS, update_doc
from bench.common import ROOT

SECTION = re.compile(r"<!-- bench:collector -->\n(.*?)\n<!-- /bench:collector -->", re.S)


@pytest.mark.peer
def test_quick_run_rewrites_only_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    original = (ROOT / "BENCHMARKS.md").read_text()
    stale = SECTION.sub("<!-- bench:collector -->\nSTALE FIGURES\n<!-- /bench:collector -->", original)
    assert "STALE FIGURES" in stale, "BENCHMARKS.md must have a collector section"
    doc.write_text(stale)
    res = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "collector", "--doc", str(doc),
                          "--results", str(tmp_path / "results")], cwd=ROOT, capture_output=True, text=True,
                         timeout=170, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    text = doc.read_text()
    body = SECTION.search(text).group(1)  # type: ignore[union-attr]
    assert "STALE" not in body
    assert body.startswith("## Collector")
    assert "Command: `python -m bench.collector --quick`" in body  # the exact command ...
    assert re.search(r"\d+ cores, [\d.]+ GiB, Python 3\.\d+", body)  # ... and the machine
    assert "prometheus_client" in body
    # every other section is left as it was
    assert SECTION.sub("", text) == SECTION.sub("", stale)
    result = json.loads((tmp_path / "results" / "collector.json").read_text())
    assert result["benchmark"] == "collector" and result["command"].startswith("python -m bench.collector --quick")


@pytest.mark.peer
def test_unknown_benchmark_is_refused() -> None:
    res = subprocess.run([sys.executable, "-m", "bench", "--only", "nosuch"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 2 and "nosuch" in res.stderr


def test_every_registered_benchmark_has_main_and_markdown() -> None:
    for b in BENCHMARKS:
        module = importlib.import_module(f"bench.{b.name}")
        assert callable(module.main) and callable(module.markdown), b.name
        assert "--quick" in Path(module.__file__).read_text(), f"bench.{b.name} takes no --quick"  # type: ignore[arg-type]


def test_a_new_section_goes_after_the_previous_benchmark(tmp_path: Path) -> None:
    doc = tmp_path / "B.md"
    doc.write_text("# B\n\n<!-- bench:snmp -->\nS\n<!-- /bench:snmp -->\n\n<!-- bench:rules -->\nR\n<!-- /bench:rules -->\n")
    update_doc(doc, "mqtt", "M")  # registered between snmp and rules
    update_doc(doc, "snmp", "S2")
    text = doc.read_text()
    assert text.index("bench:snmp") < text.index("bench:mqtt") < text.index("bench:rules")
    assert "\nS2\n" in text and "\nS\n" not in text and "\nR\n" in text
