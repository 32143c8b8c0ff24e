"""The package's layers, read from the code's imports (issue 17): what may import what.

* ``roomwatch.core`` and ``roomwatch.channels`` (the shared ground) import no other part;
* ``roomwatch.drivers`` imports only the ground;
* ``roomwatch.alerts`` imports the ground, never the collector, the agent or the drivers;
* ``roomwatch.agent`` and ``roomwatch.collector`` do not import each other; the agent imports of
  ``roomwatch.alerts`` only :data:`AGENT_FROM_ALERTS` — the default rule pack read as plain data
  (``roomwatch.alerts.pack``) and its threshold expressions (``roomwatch.alerts.conditions``), so its local
  fallback alerting has the collector's alert names, thresholds and texts (one default policy, issue 17
  point 5) without loading the alert engine or its pydantic models into the agent's small memory; those two
  modules import nothing of alerting but each other (:func:`test_what_the_agent_takes_of_alerts_stays_small`);
* only the top (``roomwatch.cli``, ``roomwatch.demo``, ``roomwatch.commands``) imports across everything;
  ``roomwatch.discover`` (``roomwatch discover``) imports the agent and the drivers;
* no module imports the old top-level names (``agent``, ``collector``, ``drivers``, ``alerts``);
* pyproject.toml lists every package of the tree, mapped to its folder.

Function-local imports count as much as module-level ones.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import ROOT

#: roomwatch.<name> lives in the top-level folder <name>/ (pyproject.toml package-dir).
MAPPED = ("agent", "collector", "drivers", "alerts")
GROUND = {"core", "channels", "__init__"}
#: layer → the layers it may import (besides itself and the ground, which every layer may import).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "channels": set(),
    "drivers": set(),
    "alerts": set(),
    "agent": {"drivers"},
    "collector": {"alerts"},
    "commands": {"agent", "collector", "alerts", "drivers"},
    "discover": {"agent", "drivers"},  # runs the drivers once, checks its output with the agent's config
    "demo": {"agent", "collector", "alerts", "drivers", "commands"},
    "cli": {"agent", "collector", "alerts", "drivers", "demo", "commands", "discover"},
    "__main__": {"cli"},
}
#: The modules of roomwatch.alerts the agent may import (see the module docstring).
AGENT_FROM_ALERTS = frozenset({"roomwatch.alerts.pack", "roomwatch.alerts.conditions"})


def _modules() -> dict[str, Path]:
    out = {}
    for top in (*MAPPED, "roomwatch"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts[0] in MAPPED:
                parts = ["roomwatch", *parts]
            out[".".join(parts)] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "roomwatch":  # from roomwatch import drivers (but __version__ is the package's own)
                found += [(node.lineno, f"roomwatch.{a.name}") for a in node.names if a.name != "__version__"]
    return found


def test_each_layer_imports_only_what_it_may() -> None:
    problems = []
    for module, path in sorted(_modules().items()):
        mine = _layer(module)
        allowed = ALLOWED.get(mine, set()) | GROUND | {mine}
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in MAPPED:
                problems.append(f"{path.relative_to(ROOT)}:{line}: old top-level name {name!r}; use roomwatch.{name}")
            elif top == "roomwatch" and name != "roomwatch" and _layer(name) not in allowed and not (
                    mine == "agent" and name in AGENT_FROM_ALERTS):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {name}")
    assert problems == []


def test_the_named_boundaries_hold() -> None:
    """The issue's checks, spelled out: alerts ↛ collector; drivers ↛ agent/collector/alerts; agent ↮ collector."""
    forbidden = {"alerts": {"collector", "agent"}, "drivers": {"agent", "collector", "alerts"},
                 "agent": {"collector"}, "collector": {"agent"}, "core": {"agent", "collector", "alerts", "drivers"},
                 "channels": {"agent", "collector", "alerts", "drivers"}}
    seen = []
    for module, path in _modules().items():
        for line, name in _imports(path):
            if name.startswith("roomwatch.") and _layer(name) in forbidden.get(_layer(module), set()):
                seen.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert seen == []


def test_what_the_agent_takes_of_alerts_stays_small() -> None:
    """The alerts modules the agent may import use nothing of alerting but each other, and no pydantic."""
    modules = _modules()
    for module in AGENT_FROM_ALERTS:
        for line, name in _imports(modules[module]):
            assert name.split(".")[0] != "pydantic", f"{module}:{line} imports pydantic"
            if name.startswith("roomwatch.alerts"):
                assert name in AGENT_FROM_ALERTS, f"{module}:{line} imports {name}"


def test_pyproject_lists_every_package_mapped_to_its_folder() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"roomwatch": "roomwatch", **{f"roomwatch.{m}": m for m in MAPPED}}
    tree = {m for m, p in _modules().items() if p.name == "__init__.py"}
    data = set(tool["packages"]) - tree  # data-only folders: listed, no code in them
    assert tree <= set(tool["packages"])
    for name in data:
        top, _, rest = name.removeprefix("roomwatch.").partition(".")
        folder = ROOT / ("roomwatch/" + top if top not in MAPPED else top) / rest.replace(".", "/")
        assert folder.is_dir() and not list(folder.glob("*.py")), name


@pytest.mark.peer
def test_installed_package_has_no_generic_top_level_names(tmp_path: Path) -> None:
    """A non-editable ``pip install .`` puts only roomwatch into site-packages, and every part imports."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True)
    top = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info")) and p.name != "bin"}
    assert top == {"roomwatch"}
    profiles = list((target / "roomwatch" / "drivers" / "snmp" / "profiles").glob("*.yaml"))
    assert profiles, "package data (SNMP profiles) installed"
    code = ("import roomwatch.agent, roomwatch.collector, roomwatch.alerts, roomwatch.drivers, roomwatch.core.wire, "
            "roomwatch.channels.all, roomwatch.collector.main, roomwatch.demo.run; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
