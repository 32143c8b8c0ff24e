"""One-tap acknowledge links: signed, bound to one alert episode, expiring, no login needed.

A link is ``<external_url>/ack/<alert id>?e=<expiry>&c=<channel>&p=<person>&s=<signature>``
(``c``/``p`` only where known). The signature is HMAC-SHA256 with the collector's secret
over a versioned string of every part, base64url, cut to 128 bits: a link for one alert
cannot be turned into one for another (the id is signed), nor kept beyond its expiry (the
expiry is signed), nor forged without the secret. The URL has no ``#`` fragment, so any
HTTP client — a phone's browser, curl, a mail scanner — sees all of it; opening it (GET)
never acknowledges, only the page's button (POST to the same URL) does.

The secret is ``alerts.ack_links.secret`` when set (two collectors sharing it accept each
other's links), else 32 random bytes made at the first start and kept in the store
(table ``collector_secrets``), so links survive restarts and die with the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

__all__ = ["AckLinks", "Claim", "LinkRefused", "load_secret"]

SIG_CHARS = 22  # base64url characters of the signature: 132 bits
MAX_FIELD = 100  # characters of a channel or person name in a link


class LinkRefused(Exception):
    """A link that does not acknowledge: ``status`` (401/403/404) and ``reason`` (a metric label)."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason = status, reason


@dataclass(frozen=True, slots=True)
class Claim:
    """What a verified link says: the episode, and who it was sent to through which channel."""

    alert_id: str
    expires: int
    channel: str
    person: str


def load_secret(conn: sqlite3.Connection, configured: str | None, now: float, name: str = "ack_links") -> bytes:
    """The configured secret, or the store's (made now, once, when missing)."""
    if configured:
        return configured.encode()
    row = conn.execute("SELECT value FROM collector_secrets WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return bytes(row[0])
    value = secrets.token_bytes(32)
    conn.execute("INSERT OR IGNORE INTO collector_secrets (name, value, created_at) VALUES (?, ?, ?)", (name, value, now))
    return bytes(conn.execute("SELECT value FROM collector_secrets WHERE name = ?", (name,)).fetchone()[0])


class AckLinks:
    """Makes and checks links of one collector."""

    def __init__(self, secret: bytes, ttl: float, external_url: str):
        self.secret = secret
        self.ttl = ttl
        self.base = external_url.rstrip("/")

    def _sign(self, alert_id: str, expires: int, channel: str, person: str) -> str:
        msg = "\n".join(("roomwatch-ack-1", alert_id, str(expires), channel, person)).encode()
        digest = hmac.new(self.secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:SIG_CHARS]

    def url(self, alert_id: str, now: float, channel: str = "", person: str = "") -> str:
        """The link for episode ``alert_id`` sent ``now`` through ``channel`` to ``person``."""
        channel, person = channel[:MAX_FIELD], person[:MAX_FIELD]
        expires = int(now + self.ttl)
        query = {"e": str(expires)}
        if channel:
            query["c"] = channel
        if person:
            query["p"] = person
        query["s"] = self._sign(alert_id, expires, channel, person)
        return f"{self.base}/ack/{quote(alert_id, safe='-')}?{urlencode(query, quote_via=quote)}"

    def verify(self, alert_id: str, query: Mapping[str, str], now: float) -> Claim:
        """The claim of a link; :class:`LinkRefused` when it is malformed (404), forged or for another alert
        (403), or expired (403). The signature is checked before the expiry, so nothing is learnt unsigned."""
        sig, expires_text = query.get("s", ""), query.get("e", "")
        channel, person = query.get("c", ""), query.get("p", "")
        # isascii: str.isdigit() is also true of "²" and other digits int() does not take (a 500, not a 404)
        if (len(sig) != SIG_CHARS or not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12
                or len(alert_id) > 64
                or len(channel) > MAX_FIELD or len(person) > MAX_FIELD):
            raise LinkRefused(404, "malformed", "not an acknowledge link (a part is missing or cut off)")
        expires = int(expires_text)
        if not hmac.compare_digest(sig.encode(), self._sign(alert_id, expires, channel, person).encode()):
            raise LinkRefused(403, "bad_signature", "this link is not valid (changed or cut off, or not from this collector)")
        if now > expires:
            raise LinkRefused(403, "expired", "this link has expired; acknowledge on the status page or from a newer message")
        return Claim(alert_id, expires, channel, person)
