"""Config schema of the alerting side of the collector: rules, routes, alert settings.

The channels' own schema (one model per channel type) lives with the channels, in
:mod:`roomwatch.channels.config`.
"""

from __future__ import annotations

import datetime as dt
import glob
import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Field, PrivateAttr, field_validator, model_validator

from roomwatch.alerts.conditions import check_hysteresis, parse_expr
from roomwatch.alerts.matchers import parse_matcher
from roomwatch.core.configbase import Duration, Model, Secret, TimeZoneName

__all__ = ["AckLinksConfig", "AlertsConfig", "CallbacksConfig", "DingtalkCallbackConfig", "InhibitRuleConfig",
           "RouteConfig", "RouteLevel",
           "RuleConfig", "RuleOverride", "RulesConfig", "WorkingHoursConfig", "alerting_checks"]

Language = Literal["zh-CN", "en"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WORKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
Severity = Literal["info", "warning", "critical"]


# ------------------------------------------------------------------ shared types


def _check_matcher(value: Any) -> str:
    parse_matcher(value)
    return str(value)


def _check_expr(value: Any) -> str:
    parse_expr(value)
    return str(value).strip()


#: ``room="A"``, ``severity=~"warning|critical"``, ``device!="ups1"``.
MatcherText = Annotated[str, AfterValidator(_check_matcher)]
#: ``> 27``, ``== 1``, ``< 0.2 or > 0.8``.
ExprText = Annotated[str, BeforeValidator(_check_expr)]
_LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
_METRIC = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"


def _parse_clock(value: Any) -> Any:
    # YAML 1.1 reads an unquoted 17:30 as the base-60 integer 1050: take it back.
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < 24 * 60:
            return dt.time(value // 60, value % 60)
        raise ValueError('write the time of day in quotes, e.g. "17:30"')
    return value


Clock = Annotated[dt.time, BeforeValidator(_parse_clock)]


# ------------------------------------------------------------------ rules


class WorkingHoursConfig(Model):
    """When people are at work (``DoorOpenedOutOfHours`` fires outside these hours)."""

    days: list[Weekday] = Field(default_factory=lambda: list(WORKDAYS))
    start: Clock = dt.time(8, 30)
    end: Clock = dt.time(17, 30)
    holidays: list[dt.date] = Field(default_factory=list, description="working days that are off (public holidays)")
    extra_workdays: list[dt.date] = Field(default_factory=list, description="weekend days that are worked (调休)")

    @model_validator(mode="after")
    def _order(self) -> WorkingHoursConfig:
        if self.start >= self.end:
            raise ValueError(f"start {self.start:%H:%M} must be before end {self.end:%H:%M}")
        return self


Annotation = Union[str, dict[Language, str]]  # noqa: UP007 - one text, or one per language


class ConditionConfig(Model):
    """One series condition of a rule (``any_of`` lists several)."""

    metric: str = Field(pattern=_METRIC)
    match: dict[str, str] = Field(default_factory=dict, description="label: value, all must be equal")
    matchers: list[MatcherText] = Field(default_factory=list)
    when: ExprText
    clear: ExprText | None = None
    window: Duration | None = Field(default=None, gt=0, le=86400,
                                    description="samples a rate or prediction is fitted over (default: rate's per, 5m)")

    @model_validator(mode="after")
    def _hysteresis(self) -> ConditionConfig:
        check_hysteresis(parse_expr(self.when), parse_expr(self.clear) if self.clear else None)
        _check_window(self.when, self.window)
        return self


def _check_window(when: str | None, window: float | None) -> None:
    if window is not None and when and not parse_expr(when).windowed:
        raise ValueError("window applies to rate and prediction conditions (rate … per …, reaches … within …)")


class GateConfig(Model):
    """``only_if``: the rule holds only while the series of ``metric`` with the same labels matches ``when``."""

    metric: str = Field(pattern=_METRIC)
    when: ExprText

    @field_validator("when")
    @classmethod
    def _threshold(cls, when: str) -> str:
        if parse_expr(when).windowed:
            raise ValueError('only_if takes a threshold such as "== 1", not a rate or prediction')
        return when


class RuleConfig(Model):
    """One alert rule: a metric condition (or ``any_of`` conditions, or an event) held for ``for``."""

    alert: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)
    severity: Severity = "warning"
    enabled: bool = True
    metric: str | None = Field(default=None, pattern=_METRIC)
    match: dict[str, str] = Field(default_factory=dict)
    matchers: list[MatcherText] = Field(default_factory=list)
    when: ExprText | None = None
    clear: ExprText | None = None
    any_of: list[ConditionConfig] = Field(default_factory=list, description="fires when any condition holds")
    only_if: GateConfig | None = None
    event: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    clear_event: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    resolve_after: Duration = Field(default=300.0, gt=0, description="an event alert without clear_event resolves after this")
    for_: Duration = Field(default=0.0, ge=0, alias="for")
    window: Duration | None = Field(default=None, gt=0, le=86400,
                                    description="samples a rate or prediction is fitted over (default: rate's per, 5m)")
    time_window: Literal["always", "working_hours", "outside_working_hours"] = "always"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, Annotation] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for k in labels:
            if not re.match(_LABEL, k):
                raise ValueError(f"{k!r} is not a label name")
            if k in ("alertname", "severity"):
                raise ValueError(f"set {k} with the rule's {'alert' if k == 'alertname' else 'severity'} key, not in labels")
        return labels

    @model_validator(mode="after")
    def _shape(self) -> RuleConfig:
        kinds = [k for k, on in (("metric", self.metric), ("any_of", self.any_of), ("event", self.event)) if on]
        if len(kinds) != 1:
            raise ValueError("give exactly one of metric (with when), any_of (a list of conditions) or event")
        if self.metric and not self.when:
            raise ValueError("a metric rule needs when, e.g. when: \"> 27\"")
        if not self.metric and (self.when or self.clear):
            raise ValueError("when/clear belong to a metric rule (or to each any_of entry)")
        if self.metric and self.when:
            check_hysteresis(parse_expr(self.when), parse_expr(self.clear) if self.clear else None)
            _check_window(self.when, self.window)
        elif self.window is not None:
            raise ValueError("window belongs to a metric rule with a rate or prediction (or to each any_of entry)")
        if self.event and (self.only_if or self.match or self.matchers):
            pass  # matchers select the event's labels; fine
        if self.event and self.only_if:
            raise ValueError("only_if applies to metric rules")
        if self.clear_event and not self.event:
            raise ValueError("clear_event needs event")
        return self


