"""Label matchers, as Alertmanager writes them: ``name="value"``, ``!=``, ``=~`` and ``!~``.

Used by rules (which series), routes (which alerts go where), silences and
inhibition. Regular expressions are anchored like Prometheus' (``=~"A|B"``
matches the whole value). A label that is absent has the value ``""``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Matcher", "match_all", "parse_matcher", "parse_matchers"]

_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_MATCHER_RE = re.compile(rf"^\s*({_NAME})\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)
OPS = ("=", "!=", "=~", "!~")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; :meth:`matches` takes a label mapping."""

    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        op = self.op
        if op == "=":
            return got == self.value
        if op == "!=":
            return got != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(got) is not None
        return hit if op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'

    def to_json(self) -> dict[str, Any]:
        """Alertmanager API v2 form."""
        return {"name": self.name, "value": self.value, "isRegex": self.op in ("=~", "!~"),
                "isEqual": self.op in ("=", "=~")}


def make_matcher(name: str, op: str, value: str) -> Matcher:
    """Build a matcher, compiling a regex once; ValueError with a plain reason when invalid."""
    if not re.fullmatch(_NAME, name):
        raise ValueError(f"{name!r} is not a label name")
    if op not in OPS:
        raise ValueError(f"unknown operator {op!r}; use one of = != =~ !~")
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regular expression {value!r}: {exc}") from None
    return Matcher(name, op, value, regex)


_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n"}
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_QUOTED_RE = re.compile(r"""^(["'])((?:\\.|(?!\1)[^\\])*)\1(.*)$""", re.DOTALL)


def _unquote(name: str, op: str, text: str) -> str:
    """The value of a matcher, its quotes and escapes removed; ValueError says what is really wrong."""
    if text[:1] in ("\"", "'"):
        quoted = _QUOTED_RE.match(text)
        if quoted is None:
            raise ValueError(f"value {text!r} has no closing {text[0]} (write {name}{op}\"...\")")
        if quoted.group(3):
            raise ValueError(f"unexpected {quoted.group(3)!r} after the quoted value in {name}{op}{text}")
        # As Alertmanager: \\ \" \n are escapes, any other backslash stays (a regex's \. or \d).
        return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), quoted.group(2))
    if any(c in text for c in "\"'{},"):
        # Unquoted, a regex's braces and commas read like list syntax: say so, but a broken
        # regex is the problem to report first (quoting alone would not fix it).
        if op in ("=~", "!~"):
            try:
                re.compile(text)
            except re.error as exc:
                raise ValueError(f"bad regular expression {text!r}: {exc}") from None
        raise ValueError(f"value {text!r} must be quoted: write {name}{op}\"{text}\"")
    return text


def parse_matcher(text: Any) -> Matcher:
    """``room="A"`` / ``severity=~"warning|critical"`` / ``device!=ups1`` → :class:`Matcher`.

    Also accepts Alertmanager's JSON form ``{"name", "value", "isRegex", "isEqual"}``.
    """
    if isinstance(text, Matcher):
        return text
    if isinstance(text, Mapping):
        try:
            name, value = str(text["name"]), str(text["value"])
        except KeyError as exc:
            raise ValueError(f"matcher object needs name and value (missing {exc})") from None
        regex, equal = bool(text.get("isRegex", False)), bool(text.get("isEqual", True))
        op = ("=~" if equal else "!~") if regex else ("=" if equal else "!=")
        return make_matcher(name, op, value)
    if not isinstance(text, str):
        raise ValueError('a matcher is text like room="A" or severity=~"warning|critical"')
    m = _MATCHER_RE.match(text)
    if not m:
        raise ValueError(f'{text!r} is not a matcher; write name="value", name!="value", name=~"regex" or name!~"regex"')
    return make_matcher(m.group(1), m.group(2), _unquote(m.group(1), m.group(2), m.group(3)))


def parse_matchers(items: Iterable[Any] = (), equal: Mapping[str, str] | None = None) -> tuple[Matcher, ...]:
    """A list of matcher texts plus an optional ``{label: value}`` equality map."""
    out = [parse_matcher(i) for i in items]
    for k, v in (equal or {}).items():
        out.append(make_matcher(k, "=", v))
    return tuple(out)


def match_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)
