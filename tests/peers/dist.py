"""``dist`` fixture: dist/ as ``./dev package`` makes it (both architectures, every kind), built once a session.

Used by tests/test_packaging.py (the packages themselves) and tests/test_bundle_targets.py (the bundle on
older distributions). Downloads are kept in the cache (``$ROOMWATCH_CACHE/packaging`` or ``.cache/packaging``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, require_binary

sys.path.insert(0, str(ROOT / "scripts"))
import package as builder


def version() -> str:
    return builder.project()[0]


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """dist/ with the offline bundles, .deb and .rpm of both architectures."""
    for tool in ("dpkg-deb", "rpmbuild", "unshare", "patchelf", "apt-get"):
        require_binary(tool)
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    assert builder.main(["--out", str(out)]) == 0
    print(f"\n[figure] ./dev package (both architectures): {time.monotonic() - started:.0f} s")
    for p in sorted(out.iterdir()):
        print(f"[figure] {p.name}: {p.stat().st_size / 2**20:.1f} MiB")
    yield out
