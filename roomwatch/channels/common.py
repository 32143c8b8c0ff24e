"""What the channel modules share: cutting texts to a service's size, secret redaction,
one HTTP client per channel, and the notification fields SMS templates are filled from.

Retry with backoff, the outbox, grouping and templating are the alerting core's;
this module only holds the pieces every *service* module would otherwise repeat.
aiohttp is imported lazily so that a channel without HTTP (``gsm_modem``, used by
the agent as a local fallback) does not load it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from roomwatch.channels.base import Channel, Notification, Outcome, SendResult
from roomwatch.core.configbase import iter_secret_values

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ACK", "ELLIPSIS", "JSON_HEADERS", "HttpChannel", "HttpClient", "HttpReply", "Redactor", "TransportError", "fit_json",
           "message_text", "render_params", "template_fields", "truncate_chars", "truncate_utf8", "validate_param_specs"]

log = logging.getLogger("roomwatch.channels")

ELLIPSIS = "…"
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
#: Longest service reply quoted in ``SendResult.detail``.
DETAIL_MAX = 600

# ------------------------------------------------------------------ sizes


def truncate_utf8(text: str, max_bytes: int, ellipsis: str = ELLIPSIS) -> str:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8, on a character boundary, ending with ``ellipsis`` when cut."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    mark = ellipsis.encode("utf-8")
    if len(mark) >= max_bytes:
        return data[:max_bytes].decode("utf-8", errors="ignore")
    # decode(errors="ignore") drops only the partial character the byte cut left at the end.
    return data[: max_bytes - len(mark)].decode("utf-8", errors="ignore") + ellipsis


def truncate_chars(text: str, max_chars: int, ellipsis: str = ELLIPSIS) -> str:
    """Cut ``text`` to ``max_chars`` characters (SMS template variables are counted in characters)."""
    if len(text) <= max_chars:
        return text
    if len(ellipsis) >= max_chars:
        return text[:max_chars]
    return text[: max_chars - len(ellipsis)] + ellipsis


def fit_json(build: Callable[[str], Any], text: str, max_bytes: int) -> bytes:
    """Encode ``build(text)`` as compact UTF-8 JSON no larger than ``max_bytes``, cutting ``text`` as needed.

    A cut text ends with the ellipsis. JSON escaping (quotes, newlines, control characters
    as ``\\u0001``) makes a character cost up to six bytes in the body, so the longest
    prefix that fits is found by bisection on the encoded body itself.
    """

    def encode(t: str) -> bytes:
        return json.dumps(build(t), ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    body = encode(text)
    if len(body) <= max_bytes:
        return body
    if len(encode(ELLIPSIS)) > max_bytes:
        raise ValueError(f"message skeleton alone is {len(encode(''))} bytes, over the {max_bytes} byte limit")
    keep, too_many = 0, len(text)  # encode(text[:keep] + ELLIPSIS) fits; text[:too_many] + ELLIPSIS does not
    while too_many - keep > 1:
        mid = (keep + too_many) // 2
        if len(encode(text[:mid] + ELLIPSIS)) <= max_bytes:
            keep = mid
        else:
            too_many = mid
    return encode(text[:keep] + ELLIPSIS)


def message_text(n: Notification) -> str:
    """Plain text with the title first (``title`` is the SMS first line; ``text`` may already start with it)."""
    if not n.title or n.text == n.title or n.text.startswith(n.title + "\n"):
        return n.text
    return f"{n.title}\n{n.text}" if n.text else n.title


# --------------------------------------------------------------- secrets


class Redactor:
    """Replaces every known secret (and its URL-encoded forms) with ``***`` in texts bound for details and logs."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Learn more secrets, e.g. an access token fetched at run time."""
        found = set(self._secrets)
        for s in secrets:
            if s and len(s) >= 4:
                found.update({s, quote(s, safe=""), quote_plus(s)})
        self._secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text


# ------------------------------------------------------------------ HTTP


class TransportError(Exception):
    """The request did not get an HTTP answer (timeout, refused, TLS); the message is already redacted."""


