"""Local fallback alerting: when the room has reached no collector for ``fallback.after``, the agent
sends the critical conditions it sees itself, through channels of its own (typically ``gsm_modem``,
which needs no internet link).

Conditions: the rules of the collector's default pack that its ``local_fallback:`` list names
(``alerts/defaults.yaml``: UPSOnBattery, UPSBatteryLow, WaterLeak, SmokeDetected,
RoomTemperatureCritical), read through :mod:`roomwatch.alerts.pack` — the same alert names,
thresholds (``when``/``clear``), ``for`` durations and zh-CN/en summaries as the collector's.
``temperature_critical``, ``temperature_clear`` and ``temperature_for`` override the
temperature rule's for the agent (as ``rules.overrides`` may for the collector).

A condition is sent once per episode, and only if no collector has accepted a batch showing it
(then the collector alerts for it: it is not sent twice). When it clears while the link is still down,
a "resolved" message follows (``send_resolved``).

Every message the agent delivered becomes a ``fallback_notified`` event (format and matching rule in
``roomwatch/core/notice.py``), pushed in a batch of its own that the spool sends ahead of everything
else (kept until the collector has it). The collector's alert engine uses it to mark that alert as
already notified, so people are not told twice (docs/reliability.md, "Local fallback alerting").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field, TypeAdapter

from roomwatch.alerts.conditions import parse_expr
from roomwatch.alerts.pack import PackRule, local_fallback_rules
from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import Duration, Model
from roomwatch.core.notice import EVENT_TYPE, notice_event
from roomwatch.core.wire import Batch, EventRecord, SampleRecord

if TYPE_CHECKING:
    from roomwatch.agent.runtime import Agent, DeviceRunner

__all__ = ["EVENT_TYPE", "FallbackAlerter", "FallbackConfig"]

log = logging.getLogger("roomwatch.agent.fallback")



class FallbackConfig(Model):
    """``fallback:`` in the agent file."""

    after: Duration = Field(default=300.0, gt=0, description="no collector reached for this long → alert locally")
    channels: list[dict[str, Any]] = Field(min_length=1, description="channel entries as in the collector's channels")
    language: str = Field(default="zh-CN", pattern=r"^(zh-CN|en)$")
    send_resolved: bool = True
    # Unset: the rule pack's RoomTemperatureCritical (alerts/defaults.yaml: > 32 °C for 2m, clear < 30 °C).
    temperature_critical: float | None = Field(default=None, description="°C; default: the rule pack's")
    temperature_clear: float | None = Field(default=None, description="°C; default: the rule pack's")
    temperature_for: Duration | None = Field(default=None, ge=0, description="default: the rule pack's")

    def channel_models(self) -> list[Any]:
        """Validate the channel entries with the alerting package's models (imported only when used)."""
        from roomwatch.channels.config import ChannelEntry

        adapter: TypeAdapter[Any] = TypeAdapter(ChannelEntry)
        return [adapter.validate_python(c) for c in self.channels]

    def secret_values(self) -> list[str]:
        """Secrets of the channel entries (PINs, API keys), for log redaction."""
        from roomwatch.core.configbase import iter_secret_values

        out: list[str] = []
        for model in self.channel_models():
            out.extend(iter_secret_values(model))
        return out

    def extra_checks(self) -> list[tuple[tuple[Any, ...], str]]:
        from pydantic import ValidationError

        problems: list[tuple[tuple[Any, ...], str]] = []
        for i, entry in enumerate(self.channels):
            try:
                from roomwatch.channels.config import ChannelEntry

                TypeAdapter(ChannelEntry).validate_python(entry)
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    loc = tuple(p for p in err["loc"] if p != entry.get("type"))
                    problems.append((("fallback", "channels", i, *loc), str(err["msg"]).removeprefix("Value error, ")))
        temp = next((r for r in local_fallback_rules() if r.metric == v.TEMPERATURE), None)
        if temp is not None:
            critical = self.temperature_critical if self.temperature_critical is not None else temp.when.first()
            clear = self.temperature_clear if self.temperature_clear is not None else (
                temp.clear.first() if temp.clear is not None else critical)
            if clear > critical:
                problems.append((("fallback", "temperature_clear"), "must not be above temperature_critical"))
        return problems

    def rules(self) -> dict[str, PackRule]:
        """Metric → the rule the fallback sends for it: the pack's, with this section's temperature overrides."""
        out: dict[str, PackRule] = {}
        for r in local_fallback_rules():
            if r.metric == v.TEMPERATURE:
                r = PackRule(r.alert, r.severity, r.metric,
                             parse_expr(f"> {self.temperature_critical}") if self.temperature_critical is not None
                             else r.when,
                             parse_expr(f"< {self.temperature_clear}") if self.temperature_clear is not None else r.clear,
                             self.temperature_for if self.temperature_for is not None else r.for_, r.summary)
            out[r.metric] = r
        return out


