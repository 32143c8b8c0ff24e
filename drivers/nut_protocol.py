"""A small asyncio client of the NUT ``upsd`` network protocol (TCP 3493).

No well-kept asyncio NUT client exists on PyPI (the few packages there are
synchronous telnetlib wrappers, unmaintained, or tied to one application), and
the protocol is a handful of line commands, so roomwatch speaks it itself:

* ``LIST UPS`` → ``BEGIN LIST UPS`` / ``UPS <name> "<description>"`` … / ``END LIST UPS``
* ``LIST VAR <ups>`` → ``BEGIN LIST VAR <ups>`` / ``VAR <ups> <var> "<value>"`` … / ``END LIST VAR <ups>``
* ``USERNAME`` / ``PASSWORD`` → ``OK``; upsd checks them only at ``LOGIN <ups>``
* ``STARTTLS`` → ``OK STARTTLS``, then a TLS handshake on the same socket
* any command may answer ``ERR <CODE>``

Protocol reference: https://networkupstools.org/docs/developer-guide.chunked/net-protocol.html
One :class:`NutClient` owns one TCP connection and serialises commands on it;
after any transport error, timeout or cancellation mid-reply the connection is
dropped (its stream position is unknown) and the next call reconnects.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

from roomwatch.drivers.base import DeviceError

__all__ = ["ERR_MESSAGES", "NutClient", "NutError", "quote", "split_line"]

#: upsd error codes → what they mean for the person reading the log.
#: https://networkupstools.org/docs/developer-guide.chunked/net-protocol.html (section "Error responses")
ERR_MESSAGES: dict[str, str] = {
    "ACCESS-DENIED": "upsd refused the login: wrong username or password, or the user lacks "
                     "'upsmon secondary' (or 'actions = LOGIN') in upsd.users",
    "UNKNOWN-UPS": "upsd has no UPS of that name (see `upsc -l HOST`)",
    "VAR-NOT-SUPPORTED": "the UPS does not publish that variable",
    "DATA-STALE": "upsd has only stale data: its driver lost contact with the UPS",
    "DRIVER-NOT-CONNECTED": "upsd's driver for that UPS is not running",
    "USERNAME-REQUIRED": "upsd wants a username first",
    "PASSWORD-REQUIRED": "upsd wants a password first",
    "INVALID-USERNAME": "upsd refused the username",
    "INVALID-PASSWORD": "upsd refused the password",
    "ALREADY-SSL-MODE": "the connection is already encrypted",
    "FEATURE-NOT-SUPPORTED": "this upsd was built without TLS support",
    "FEATURE-NOT-CONFIGURED": "TLS is not configured on this upsd (CERTFILE/CERTPATH in upsd.conf)",
    "UNKNOWN-COMMAND": "upsd does not know the command (an old upsd?)",
    "INVALID-ARGUMENT": "upsd refused an argument of the command",
}

T = TypeVar("T")
_MAX_LINE = 64 * 1024  # one VAR line is short; a longer "line" means we are not talking to upsd


class NutError(DeviceError):
    """upsd answered ``ERR <code>``; ``code`` is the NUT error code."""

    def __init__(self, code: str, command: str, ups: str | None = None):
        self.code = code
        self.command = command
        self.ups = ups
        where = f" for UPS {ups!r}" if ups else ""
        meaning = ERR_MESSAGES.get(code, "upsd reported an error")
        super().__init__(f"upsd answered ERR {code} to {command}{where}: {meaning}")


def split_line(line: str) -> list[str]:
    """Split a reply line into words; double quotes group, backslash escapes ``"`` and ``\\``."""
    words: list[str] = []
    cur: list[str] = []
    in_word = quoted = False
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == "\\" and i + 1 < n:
            cur.append(line[i + 1])
            in_word = True
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
            in_word = True
        elif ch in " \t" and not quoted:
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        else:
            cur.append(ch)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(cur))
    return words


