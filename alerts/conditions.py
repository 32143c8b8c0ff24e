"""Rule expressions: thresholds, rates of change and predictions.

Three kinds, each a whole ``when``/``clear`` expression:

* **threshold** on the sample value: ``> 27``, ``== 1``, ``< 0.2 or > 0.8``,
  ``>= 0.25 and <= 0.75``;
* **rate** of change, the least-squares slope over the rule's ``window`` (as
  Prometheus' ``deriv``), in units per a duration: ``rate >= +2 per 5m``
  (rising by 2 or more in 5 minutes), ``rate < -0.01 per 1m``, combinable with
  ``and``/``or``;
* **prediction** by the same linear fit (as ``predict_linear``): ``reaches 0
  within 10m`` holds when the fitted line crosses 0 within 10 minutes from the
  newest sample; the limit may be another metric of the same series labels,
  ``reaches 0 within roomwatch_ups_shutdown_sequence_seconds``.

A rule fires when its ``when`` expression holds and, with hysteresis, resolves
only when its ``clear`` expression holds (a prediction clears when it no longer
holds). :func:`check_hysteresis` refuses a pair where one value would satisfy
both (the alert would flap) or where ``clear`` can never happen.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_PREDICT_WINDOW", "Expr", "check_hysteresis", "parse_expr"]

#: The fit window of a ``reaches`` prediction when the rule gives no ``window``.
DEFAULT_PREDICT_WINDOW = 300.0

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CMP_RE = re.compile(rf"^\s*(>=|<=|==|!=|>|<)\s*({_NUM})\s*$")
_RATE_RE = re.compile(rf"^\s*rate\s*(>=|<=|>|<)\s*({_NUM})\s+per\s+(\S+)\s*$")
_REACHES_RE = re.compile(rf"^\s*reaches\s+({_NUM})\s+within\s+(\S+)\s*$")
_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_CMP_METRIC_RE = re.compile(r"^\s*(>=|<=|>|<)\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*$")


@dataclass(frozen=True, slots=True)
class Expr:
    """A disjunction of conjunctions of comparisons (threshold or rate), or a prediction."""

    groups: tuple[tuple[tuple[str, float], ...], ...]  # or-groups of and-ed (op, number)
    kind: str = "value"  # value | rate | reaches
    per: float = 1.0  # rate: the duration the numbers are per (seconds)
    target: float = 0.0  # reaches: the value the fit must reach
    within: float | None = None  # reaches: seconds (None: from ``within_metric``)
    within_metric: str | None = None

    @property
    def windowed(self) -> bool:
        """True for rate and prediction expressions, which need a window of samples."""
        return self.kind != "value"

    @property
    def limit_op(self) -> str:
        """How the derived value compares with ``within_metric``'s value."""
        return self.groups[0][0][0] if self.kind == "value" else "<="

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
        if self.kind == "value" and self.within_metric:
            return f"{self.groups[0][0][0]} {self.within_metric}"
        if self.kind == "reaches":
            return f"reaches {_num(self.target)} within {self.within_metric or _dur(self.within or 0.0)}"
        if self.kind == "rate":
            per = _dur(self.per)
            return " or ".join(" and ".join(f"rate {op} {_signed(n)} per {per}" for op, n in g) for g in self.groups)
        return " or ".join(" and ".join(f"{op} {_num(n)}" for op, n in g) for g in self.groups)

    def as_values(self) -> Expr:
        """The same comparisons as a plain threshold expression (for the hysteresis check)."""
        return Expr(self.groups)

    def per_second(self) -> Expr:
        """A rate expression with its numbers per second (to compare two rates with different ``per``)."""
        return Expr(tuple(tuple((op, n / self.per) for op, n in g) for g in self.groups), "rate", 1.0)


def _num(n: float) -> str:
    return str(int(n)) if n == int(n) and abs(n) < 1e15 else repr(n)


def _signed(n: float) -> str:
    return ("+" if n > 0 else "") + _num(n)


def _dur(seconds: float) -> str:
    from roomwatch.core.configbase import format_duration

    return format_duration(seconds)


