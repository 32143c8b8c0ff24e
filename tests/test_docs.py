"""The repository documents what users depend on, and ships only what it uses (issue 17 point 7).

* docs/metrics.md is the vocabulary's (``python scripts/metrics_doc.py`` regenerates it);
* every runtime dependency in pyproject.toml is imported by a shipped module (read from the code);
* nothing points at a CONTRACT.md outside the repository: the interfaces are in docs/api.md;
* every alert name docs/api.md promises is a rule of the default pack.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from roomwatch.alerts.rules import default_rule_names
from tests.helpers import ROOT, documented_alert_names

#: Distribution name → the import name it provides (where they differ).
IMPORT_NAME = {"pyyaml": "yaml", "paho-mqtt": "paho", "protobuf": "google.protobuf"}
SHIPPED = ("roomwatch", "agent", "collector", "drivers", "alerts")


def _shipped_imports() -> set[str]:
    found: set[str] = set()
    for top in SHIPPED:
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module)
    return found


def test_metrics_doc_is_the_vocabulary() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("metrics_doc", ROOT / "scripts" / "metrics_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert module.render(doc) == doc, "docs/metrics.md is not the vocabulary's: run python scripts/metrics_doc.py"


def test_every_runtime_dependency_is_imported_by_a_shipped_module() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    imports = _shipped_imports()
    unused = []
    for dep in deps:
        name = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower()
        module = IMPORT_NAME.get(name, name.replace("-", "_"))
        if not any(i == module or i.startswith(module + ".") for i in imports):
            unused.append(name)
    assert unused == [], f"runtime dependencies no shipped module imports: {unused}"


def test_no_reference_to_a_contract_outside_the_repository() -> None:
    skip = {".git", ".venv", "build", ".typecheck", "__pycache__", "test-artifacts", "results"}
    hits = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if skip & set(rel.parts) or not path.is_file() or path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml"}:
            continue
        if rel != Path("tests/test_docs.py") and "CONTRACT.md" in path.read_text(encoding="utf-8", errors="replace"):
            hits.append(str(rel))
    assert hits == []


def test_documented_alert_names_are_rules_of_the_default_pack() -> None:
    names = documented_alert_names()
    assert len(names) == 13 and names <= default_rule_names()
