"""Who may change things: ``web.users`` with hashed passwords, HTTP Basic for scripts, session login for the page.

Password hashes (``roomwatch hash-password`` prints one) use the PHC string format:

* ``$scrypt$ln=15,r=8,p=1$<salt>$<hash>`` — scrypt (RFC 7914), N = 2^ln, 32 MiB, the default;
* ``$pbkdf2-sha256$i=600000$<salt>$<hash>`` — PBKDF2-HMAC-SHA256 (OWASP 2023: 600 000 iterations);

salt and hash in unpadded standard base64.

Mutating API calls (acknowledge, silences) need a user:

* scripts send ``Authorization: Basic`` (``curl -u name:password``); the 401 does not
  challenge browsers (no ``WWW-Authenticate: Basic``), so a browser never caches Basic
  credentials that another site could ride on;
* the status page logs in with ``POST /login`` and gets an HttpOnly, SameSite=Strict
  session cookie plus a CSRF token (in the reply and in the readable ``roomwatch_csrf``
  cookie); every mutating request with the session cookie must send the token in
  ``X-CSRF-Token`` (403 otherwise), and a cross-site ``Origin`` is refused.

Sessions are stored hashed in the collector's SQLite store (they survive a restart)
and expire after 12 hours without use.

Guessing passwords (:class:`LoginThrottle`): every attempt is counted *before* its
hash is computed, so a burst of concurrent attempts cannot all be evaluated:

* per source address, at most :data:`ADDRESS_LIMIT` attempts that were not a
  success in :data:`FAIL_WINDOW` seconds (any user names) — 429 beyond;
* per user name, at most :data:`USER_LIMIT` across all addresses (a slow guess from
  many addresses) — 429 beyond, except from an address this user logged in from
  within the last 30 days, so an attacker elsewhere (or a colleague behind the same
  NAT) cannot lock the user out of their own desk.

Hashes run on their own executor of :data:`HASH_WORKERS` threads (scrypt takes 32 MiB
and ~0.1 s each), never on the default pool the history API uses; at most
:data:`HASH_QUEUE` wait for it, beyond that the answer is 429 at once. A user name
that is not configured is never logged as typed (people type passwords there):
only a short hash of it.

``web.read_access: login`` (:func:`read_guard`) makes every read need a user too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from roomwatch.core.httplimits import route_limits

__all__ = ["WebAuth", "check_hash", "hash_password", "require_user", "verify_password"]

log = logging.getLogger("roomwatch.collector.auth")

SESSION_COOKIE = "roomwatch_session"
CSRF_COOKIE = "roomwatch_csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = 12 * 3600.0
FAIL_WINDOW = 300.0  # s: attempts are counted over this window
ADDRESS_LIMIT = 10  # attempts (not successes) per address per window before 429
USER_LIMIT = 30  # attempts per user name per window, all addresses together
FAIL_LIMIT = ADDRESS_LIMIT  # the name of the first release
TRUSTED_FOR = 30 * 86400.0  # an address a user logged in from stays exempt from the per-user limit this long
HASH_WORKERS = 2  # threads computing password hashes (32 MiB each for scrypt)
HASH_QUEUE = 16  # attempts waiting for a hash thread at most; more get 429 at once
_MAX_KEYS = 100_000
SCRYPT_LN, SCRYPT_R, SCRYPT_P = 15, 8, 1
PBKDF2_ITERATIONS = 600_000
_MAXMEM = 256 * 2**20

MIGRATIONS = ["""
CREATE TABLE web_sessions (
    id_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used REAL NOT NULL
)
"""]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, scheme: str = "scrypt") -> str:
    """A PHC string for ``password`` with a random salt."""
    salt = os.urandom(16)
    if scheme == "scrypt":
        digest = hashlib.scrypt(password.encode(), salt=salt, n=2**SCRYPT_LN, r=SCRYPT_R, p=SCRYPT_P, maxmem=_MAXMEM,
                                dklen=32)
        return f"$scrypt$ln={SCRYPT_LN},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    if scheme == "pbkdf2-sha256":
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
        return f"$pbkdf2-sha256$i={PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"
    raise ValueError(f"unknown scheme {scheme!r}")


def _parse(stored: str) -> tuple[str, dict[str, int], bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] != "":
        raise ValueError("not a password hash; run `roomwatch hash-password` and paste what it prints")
    scheme, params_text, salt_text, hash_text = parts[1:]
    try:
        params = {k: int(val) for k, val in (p.split("=", 1) for p in params_text.split(","))}
        salt, digest = _unb64(salt_text), _unb64(hash_text)
    except ValueError:
        raise ValueError("malformed password hash; run `roomwatch hash-password` again") from None
    if scheme == "scrypt":
        if set(params) != {"ln", "r", "p"} or not (10 <= params["ln"] <= 22) or params["r"] < 1 or params["p"] < 1:
            raise ValueError("scrypt hash needs ln (10..22), r and p")
    elif scheme == "pbkdf2-sha256":
        if set(params) != {"i"} or params["i"] < 100_000:
            raise ValueError("pbkdf2-sha256 hash needs i of at least 100000 iterations")
    else:
        raise ValueError(f"unknown hash scheme {scheme!r}; use scrypt or pbkdf2-sha256")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("password hash has a too short salt or digest")
    return scheme, params, salt, digest


def check_hash(stored: str) -> str:
    """Validate a stored hash at config load time; return it unchanged."""
    _parse(stored)
    return stored


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the PHC string ``stored`` (constant-time compare)."""
    try:
        scheme, params, salt, digest = _parse(stored)
    except ValueError:
        return False
    if scheme == "scrypt":
        got = hashlib.scrypt(password.encode(), salt=salt, n=2 ** params["ln"], r=params["r"], p=params["p"],
                             maxmem=_MAXMEM, dklen=len(digest))
    else:
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, params["i"], dklen=len(digest))
    return hmac.compare_digest(got, digest)


