"""Short acknowledgement codes of alert episodes, and which alerts each phone number was last sent.

Each alert episode that is notified through a channel taking replies gets a 4-digit code
(table ``ack_codes``), the same in every message about it; for each number an alert SMS
went to, the alerts it carried are kept (table ``reply_targets``), so a reply "1" means
"the alerts of the last message I got" (:mod:`roomwatch.alerts.replies`).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable

__all__ = ["CODE_DIGITS", "AckCodes", "normalize_number"]

CODE_DIGITS = 4


def normalize_number(number: str) -> str:
    """Digits only, without the mainland +86/0086 prefix: "+86 138-0013-8000" → "13800138000"."""
    digits = "".join(ch for ch in number if ch.isdigit())
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            return digits[len(prefix):]
    return digits



class AckCodes:
    """The short code of each notified episode, kept in the store."""

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float]):
        self.conn = conn
        self.clock = clock

    def code_for(self, alert_id: str) -> str:
        """The episode's code, made on first use: random, unused among the codes kept."""
        row = self.conn.execute("SELECT code FROM ack_codes WHERE alert_id = ?", (alert_id,)).fetchone()
        if row is not None:
            return str(row[0])
        digits = CODE_DIGITS
        for attempt in range(200):
            if attempt == 100:
                digits += 2  # ten thousand codes in use: longer ones
            code = f"{secrets.randbelow(10 ** digits):0{digits}d}"
            if code.startswith("0"):  # "0482" read aloud or typed is easy to get wrong
                continue
            cur = self.conn.execute("INSERT OR IGNORE INTO ack_codes (code, alert_id, created_at) VALUES (?, ?, ?)",
                                    (code, alert_id, self.clock()))
            if cur.rowcount:
                return code
        raise RuntimeError("no free acknowledgement code")

    def alert_id(self, code: str) -> str | None:
        row = self.conn.execute("SELECT alert_id FROM ack_codes WHERE code = ?", (code,)).fetchone()
        return None if row is None else str(row[0])

    def sent(self, numbers: Iterable[str], alert_ids: list[str], channel: str) -> None:
        """An alert SMS carrying ``alert_ids`` went to ``numbers``: their "1" now means these alerts."""
        now = self.clock()
        for number in numbers:
            self.conn.execute("INSERT INTO reply_targets (number, alert_ids, channel, at) VALUES (?, ?, ?, ?) "
                              "ON CONFLICT(number) DO UPDATE SET alert_ids = excluded.alert_ids, "
                              "channel = excluded.channel, at = excluded.at",
                              (normalize_number(number), json.dumps(alert_ids), channel, now))

    def last_sent(self, number: str) -> tuple[list[str], str]:
        row = self.conn.execute("SELECT alert_ids, channel FROM reply_targets WHERE number = ?",
                                (normalize_number(number),)).fetchone()
        return ([], "") if row is None else (list(json.loads(row[0])), str(row[1]))
