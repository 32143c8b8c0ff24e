"""A NUT network server in the agent: every UPS the agent reads, served to stock NUT clients (TCP 3493).

Hosts on the same UPS — a hypervisor, a NAS, a Windows server — already speak
one thing: the NUT network protocol (upsmon, WinNUT, Synology, ESXi/Proxmox
clients). This module answers them as upsd does, from the agent's current
readings (:class:`agent.nut_view.UpsTable`), so one agent reading an SNMP card
becomes the room's UPS server.

Wire behaviour follows upsd 2.8 (``docs/net-protocol.txt``, ``server/netget.c``,
``netlist.c``, ``netuser.c``, ``netmisc.c`` of networkupstools/nut): commands
are case-blind; ``GET``/``LIST`` need no login; ``LOGIN``, ``PRIMARY``/``MASTER``
and ``FSD`` need ``USERNAME`` and ``PASSWORD`` first and are checked then (a
wrong password surfaces as ``ERR ACCESS-DENIED`` at that command, not at
``PASSWORD``); ``ups.status`` gains ``FSD`` in front once forced shutdown is set
(a latch until the agent restarts, as in upsd); a UPS whose device is down
answers ``ERR DATA-STALE``. Nothing is writable: ``SET`` is refused and there are
no instant commands.

asyncio serves it on the agent's event loop (no extra thread, no library: the
protocol is a handful of text lines, and no kept Python NUT server exists).
Bounds, so a hostile client costs nothing unbounded: ``max_clients``
connections, lines of at most :data:`MAX_LINE` bytes and :data:`MAX_ARGS`
words, ``idle_timeout`` without a command, replies a client does not read are
dropped with the connection after :data:`WRITE_TIMEOUT`, and a connection is
closed after :data:`MAX_DENIED` refused logins.

Guessing passwords: a connection sets its password once, so each guess is a new
connection, thousands a second — and a primary's password is the power to set FSD
and shut the room's hosts down. An address (an IPv6 client: its /64) with
:data:`ADDRESS_DENIED_LIMIT` refused logins within :data:`ADDRESS_WINDOW` seconds has
its further logins refused without a check, and the connection closed, until the
window has passed (upsd has no such limit; a client that logged in before is not
affected: its address made no guesses).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator

from roomwatch import __version__
from roomwatch.agent.nut_view import DESCRIPTIONS, STRING_VARS, ServedUps, UpsTable
from roomwatch.core.configbase import Duration, Model, Secret
from roomwatch.core.httplimits import client_key
from roomwatch.core.tls import ServerTLS, server_context
from roomwatch.drivers.nut_protocol import quote, split_line

__all__ = ["DEFAULT_PORT", "NutServer", "NutServerConfig", "NutUser"]

log = logging.getLogger("roomwatch.nut_server")

DEFAULT_PORT = 3493
NETVER = "1.3"  # the protocol version of NUT 2.8 (NUT_NETVERSION)
MAX_LINE = 1024  # upsd reads 512-byte chunks and its parser caps words; real commands are < 200 bytes
MAX_ARGS = 16
MAX_DENIED = 5
ADDRESS_DENIED_LIMIT, ADDRESS_WINDOW = 10, 300.0  # refused logins per client address, seconds
WRITE_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 10.0
HELP = "Commands: HELP VER GET LIST SET INSTCMD LOGIN LOGOUT USERNAME PASSWORD STARTTLS"


def _role(value: Any) -> Any:
    # upsd.users still accepts the pre-2.8 words.
    aliases = {"master": "primary", "slave": "secondary"}
    return aliases.get(value, value) if isinstance(value, str) else value


class NutUser(Model):
    """A user NUT clients log in as (upsd.users): ``upsmon secondary`` may LOGIN, ``primary`` also FSD."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\s\"\\]+$")
    password: Secret
    upsmon: Annotated[Literal["primary", "secondary"], BeforeValidator(_role)] = Field(
        default="secondary", description="secondary: may LOGIN (be counted as a host on the UPS); primary: also FSD")