def _duration(text: str, where: str) -> float:
    from roomwatch.core.configbase import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(f"{text!r} in {where!r} is not a duration such as 5m") from None
    if seconds <= 0:
        raise ValueError(f"the duration in {where!r} must be more than 0")
    return seconds


def _parse_rate(text: str) -> Expr:
    groups = []
    per: float | None = None
    for part in re.split(r"\s+or\s+", text.strip()):
        group = []
        for cmp in re.split(r"\s+and\s+", part):
            m = _RATE_RE.match(cmp)
            if not m:
                raise ValueError(f'{cmp.strip()!r} in {text!r} is not a rate comparison; write e.g. "rate >= +2 per 5m" '
                                 f'(rising by 2 or more in 5 minutes) or "rate < -0.5 per 1m"')
            seconds = _duration(m.group(3), cmp.strip())
            if per is not None and seconds != per:
                raise ValueError(f"use one duration after per in {text!r} (e.g. all per 5m)")
            per = seconds
            number = float(m.group(2))
            if not math.isfinite(number):
                raise ValueError(f"{m.group(2)} is not a finite number")
            group.append((m.group(1), number))
        groups.append(tuple(group))
    return Expr(tuple(groups), "rate", per or 1.0)


def _parse_reaches(text: str) -> Expr:
    m = _REACHES_RE.match(text)
    if not m:
        raise ValueError(f'{text!r} is not a prediction; write e.g. "reaches 0 within 10m" or '
                         f'"reaches 0 within roomwatch_ups_shutdown_sequence_seconds"')
    target = float(m.group(1))
    if not math.isfinite(target):
        raise ValueError(f"{m.group(1)} is not a finite number")
    limit = m.group(2)
    if _METRIC_RE.match(limit) and not re.match(r"^\d", limit):
        try:
            return Expr((), "reaches", target=target, within=_duration(limit, text))
        except ValueError:
            return Expr((), "reaches", target=target, within_metric=limit)
    return Expr((), "reaches", target=target, within=_duration(limit, text))


def parse_expr(text: object) -> Expr:
    """Parse a threshold expression; ValueError says what is wrong in plain words."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError('expected a comparison such as "> 27", "== 1" or "< 0.2 or > 0.8"')
    if isinstance(text, (int, float)):
        raise ValueError(f'{text!r} has no comparison; write e.g. "> {text}" or "== {text}"')
    head = text.strip().split(None, 1)[0] if text.strip() else ""
    if m := _CMP_METRIC_RE.match(text):
        # A threshold that is another series of the same labels: "< roomwatch_ups_shutdown_sequence_seconds".
        return Expr((((m.group(1), 0.0),),), "value", within_metric=m.group(2))
    if head.startswith("rate"):
        return _parse_rate(text)
    if head == "reaches":
        return _parse_reaches(text.strip())
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
    """ValueError when ``clear`` overlaps ``when`` (would flap) or can never be reached, or mixes kinds."""
    if clear is None:
        return
    if when.kind == "reaches" or clear.kind == "reaches":
        raise ValueError("a prediction (reaches …) has no clear: the alert resolves when the prediction no longer holds")
    if when.within_metric or clear.within_metric:
        raise ValueError("a comparison with another metric has no clear: the alert resolves when it no longer holds")
    if when.kind != clear.kind:
        raise ValueError(f'when "{when}" and clear "{clear}" must both be rates or both thresholds')
    if when.kind == "rate":
        try:
            check_hysteresis(when.per_second().as_values(), clear.per_second().as_values())
        except ValueError:
            raise ValueError(f'clear "{clear}" and when "{when}" leave no gap between them, or clear can never hold; '
                             f'e.g. when "rate >= +2 per 5m", clear "rate < +0.5 per 5m"') from None
        return
    points = _probe_points(when, clear)
    for p in points:
        if when.test(p) and clear.test(p):
            raise ValueError(f'clear "{clear}" overlaps when "{when}": a value of {_num(p)} would both fire and clear; '
                             f'leave a gap between them (e.g. when "> 27", clear "< 26")')
    if not any(clear.test(p) and not when.test(p) for p in points):
        raise ValueError(f'clear "{clear}" can never be true while when "{when}" is false')
