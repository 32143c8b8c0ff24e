"""What each HTTP route of the collector reads: the declaration side of its body limits.

A handler declares its limits with :func:`route_limits`; the collector's body guard
(:mod:`roomwatch.collector.limits`, which documents the rules) enforces them before the
handler runs. It sits in the ground layer so that every part adding routes (the alerts
API, the login, the status page) can declare its own without importing the collector.
A route that declares nothing reads no body for ``GET``/``HEAD`` and at most
:data:`DEFAULT_CHANGE` bytes otherwise, so new routes are small by construction.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["DEFAULT_CHANGE", "DEFAULT_GET", "RouteLimits", "client_key", "declared_limits", "route_limits"]

_ATTR = "_roomwatch_route_limits"
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True, slots=True)
class RouteLimits:
    """What one route may read.

    ``max_body``: bytes of body the route reads (as sent); 0 = none (a body that comes
    anyway is left unread and the connection closed after the answer).
    ``encoded``: the route undoes ``Content-Encoding`` itself (else 415 for any but identity).
    ``raw``: the handler reads the body itself, after its own checks (the guard only
    refuses what the headers already show).
    """

    max_body: int = 0
    encoded: bool = False
    raw: bool = False


#: GET and HEAD routes: a body is never read.
DEFAULT_GET = RouteLimits(0)
#: Other methods without a declaration: a small form or JSON document.
DEFAULT_CHANGE = RouteLimits(8 * 1024)


def route_limits(max_body: int = 0, *, encoded: bool = False, raw: bool = False) -> Callable[[H], H]:
    """Declare what the decorated handler reads (see :class:`RouteLimits`)."""
    limits = RouteLimits(max_body, encoded, raw)

    def mark(handler: H) -> H:
        setattr(handler, _ATTR, limits)
        return handler

    return mark


def declared_limits(handler: object) -> RouteLimits | None:
    """The limits ``handler`` declared, or None."""
    found = getattr(handler, _ATTR, None)
    return found if isinstance(found, RouteLimits) else None


def client_key(address: str) -> str:
    """Who a per-client limit counts ``address`` as: itself for IPv4, its /64 for IPv6.

    One IPv6 host can take any address of its /64 (privacy addresses, or just at will), so a
    limit per IPv6 address would be a limit per guess; a dual-stack socket's IPv4 client
    (``::ffff:10.1.2.3``) counts as its IPv4 address. What is not an address is its own key.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