@dataclass(slots=True)
class HttpReply:
    """An HTTP answer, body read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def text(self, limit: int = DETAIL_MAX) -> str:
        return self.body[:limit].decode("utf-8", errors="replace")

    def retry_after(self) -> float | None:
        """Seconds from a ``Retry-After`` header given in seconds (dates are ignored)."""
        value = self.headers.get("Retry-After", "")
        try:
            return max(float(value), 0.0)
        except ValueError:
            return None


class HttpClient:
    """One aiohttp session per channel, made on first use in the running loop; timeouts from the channel config."""

    #: A service reply is small; anything bigger is cut (and would not be JSON we understand anyway).
    MAX_REPLY = 1 << 20

    def __init__(self, timeout: float, redact: Redactor):
        self.timeout = timeout
        self.redact = redact
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # trust_env: HTTPS_PROXY/NO_PROXY are honoured, as offices often reach the internet through a proxy.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout), trust_env=True,
                                                  headers={"User-Agent": "roomwatch"})
            self._loop = loop
        return self._session

    async def request(self, method: str, url: str, *, params: Mapping[str, str] | None = None, json_body: Any = None,
                      data: bytes | Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None) -> HttpReply:
        """Send one request; raise :class:`TransportError` (redacted) when no HTTP answer came."""
        import aiohttp

        session = await self._get_session()
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers = {**JSON_HEADERS, **(headers or {})}
        try:
            async with session.request(method, url, params=params, data=data, headers=headers) as resp:
                body = await resp.content.read(self.MAX_REPLY)
                return HttpReply(resp.status, dict(resp.headers), body)
        except TimeoutError:
            raise TransportError(f"no answer within {self.timeout:g}s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise TransportError(self.redact(f"{type(exc).__name__}: {exc}")) from None

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


class HttpChannel(Channel):
    """Base of the HTTP channels: a redactor loaded with the config's secrets, one HTTP client, result helpers."""

    def __init__(self, config: Any):
        super().__init__(config)
        self.redact = Redactor(iter_secret_values(config))
        self.http = HttpClient(config.timeout, self.redact)
        self.log = logging.getLogger(f"roomwatch.channels.{self.type}")
        self.clock: Callable[[], float] = time.time  # wall clock for signature timestamps (tests shift it)

    async def close(self) -> None:
        await self.http.close()

    def result(self, outcome: Outcome, detail: str, retry_after: float | None = None,
               progress: dict[str, Any] | None = None) -> SendResult:
        """A SendResult whose detail is redacted and short (the sender logs outcomes; debug here)."""
        detail = self.redact(detail)[:DETAIL_MAX]
        self.log.debug("%s %s: %s", self.name, outcome.value, detail)
        return SendResult(outcome, detail, retry_after, progress)

    def by_status(self, reply: HttpReply) -> SendResult:
        """Outcome when the body says nothing we know: 429/5xx are retried, other 4xx are given up."""
        detail = f"HTTP {reply.status}: {reply.text()}"
        if reply.status == 429 or reply.status >= 500:
            return self.result(Outcome.RETRY, detail, reply.retry_after())
        if 200 <= reply.status < 300:
            return self.result(Outcome.GIVE_UP, f"unexpected reply {detail}")
        return self.result(Outcome.GIVE_UP, detail)

    async def call(self, method: str, url: str, **kwargs: Any) -> HttpReply | SendResult:
        """:meth:`HttpClient.request`, with a transport failure turned into a RETRY result."""
        try:
            return await self.http.request(method, url, **kwargs)
        except TransportError as exc:
            return self.result(Outcome.RETRY, str(exc))


# --------------------------------------------------- SMS template fields

#: China Standard Time (no DST), for the times in SMS variables.
CST = dt.timezone(dt.timedelta(hours=8), "CST")
_FIELD_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)?)\}")
FIELDS = frozenset({"alert", "alertname", "summary", "severity", "site", "room", "device", "agent", "value", "threshold",
                    "status", "status_text", "since", "count", "title", "text", "ack_url", "ack_code"})
#: Key of ``Notification.extra`` with the first firing alert's one-tap link and reply code: {"url", "code"}.
ACK = "ack"


def template_fields(n: Notification) -> dict[str, str]:
    """Strings an SMS template variable can be filled from (first alert of the group; labels.X, annotations.X too)."""
    first = n.alerts[0] if n.alerts else None
    labels = {**n.common_labels, **(first.labels if first else {})}
    annotations = {**n.common_annotations, **(first.annotations if first else {})}
    alertname = labels.get("alertname", "")
    summary = annotations.get("summary") or alertname or n.title
    value = annotations.get("value", "")
    if not value and first is not None and first.value is not None:
        value = f"{first.value:.4g}"
    more = len(n.alerts) - 1
    fields = {
        # "alert" reads right in a template such as 机房告警：${alert} for a firing or a resolved group.
        "alert": summary + (f" 等{len(n.alerts)}条" if more > 0 else "") + ("（已恢复）" if n.status == "resolved" else ""),
        "alertname": alertname, "summary": summary, "value": value, "threshold": annotations.get("threshold", ""),
        "status": n.status, "status_text": "恢复" if n.status == "resolved" else "告警",
        "since": first.starts_at.astimezone(CST).strftime("%m-%d %H:%M") if first else "",
        "count": str(len(n.alerts)), "title": n.title, "text": n.text,
        "ack_url": str((n.extra.get(ACK) or {}).get("url", "")), "ack_code": str((n.extra.get(ACK) or {}).get("code", "")),
    }
    for key in ("severity", "site", "room", "device", "agent"):
        fields[key] = labels.get(key, "")
    fields.update({f"labels.{k}": v for k, v in labels.items()})
    fields.update({f"annotations.{k}": v for k, v in annotations.items()})
    return fields


def validate_param_specs(specs: Iterable[str]) -> None:
    """Config check: every ``{field}`` in a template parameter spec names a known field."""
    for spec in specs:
        for name in _FIELD_RE.findall(spec):
            if name not in FIELDS and not name.startswith(("labels.", "annotations.")):
                raise ValueError(f"unknown field {{{name}}} in {spec!r}; known: {', '.join(sorted(FIELDS))}, "
                                 "labels.NAME, annotations.NAME")


def render_params(specs: Iterable[str], n: Notification, max_chars: int | None) -> list[str]:
    """Fill each spec (e.g. ``"{room}/{device}"``) from the notification; cut each to ``max_chars``."""
    fields = template_fields(n)
    out = []
    for spec in specs:
        value = _FIELD_RE.sub(lambda m: fields.get(m.group(1), ""), spec).strip() or "-"  # empty variables are refused
        out.append(truncate_chars(value, max_chars) if max_chars else value)
    return out
