"""What people do to alerts: acknowledge an episode, add or expire a silence.

Each command checks its input, changes the store in one transaction and logs
who did it. The HTTP API (:mod:`roomwatch.alerts.api`) calls these after its
login check; other front ends (a reply to an SMS, a chat command) call the
same methods, so an acknowledgement means the same wherever it comes from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from roomwatch.alerts.engine import RuleEngine
from roomwatch.alerts.model import Alert
from roomwatch.alerts.render import utc
from roomwatch.alerts.silences import Silence, SilenceStore
from roomwatch.alerts.store import AlertStore

__all__ = ["AckError", "AlertCommands"]

log = logging.getLogger("roomwatch.alerts")

MAX_COMMENT = 1000  # characters of an acknowledgement's comment that are kept


class AckError(Exception):
    """An acknowledgement refused: ``status`` is the HTTP status, the message the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class AlertCommands:
    """Acknowledgements and silences, applied to the engine's alerts and kept in the store."""

    def __init__(self, engine: RuleEngine, store: AlertStore, silences: SilenceStore, clock: Callable[[], float]):
        self.engine = engine
        self.store = store
        self.silences = silences
        self.clock = clock
        self.acks: dict[str, int] = {}  # acknowledgements by how they came (roomwatch_acknowledgements_total)

    def ack(self, alert_id: str, user: str, comment: str = "", via: str = "login", channel: str = "") -> Alert:
        """Acknowledge the episode ``alert_id`` (``<fingerprint>-<episode>``): no more repeats or escalation for it.

        Raises :class:`AckError` (404: no such active alert; 409: the id names another episode,
        or is a bare fingerprint) — an id from an old message never acknowledges a later incident.
        Acknowledging an acknowledged episode again changes nothing. ``via`` (login, link, sms, dingtalk)
        and ``channel`` say how it came, for the API and the report.
        """
        fp, _, episode = alert_id.partition("-")
        a = self.engine.active.get(fp)
        if a is None:
            raise AckError(404, "no active alert with this id (it may have resolved)")
        if a.id != alert_id:
            if not episode:
                raise AckError(409, f"an alert id names one episode: this alert's current one is {a.id} "
                                    "(a bare fingerprint, e.g. from a message sent by an older version, could "
                                    "acknowledge a later incident)")
            raise AckError(409, f"episode {episode} of this alert has resolved; it is active again as {a.id} "
                                "(a new incident: look at it before acknowledging)")
        if a.ack_at is None:
            a.ack_by, a.ack_at, a.ack_comment = user[:200], self.clock(), comment[:MAX_COMMENT]
            a.ack_via, a.ack_channel = via, channel[:100]
            with self.store.transaction():
                self.store.save_alert(a)
            self.acks[via] = self.acks.get(via, 0) + 1
            log.info("alert %s %s acknowledged by %s via %s%s", a.name, a.id, user, via, f" ({channel})" if channel else "")
        return a

    def add_silence(self, body: Any, user: str) -> Silence:
        """Create (or, with ``id``, replace) a silence from its JSON body; :class:`SilenceError` if invalid."""
        now = self.clock()
        s = self.silences.build(body, user, now)
        with self.store.transaction():
            self.silences.save(s)
        log.info("silence %s by %s until %s: %s", s.id, s.created_by, utc(s.ends_at), " ".join(map(str, s.matchers)))
        return s

    def expire_silence(self, sid: str) -> Silence | None:
        """End the silence ``sid`` now; None if there is no such silence."""
        with self.store.transaction():
            s = self.silences.expire(sid, self.clock())
        if s is not None:
            log.info("silence %s expired", sid)
        return s
