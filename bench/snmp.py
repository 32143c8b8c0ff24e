"""Benchmark: one roomwatch agent polling 100 SNMP UPS agents once, beside Prometheus' snmp_exporter.

    /work/venv/bin/python -m bench.snmp [--targets 100] [--rounds 5] [--blocks 4]

* 100 simulated UPS agents: snmpsim (two processes, 50 loopback UDP endpoints each) serving one
  UPS-MIB recording (tests/data/snmp/ups-mib-online.snmprec).
* A = roomwatch: an ``roomwatch.agent.runtime.Agent`` with the 100 ``snmp`` devices (profile auto, default
  ``client: pysnmp``), each
  poll run as the agent runs it (``Agent.poll_device``: driver poll, records, latest values), all
  100 at once; CPU is this process's CPU time (nothing else runs in it meanwhile).
* B = snmp_exporter 0.21 (Debian ``prometheus-snmp-exporter``) with an equivalent module (GET of
  the same 12 UPS-MIB objects), scraped ``/snmp?target=…`` for the same 100 targets; CPU is the
  exporter process's CPU time from /proc (the HTTP client's is not counted).
* C = roomwatch with ``client: builtin`` (its own v1/v2c client instead of pysnmp).
* Every side uses at most 32 requests in flight. Blocks alternate A/B/C/A/B/C; each block is
  ``--rounds`` rounds of "every target once". Reported: wall and CPU per target (median of
  blocks) and the A/B ratio.
* Then the real agent process (``python -m roomwatch agent``) with the 100 devices (5 s
  interval, pull mode), resident memory after 30 s, next to the same agent with no devices.

Writes bench/results/snmp.json; ``python -m bench --only snmp`` also updates BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, command, header, machine, proc_cpu_seconds, proc_rss_bytes, table, versions, write_result

RECORDING = ROOT / "tests" / "data" / "snmp" / "ups-mib-online.snmprec"
COMMUNITY = "ups"
IN_FLIGHT = 32

# The 12 objects roomwatch's ups-mib profile reads, as an snmp_exporter 0.21 module (old format).
UPS_OBJECTS = [
    ("upsIdentManufacturer", "1.3.6.1.2.1.33.1.1.1", "DisplayString"),
    ("upsIdentModel", "1.3.6.1.2.1.33.1.1.2", "DisplayString"),
    ("upsIdentUPSSoftwareVersion", "1.3.6.1.2.1.33.1.1.3", "DisplayString"),
    ("upsBatteryStatus", "1.3.6.1.2.1.33.1.2.1", "gauge"),
    ("upsEstimatedMinutesRemaining", "1.3.6.1.2.1.33.1.2.3", "gauge"),
    ("upsEstimatedChargeRemaining", "1.3.6.1.2.1.33.1.2.4", "gauge"),
    ("upsBatteryVoltage", "1.3.6.1.2.1.33.1.2.5", "gauge"),
    ("upsBatteryTemperature", "1.3.6.1.2.1.33.1.2.7", "gauge"),
    ("upsOutputSource", "1.3.6.1.2.1.33.1.4.1", "gauge"),
]
UPS_LINE_OBJECTS = [
    ("upsInputVoltage", "1.3.6.1.2.1.33.1.3.3.1.3", "upsInputLineIndex"),
    ("upsOutputVoltage", "1.3.6.1.2.1.33.1.4.4.1.2", "upsOutputLineIndex"),
    ("upsOutputPercentLoad", "1.3.6.1.2.1.33.1.4.4.1.5", "upsOutputLineIndex"),
]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Procs:
    """The processes this benchmark started, stopped by their own pid only."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **(env or {})})
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)


