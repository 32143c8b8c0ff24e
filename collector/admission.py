"""What an authenticated agent may write: its own place, its own names, a bounded number of series.

:meth:`Admission.admit` runs on every new batch before anything stores it.

Refused as a whole (400, the agent drops the batch and logs the reason):

* a sample or event labelled with a ``site`` or ``room`` other than the agent's
  binding in ``agents[]`` (``site:``, ``room:`` or ``rooms:``). A binding is a
  promise about where the agent's readings come from; an agent breaking it is
  misconfigured or hostile, and a whole-batch 400 makes that loud (the agent stops
  being up, AgentDown fires) instead of quietly storing a room's data under
  another room. A sample without ``site``/``room`` gets the bound values.

Refused per sample (the rest of the batch is stored; the 200 names what was not,
``roomwatch_collector_samples_rejected_total{agent,reason}`` counts it, one log
line per agent and reason a minute), so that one runaway label does not cost the
room its temperature:

* ``reserved_name``: a name only the collector writes (``roomwatch_collector_*``,
  ``roomwatch_agent_up``, ``roomwatch_alerts`` …);
* ``name_collision``: a new name in the same OpenMetrics family as a name already
  shown (``x`` next to ``x_total``; ``_count``, ``_sum``, ``_bucket``, ``_created``,
  ``_info``), which would make ``/metrics`` invalid OpenMetrics;
* ``series_limit``: a new series beyond the agent's ``max_series`` (default
  ``limits.series_per_agent``, 10,000) series currently held;
* ``new_series_limit``: a new series beyond ``limits.new_series_per_push`` (10,000) in one
  push (an agent allowed more series must not create them all in one push).

A series is held from its first sample until ``series_expire`` without one, so an
agent creates at most ``max_series`` series per ``series_expire``. The exact
per-series count runs only for a batch that could reach a limit (the agent's series
plus the batch's samples above ``max_series``, or more samples than
``new_series_per_push``): an ordinary push pays two dictionary lookups per sample.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from roomwatch.core import vocabulary as v
from roomwatch.core.exposition import Family, render_labels
from roomwatch.core.wire import Batch, EventRecord, SampleRecord, WireError

if TYPE_CHECKING:
    from roomwatch.collector.agents import AgentState
    from roomwatch.collector.series import SeriesStore

__all__ = ["REASONS", "Admission"]

log = logging.getLogger("roomwatch.collector")

#: Why a sample of an accepted push was not stored (the ``reason`` label).
REASONS = ("reserved_name", "name_collision", "series_limit", "new_series_limit")
_LOG_EVERY = 60.0


class Admission:
    """The per-agent rules of one collector (see the module docstring)."""

    def __init__(self, series: SeriesStore, new_series_per_push: int):
        self.series = series
        self.new_per_push = new_series_per_push
        self.rejected: Counter[tuple[str, str]] = Counter()  # (agent, reason) → samples
        self._logged: dict[tuple[str, str], float] = {}

    # -- place --------------------------------------------------------------------------
    @staticmethod
    def check_place(agent: AgentState, batch: Batch) -> None:
        """Raise WireError (400) when a record claims a site or room outside the agent's binding."""
        site, rooms = agent.site, agent.rooms
        if site is None and rooms is None:
            return
        fill: dict[str, str] = {}
        if site is not None:
            fill["site"] = site
        if rooms is not None and len(rooms) == 1:
            fill["room"] = next(iter(rooms))
        groups: tuple[tuple[str, Sequence[SampleRecord | EventRecord]], ...] = (("samples", batch.samples),
                                                                                ("events", batch.events))
        for kind, records in groups:
            for i, rec in enumerate(records):
                labels = rec.labels
                got_site, got_room = labels.get("site"), labels.get("room")
                if (site is not None and got_site is not None and got_site != site) or \
                        (rooms is not None and got_room is not None and got_room not in rooms):
                    where = ", ".join(f"{k}={val!r}" for k, val in (("site", got_site), ("room", got_room)) if val)
                    bound = ", ".join(filter(None, (f"site {site!r}" if site is not None else "",
                                                    f"room(s) {', '.join(sorted(rooms))}" if rooms is not None else "")))
                    raise WireError(f"{kind}[{i}] is labelled {where}, but agent {agent.id!r} is bound to {bound} "
                                    "(agents[] in the collector file)")
                if (got_site is None and "site" in fill) or (got_room is None and "room" in fill):
                    rec.labels = {**fill, **labels}

    # -- names and series ----------------------------------------------------------------
    def admit(self, agent: AgentState, batch: Batch) -> dict[str, int]:
        """Check place (raises) and names and limits (drops samples from ``batch``); returns refused counts by reason."""
        self.check_place(agent, batch)
        samples = batch.samples
        if not samples:
            return {}
        store = self.series
        families = store.by_metric
        checked: dict[str, str | None] = {}
        for s in samples:
            metric = s.metric
            if metric not in families and metric not in checked:  # a shown family's name was admitted
                checked[metric] = self._name_refusal(metric)
        refused: Counter[str] = Counter()
        bad = {m: r for m, r in checked.items() if r is not None}
        if bad:
            kept: list[SampleRecord] = []
            for s in samples:
                reason = bad.get(s.metric)
                if reason is None:
                    kept.append(s)
                else:
                    refused[reason] += 1
            samples = kept
        held = store.per_agent.get(agent.id, 0)
        if held + len(samples) > agent.max_series or len(samples) > self.new_per_push:
            samples = self._limit_series(agent, samples, held, refused)
        if refused:
            batch.samples = samples
            now = time.monotonic()
            for reason, n in refused.items():
                self.rejected[(agent.id, reason)] += n
                self._log(agent.id, reason, n, now)
        return dict(refused)

    def _name_refusal(self, metric: str) -> str | None:
        """Why a name not yet shown cannot be taken, or None (and its family is then reserved for it)."""
        base = v.family_base(metric)
        if v.collector_owned(metric) or v.collector_owned(base):
            return "reserved_name"
        holder = self.series.bases.get(base)
        if holder is None:
            self.series.bases[base] = metric  # reserved now: two pushes in flight cannot both take the family
            return None
        return None if holder == metric else "name_collision"

    def _limit_series(self, agent: AgentState, samples: list[SampleRecord], held: int, refused: Counter[str]
                      ) -> list[SampleRecord]:
        """The samples whose series exist or fit under the agent's limits; the rest counted in ``refused``."""
        alias = self.series._alias
        aid = agent.id
        new: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        kept: list[SampleRecord] = []
        limit, per_push = agent.max_series, self.new_per_push
        for s in samples:
            labels = s.labels if s.labels.get("agent") == aid else {**s.labels, "agent": aid}
            key = (s.metric, tuple(labels.items()))
            if key in alias or key in new:
                kept.append(s)
            elif held + len(new) >= limit:
                refused["series_limit"] += 1
            elif len(new) >= per_push:
                refused["new_series_limit"] += 1
            else:
                new.add(key)
                kept.append(s)
        return kept

    def _log(self, agent: str, reason: str, n: int, now: float) -> None:
        key = (agent, reason)
        last = self._logged.get(key)
        if last is not None and now - last < _LOG_EVERY:
            return
        self._logged[key] = now
        what = {"reserved_name": "names only the collector writes",
                "name_collision": "names in the same OpenMetrics family as a name already shown (x next to x_total)",
                "series_limit": f"new series beyond its series limit ({self.series.per_agent.get(agent, 0)} held)",
                "new_series_limit": f"more than {self.new_per_push} new series in one push"}[reason]
        log.warning("agent %s: %d samples not stored: %s (roomwatch_collector_samples_rejected_total counts them; "
                    "logged once a minute)", agent, n, what)

    def families(self) -> list[Family]:
        """``roomwatch_collector_samples_rejected_total{agent,reason}``."""
        samples = [(render_labels({"agent": a, "reason": r}), float(n)) for (a, r), n in sorted(self.rejected.items())]
        return [Family(v.COLLECTOR_SAMPLES_REJECTED, v.METRICS[v.COLLECTOR_SAMPLES_REJECTED].help, "counter", samples)]