class RuleOverride(Model):
    """Changes to one rule of the default pack; unset keys keep the default."""

    enabled: bool | None = None
    severity: Severity | None = None
    when: ExprText | None = None
    clear: ExprText | None = None
    any_of: list[ConditionConfig] | None = None
    for_: Duration | None = Field(default=None, ge=0, alias="for")
    window: Duration | None = Field(default=None, gt=0, le=86400)
    match: dict[str, str] | None = None
    matchers: list[MatcherText] | None = None
    time_window: Literal["always", "working_hours", "outside_working_hours"] | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, Annotation] | None = None


class RulesConfig(Model):
    """The default rule pack on/off with overrides, extra rule files and inline rules, working hours."""

    defaults: bool = True
    overrides: dict[str, RuleOverride] = Field(default_factory=dict, description="alertname → changes")
    files: list[str] = Field(default_factory=list, description="YAML files (globs allowed) with a rules: list")
    extra: list[RuleConfig] = Field(default_factory=list, description="more rules inline")
    timezone: TimeZoneName = "Asia/Shanghai"
    working_hours: WorkingHoursConfig = Field(default_factory=WorkingHoursConfig)
    evaluation_interval: Duration = Field(default=1.0, gt=0, le=60, description="timer for for-durations, staleness")
    _file_rules: list[tuple[str, int, RuleConfig]] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _load_files(self) -> RulesConfig:
        """Read rule files now, so check-config reports their problems with file and line."""
        from roomwatch.alerts.rules import load_rule_file  # reads YAML; kept out of module import

        problems: list[str] = []
        loaded: list[tuple[str, int, RuleConfig]] = []
        for pattern in self.files:
            paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
            for path in paths:
                try:
                    loaded.extend((path, i, r) for i, r in enumerate(load_rule_file(path)))
                except ValueError as exc:
                    problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        self._file_rules = loaded
        # Overrides merged into the defaults must still be valid rules: checked in alerting_checks,
        # which can name the override's own key and line (a validator here could only blame `rules:`).
        return self

    def file_rules(self) -> list[tuple[str, int, RuleConfig]]:
        """(file, index, rule) of every rule read from ``files``."""
        return list(self._file_rules)


