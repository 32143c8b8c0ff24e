"""HTTP helpers shared by channels that POST JSON: one aiohttp session per channel, outcome by status.

Retryability follows Alertmanager's notifiers: 2xx delivered, 5xx (and 429,
timeouts, connection errors) retried, any other status given up.
"""

from __future__ import annotations

import json
from typing import Any

from roomwatch.channels.base import Outcome, SendResult

__all__ = ["HTTPSession", "outcome_for_status"]


def outcome_for_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status >= 500 or status == 429:
        return Outcome.RETRY
    return Outcome.GIVE_UP


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


class HTTPSession:
    """A lazily opened aiohttp session (it needs the running loop) with a per-request timeout."""

    def __init__(self, timeout: float, user_agent: str = "roomwatch"):
        self.timeout = timeout
        self.user_agent = user_agent
        self._session: Any = None

    async def post_json(self, url: str, payload: Any, headers: dict[str, str] | None = None,
                        what: str = "") -> tuple[SendResult, int | None, str]:
        """POST ``payload``; return (result, HTTP status or None, reply body cut to 500 chars).

        ``what`` names the target in ``detail`` instead of the URL, which may hold a key.
        """
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                                  headers={"User-Agent": self.user_agent})
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            async with self._session.post(url, data=body, headers={"Content-Type": "application/json",
                                                                   **(headers or {})}) as resp:
                text = (await resp.text(errors="replace"))[:500]
                outcome = outcome_for_status(resp.status)
                detail = f"{what + ': ' if what else ''}HTTP {resp.status} {text.strip()}".strip()
                return SendResult(outcome, detail, _retry_after(resp.headers.get("Retry-After"))), resp.status, text
        except TimeoutError:
            return SendResult(Outcome.RETRY, f"{what + ': ' if what else ''}no reply within {self.timeout:g}s"), None, ""
        except aiohttp.ClientError as exc:
            reason = type(exc).__name__
            os_error = getattr(exc, "os_error", None)
            if os_error is not None:
                reason += f" ({os_error.strerror or os_error})"
            return SendResult(Outcome.RETRY, f"{what + ': ' if what else ''}connection failed: {reason}"), None, ""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