#: Seconds before retrying the recipients a channel could not reach yet, when the service names no delay.
_RETRY_REMAINDER = 30.0


@dataclass(slots=True)
class _Condition:
    alertname: str
    labels: dict[str, str]
    words: str
    since: float  # Unix time of the first sample showing it
    value: float
    firing: bool = False  # temperature: past its "for"
    notified: bool = False
    cleared: bool = False
    known: bool = False  # a batch showing it was accepted by a collector: the collector alerts for it
    extra: dict[str, Any] = field(default_factory=dict)


class FallbackAlerter:
    """Watches readings (an :attr:`Agent.observers` hook) and alerts locally while the link is down."""

    def __init__(self, config: FallbackConfig, agent: Agent):
        from roomwatch.channels.base import get_channel_type

        self.config = config
        self.agent = agent
        self.clock = agent.clock
        self.channels = [get_channel_type(m.type)(m) for m in config.channel_models()]
        self.rules = config.rules()
        self.conditions: dict[tuple[str, tuple[tuple[str, str], ...]], _Condition] = {}
        self.sent = 0
        self._kick = asyncio.Event()
        self._started = self.clock.time()

    # -- watching ------------------------------------------------------------------
    def observe(self, dev: DeviceRunner, samples: list[SampleRecord], events: list[EventRecord]) -> None:
        """Update conditions from one poll's samples (runs on the event loop, must be quick)."""
        lang = self.config.language
        now = self.clock.time()
        for s in samples:
            rule = self.rules.get(s.metric)
            if rule is None:
                continue
            # A condition begins at its sample's time: the collector's alert for it starts there too
            # (the matching rule in roomwatch/core/notice.py compares the two).
            key = (rule.alert, tuple(sorted(s.labels.items())))
            was = key in self.conditions and not self.conditions[key].cleared
            words = rule.summary.get(lang) or rule.summary.get("en") or rule.alert
            cond = self._track(rule.alert, s.labels, rule.active(s.value, was), rule.for_ <= 0, words, s.ts / 1000,
                               s.value)
            if cond is not None and not cond.cleared and now - cond.since >= rule.for_:
                cond.firing = True
        if any(c.firing and not c.notified for c in self.conditions.values()):
            self._kick.set()

    def _track(self, name: str, labels: dict[str, str], on: bool, firing: bool, words: str, since: float,
               value: float) -> _Condition | None:
        key = (name, tuple(sorted(labels.items())))
        cond = self.conditions.get(key)
        if on:
            if cond is None or cond.cleared:
                cond = self.conditions[key] = _Condition(name, dict(labels), words, since, value, firing)
            cond.value = value
            return cond
        if cond is not None and not cond.cleared:
            cond.cleared = True
            if cond.notified and self.config.send_resolved:
                self._kick.set()
            elif not cond.notified:
                del self.conditions[key]
        return None

    # -- deciding --------------------------------------------------------------------
    def offline_for(self) -> float:
        """Seconds since a collector last accepted a push (since start if none ever did)."""
        pusher = self.agent.pusher
        last = pusher.last_ok if pusher is not None and pusher.last_ok else self._started
        return max(0.0, self.clock.time() - last)

    def accepted(self, batch: Batch) -> None:
        """A collector accepted ``batch`` (a :attr:`Pusher.on_accepted` hook): it has seen what the batch shows."""
        unknown = {(c.alertname, tuple(sorted(c.labels.items()))): c for c in self.conditions.values() if not c.known}
        if not unknown:
            return
        for s in batch.samples:
            rule = self.rules.get(s.metric)
            if rule is None:
                continue
            cond = unknown.get((rule.alert, tuple(sorted(s.labels.items()))))
            if cond is not None and s.ts >= int(cond.since * 1000) - 1 and rule.when.test(s.value):
                cond.known = True

    async def run(self) -> None:
        """Check every second (and at once on a new condition) while the agent runs."""
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), 1.0)
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                await self.check()
            except Exception:  # alerting must never stop the agent
                log.exception("local fallback alerting failed")

    async def check(self) -> None:
        offline = self.offline_for()
        if offline < self.config.after:
            # Online: the collector alerts. Forget cleared episodes; a notified one stays notified.
            for key in [k for k, c in self.conditions.items() if c.cleared]:
                del self.conditions[key]
            return
        due = [c for c in self.conditions.values() if c.firing and not c.notified and not c.cleared and not c.known]
        resolved = [c for c in self.conditions.values() if c.cleared and c.notified]
        if not due and not resolved:
            return
        for cond in due:
            if await self._send(cond, "firing", offline):
                cond.notified = True
        for cond in resolved:
            if await self._send(cond, "resolved", offline):
                self.conditions.pop((cond.alertname, tuple(sorted(cond.labels.items()))), None)

    # -- sending -----------------------------------------------------------------------
    def _text(self, cond: _Condition, status: str, offline: float) -> tuple[str, str]:
        a = self.agent.config.agent
        place = " ".join(x for x in (a.site, a.room) if x) or a.id
        device = cond.labels.get("device", "")
        value = f" {cond.value:.1f}°C" if self._is_temperature(cond) else ""
        minutes = max(1, round(offline / 60))
        if self.config.language == "zh-CN":
            title = f"【机房本地告警】{place}" if status == "firing" else f"【已恢复】{place}"
            text = (f"{title}\n{device}: {cond.words}{value}\n"
                    f"{'开始' if status == 'firing' else '恢复'}于 {time.strftime('%H:%M', time.localtime())}；"
                    f"与监控中心失联约 {minutes} 分钟，由现场设备直接发送。")
        else:
            title = f"[LOCAL ALERT] {place}" if status == "firing" else f"[RESOLVED] {place}"
            text = (f"{title}\n{device}: {cond.words}{value}\nCollector unreachable for about {minutes} min; "
                    "sent by the agent in the room.")
        return title, text

    def _is_temperature(self, cond: _Condition) -> bool:
        rule = self.rules.get(v.TEMPERATURE)
        return rule is not None and rule.alert == cond.alertname

    async def _send(self, cond: _Condition, status: str, offline: float) -> bool:
        """Send through each channel; True once a channel has it for all its recipients.

        A channel that reached some recipients and must retry others (one number over its SMS
        limit) keeps that progress with the condition: the next check sends only to the others,
        after the service's retry delay, and the collector is told at once (the first recipient
        reached), so it does not notify people again."""
        from roomwatch.channels.base import PROGRESS, AlertItem, Notification, Outcome

        title, text = self._text(cond, status, offline)
        labels = {**cond.labels, "alertname": cond.alertname, "severity": "critical"}
        item = AlertItem(id=cond.alertname, status=status, labels=labels, annotations={"summary": title},
                         starts_at=dt.datetime.fromtimestamp(cond.since, dt.UTC), value=cond.value)
        delivered = False
        for ch in self.channels:
            key = f"{status}/{ch.name}"
            if self.clock.monotonic() < cond.extra.get(f"next/{key}", 0.0):
                continue  # its remaining recipients wait for the service's retry delay
            n = Notification(group_key=f"fallback/{cond.alertname}", status=status, receiver=ch.name, alerts=[item],
                             title=title, text=text, reason=status)
            if cond.extra.get(f"progress/{key}"):
                n.extra[PROGRESS] = cond.extra[f"progress/{key}"]
            try:
                result = await asyncio.wait_for(ch.send(n), ch.config.timeout + 120)
            except Exception as exc:  # a channel bug or a hung modem: try the next channel
                log.error("local fallback through %s failed: %s", ch.name, exc)
                continue
            done = result.outcome in (Outcome.DELIVERED, Outcome.PARTIAL)  # partial: the channel logged who was missed
            progress = result.progress if result.outcome is Outcome.RETRY else None
            if progress:
                cond.extra[f"progress/{key}"] = progress
                cond.extra[f"next/{key}"] = self.clock.monotonic() + (result.retry_after or _RETRY_REMAINDER)
            if (done or (progress and progress.get("reached"))) and not cond.extra.get(f"noticed/{key}"):
                cond.extra[f"noticed/{key}"] = True
                self.sent += 1
                log.warning("collector unreachable for %.0fs: sent %s %s for %s through %s%s", offline,
                            cond.alertname, status, cond.labels.get("device", "?"), ch.name,
                            "" if done else " (some recipients still to be retried)")
                if self.agent.pusher is not None:
                    self.agent.pusher.add_notice(notice_event(cond.alertname, cond.labels, status, ch.name,
                                                              ch.type, int(self.clock.time() * 1000), cond.since, text))
            if done:
                delivered = True
            else:
                log.error("local fallback through %s: %s (%s)", ch.name, result.outcome.value, result.detail)
        return delivered

    async def close(self) -> None:
        for ch in self.channels:
            try:
                await ch.close()
            except Exception as exc:
                log.debug("closing %s: %s", ch.name, exc)