class InhibitRuleConfig(Model):
    """While a firing alert matches ``source_matchers``, alerts matching ``target_matchers`` with the same
    ``equal`` labels are not notified (Alertmanager's inhibit_rules)."""

    source_matchers: list[MatcherText] = Field(min_length=1)
    target_matchers: list[MatcherText] = Field(min_length=1)
    equal: list[Annotated[str, Field(pattern=_LABEL)]] = Field(default_factory=list)


class AckLinksConfig(Model):
    """One-tap acknowledge links in messages (docs/oncall.md)."""

    enabled: bool = True
    #: A link works this long after the message that carried it.
    ttl: Duration = Field(default=86400.0, gt=0, le=30 * 86400.0)
    #: The key links are signed with; default: made at first start and kept in the collector's store.
    #: Set it (e.g. secret_file) when two collectors should accept each other's links.
    secret: Secret | None = None


class DingtalkCallbackConfig(Model):
    """A DingTalk enterprise robot's message callback (消息接收地址): "@机器人 确认 4821" in the group acknowledges."""

    #: The robot application's AppSecret: DingTalk signs each callback with it (headers timestamp, sign).
    app_secret: Secret
    #: group: anyone in the group may acknowledge; people: only oncall.people with their dingtalk id.
    allow: Literal["group", "people"] = "group"


class CallbacksConfig(Model):
    """IM callbacks the collector receives (it must be reachable from the IM service: docs/oncall.md)."""

    dingtalk: DingtalkCallbackConfig | None = None


class AlertsConfig(Model):
    """How notifications are written and delivered."""

    language: Language | None = Field(default=None, description="messages to people; default web.language")
    external_url: str | None = Field(default=None, pattern=r"^https?://",
                                     description="how people reach this collector (links in messages)")
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)
    retry_initial: Duration = Field(default=1.0, gt=0, description="first retry of a failed delivery")
    retry_max: Duration = Field(default=300.0, gt=0, description="longest wait between retries")
    max_age: Duration = Field(default=86400.0, gt=0, description="give up a notification not delivered for this long")
    channel_failing_after: Duration = Field(default=60.0, gt=0,
                                            description="NotificationChannelFailing after failing this long")
    keep_history: Duration = Field(default=30 * 86400.0, gt=0, description="keep resolved alerts and sent messages")
    ack_links: AckLinksConfig = Field(default_factory=AckLinksConfig)
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)
    silence_max_duration: Duration = Field(default=90 * 86400.0, gt=0, le=3660 * 86400.0,
                                           description="longest silence accepted (endsAt - startsAt)")


# ------------------------------------------------------------------ routes


class RouteLevel(Model):
    """An escalation level: if nobody acknowledges within ``after``, notify ``channels`` too.

    A channel entry ``oncall:ROTA`` stands for the rota's channels, each telling the person on duty.
    """

    after: Duration = Field(gt=0)
    channels: list[str] = Field(min_length=1)


