"""Threshold expressions of rules: ``> 27``, ``== 1``, ``< 0.2 or > 0.8``, ``>= 0.25 and <= 0.75``.

A rule fires when its ``when`` expression holds and, with hysteresis, resolves
only when its ``clear`` expression holds. :func:`check_hysteresis` refuses a
pair where one value would satisfy both (the alert would flap) or where
``clear`` can never happen.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Expr", "check_hysteresis", "parse_expr"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
_CMP_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True, slots=True)
class Expr:
    """A disjunction of conjunctions of comparisons against the sample value."""

    groups: tuple[tuple[tuple[str, float], ...], ...]  # or-groups of and-ed (op, number)

    def test(self, value: float) -> bool:
        for group in self.groups:
            for op, number in group:
                if not _OPS[op](value, number):
                    break
            else:
                return True
        return False

    def compile(self) -> Callable[[float], bool]:
        """A fast tester; a single comparison becomes one C-level operator call."""
        if len(self.groups) == 1 and len(self.groups[0]) == 1:
            op, number = self.groups[0][0]
            fn = _OPS[op]
            return lambda v: fn(v, number)
        return self.test

    def numbers(self) -> list[float]:
        return [n for g in self.groups for _, n in g]

    def first(self) -> float:
        """The threshold people think of (the first number)."""
        return self.groups[0][0][1]

    def __str__(self) -> str:
        return " or ".join(" and ".join(f"{op} {_num(n)}" for op, n in g) for g in self.groups)


def _num(n: float) -> str:
    return str(int(n)) if n == int(n) and abs(n) < 1e15 else repr(n)


def parse_expr(text: object) -> Expr:
    """Parse a threshold expression; ValueError says what is wrong in plain words."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError('expected a comparison such as "> 27", "== 1" or "< 0.2 or > 0.8"')
    if isinstance(text, (int, float)):
        raise ValueError(f'{text!r} has no comparison; write e.g. "> {text}" or "== {text}"')
    groups = []
    for part in re.split(r"\s+or\s+", text.strip()):
        group = []
        for cmp in re.split(r"\s+and\s+", part):
            m = _CMP_RE.match(cmp)
            if not m:
                raise ValueError(f'{cmp.strip()!r} in {text!r} is not a comparison; write an operator (> >= < <= == !=) '
                                 f'and a number, joined by "and"/"or", e.g. "< 0.2 or > 0.8"')
            number = float(m.group(2))
            if not math.isfinite(number):
                raise ValueError(f"{m.group(2)} is not a finite number")
            group.append((m.group(1), number))
        groups.append(tuple(group))
    return Expr(tuple(groups))


def _probe_points(*exprs: Expr) -> list[float]:
    points = [-1e300, 1e300]
    for e in exprs:
        for n in e.numbers():
            eps = max(1e-9, abs(n) * 1e-9)
            points += [n - eps, n, n + eps]
    return points


def check_hysteresis(when: Expr, clear: Expr | None) -> None:
    """ValueError when ``clear`` overlaps ``when`` (would flap) or can never be reached."""
    if clear is None:
        return
    points = _probe_points(when, clear)
    for p in points:
        if when.test(p) and clear.test(p):
            raise ValueError(f'clear "{clear}" overlaps when "{when}": a value of {_num(p)} would both fire and clear; '
                             f'leave a gap between them (e.g. when "> 27", clear "< 26")')
    if not any(clear.test(p) and not when.test(p) for p in points):
        raise ValueError(f'clear "{clear}" can never be true while when "{when}" is false')
