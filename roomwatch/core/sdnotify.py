"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``) without a dependency.

The service manager passes ``$NOTIFY_SOCKET`` (a filesystem path, or ``@name``
for the abstract namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``). We send one datagram per message: ``READY=1`` once serving,
``WATCHDOG=1`` at half the watchdog interval, ``STATUS=…`` for ``systemctl
status``, ``STOPPING=1`` on the way out. Protocol: sd_notify(3).

The watchdog pings come from a task on the asyncio loop, not from a thread, so
a hung main loop stops them and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

__all__ = ["Notifier", "notify", "watchdog_interval"]

log = logging.getLogger("roomwatch.core.sdnotify")


def _address(raw: str) -> str | bytes:
    # "@name" is Linux's abstract namespace: on the wire the name starts with a NUL byte.
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def notify(message: str, socket_path: str | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to the service manager; False when not under systemd or it failed."""
    raw = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not raw or not raw.startswith(("/", "@")):
        return False  # not started by systemd with Type=notify (or a vsock address we do not speak)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), _address(raw))
    except OSError as exc:
        log.debug("sd_notify %r to %s failed: %s", message, raw, exc)
        return False
    return True


def watchdog_interval(env: dict[str, str] | os._Environ[str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when no watchdog is asked for."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # the watchdog is meant for another process (e.g. our parent)
    return int(usec) / 1_000_000 / 2


class Notifier:
    """The notify calls a long-running command makes: ready, status, watchdog, stopping."""

    def __init__(self) -> None:
        self.socket = os.environ.get("NOTIFY_SOCKET", "")
        self.interval = watchdog_interval()
        self._task: asyncio.Task[None] | None = None
        self.enabled = bool(self.socket)

    def send(self, *fields: str) -> bool:
        if not self.enabled:
            return False
        return notify("\n".join(fields), self.socket)

    def ready(self, status: str = "") -> None:
        """Tell systemd start-up is done (``Type=notify`` units leave "activating" only then)."""
        self.send("READY=1", f"MAINPID={os.getpid()}", *((f"STATUS={status}",) if status else ()))

    def status(self, text: str) -> None:
        """One line shown by ``systemctl status``."""
        self.send(f"STATUS={text}")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def start_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` from the running asyncio loop every half ``WATCHDOG_USEC``."""
        if self.enabled and self.interval and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watchdog(self.interval), name="sd-watchdog")

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def stop_watchdog(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
