"""A real headless Chromium (Debian's ``chromium``) driven over the DevTools protocol.

No Playwright, no downloaded browser: we start ``/usr/bin/chromium`` with
``--remote-debugging-port=0``, read the port it picked from ``DevToolsActivePort``
and speak CDP over a websocket (aiohttp's client, already a dependency).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import require_binary
from tests.peers.process import PeerProcess

#: Flags for a headless browser on a loaded 2-core CI machine that must not touch the network.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
    "--disable-extensions", "--disable-sync", "--disable-translate", "--metrics-recording-only",
    "--no-first-run", "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
    "--disable-features=Translate,MediaRouter,OptimizationHints,DialMediaRouteProvider",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]


class Page:
    """One browser tab: navigate, evaluate JavaScript, wait for conditions, take screenshots."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self._ids = itertools.count(1)
        self.console: list[str] = []
        self.exceptions: list[str] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            raw = await asyncio.wait_for(self.ws.receive(), timeout=60)
            if raw.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection closed: {raw}")
            msg = json.loads(raw.data)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method == "Runtime.consoleAPICalled":
            args = msg["params"].get("args", [])
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Runtime.exceptionThrown":
            d = msg["params"]["exceptionDetails"]
            self.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))

    async def evaluate(self, expression: str) -> Any:
        """Value of a JS expression (promises awaited)."""
        res = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression[:80]!r}: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0, what: str = "") -> Any:
        """Poll a JS expression until truthy (robust on a loaded machine: generous timeout, 100 ms steps)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await self.evaluate(f"Boolean({expression})")  # a DOM node comes back as {}, which is falsy here
            if last:
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or expression} (last value {last!r}); "
                             f"page exceptions: {self.exceptions}")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def viewport(self, width: int, height: int, mobile: bool = False) -> None:
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=2 if mobile else 1, mobile=mobile)

    async def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = await self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
            params["captureBeyondViewport"] = True
        res = await self.send("Page.captureScreenshot", **params)
        data = base64.b64decode(res["data"])

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        await asyncio.to_thread(write)
        return path


class Chromium:
    def __init__(self, proc: PeerProcess, port: int):
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    async def new_page(self, session: aiohttp.ClientSession) -> Page:
        async with session.put(f"{self.base}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 2**20)
        page = Page(ws)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        return page


def chromium_binary() -> str:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
        if found:
            return found
    return require_binary("/usr/bin/chromium")


def start_chromium(workdir: Path) -> Chromium:
    binary = chromium_binary()
    profile = workdir / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    proc = PeerProcess("chromium", [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"], workdir,
                       env={"HOME": str(workdir)})
    active = profile / "DevToolsActivePort"
    proc.wait_ready(lambda: active.is_file() and active.read_text().split("\n")[0].strip().isdigit(), timeout=60)
    return Chromium(proc, int(active.read_text().split("\n")[0]))


@pytest.fixture
async def browser_page(tmp_path: Path) -> AsyncIterator[Page]:
    """A fresh tab in a headless Chromium started for this test."""
    chrome = start_chromium(tmp_path / "chromium")
    try:
        async with aiohttp.ClientSession() as session:
            page = await chrome.new_page(session)
            try:
                yield page
            finally:
                await page.ws.close()
    finally:
        chrome.proc.stop()