def _listen(value: Any) -> Any:
    """``0.0.0.0:3493``, ``[::]:3493``, or a bare host (port 3493)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected host:port, e.g. 0.0.0.0:3493")
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and (not host.count(":") or host.startswith("[")):
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port {port} is out of range 0..65535")
        return text
    if text.count(":") and not text.startswith("["):
        return f"[{text}]:{DEFAULT_PORT}"  # a bare IPv6 address
    return f"{text}:{DEFAULT_PORT}"


class NutServerConfig(Model):
    """``nut_server:`` — serve every UPS this agent reads over the NUT protocol (docs/power.md)."""

    listen: Annotated[str, BeforeValidator(_listen)] = Field(
        default=f"127.0.0.1:{DEFAULT_PORT}", description="address:port; 0.0.0.0:3493 to serve the room's other hosts")
    users: list[NutUser] = Field(default_factory=list, description="without users: read-only (no LOGIN, no FSD)")
    tls: ServerTLS | None = Field(default=None, description="offer STARTTLS with this certificate")
    allow_from: list[str] = Field(default_factory=list,
                                  description="client networks allowed to connect (CIDR); empty: any")
    max_clients: int = Field(default=64, ge=1, le=4096)
    idle_timeout: Duration = Field(default=60.0, gt=0, description="close a client silent this long (upsd: 60s)")

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, nets: list[str]) -> list[str]:
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network such as 192.168.1.0/24") from None
        return nets

    @field_validator("users")
    @classmethod
    def _unique(cls, users: list[NutUser]) -> list[NutUser]:
        names = [u.name for u in users]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"user {sorted(dup)[0]!r} is listed twice")
        return users

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


class _Client:
    """One connection's state (upsd's nut_ctype_t)."""

    __slots__ = ("addr", "denied", "id", "login", "password", "tls", "username", "writer")

    def __init__(self, cid: int, addr: str, writer: asyncio.StreamWriter):
        self.id = cid
        self.addr = addr
        self.writer = writer
        self.username: str | None = None
        self.password: str | None = None
        self.login: ServedUps | None = None
        self.tls = False
        self.denied = 0


class _Close(Exception):
    """Reply sent; close the connection (LOGOUT, too many refusals)."""


class NutServer:
    """The asyncio server; :meth:`start` binds, :meth:`stop` closes every connection."""

    def __init__(self, cfg: NutServerConfig, table: UpsTable,
                 on_fsd: Callable[[ServedUps, str], None] | None = None):
        self.cfg = cfg
        self.table = table
        self.on_fsd = on_fsd
        self.users = {u.name: u for u in cfg.users}
        self.tls: ssl.SSLContext | None = server_context(cfg.tls) if cfg.tls is not None else None
        self._nets = [ipaddress.ip_network(n, strict=False) for n in cfg.allow_from]
        self._server: Any = None
        self._clients: dict[int, _Client] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_id = 0
        self._logins_changed = asyncio.Event()
        self.refused: dict[str, int] = {}
        self._last_warning: dict[str, float] = {}
        self._denied_from: dict[str, deque[float]] = {}  # client address → times of refused logins
        self.port = 0

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind and serve; OSError when the address is taken or not ours."""
        host, port = self.cfg.host_port()
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE + 2,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("NUT server listening on %s:%d (%d UPS%s)", host, self.port, len(self.table.by_name),
                 ", STARTTLS offered" if self.tls else "")

    async def stop(self) -> None:
        """Stop accepting, close every client (secondaries see the connection drop, as with upsd)."""
        if self._server is not None:
            self._server.close()
        for client in list(self._clients.values()):
            client.writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=3.0)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 3.0)
            except TimeoutError:
                pass
            self._server = None

    @property
    def clients(self) -> int:
        return len(self._clients)

    # ------------------------------------------------------------ primary-side helpers
    def set_fsd(self, ups: ServedUps, by: str) -> None:
        """Latch forced shutdown on ``ups``: ``ups.status`` reads ``FSD …`` from now on."""
        if not ups.fsd:
            ups.fsd = True
            log.critical("NUT server: forced shutdown (FSD) set on UPS %s by %s; %d client(s) logged in: %s",
                         ups.name, by, len(ups.logins), self.describe_logins(ups) or "none")
            if self.on_fsd is not None:
                self.on_fsd(ups, by)

    @staticmethod
    def describe_logins(ups: ServedUps) -> str:
        return ", ".join(f"{user}@{addr}" for user, addr in ups.logins.values())

    async def wait_logouts(self, ups: ServedUps, timeout: float) -> bool:
        """Wait until no client is logged in to ``ups`` (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while ups.logins:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._logins_changed.clear()
            try:
                await asyncio.wait_for(self._logins_changed.wait(), left)
            except TimeoutError:
                return not ups.logins
        return True

    # ------------------------------------------------------------ connections
    def _refuse(self, reason: str, message: str, *args: Any) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._last_warning.get(reason, -1e9) >= 60.0:  # one line a minute per reason
            self._last_warning[reason] = now
            log.warning("NUT server: " + message, *args)

    def _allowed(self, addr: str) -> bool:
        if not self._nets:
            return True
        try:
            ip = ipaddress.ip_address(addr.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._nets)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._allowed(addr):
            self._refuse("not_allowed", "refused a connection from %s (not in allow_from)", addr)
            writer.close()
            return
        if len(self._clients) >= self.cfg.max_clients:
            self._refuse("max_clients", "refused a connection from %s: %d clients already (max_clients)", addr,
                         len(self._clients))
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._next_id += 1
        client = _Client(self._next_id, addr, writer)
        self._clients[client.id] = client
        try:
            await self._session(client, reader)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass  # the client went away
        except _Close:
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._disconnect(client)
            if task is not None:
                self._tasks.discard(task)

    def _disconnect(self, client: _Client) -> None:
        self._clients.pop(client.id, None)
        if client.login is not None:
            client.login.logins.pop(client.id, None)
            log.info("NUT server: %s@%s logged out from UPS %s", client.username, client.addr, client.login.name)
            client.login = None
            self._logins_changed.set()
        client.writer.close()

    async def _session(self, client: _Client, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\n"), self.cfg.idle_timeout)
            except TimeoutError:
                self._refuse("idle", "closed %s: no command for %.0fs (idle_timeout)", client.addr,
                             self.cfg.idle_timeout)
                return
            except asyncio.LimitOverrunError:
                self._refuse("line_too_long", "closed %s: a line longer than %d bytes", client.addr, MAX_LINE)
                await self._send(client, ["ERR TOO-LONG"])
                return
            except asyncio.IncompleteReadError:
                return  # closed (a partial last line without newline is ignored, as upsd does)
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            words = split_line(line)
            if len(words) > MAX_ARGS:
                await self._send(client, ["ERR INVALID-ARGUMENT"])
                continue
            try:
                reply = self._dispatch(client, words)
            except _Close as done:
                await self._send(client, done.args[0] if done.args else [])
                raise
            if isinstance(reply, list):
                await self._send(client, reply)
            else:
                await reply  # STARTTLS: sends its own reply, then upgrades the stream

    async def _send(self, client: _Client, lines: list[str]) -> None:
        if not lines:
            return
        client.writer.write(("\n".join(lines) + "\n").encode("utf-8", errors="replace"))
        try:
            await asyncio.wait_for(client.writer.drain(), WRITE_TIMEOUT)
        except TimeoutError:
            self._refuse("slow_reader", "closed %s: it does not read its replies", client.addr)
            raise _Close() from None

    # ------------------------------------------------------------ commands
    def _dispatch(self, client: _Client, words: list[str]) -> list[str] | Awaitable[None]:
        if not words:
            return ["ERR UNKNOWN-COMMAND"]
        cmd = words[0].upper()
        args = words[1:]
        handler = self._commands.get(cmd)
        if handler is None:
            return ["ERR UNKNOWN-COMMAND"]
        if cmd in _NEEDS_USER:
            if client.username is None:
                return ["ERR USERNAME-REQUIRED"]
            if client.password is None:
                return ["ERR PASSWORD-REQUIRED"]
        return handler(self, client, args)

    def _ups(self, name: str) -> tuple[ServedUps | None, list[str]]:
        ups = self.table.get(name)
        return (ups, []) if ups is not None else (None, ["ERR UNKNOWN-UPS"])

    def _available(self, name: str) -> tuple[ServedUps | None, list[str]]:
        ups, err = self._ups(name)
        if ups is not None and ups.stale():
            return None, ["ERR DATA-STALE"]
        return ups, err

    def _guessing(self, addr: str) -> bool:
        """True when ``addr`` had ADDRESS_DENIED_LIMIT refused logins within ADDRESS_WINDOW."""
        times = self._denied_from.get(client_key(addr))
        now = time.monotonic()
        while times and now - times[0] > ADDRESS_WINDOW:
            times.popleft()
        return times is not None and len(times) >= ADDRESS_DENIED_LIMIT

    def _denied(self, addr: str) -> None:
        key = client_key(addr)
        if key not in self._denied_from and len(self._denied_from) >= 10_000:
            self._denied_from.clear()  # a scan from very many addresses: forget, rather than grow
        self._denied_from.setdefault(key, deque(maxlen=ADDRESS_DENIED_LIMIT)).append(time.monotonic())

    def _user_may(self, client: _Client, role: Literal["primary", "secondary"]) -> bool:
        """upsd's user_checkaction: the user exists, the password matches, the role allows it."""
        if self._guessing(client.addr):
            self._refuse("guessing", "refused user %r from %s without checking the password: %d refused logins from "
                         "that address in %.0f minutes", client.username, client.addr, ADDRESS_DENIED_LIMIT,
                         ADDRESS_WINDOW / 60)
            raise _Close(["ERR ACCESS-DENIED"])
        user = self.users.get(client.username or "")
        given = (client.password or "").encode()
        # Compare against something even for an unknown user, so timing does not tell names apart.
        expected = user.password.get_secret_value().encode() if user is not None else b"\0" * 16
        ok = hmac.compare_digest(given, expected) and user is not None
        if ok and role == "primary":
            ok = user is not None and user.upsmon == "primary"
        if not ok:
            client.denied += 1
            self._denied(client.addr)
            self._refuse("access_denied", "refused user %r from %s (wrong password, unknown user or no %s rights)",
                         client.username, client.addr, role)
            if client.denied >= MAX_DENIED:
                raise _Close(["ERR ACCESS-DENIED"])
        return ok

    def _cmd_ver(self, client: _Client, args: list[str]) -> list[str]:
        if args:
            return ["ERR INVALID-ARGUMENT"]
        return [f"Network UPS Tools upsd compatible - roomwatch agent {__version__} - https://www.networkupstools.org/"]

    def _cmd_netver(self, client: _Client, args: list[str]) -> list[str]:
        return ["ERR INVALID-ARGUMENT"] if args else [NETVER]

    def _cmd_help(self, client: _Client, args: list[str]) -> list[str]:
        return ["ERR INVALID-ARGUMENT"] if args else [HELP]

    def _cmd_username(self, client: _Client, args: list[str]) -> list[str]:
        if len(args) != 1:
            return ["ERR INVALID-ARGUMENT"]
        if client.username is not None:
            return ["ERR ALREADY-SET-USERNAME"]
        client.username = args[0][:256]
        return ["OK"]

    def _cmd_password(self, client: _Client, args: list[str]) -> list[str]:
        if len(args) != 1:
            return ["ERR INVALID-ARGUMENT"]
        if client.password is not None:
            return ["ERR ALREADY-SET-PASSWORD"]
        client.password = args[0][:256]
        return ["OK"]

    def _cmd_login(self, client: _Client, args: list[str]) -> list[str]:
        if len(args) != 1:
            return ["ERR INVALID-ARGUMENT"]
        if client.login is not None:
            return ["ERR ALREADY-LOGGED-IN"]
        ups, err = self._ups(args[0])
        if ups is None:
            return err
        if not self._user_may(client, "secondary"):
            return ["ERR ACCESS-DENIED"]
        client.login = ups
        ups.logins[client.id] = (client.username or "", client.addr)
        self._logins_changed.set()
        log.info("NUT server: %s@%s logged into UPS %s%s", client.username, client.addr, ups.name,
                 " (TLS)" if client.tls else "")
        return ["OK"]

    def _cmd_logout(self, client: _Client, args: list[str]) -> list[str]:
        if args:
            return ["ERR INVALID-ARGUMENT"]
        raise _Close(["OK Goodbye"])

    def _primary(self, client: _Client, args: list[str], word: str) -> list[str]:
        if len(args) != 1:
            return ["ERR INVALID-ARGUMENT"]
        ups, err = self._ups(args[0])
        if ups is None:
            return err
        if not self._user_may(client, "primary"):
            return ["ERR ACCESS-DENIED"]
        return [f"OK {word}-GRANTED"]

    def _cmd_primary(self, client: _Client, args: list[str]) -> list[str]:
        return self._primary(client, args, "PRIMARY")

    def _cmd_master(self, client: _Client, args: list[str]) -> list[str]:
        return self._primary(client, args, "MASTER")

    def _cmd_fsd(self, client: _Client, args: list[str]) -> list[str]:
        if len(args) != 1:
            return ["ERR INVALID-ARGUMENT"]
        ups, err = self._ups(args[0])
        if ups is None:
            return err
        if not self._user_may(client, "primary"):
            return ["ERR ACCESS-DENIED"]
        self.set_fsd(ups, f"{client.username}@{client.addr}")
        return ["OK FSD-SET"]

    def _cmd_set(self, client: _Client, args: list[str]) -> list[str]:
        if len(args) >= 1 and args[0].upper() == "TRACKING":
            return ["ERR INVALID-ARGUMENT"] if len(args) != 2 or args[1].upper() not in ("ON", "OFF") else (
                ["OK"] if args[1].upper() == "OFF" else ["ERR FEATURE-NOT-SUPPORTED"])
        if len(args) != 4 or args[0].upper() != "VAR":
            return ["ERR INVALID-ARGUMENT"]
        ups, err = self._ups(args[1])
        if ups is None:
            return err
        return ["ERR ACCESS-DENIED"]  # no user has SET rights here: readings come from the device

    def _cmd_instcmd(self, client: _Client, args: list[str]) -> list[str]:
        if len(args) not in (2, 3):
            return ["ERR INVALID-ARGUMENT"]
        ups, err = self._ups(args[0])
        if ups is None:
            return err
        return ["ERR CMD-NOT-SUPPORTED"]

    def _cmd_get(self, client: _Client, args: list[str]) -> list[str]:
        if not args:
            return ["ERR INVALID-ARGUMENT"]
        sub = args[0].upper()
        if sub == "TRACKING":
            return ["OFF"] if len(args) == 1 else ["ERR FEATURE-NOT-CONFIGURED"]
        if len(args) < 2:
            return ["ERR INVALID-ARGUMENT"]
        name = args[1]
        if sub == "NUMLOGINS":
            ups, err = self._available(name)
            return err if ups is None else [f"NUMLOGINS {quote(name)} {len(ups.logins)}"]
        if sub == "UPSDESC":
            ups, err = self._ups(name)
            return err if ups is None else [f"UPSDESC {quote(name)} {_q(ups.desc)}"]
        if len(args) < 3:
            return ["ERR INVALID-ARGUMENT"]
        var = args[2]
        if sub == "VAR":
            if var.lower().startswith("server."):
                return self._server_var(name, var)
            ups, err = self._available(name)
            if ups is None:
                return err
            value = ups.get(var)
            return ["ERR VAR-NOT-SUPPORTED"] if value is None else [f"VAR {quote(name)} {quote(var)} {_q(value)}"]
        if sub in ("TYPE", "DESC", "CMDDESC"):
            ups, err = self._available(name)
            if ups is None:
                return err
            if sub == "CMDDESC":
                return [f"CMDDESC {quote(name)} {quote(var)} \"Description unavailable\""]
            if sub == "DESC":
                return [f"DESC {quote(name)} {quote(var)} {_q(DESCRIPTIONS.get(var, 'Description unavailable'))}"]
            if ups.get(var) is None:
                return ["ERR VAR-NOT-SUPPORTED"]
            kind = "STRING:64" if var in STRING_VARS else "NUMBER"
            return [f"TYPE {quote(name)} {quote(var)} {kind}"]
        return ["ERR INVALID-ARGUMENT"]

    @staticmethod
    def _server_var(name: str, var: str) -> list[str]:
        if var.lower() == "server.info":
            return [f"VAR {quote(name)} server.info {_q(f'roomwatch agent {__version__} (NUT network protocol {NETVER})')}"]
        if var.lower() == "server.version":
            return [f"VAR {quote(name)} server.version {_q(__version__)}"]
        return ["ERR VAR-NOT-SUPPORTED"]

    def _cmd_list(self, client: _Client, args: list[str]) -> list[str]:
        if not args:
            return ["ERR INVALID-ARGUMENT"]
        sub = args[0].upper()
        if sub == "UPS":
            return ["BEGIN LIST UPS", *(f"UPS {quote(u.name)} {_q(u.desc)}" for u in self.table.all()), "END LIST UPS"]
        if len(args) < 2:
            return ["ERR INVALID-ARGUMENT"]
        name = args[1]
        q = quote(name)
        if sub == "CLIENT":
            ups, err = self._ups(name)
            if ups is None:
                return err
            return [f"BEGIN LIST CLIENT {q}", *(f"CLIENT {quote(ups.name)} {addr}" for _, addr in ups.logins.values()),
                    f"END LIST CLIENT {q}"]
        if sub in ("VAR", "RW", "CMD"):
            ups, err = self._available(name)
            if ups is None:
                return err
            rows = [f"VAR {q} {quote(k)} {_q(val)}" for k, val in ups.items()] if sub == "VAR" else []
            return [f"BEGIN LIST {sub} {q}", *rows, f"END LIST {sub} {q}"]
        if len(args) < 3:
            return ["ERR INVALID-ARGUMENT"]
        if sub in ("ENUM", "RANGE"):
            ups, err = self._available(name)
            if ups is None:
                return err
            if ups.get(args[2]) is None:
                return ["ERR VAR-NOT-SUPPORTED"]
            head = f"LIST {sub} {q} {quote(args[2])}"
            return [f"BEGIN {head}", f"END {head}"]
        return ["ERR INVALID-ARGUMENT"]

    async def _starttls(self, client: _Client) -> None:
        if client.tls:
            await self._send(client, ["ERR ALREADY-SSL-MODE"])
            return
        if self.tls is None:
            await self._send(client, ["ERR FEATURE-NOT-CONFIGURED"])
            return
        # Stop reading before the OK: the client answers it with its TLS hello at once, and bytes read
        # before start_tls takes the transport over would land in this reader's buffer, out of the TLS
        # layer's reach (the handshake then stalls until its timeout). start_tls resumes reading.
        transport = client.writer.transport
        if isinstance(transport, asyncio.ReadTransport):  # a socket's transport reads and writes
            transport.pause_reading()
        await self._send(client, ["OK STARTTLS"])
        try:
            await asyncio.wait_for(client.writer.start_tls(self.tls), TLS_HANDSHAKE_TIMEOUT)
        except (TimeoutError, ssl.SSLError, OSError) as exc:
            self._refuse("tls", "TLS handshake with %s failed: %s", client.addr, exc)
            raise _Close() from None
        client.tls = True

    def _cmd_starttls(self, client: _Client, args: list[str]) -> list[str] | Awaitable[None]:
        return ["ERR INVALID-ARGUMENT"] if args else self._starttls(client)

    _commands: ClassVar[dict[str, Callable[[NutServer, _Client, list[str]], list[str] | Awaitable[None]]]] = {
        "VER": _cmd_ver, "NETVER": _cmd_netver, "PROTVER": _cmd_netver, "HELP": _cmd_help,
        "STARTTLS": _cmd_starttls, "GET": _cmd_get, "LIST": _cmd_list, "USERNAME": _cmd_username,
        "PASSWORD": _cmd_password, "LOGIN": _cmd_login, "LOGOUT": _cmd_logout, "PRIMARY": _cmd_primary,
        "MASTER": _cmd_master, "FSD": _cmd_fsd, "SET": _cmd_set, "INSTCMD": _cmd_instcmd,
    }


#: Commands upsd runs only after USERNAME and PASSWORD (netcmds.h FLAG_USER).
_NEEDS_USER = frozenset({"LOGIN", "PRIMARY", "MASTER", "FSD", "SET", "INSTCMD"})


def _q(text: str) -> str:
    """A value always in double quotes, as upsd sends them (pconf_encode escapes \\ and ")."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