def start_snmpsim(procs: Procs, work: Path, ports: list[int], processes: int = 2) -> None:
    from roomwatch.demo.sims.snmp_ups import snmp_ping, snmpsim_command

    command = snmpsim_command()
    if command is None:
        sys.exit("snmpsim is not installed (pip install 'roomwatch[test]')")
    per = -(-len(ports) // processes)
    for i in range(processes):
        chunk = ports[i * per:(i + 1) * per]
        if not chunk:
            continue
        d = work / f"snmpsim{i}"
        (d / "data").mkdir(parents=True)
        shutil.copyfile(RECORDING, d / "data" / f"{COMMUNITY}.snmprec")
        argv = [command, f"--data-dir={d / 'data'}", f"--cache-dir={d / 'cache'}", "--logging-method=stderr",
                "--log-level=error", *(f"--agent-udpv4-endpoint=127.0.0.1:{p}" for p in chunk)]
        procs.spawn(argv, d / "snmpsim.log", env={"SNMPSIM_ALLOW_ROOT": "true"})
    deadline = time.monotonic() + 120
    for port in ports:
        while not snmp_ping(port, COMMUNITY):
            if time.monotonic() > deadline:
                sys.exit(f"snmpsim did not answer on port {port}; logs in {work}")
            time.sleep(0.1)


def exporter_config() -> dict[str, Any]:
    metrics: list[dict[str, Any]] = [{"name": n, "oid": o, "type": t} for n, o, t in UPS_OBJECTS]
    metrics += [{"name": n, "oid": o, "type": "gauge", "indexes": [{"labelname": idx, "type": "gauge"}]}
                for n, o, idx in UPS_LINE_OBJECTS]
    gets = [f"{o}.0" for _, o, _ in UPS_OBJECTS] + [f"{o}.1" for _, o, _ in UPS_LINE_OBJECTS]
    return {"ups_mib": {"version": 2, "auth": {"community": COMMUNITY}, "timeout": "2s", "retries": 1,
                        "max_repetitions": 10, "get": gets, "metrics": metrics}}


def start_exporter(procs: Procs, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus-snmp-exporter") or "/usr/bin/prometheus-snmp-exporter"
    if not Path(binary).exists():
        sys.exit("prometheus-snmp-exporter is not installed (apt-get install prometheus-snmp-exporter)")
    conf = work / "snmp.yml"
    conf.write_text(yaml.safe_dump(exporter_config(), sort_keys=False))
    port = free_tcp_port()
    proc = procs.spawn([binary, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}"],
                       work / "snmp_exporter.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/metrics", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"snmp_exporter did not start; see {work / 'snmp_exporter.log'}")
        time.sleep(0.05)
    return proc, url


def build_agent(ports: list[int], client: str = "pysnmp") -> Any:
    from roomwatch.agent.config import AgentConfig
    from roomwatch.agent.runtime import Agent

    cfg = AgentConfig.model_validate({
        "agent": {"id": "bench", "listen": None}, "host": {"enabled": False},
        "devices": [{"name": f"ups{i:03d}", "driver": "snmp", "host": "127.0.0.1", "port": p, "community": COMMUNITY,
                     "client": client} for i, p in enumerate(ports)]})
    return Agent(cfg)


async def roomwatch_rounds(agent: Any, rounds: int) -> tuple[float, float, int]:
    """(wall s, CPU s, failed polls) for ``rounds`` × every device once."""
    failed = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        errors_before = sum(d.errors for d in agent.devices.values())
        await asyncio.gather(*(agent.poll_device(d) for d in agent.devices.values()))
        failed += sum(d.errors for d in agent.devices.values()) - errors_before
    return time.perf_counter() - t0, time.process_time() - c0, failed


def exporter_rounds(url: str, pid: int, ports: list[int], rounds: int, pool: ThreadPoolExecutor) -> tuple[float, float, int]:
    def scrape(port: int) -> bool:
        with urllib.request.urlopen(f"{url}/snmp?module=ups_mib&target=127.0.0.1:{port}", timeout=30) as resp:
            body = resp.read()
        return resp.status == 200 and b"upsEstimatedChargeRemaining " in body

    failed = 0
    c0, t0 = proc_cpu_seconds(pid), time.perf_counter()
    for _ in range(rounds):
        failed += sum(not ok for ok in pool.map(scrape, ports))
    return time.perf_counter() - t0, proc_cpu_seconds(pid) - c0, failed


def agent_memory(procs: Procs, work: Path, ports: list[int], seconds: float) -> dict[str, float]:
    """RSS of the real agent process with the devices (and with none), after ``seconds`` of polling."""
    out = {}
    for label, devices in (("no_devices", []), ("snmp_devices", ports)):
        conf = {"agent": {"id": "bench", "listen": None, "interval": "5s"}, "host": {"enabled": True, "interval": "5s"},
                "devices": [{"name": f"ups{i:03d}", "driver": "snmp", "host": "127.0.0.1", "port": p,
                             "community": COMMUNITY} for i, p in enumerate(devices)]}
        path = work / f"agent-{label}.yaml"
        path.write_text(yaml.safe_dump(conf, sort_keys=False))
        proc = procs.spawn([sys.executable, "-m", "roomwatch", "agent", "-c", str(path)], work / f"agent-{label}.log",
                           env={"PYTHONPATH": str(ROOT)})
        time.sleep(seconds)
        if proc.poll() is not None:
            sys.exit(f"agent exited early; see {work / f'agent-{label}.log'}")
        out[label] = round(proc_rss_bytes(proc.pid) / 2**20, 1)
        out[f"{label}_cpu_s"] = round(proc_cpu_seconds(proc.pid), 2)
        procs.stop(proc)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="rounds (every target once) per block")
    parser.add_argument("--blocks", type=int, default=4, help="A/B block pairs")
    parser.add_argument("--memory-seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="2 blocks of 2 rounds, 10 s memory run (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.blocks, args.memory_seconds = min(args.rounds, 2), min(args.blocks, 2), min(args.memory_seconds, 10.0)

    procs = Procs()
    work = Path(tempfile.mkdtemp(prefix="roomwatch-bench-snmp-"))
    try:
        ports = [free_udp_port() for _ in range(args.targets)]
        start_snmpsim(procs, work, ports)
        exporter, url = start_exporter(procs, work)
        agent = build_agent(ports)  # the default client: pysnmp
        agent_pysnmp = build_agent(ports, client="builtin")  # (name kept for the result keys below)
        loop = asyncio.new_event_loop()
        pool = ThreadPoolExecutor(max_workers=IN_FLIGHT)
        # Warm-up: sysObjectID lookups, engine set-up, first HTTP connections, snmpsim caches.
        loop.run_until_complete(roomwatch_rounds(agent, 1))
        loop.run_until_complete(roomwatch_rounds(agent_pysnmp, 1))
        exporter_rounds(url, exporter.pid, ports, 1, pool)
        a_blocks, b_blocks, c_blocks = [], [], []
        for _ in range(args.blocks):
            a_blocks.append(loop.run_until_complete(roomwatch_rounds(agent, args.rounds)))
            b_blocks.append(exporter_rounds(url, exporter.pid, ports, args.rounds, pool))
            c_blocks.append(loop.run_until_complete(roomwatch_rounds(agent_pysnmp, args.rounds)))
        loop.run_until_complete(agent.stop())
        loop.run_until_complete(agent_pysnmp.stop())
        loop.close()
        pool.shutdown()
        procs.stop(exporter)
        memory = agent_memory(procs, work, ports, args.memory_seconds)
    finally:
        procs.stop_all()
    shutil.rmtree(work, ignore_errors=True)

    per = args.targets * args.rounds

    def summary(blocks: list[tuple[float, float, int]]) -> dict[str, float]:
        return {"wall_ms_per_target": round(statistics.median(b[0] for b in blocks) / per * 1000, 3),
                "cpu_ms_per_target": round(statistics.median(b[1] for b in blocks) / per * 1000, 3),
                "failed_polls": sum(b[2] for b in blocks),
                "blocks_cpu_ms_per_target": [round(b[1] / per * 1000, 3) for b in blocks]}

    a, b, c = summary(a_blocks), summary(b_blocks), summary(c_blocks)
    exporter_version = subprocess.run([shutil.which("prometheus-snmp-exporter") or "/usr/bin/prometheus-snmp-exporter",
                                       "--version"], capture_output=True, text=True, check=False)
    result = {
        "targets": args.targets, "rounds_per_block": args.rounds, "blocks": args.blocks, "in_flight": IN_FLIGHT,
        "roomwatch": a, "snmp_exporter": b, "roomwatch_builtin": c,
        "ratio_cpu": round(a["cpu_ms_per_target"] / b["cpu_ms_per_target"], 2) if b["cpu_ms_per_target"] else None,
        "ratio_wall": round(a["wall_ms_per_target"] / b["wall_ms_per_target"], 2),
        "memory_seconds": args.memory_seconds, "agent_rss_mib": memory, "loadavg_after": os.getloadavg(),
        "versions": {**versions("pysnmp", "snmpsim"),
                     "snmp_exporter": (exporter_version.stdout + exporter_version.stderr).split("(")[0].split()[-1]},
    }
    path = write_result("snmp", result)
    result.update(machine=machine(), command=command())
    print()
    print(markdown(result))
    print(f"\nwritten {path}")
    return 0


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    a, b, mem = res["roomwatch"], res["snmp_exporter"], res["agent_rss_mib"]
    rows = [["roomwatch agent (snmp driver, default client pysnmp 7.1)", f"{a['wall_ms_per_target']:.2f}",
             f"{a['cpu_ms_per_target']:.3f}", a["failed_polls"]],
            ["snmp_exporter (equivalent module, same targets, same run)", f"{b['wall_ms_per_target']:.2f}",
             f"{b['cpu_ms_per_target']:.3f}", b["failed_polls"]],
            ["ratio roomwatch / snmp_exporter", f"{res['ratio_wall']:.2f}", f"{res['ratio_cpu']:.2f}", ""]]
    if "roomwatch_builtin" in res:
        c = res["roomwatch_builtin"]
        rows.append(["roomwatch with `client: builtin` (own v1/v2c client)", f"{c['wall_ms_per_target']:.2f}",
                     f"{c['cpu_ms_per_target']:.3f}", c["failed_polls"]])
        if b["cpu_ms_per_target"]:
            rows.append(["ratio builtin / snmp_exporter", f"{c['wall_ms_per_target'] / b['wall_ms_per_target']:.2f}",
                         f"{c['cpu_ms_per_target'] / b['cpu_ms_per_target']:.2f}", ""])
    return "\n".join([
        header(res, f"SNMP: one agent polling {res['targets']} UPS agents (issue 3)"),
        table(["poller", "wall ms per target", "CPU ms per target", "failed polls"], rows), "",
        f"{res['targets']} snmpsim UPS-MIB agents on loopback; each side polls every target once per round, "
        f"{res['blocks']} blocks of {res['rounds_per_block']} rounds per poller, alternated, at most "
        f"{res['in_flight']} requests in flight; medians of the blocks. roomwatch: this process's CPU (GET of the "
        "ups-mib profile's 12 objects); snmp_exporter: its process's CPU (GET of the same 12 objects), HTTP client "
        "not counted. Target (issue 3): polling time no slower than snmp_exporter.", "",
        table(["real agent process (pull mode, 5 s interval)", f"RSS after {res['memory_seconds']:g} s (MiB)"],
              [[f"{res['targets']} SNMP UPS devices + host", f"{mem['snmp_devices']:.1f}"],
               ["host only", f"{mem['no_devices']:.1f}"]]),
    ])


if __name__ == "__main__":
    sys.exit(main())
