"""Benchmark: the agent's NUT server answering 50 upsmon-like clients, beside NUT's own upsd (dummy-ups).

    python -m bench.nut_server [--clients 50] [--poll 2] [--seconds 30] [--blocks 2]

* B = NUT 2.8's ``upsd`` with ``dummy-ups`` serving one UPS (Debian's nut-server, from /lib/nut);
* A = a real ``roomwatch agent`` process reading that same UPS through its ``nut`` driver (a poll
  every 10 s) and serving it with ``nut_server:``: both servers hold the same data;
* the clients do what a secondary ``upsmon`` does: connect, ``USERNAME``, ``PASSWORD``, ``LOGIN``,
  then ``GET VAR ups ups.status`` every ``--poll`` seconds (their start spread over one period),
  all from one asyncio process (the same load on both sides);
* blocks alternate A/B/A/B (``--seconds`` each, after a warm-up); reported per side: the server
  process's CPU (from /proc: upsd alone, not its driver; the agent whole, so its own polling of
  upsd is included and also shown idle, with no client) and the reply latency (send → line) p50/p99.

Writes bench/results/nut_server.json; ``python -m bench --only nut_server`` updates BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, free_port, header, median, percentile, proc_cpu_seconds, table, write_result

DEV = {"ups.status": "OL CHRG", "battery.charge": "96", "battery.runtime": "2220", "battery.voltage": "27.3",
       "input.voltage": "229.5", "output.voltage": "230.1", "ups.load": "31", "battery.temperature": "24.5",
       "ups.mfr": "Eaton", "ups.model": "5PX 2000", "ups.serial": "G123"}


class Client:
    """One upsmon-like connection: logs in, then polls ups.status."""

    def __init__(self, port: int, latencies: list[float]):
        self.port = port
        self.latencies = latencies
        self.errors = 0

    async def run(self, poll: float, stop: asyncio.Event, offset: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            for line in ("USERNAME mon", "PASSWORD monpass", "LOGIN ups"):
                writer.write(line.encode() + b"\n")
                await writer.drain()
                if not (await reader.readline()).startswith(b"OK"):
                    self.errors += 1
            await asyncio.sleep(offset)
            while not stop.is_set():
                t0 = time.perf_counter()
                writer.write(b"GET VAR ups ups.status\n")
                await writer.drain()
                reply = await reader.readline()
                self.latencies.append(time.perf_counter() - t0)
                if not reply.startswith(b"VAR ups ups.status"):
                    self.errors += 1
                try:
                    await asyncio.wait_for(stop.wait(), poll)
                except TimeoutError:
                    pass
        finally:
            writer.close()


async def _block(port: int, clients: int, poll: float, seconds: float, pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    stop = asyncio.Event()
    cs = [Client(port, latencies) for _ in range(clients)]
    tasks = [asyncio.create_task(c.run(poll, stop, random.uniform(0, poll))) for c in cs]
    await asyncio.sleep(poll + 1.0)  # warm-up: everyone logged in and polling
    latencies.clear()
    c0, w0 = proc_cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    c1, w1 = proc_cpu_seconds(pid), time.monotonic()
    got = list(latencies)
    stop.set()
    await asyncio.gather(*tasks)
    return {"cpu_percent": 100 * (c1 - c0) / (w1 - w0), "requests": len(got), "errors": sum(c.errors for c in cs),
            "p50_ms": 1000 * median(got) if got else float("nan"), "p99_ms": 1000 * percentile(got, 99) if got else 0.0}


def _idle_cpu(pid: int, seconds: float) -> float:
    c0, w0 = proc_cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (proc_cpu_seconds(pid) - c0) / (time.monotonic() - w0)


def run(clients: int, poll: float, seconds: float, blocks: int) -> dict[str, Any]:
    from roomwatch.demo.sims.nut_ups import start_nut, write_nut_config

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        dev = work / "ups.dev"
        dev.write_text("".join(f"{k}: {v}\n" for k, v in DEV.items()))
        upsd_port = free_port()
        write_nut_config(work, upsd_port, {"ups": dev}, {"mon": {"password": "monpass", "upsmon": "secondary"}})
        procs: list[subprocess.Popen[bytes]] = []

        def spawn(argv: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
            import os

            p = subprocess.Popen(argv, stdout=open(work / f"{name}.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                 env={**os.environ, **env}, start_new_session=True)
            procs.append(p)
            return p

        start_nut(work, upsd_port, ["ups"], spawn)
        upsd = next(p for p in procs if p.args[0].endswith("upsd"))  # type: ignore[index, union-attr]
        agent_port = free_port()
        conf = work / "agent.yaml"
        conf.write_text(yaml.safe_dump({
            "agent": {"id": "bench", "listen": None, "spool": None, "log_level": "warning"}, "host": {"enabled": False},
            "devices": [{"name": "ups", "driver": "nut", "port": upsd_port, "ups": "ups", "interval": "10s"}],
            "nut_server": {"listen": f"127.0.0.1:{agent_port}", "max_clients": clients + 10,
                           "users": [{"name": "mon", "password": "monpass"}]}}))
        agent = subprocess.Popen([sys.executable, "-m", "roomwatch", "agent", "-c", str(conf)], cwd=ROOT,
                                 stdout=open(work / "agent.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                 start_new_session=True)
        procs.append(agent)
        try:
            _wait_served(agent_port)
            idle = _idle_cpu(agent.pid, seconds)
            idle_upsd = _idle_cpu(upsd.pid, seconds)
            results: dict[str, list[dict[str, Any]]] = {"agent": [], "upsd": []}
            for _ in range(blocks):
                for side, port, pid in (("agent", agent_port, agent.pid), ("upsd", upsd_port, upsd.pid)):
                    results[side].append(asyncio.run(_block(port, clients, poll, seconds, pid)))
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    summary = {side: {k: median([b[k] for b in bs]) for k in ("cpu_percent", "p50_ms", "p99_ms", "requests")}
               | {"errors": sum(b["errors"] for b in bs)} for side, bs in results.items()}
    summary["agent"]["idle_cpu_percent"] = idle
    summary["upsd"]["idle_cpu_percent"] = idle_upsd
    return {"clients": clients, "poll_seconds": poll, "seconds": seconds, "blocks": blocks, "sides": summary,
            "raw": results}


def _wait_served(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s, s.makefile("rwb") as f:
                f.write(b"GET VAR ups ups.status\n")
                f.flush()
                if f.readline().startswith(b"VAR "):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the agent's NUT server did not serve the UPS in time")


def _table(res: dict[str, Any]) -> str:
    rows = []
    for side, words in (("agent", "roomwatch agent (nut_server)"), ("upsd", "NUT 2.8 upsd + dummy-ups")):
        s = res["sides"][side]
        rows.append([words, f"{s['cpu_percent']:.2f}", f"{s['idle_cpu_percent']:.2f}", f"{s['p50_ms']:.2f}",
                     f"{s['p99_ms']:.2f}", f"{s['requests']:.0f}", s["errors"]])
    return table(["server", "CPU % with clients", "CPU % idle", "reply p50 (ms)", "reply p99 (ms)",
                  "requests per block", "errors"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--poll", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="10 s blocks, one each (smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.blocks = 10.0, 1
    res = run(args.clients, args.poll, args.seconds, args.blocks)
    path = write_result("nut_server", res)
    print(_table(res))
    print(f"\nwrote {path}")


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    out = [header(res, "NUT server: 50 upsmon-like clients, beside upsd (issue 15)"), _table(res), "",
           f"{res['clients']} clients each logged in (USERNAME, PASSWORD, LOGIN) and polling `GET VAR ups ups.status` "
           f"every {res['poll_seconds']:g} s, as a secondary upsmon does; both servers serve the same UPS (the agent "
           f"reads upsd's dummy-ups every 10 s). Blocks of {res['seconds']:g} s alternated agent/upsd ×{res['blocks']}, "
           "medians. CPU of the server process from /proc (upsd without its driver; the agent whole, its own polling "
           "included — the idle column is the same process with no client). Latency measured by the client from "
           "send to the reply line, on loopback."]
    return "\n".join(out)


if __name__ == "__main__":
    main()
