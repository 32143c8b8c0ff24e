"""Rules as the engine runs them: the default pack, overrides, rule files, compiled once.

The default pack is ``alerts/defaults.yaml``. A collector file may
change any default under ``rules.overrides``, add rules inline under
``rules.extra`` or in files under ``rules.files``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError

from roomwatch.alerts.conditions import DEFAULT_PREDICT_WINDOW, Expr, parse_expr
from roomwatch.alerts.config import InhibitRuleConfig, RuleConfig, RulesConfig
from roomwatch.alerts.matchers import Matcher, parse_matcher, parse_matchers
from roomwatch.alerts.pack import DEFAULTS_FILE, LOCAL_FALLBACK_KEY
from roomwatch.core.configbase import ConfigError, Model, load_model, load_yaml

__all__ = ["Cond", "InhibitRule", "Rule", "compile_rules", "default_inhibit_rules", "default_rule_names",
           "load_rule_file", "override_problems", "rule_configs"]



class RuleFile(Model):
    """A rules file: ``rules:`` (and optionally ``inhibit_rules:``)."""

    rules: list[RuleConfig] = Field(default_factory=list)
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)


def load_rule_file(path: str) -> list[RuleConfig]:
    """Rules of one file; ValueError lists every problem as ``file:line: key: message``."""
    try:
        return load_model(path, RuleFile).rules
    except ConfigError as exc:
        raise ValueError(str(exc).replace("\n", "; ")) from None


@functools.cache
def _defaults() -> RuleFile:
    data, located = load_yaml(DEFAULTS_FILE)
    # local_fallback: is the agent's (roomwatch.alerts.pack); not a key of a rule file
    data = {k: val for k, val in data.items() if k != LOCAL_FALLBACK_KEY} if isinstance(data, dict) else data
    return load_model(DEFAULTS_FILE, RuleFile, data, located)


def default_rule_names() -> set[str]:
    return {r.alert for r in _defaults().rules}


def default_inhibit_rules() -> list[InhibitRuleConfig]:
    return list(_defaults().inhibit_rules)


# ---------------------------------------------------------------- compiled


@dataclass(slots=True)
class Cond:
    """One series condition: metric, label matchers, when/clear testers.

    A windowed condition (a rate or a prediction) tests a value derived from its series' recent samples
    (:mod:`alerts.trend`) instead of the sample itself: ``window`` is the span fitted, ``derive`` says what
    is derived from the fit, ``limit_metric`` names the series whose value a prediction is compared with.
    """

    metric: str
    matchers: tuple[Matcher, ...]
    when: Callable[[float], bool]
    clear: Callable[[float], bool] | None
    when_expr: Expr
    clear_expr: Expr | None
    window: float | None = None
    derive: str = "value"  # value | rate (change per when_expr.per) | reaches (seconds until target)
    limit_metric: str | None = None


@dataclass(slots=True)
class Rule:
    uid: str  # where it came from: defaults:Name, extra[3], /etc/roomwatch/rules.yaml[0]
    name: str
    severity: str
    conds: tuple[Cond, ...]
    for_: float
    window: str  # always | working_hours | outside_working_hours
    labels: dict[str, str]
    annotations: dict[str, Any]
    gate: tuple[str, Callable[[float], bool]] | None = None
    event: str | None = None
    clear_event: str | None = None
    resolve_after: float = 300.0
    fp_salt: str = ""  # set when several rules share an alert name, so identities stay apart
    index: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


def _compile_cond(metric: str, match: dict[str, str], matchers: list[str], when: str, clear: str | None,
                  window: float | None = None) -> Cond:
    w = parse_expr(when)
    c = parse_expr(clear) if clear else None
    found = parse_matchers(matchers, match)
    if w.kind == "rate":
        # The derived value is the change per when's duration; clear may say it per another duration.
        clear_test: Callable[[float], bool] | None = None
        if c is not None:
            scale, test = c.per / w.per, c.compile()
            clear_test = lambda x: test(x * scale)  # noqa: E731
        return Cond(metric, found, w.compile(), clear_test, w, c, window or w.per, "rate")
    if w.within_metric and w.kind == "value":
        return Cond(metric, found, lambda _x: False, None, w, None, None, "value", w.within_metric)
    if w.kind == "reaches":
        within = w.within
        when_test: Callable[[float], bool] = (lambda t: t <= within) if within is not None else (lambda t: False)
        return Cond(metric, found, when_test, None, w, None, window or DEFAULT_PREDICT_WINDOW, "reaches",
                    w.within_metric)
    return Cond(metric, found, w.compile(), c.compile() if c else None, w, c)


def _compile(uid: str, r: RuleConfig) -> Rule:
    if r.metric:
        conds: tuple[Cond, ...] = (_compile_cond(r.metric, r.match, r.matchers, r.when or "", r.clear, r.window),)
    elif r.any_of:
        shared = parse_matchers(r.matchers, r.match)
        conds = tuple(_compile_cond(c.metric, c.match, c.matchers, c.when, c.clear, c.window) for c in r.any_of)
        for c in conds:
            c.matchers = shared + c.matchers
    else:
        conds = ()
    gate = (r.only_if.metric, parse_expr(r.only_if.when).compile()) if r.only_if else None
    return Rule(uid, r.alert, r.severity, conds, r.for_, r.time_window, dict(r.labels), dict(r.annotations), gate,
                r.event, r.clear_event, r.resolve_after,
                extra={"matchers": parse_matchers(r.matchers, r.match)} if r.event else {})


def _apply_override(base: RuleConfig, override: Any) -> RuleConfig:
    data = base.model_dump(by_alias=True, exclude_defaults=True)
    changes = override.model_dump(by_alias=True, exclude_none=True)
    if "any_of" in changes:
        for k in ("metric", "when", "clear"):
            data.pop(k, None)
    elif ("when" in changes or "clear" in changes) and "any_of" in data:
        raise ValueError(f"{base.alert} has several conditions (any_of): override any_of, not when/clear")
    data.update(changes)
    data["alert"] = base.alert
    try:
        return RuleConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ValueError(f"override of {base.alert}: {first['msg'].removeprefix('Value error, ')}") from None


def override_problems(cfg: RulesConfig) -> list[tuple[str, str]]:
    """(alertname, reason) of each override that does not give a valid rule of the default pack."""
    by_name = {r.alert: r for r in _defaults().rules}
    out = []
    for name, ov in cfg.overrides.items():
        base = by_name.get(name)
        if base is None:
            continue  # an unknown name: alerting_checks says so
        try:
            _apply_override(base, ov)
        except ValueError as exc:
            out.append((name, str(exc)))
    return out


def rule_configs(cfg: RulesConfig) -> list[tuple[str, RuleConfig]]:
    """(uid, rule) of every enabled rule: the default pack with overrides, extra rules, rule files."""
    out: list[tuple[str, RuleConfig]] = []
    if cfg.defaults:
        for r in _defaults().rules:
            ov = cfg.overrides.get(r.alert)
            rule = _apply_override(r, ov) if ov is not None else r
            out.append((f"defaults:{r.alert}", rule))
    out += [(f"extra[{i}]", r) for i, r in enumerate(cfg.extra)]
    out += [(f"{path}[{i}]", r) for path, i, r in cfg.file_rules()]
    return [(uid, r) for uid, r in out if r.enabled]


def compile_rules(cfg: RulesConfig) -> list[Rule]:
    """Compile every enabled rule; rules sharing an alert name get a salt so their identities differ."""
    rules = [_compile(uid, r) for uid, r in rule_configs(cfg)]
    counts: dict[str, int] = {}
    for r in rules:
        counts[r.name] = counts.get(r.name, 0) + 1
    for i, r in enumerate(rules):
        r.index = i
        if counts[r.name] > 1:
            r.fp_salt = r.uid
    return rules


def compile_inhibit_rules(defaults: bool, extra: list[InhibitRuleConfig]) -> list[InhibitRule]:
    items = (default_inhibit_rules() if defaults else []) + list(extra)
    return [InhibitRule(tuple(parse_matcher(m) for m in i.source_matchers),
                        tuple(parse_matcher(m) for m in i.target_matchers), tuple(i.equal)) for i in items]