def quote(word: str) -> str:
    """One protocol word: bare when it has no space, quote or backslash, else double-quoted and escaped."""
    if word and not any(c in word for c in ' \t"\\'):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NutClient:
    """One connection to one upsd; safe to share between devices (commands are serialised)."""

    def __init__(self, host: str, port: int = 3493, username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, connect_timeout: float = 5.0):
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.login_ups: str | None = None  # the UPS the credentials were checked against
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    # -- connection -----------------------------------------------------------------
    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=_MAX_LINE), self.connect_timeout)
        except TimeoutError:
            raise DeviceError(f"no TCP answer from upsd at {self.address} within {self.connect_timeout:g}s") from None
        except OSError as exc:
            raise DeviceError(f"cannot connect to upsd at {self.address}: {exc.strerror or exc}") from None
        if self.tls is not None:
            await self._simple("STARTTLS")
            assert self._writer is not None
            try:
                await self._writer.start_tls(self.tls, server_hostname=self.host)
            except (ssl.SSLError, OSError) as exc:
                raise DeviceError(f"TLS handshake with upsd at {self.address} failed: {exc}") from None
        if self.username is not None:
            await self._simple("USERNAME", self.username)
            await self._simple("PASSWORD", self.password or "")

    async def _ensure(self) -> None:
        if not self.connected:
            await self._drop()
            try:
                await self._connect()
            except BaseException:
                await self._drop()
                raise

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        self.login_ups = None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, TimeoutError, ssl.SSLError):
                pass

    async def aclose(self) -> None:
        """Say goodbye and close (called by the agent at shutdown)."""
        async with self._lock:
            if self.connected and self._writer is not None:
                try:
                    self._writer.write(b"LOGOUT\n")
                    await asyncio.wait_for(self._writer.drain(), 1.0)
                except (OSError, TimeoutError):
                    pass
            await self._drop()

    # -- lines ---------------------------------------------------------------------------
    async def _send(self, *words: str) -> str:
        assert self._writer is not None
        command = " ".join(quote(w) for w in words)
        self._writer.write(command.encode("utf-8") + b"\n")
        await self._writer.drain()
        return command

    async def _line(self) -> str:
        assert self._reader is not None
        try:
            raw = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise DeviceError(f"upsd at {self.address} closed the connection") from None
        except asyncio.LimitOverrunError:
            raise DeviceError(f"{self.address} sent an over-long line: is this a NUT upsd?") from None
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    async def _simple(self, *words: str, ups: str | None = None) -> str:
        shown = words[0] if words[0] == "PASSWORD" else " ".join(words)  # never log the password
        await self._send(*words)
        line = await self._line()
        if line.startswith("ERR "):
            raise NutError(line[4:].split()[0] if line[4:].split() else "?", shown, ups)
        if not line.startswith("OK"):
            raise DeviceError(f"unexpected reply to {shown} from {self.address}: {line[:80]!r}")
        return line

    async def _list(self, what: str, *args: str, ups: str | None = None) -> list[list[str]]:
        """Send ``LIST what args`` and return the item lines as word lists (without BEGIN/END)."""
        command = await self._send("LIST", what, *args)
        head = await self._line()
        if head.startswith("ERR "):
            raise NutError(head[4:].split()[0] if head[4:].split() else "?", command, ups)
        expect = split_line(f"BEGIN LIST {what} {' '.join(args)}")
        if split_line(head) != expect:
            raise DeviceError(f"unexpected reply to {command} from {self.address}: {head[:80]!r}")
        items: list[list[str]] = []
        end = ["END", *expect[1:]]
        while True:
            words = split_line(await self._line())
            if words == end:
                return items
            items.append(words)

    async def _run(self, job: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            await self._ensure()
            try:
                return await job()
            except NutError:
                raise  # a clean ERR line: the stream is still in step
            except BaseException:
                # Timeout/cancel or garbage mid-reply: the stream position is unknown; start afresh next time.
                await self._drop()
                raise

    # -- commands ----------------------------------------------------------------------------
    async def login(self, ups: str) -> None:
        """Check the credentials with ``LOGIN ups`` once per connection (what a secondary upsmon does).

        upsd checks USERNAME/PASSWORD only at LOGIN: without it a wrong password goes unnoticed.
        """
        if self.username is None or self.login_ups is not None:
            return

        async def job() -> None:
            try:
                await self._simple("LOGIN", ups, ups=ups)
            except NutError:
                await self._drop()  # start the next attempt on a fresh connection
                raise
            self.login_ups = ups

        await self._run(job)

    async def list_ups(self) -> dict[str, str]:
        """UPS names served by this upsd → their descriptions."""

        async def job() -> dict[str, str]:
            rows = await self._list("UPS")
            return {w[1]: (w[2] if len(w) > 2 else "") for w in rows if len(w) >= 2 and w[0] == "UPS"}

        return await self._run(job)

    async def list_var(self, ups: str) -> dict[str, str]:
        """Every variable of ``ups`` → its value (strings, as upsd sends them)."""

        async def job() -> dict[str, str]:
            rows = await self._list("VAR", ups, ups=ups)
            return {w[2]: (w[3] if len(w) > 3 else "") for w in rows if len(w) >= 3 and w[0] == "VAR"}

        return await self._run(job)

    async def set_var(self, ups: str, var: str, value: str) -> None:
        """``SET VAR ups var "value"`` (needs a user with ``actions = SET``); NutError on ERR."""

        async def job() -> None:
            await self._simple("SET", "VAR", ups, var, value, ups=ups)

        await self._run(job)

    async def instcmd(self, ups: str, command: str) -> None:
        """``INSTCMD ups command`` (needs ``instcmds`` for it in upsd.users); NutError on ERR."""

        async def job() -> None:
            await self._simple("INSTCMD", ups, command, ups=ups)

        await self._run(job)