class RouteConfig(Model):
    """Which alerts go to which channels.

    Every label in ``match`` must equal the alert's and every matcher in
    ``matchers`` must match; an empty route takes all alerts. The first route
    that matches wins unless it says ``continue: true``.
    """

    match: dict[str, str] = Field(default_factory=dict)
    matchers: list[MatcherText] = Field(default_factory=list)
    channels: list[str] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")
    group_by: list[str] = Field(default_factory=lambda: ["site", "room"],
                                description="alerts with equal values of these labels share one message; [...] = all")
    group_wait: Duration = Field(default=0.0, ge=0, description="wait this long for more alerts before the first message")
    group_interval: Duration = Field(default=30.0, gt=0, description="then batch changes of the group this long")
    repeat_interval: Duration = Field(default=4 * 3600.0, gt=0, description="repeat unacknowledged firing alerts")
    levels: list[RouteLevel] = Field(default_factory=list, description="escalation when not acknowledged")
    mute_time_intervals: list[str] = Field(default_factory=list, description="no notifications while one holds")
    active_time_intervals: list[str] = Field(default_factory=list, description="notifications only while one holds")
    #: Channels of a level are alternatives in order: a channel failing this long hands its messages (queued ones
    #: too) to the next one of the level until it works again. Unset: every channel of a level is told.
    failover: Duration | None = Field(default=None, gt=0)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str]) -> list[str]:
        for k in value:
            if k != "..." and not re.match(_LABEL, k):
                raise ValueError(f"{k!r} is not a label name")
        return value

    @model_validator(mode="after")
    def _levels(self) -> RouteConfig:
        last = 0.0
        for lv in self.levels:
            if lv.after <= last:
                raise ValueError("levels must have increasing 'after' durations")
            last = lv.after
        return self


def alerting_checks(cfg: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-section checks of a collector config (channels named in routes, overrides of known rules)."""
    from roomwatch.alerts.rota import ONCALL_PREFIX
    from roomwatch.alerts.rules import default_rule_names, override_problems

    problems: list[tuple[tuple[Any, ...], str]] = []
    names = {c.name for c in cfg.channels}
    rotas = {r.name for r in cfg.oncall.rotas}
    intervals = {t.name for t in cfg.time_intervals} | {"working_hours"}

    def target(where: tuple[Any, ...], ch: str) -> None:
        if ch.startswith(ONCALL_PREFIX):
            if ch[len(ONCALL_PREFIX):] not in rotas:
                problems.append((where, f"no rota named {ch[len(ONCALL_PREFIX):]!r} in oncall.rotas"))
        elif ch not in names:
            problems.append((where, f"no channel named {ch!r} in channels"))

    for i, r in enumerate(cfg.routes):
        for k, ch in enumerate(r.channels):
            target(("routes", i, "channels", k), ch)
        for j, lv in enumerate(r.levels):
            for k, ch in enumerate(lv.channels):
                target(("routes", i, "levels", j, "channels", k), ch)
        for key in ("mute_time_intervals", "active_time_intervals"):
            for k, name in enumerate(getattr(r, key)):
                if name not in intervals:
                    problems.append((("routes", i, key, k), f"no time interval named {name!r} in time_intervals"))
    seen: set[str] = set()
    for i, t in enumerate(cfg.time_intervals):
        if t.name in seen:
            problems.append((("time_intervals", i, "name"), f"time interval {t.name!r} is defined twice"))
        seen.add(t.name)
    from roomwatch.channels.base import get_channel_type

    keys = {c.name: get_channel_type(c.type).person_key for c in cfg.channels}
    problems.extend(cfg.oncall.problems(keys))
    known = default_rule_names()
    for name in cfg.rules.overrides:
        if name not in known:
            problems.append((("rules", "overrides", name),
                             f"{name!r} is not a rule of the default pack; known: {', '.join(sorted(known))}"))
    problems.extend((("rules", "overrides", name), reason) for name, reason in override_problems(cfg.rules))
    return problems