@dataclass(slots=True)
class Identity:
    user: str
    method: str  # basic | session
    csrf: str = ""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def user_ref(user: str) -> str:
    """How a user name that is not configured appears in logs: a short hash, never the text typed."""
    return "unknown user #" + hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:8]


class LoginThrottle:
    """Attempts per address and per user name, counted before the hash (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._attempts: dict[str, list[float]] = {}  # "a:<address>" / "u:<sha of user>" → attempt times
        self._trusted: dict[str, dict[str, float]] = {}  # sha of user → address → until

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._attempts.get(key, ()) if now - t < FAIL_WINDOW]
        if times:
            self._attempts[key] = times
        else:
            self._attempts.pop(key, None)
        return times

    def blocked(self, address: str, user: str | None = None) -> bool:
        """True when ``address`` (or ``user`` from an address it never logged in from) is over its limit."""
        now = self.clock()
        if len(self._recent("a:" + address, now)) >= ADDRESS_LIMIT:
            return True
        if user is None:
            return False
        uk = _sha(user)
        return len(self._recent("u:" + uk, now)) >= USER_LIMIT and self._trusted.get(uk, {}).get(address, 0) <= now

    def begin(self, address: str, user: str) -> float | None:
        """Count an attempt before it is evaluated; None when it must be refused (429)."""
        if self.blocked(address, user):
            return None
        if len(self._attempts) > _MAX_KEYS:  # a scan from very many addresses: forget the oldest half
            for key in list(self._attempts)[: _MAX_KEYS // 2]:
                del self._attempts[key]
        now = self.clock()
        self._attempts.setdefault("a:" + address, []).append(now)
        self._attempts.setdefault("u:" + _sha(user), []).append(now)
        return now

    def succeeded(self, address: str, user: str, stamp: float) -> None:
        """A right password: the attempt does not count, and the address is trusted for this user."""
        uk = _sha(user)
        for key in ("a:" + address, "u:" + uk):
            times = self._attempts.get(key)
            if times and stamp in times:
                times.remove(stamp)
        trusted = self._trusted.setdefault(uk, {})
        if len(trusted) >= 64:
            trusted.pop(next(iter(trusted)))
        trusted[address] = self.clock() + TRUSTED_FOR


class WebAuth:
    """Users, sessions and the login throttle of one collector."""

    def __init__(self, users: dict[str, str], conn: sqlite3.Connection | None, secure_cookies: bool = False,
                 clock: Callable[[], float] = time.time):
        self.users = users  # name → PHC hash
        self.conn = conn
        self.secure = secure_cookies
        self.clock = clock
        self._basic_ok: dict[str, float] = {}  # sha256(user:password:hash) → expiry: scrypt once per 5 min
        self.throttle = LoginThrottle(clock)
        # Password hashes on their own small pool: a burst of logins must not starve the history API
        # (asyncio.to_thread, the default pool), and at most HASH_WORKERS × 32 MiB of scrypt at once.
        self._hasher = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="password-hash")
        self._waiting = 0
        if conn is not None:
            from roomwatch.core.sqlite import ensure_schema

            ensure_schema(conn, "webauth", MIGRATIONS)

    def close(self) -> None:
        self._hasher.shutdown(wait=False, cancel_futures=True)

    # -- passwords ------------------------------------------------------------------
    def throttled(self, address: str) -> bool:
        """True when ``address`` may not try a password now."""
        return self.throttle.blocked(address)

    def _failed(self, address: str, user: str) -> None:
        who = repr(user[:64]) if user in self.users else user_ref(user)
        log.warning("failed login for %s from %s", who, address or "?")

    async def check_password(self, user: str, password: str, address: str) -> bool:
        """True for a right password; raises 429 (:func:`_error`) when the attempt may not be evaluated."""
        stored = self.users.get(user)
        key = _sha(f"{user}\x00{password}\x00{stored}")
        now = self.clock()
        if stored is not None and self._basic_ok.get(key, 0) > now:
            return True  # verified within the last 5 minutes (a script's Basic auth): no hash, not an attempt
        stamp = self.throttle.begin(address, user)
        if stamp is None:
            raise _error(429, "too many failed logins; wait a few minutes")
        if self._waiting >= HASH_QUEUE:
            raise _error(429, "too many logins at once; try again in a moment")
        # Hash even for an unknown user, so timing does not tell which names exist.
        target = stored or "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        self._waiting += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(self._hasher, verify_password, password, target)
        finally:
            self._waiting -= 1
        if ok and stored is not None:
            self.throttle.succeeded(address, user, stamp)
            if len(self._basic_ok) > 1000:
                self._basic_ok = {k: t for k, t in self._basic_ok.items() if t > now}
            self._basic_ok[key] = now + 300
            return True
        self._failed(address, user)
        return False

    # -- sessions ---------------------------------------------------------------------
    def create_session(self, user: str) -> tuple[str, str]:
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock()
        if self.conn is not None:
            self.conn.execute("INSERT INTO web_sessions (id_hash, user, csrf, created_at, last_used) VALUES (?, ?, ?, ?, ?)",
                              (_sha(sid), user, csrf, now, now))
            self.conn.execute("DELETE FROM web_sessions WHERE last_used < ?", (now - SESSION_TTL,))
        return sid, csrf

    def session(self, sid: str) -> Identity | None:
        if self.conn is None or not sid:
            return None
        row = self.conn.execute("SELECT user, csrf, last_used FROM web_sessions WHERE id_hash = ?", (_sha(sid),)).fetchone()
        now = self.clock()
        if row is None or now - row[2] > SESSION_TTL or row[0] not in self.users:
            return None
        if now - row[2] > 60:  # refresh the idle timer without a write per request
            self.conn.execute("UPDATE web_sessions SET last_used = ? WHERE id_hash = ?", (now, _sha(sid)))
        return Identity(row[0], "session", row[1])

    def end_session(self, sid: str) -> None:
        if self.conn is not None and sid:
            self.conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (_sha(sid),))

    # -- requests ------------------------------------------------------------------------
    async def identify(self, request: web.Request) -> Identity | None:
        """The user of a request, or None; raises 401/429 on a wrong Basic password."""
        auth = request.headers.get("Authorization", "")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "basic":
                raise _error(401, "use HTTP Basic (curl -u user:password) or log in at /login")
            address = request.remote or ""
            if self.throttled(address):
                raise _error(429, "too many failed logins; wait a few minutes")
            try:
                user, _, password = base64.b64decode(value.strip()[:4096], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise _error(401, "malformed Basic credentials") from None
            if not await self.check_password(user, password, address):
                raise _error(401, "wrong user name or password")
            return Identity(user, "basic")
        return self.session(request.cookies.get(SESSION_COOKIE, ""))


AUTH_KEY = web.AppKey("webauth", WebAuth)


def _error(status: int, message: str) -> web.HTTPException:
    cls = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 429: web.HTTPTooManyRequests}[status]
    # No WWW-Authenticate: Basic challenge — browsers must not start caching Basic credentials.
    headers = {"WWW-Authenticate": 'Session realm="roomwatch", login="/login"'} if status == 401 else None
    return cls(text=json.dumps({"error": message}), content_type="application/json", headers=headers)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


async def require_user(request: web.Request) -> str:
    """The authenticated user of a mutating request; raises 401 (no user), 403 (CSRF), 429 (throttled)."""
    auth = request.app[AUTH_KEY]
    ident = await auth.identify(request)
    if ident is None:
        raise _error(401, "log in first: POST /login, or send HTTP Basic credentials")
    if ident.method == "session":
        token = request.headers.get(CSRF_HEADER, "")
        if not token or not hmac.compare_digest(token.encode(), ident.csrf.encode()):
            raise _error(403, f"missing or wrong {CSRF_HEADER} header (the token /login returned)")
        if not _same_origin(request):
            raise _error(403, "cross-site request refused")
    return ident.user


#: What an anonymous client may still fetch with ``web.read_access: login``: the page shell (to log in),
#: the login itself, liveness and readiness (systemd, load balancers).
OPEN_PATHS = frozenset({"/", "/login", "/logout", "/api/v1/session", "/healthz", "/readyz", "/static/app.js",
                        "/static/style.css"})
#: Routes that carry their own credential and stay open too: one-tap acknowledge links (a signature bound to one
#: alert episode, docs/oncall.md) and the DingTalk callback (DingTalk's signature).
SELF_SIGNED_PREFIXES = ("/ack/", "/api/v1/callbacks/")


@web.middleware
async def read_guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
    """``web.read_access: login``: every request but :data:`OPEN_PATHS` and the push API needs a user."""
    from roomwatch.core.wire import PUSH_PATH

    path = request.path
    if path in OPEN_PATHS or path == PUSH_PATH or path.startswith(SELF_SIGNED_PREFIXES):
        return await handler(request)
    ident = await request.app[AUTH_KEY].identify(request)
    if ident is None:
        raise _error(401, "log in first (web.read_access: login): POST /login, or send HTTP Basic credentials")
    return await handler(request)


# ---------------------------------------------------------------------- routes


def _bad(status: int, message: str) -> web.HTTPException:
    cls = web.HTTPBadRequest if status == 400 else web.HTTPUnsupportedMediaType
    return cls(text=json.dumps({"error": message}), content_type="application/json")


async def _credentials(request: web.Request) -> tuple[str, str]:
    """The name and password of a login body: JSON or a URL-encoded form, UTF-8 (400/415 for anything else).

    Parsed here from the bytes the body guard read, not with ``request.post()``: that reads a
    multipart body from the connection again (the guard has taken it: a 500) and trusts the
    ``charset`` parameter (``charset=bogus``: a 500).
    """
    ctype = request.content_type
    if ctype not in ("application/json", "application/x-www-form-urlencoded"):
        raise _bad(415, "send the login as JSON or a form (application/x-www-form-urlencoded)")
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(400, "body is not UTF-8 text") from None
    try:
        body = json.loads(text) if ctype == "application/json" else dict(parse_qsl(text, max_num_fields=8))
    except (ValueError, RecursionError):
        raise _bad(400, "body is not JSON" if ctype == "application/json" else "body is not a form") from None
    if not isinstance(body, dict):
        body = {}
    user, password = body.get("username", body.get("user", "")), body.get("password", "")
    if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
        raise _bad(400, "username and password are required")
    try:
        user.encode(), password.encode()  # a lone surrogate ("\\ud800") is valid JSON but no text
    except UnicodeEncodeError:
        raise _bad(400, "username and password must be text") from None
    return user, password


#: The login form or JSON: a name and a password, nothing bigger.
LOGIN_MAX_BODY = 4 * 1024


@route_limits(LOGIN_MAX_BODY)
async def handle_login(request: web.Request) -> web.Response:
    """``POST /login`` (JSON or form: username, password) → session cookie + CSRF token."""
    auth = request.app[AUTH_KEY]
    address = request.remote or ""
    if not _same_origin(request):
        raise _error(403, "cross-site request refused")
    if auth.throttled(address):
        raise _error(429, "too many failed logins; wait a few minutes")
    user, password = await _credentials(request)
    if not await auth.check_password(user, password, address):
        raise _error(401, "wrong user name or password")
    sid, csrf = auth.create_session(user)
    log.info("user %r logged in from %s", user, address)
    resp = web.json_response({"user": user, "csrf_token": csrf})
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Strict", secure=auth.secure, path="/",
                    max_age=int(SESSION_TTL))
    resp.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="Strict", secure=auth.secure, path="/",
                    max_age=int(SESSION_TTL))
    return resp


@route_limits(1024)
async def handle_logout(request: web.Request) -> web.Response:
    """``POST /logout``: ends the session (needs the CSRF token like any change)."""
    auth = request.app[AUTH_KEY]
    sid = request.cookies.get(SESSION_COOKIE, "")
    if auth.session(sid) is not None:
        await require_user(request)
        auth.end_session(sid)
    resp = web.json_response({"user": None})
    resp.del_cookie(SESSION_COOKIE, path="/")
    resp.del_cookie(CSRF_COOKIE, path="/")
    return resp


async def handle_session(request: web.Request) -> web.Response:
    """``GET /api/v1/session``: the logged-in user and CSRF token, for the status page."""
    ident = request.app[AUTH_KEY].session(request.cookies.get(SESSION_COOKIE, ""))
    if ident is None:
        return web.json_response({"user": None})
    return web.json_response({"user": ident.user, "csrf_token": ident.csrf})


def add_routes(app: web.Application) -> None:
    """The auth object (:data:`AUTH_KEY`, read by :func:`require_user`) and /login, /logout, /api/v1/session."""
    from roomwatch.collector.http import COLLECTOR_KEY
    from roomwatch.core.sqlite import open_db

    cfg = app[COLLECTOR_KEY].config
    users = {u.name: u.password_hash for u in cfg.web.users}
    conn = open_db(cfg.storage)
    app[AUTH_KEY] = WebAuth(users, conn, secure_cookies=cfg.tls is not None)

    async def close(_app: web.Application) -> None:
        app[AUTH_KEY].close()
        conn.close()

    app.on_cleanup.append(close)
    if cfg.web.read_access == "login":
        app.middlewares.append(read_guard)
    app.router.add_post("/login", handle_login)
    app.router.add_post("/logout", handle_logout)
    app.router.add_get("/api/v1/session", handle_session)


# ---------------------------------------------------------------------- CLI


def add_hash_password_arguments(p: Any) -> None:
    """``roomwatch hash-password`` options."""
    p.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--scheme", choices=["scrypt", "pbkdf2-sha256"], default="scrypt", help="default scrypt")


def cmd_hash_password(args: Any) -> int:
    """Print a password hash for web.users[].password_hash."""
    import getpass

    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 2
    if len(password) < 8:
        print("use at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(password, args.scheme))
    return 0
