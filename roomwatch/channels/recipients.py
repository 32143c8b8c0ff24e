"""Per-recipient outcomes of a notification sent to several recipients (SMS numbers), across attempts.

A service such as Tencent SendSms answers per number: one number may hit its own
frequency limit while the others get the message, another may be invalid for good.
:class:`Recipients` turns one attempt's per-number answers into the notification's
outcome and the progress its next attempt starts from (kept by the outbox in
``Notification.extra``, see :class:`roomwatch.channels.base.SendResult`):

* numbers that got it are never sent it again;
* a number that failed for a passing reason (its own limit, a service fault) is retried,
  and only it;
* a number that can never get it (invalid, blacklisted) is not retried; it is logged once,
  when found, and the notification ends ``partial`` (``give_up`` if nobody got it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from roomwatch.channels.base import PROGRESS, Notification, Outcome, SendResult

__all__ = ["PERSON", "Failure", "Recipients", "addressed", "person_of"]

#: Key of ``Notification.extra`` naming the one person a notification is for (a duty-rota target, docs/oncall.md):
#: ``{"name": ..., "phone": ..., "wecom": ..., "dingtalk": ..., "email": ...}`` (the ids the person has).
PERSON = "person"


def person_of(n: Notification) -> dict[str, str] | None:
    """The person a rota target addresses, or None for a channel's own recipients."""
    found = n.extra.get(PERSON)
    return found if isinstance(found, dict) else None


def addressed(n: Notification, key: str, configured: Sequence[str]) -> list[str]:
    """Who gets ``n``: the person's ``key`` id (``phone``, ``wecom`` …) when it is for one person on duty,
    else the channel's ``configured`` recipients. A person without that id gets nothing here (the route's
    check in ``check-config`` names such a rota member)."""
    person = person_of(n)
    if person is None:
        return list(configured)
    value = person.get(key)
    return [str(value)] if value else []


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one recipient did not get the notification in this attempt."""

    recipient: str
    reason: str  # "code: message (hint)", secrets already removed
    retry: bool  # passing (its limit, a service fault): worth another attempt for this recipient
    retry_after: float | None = None  # seconds, when the service's code says how long


class Recipients:
    """Who has the notification, who is still to get it, who never will; loaded from and saved to its progress."""

    def __init__(self, n: Notification, everyone: Sequence[str]):
        saved = n.extra.get(PROGRESS)
        saved = saved if isinstance(saved, dict) else {}
        self.reached: list[str] = [str(r) for r in saved.get("reached", [])]
        self.missed: dict[str, str] = {str(k): str(v) for k, v in dict(saved.get("missed", {})).items()}
        pending = saved.get("pending")
        # A restart with another number list: only numbers still configured are sent to.
        wanted = set(everyone) if pending is None else {str(r) for r in pending}
        self.pending: list[str] = [r for r in everyone if r in wanted]

    def settle(self, ok: Iterable[str], failures: Iterable[Failure], log: logging.Logger, channel: str) -> SendResult:
        """The outcome after an attempt to :attr:`pending`: ``ok`` got it, ``failures`` did not.

        RETRY (with the progress naming only the recipients to try again) while any failure is
        passing; then DELIVERED, PARTIAL when some recipient can never get it, GIVE_UP when nobody
        got it. Recipients found unreachable for good are logged here, once.
        """
        fails = list(failures)
        self.reached += [r for r in ok if r not in self.reached]
        again = [f for f in fails if f.retry]
        lost = [f for f in fails if not f.retry]
        self.missed.update((f.recipient, f.reason) for f in lost)
        total = len(self.reached) + len(self.missed) + len(again)
        parts = [f"delivered to {len(self.reached)} of {total}"]
        if again:
            parts.append("will retry " + "; ".join(f"{f.recipient} {f.reason}" for f in again))
        if self.missed:
            parts.append("not delivered to " + "; ".join(f"{r} {why}" for r, why in self.missed.items()))
        detail = ", ".join(parts)
        if not self.reached and not again:  # nobody got it and nobody will: the whole notification failed
            return SendResult(Outcome.GIVE_UP, detail)
        for f in lost:  # once per recipient and notification: it is not retried, so not found again
            log.warning("channel %s: %s will not get this notification, not retried: %s", channel, f.recipient, f.reason)
        if again:
            # The soonest: a number whose 30-second limit ends need not wait for another's hourly one (a retry
            # to a still-limited number is refused again, at no cost).
            afters = [f.retry_after for f in again if f.retry_after]
            progress = {"reached": self.reached, "missed": self.missed, "pending": [f.recipient for f in again]}
            return SendResult(Outcome.RETRY, detail, min(afters) if afters else None, progress)
        return SendResult(Outcome.PARTIAL if self.missed else Outcome.DELIVERED, detail)
