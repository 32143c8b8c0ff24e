"""One shared copy of the label strings and label pairs that long-lived series keys hold.

A collector keeps every series in several indexes (current values, rule
states, history ids), each keyed by the series' label pairs. A push decodes
into fresh strings and fresh ``(name, value)`` tuples every time, so without
sharing each index holds its own copies: ``("agent", "room1-agent")`` once
per series per index. Built only when a key is first stored (never on the
per-sample lookup path), these helpers return pairs and strings that all
indexes share — about a third of a collector's memory per series
(``bench/hotpath.py``, BENCHMARKS.md "Profiles").
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

__all__ = ["label_pairs", "labels", "string"]

#: Bound on the pair table: label values that churn (renamed devices) must not grow it for ever;
#: past the bound it starts again, which only loses sharing for the keys stored before.
_MAX_PAIRS = 1 << 18
_pairs: dict[tuple[str, str], tuple[str, str]] = {}

string = sys.intern  # interned strings are freed with their last user: no bound needed


def label_pairs(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``tuple(labels.items())`` (same order, equal and hashing alike) built of shared pairs."""
    table = _pairs
    out = []
    for k, v in labels.items():
        pair = table.get((k, v))
        if pair is None:
            if len(table) >= _MAX_PAIRS:
                table.clear()
            pair = table[(k, v)] = (sys.intern(k), sys.intern(v))
        out.append(pair)
    return tuple(out)


def labels(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """A new label dict whose strings are the shared ones of ``pairs``."""
    return dict(pairs)
