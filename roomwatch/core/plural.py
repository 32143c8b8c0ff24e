"""Counts in English text: ``1 agent``, ``2 agents`` (Chinese needs no plural: ``1 个``, ``2 个``)."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, one: str, many: str | None = None) -> str:
    """``n`` with the noun in the right number; ``many`` for irregular plurals (``batch``, ``batches``)."""
    return f"{n} {one if n == 1 else (many if many is not None else one + 's')}"
