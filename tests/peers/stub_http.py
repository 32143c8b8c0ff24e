"""Base of the vendor test servers: an aiohttp app on 127.0.0.1, an ephemeral port, in the test's loop.

Each vendor server (``chat_stubs``, ``sms_stubs``) checks a request the way the real service
does and answers with the real service's codes. Tests can script the next answers
(``fail_next``) to play rate limits, expired tokens and outages.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web


class StubServer:
    """Holds the app, the URL once started, what was received, and scripted replies."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.url = ""
        self.received: list[Any] = []  # accepted messages, as the service would deliver them
        self.rejected: list[Any] = []  # answers with a non-success code
        self.fail_next: list[Any] = []  # scripted answers, consumed one per request
        self.hang_for = 0.0  # answer nothing for this long (timeouts)
        self._runner: web.AppRunner | None = None

    async def start(self) -> StubServer:
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def maybe_hang(self) -> None:
        if self.hang_for:
            await asyncio.sleep(self.hang_for)

    def scripted(self) -> Any | None:
        return self.fail_next.pop(0) if self.fail_next else None

    def reject(self, payload: Any, status: int = 200) -> web.Response:
        self.rejected.append(payload)
        return web.json_response(payload, status=status)
