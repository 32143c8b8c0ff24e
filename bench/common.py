"""Shared benchmark helpers: machine facts, process CPU/RSS, result files, tables."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Where results go; ``python -m bench --results DIR`` sets the variable for the benchmark processes.
RESULTS = Path(os.environ.get("ROOMWATCH_BENCH_RESULTS") or ROOT / "bench" / "results")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "python": platform.python_version(),
            "kernel": platform.release(), "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "absent"
    return out


def proc_cpu_seconds(pid: int) -> float:
    """user+system CPU of a process (and its waited-for children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def timeit(fn: Callable[[], Any], repeat: int = 5) -> list[float]:
    """Wall seconds of ``fn`` over ``repeat`` runs."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    cells = [[str(c) for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(out)


def command() -> str:
    """The command line that produced this run, as a user would type it."""
    mod = sys.argv[0]
    if mod.endswith(".py"):
        rel = Path(mod).resolve().relative_to(ROOT).with_suffix("")
        mod = "-m " + ".".join(rel.parts)
    return " ".join(["python", mod, *sys.argv[1:]])


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "machine": machine(), "command": command(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return path


def run_quiet(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)


def header(result: dict[str, Any], title: str) -> str:
    """Section heading with the command, date, machine and versions of a result."""
    m = result.get("machine", {})
    vers = ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items())
    lines = [f"## {title}", "", f"Command: `{result.get('command', '')}` — {m.get('date', '')}; "
             f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB, Python {m.get('python', '?')}"
             + (f"; {vers}" if vers else "") + "."]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """Webhook receiver (aiohttp in its own thread): records (receive time, path, body) of every POST.

    ``on_post`` (optional) is called in the receiver's thread with the same triple, so a benchmark can
    index arrivals as they come instead of scanning ``got``.
    """

    def __init__(self, on_post: Callable[[float, str, dict[str, Any]], None] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.got: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.on_post = on_post
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True, name="bench-receiver").start()
        if not ready.wait(10):
            raise RuntimeError("webhook receiver did not start")

    def _run(self, ready: threading.Event) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            at = time.time()
            body = await request.json()
            with self.lock:
                self.got.append((at, request.path, body))
                if self.on_post is not None:
                    self.on_post(at, request.path, body)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        ready.set()
        self.loop.run_forever()

    def find(self, path: str, device: str, status: str, after: float) -> float | None:
        """Receive time of the first alert of ``device`` with ``status`` at ``path`` after ``after``."""
        with self.lock:
            for at, p, body in self.got:
                if p != path or at < after:
                    continue
                for a in body.get("alerts", []):
                    if a["labels"].get("device") == device and a["status"] == status:
                        return at
        return None

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
