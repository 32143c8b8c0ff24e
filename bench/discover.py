"""``roomwatch discover`` of a /24 holding five SNMP cards, beside nmap and snmpget loops.

    python -m bench.discover [--quick] [--repeat 2]

Five snmpsim cards (shared recordings: UPS and environment monitors) answer on port 161 of
five addresses of 127.0.1.0/24. Two ways the other 249 addresses can behave:

* **silent** — a UDP socket on each takes the packets and never answers, as on a LAN where
  those hosts are absent or drop SNMP (no ICMP comes back): every tool waits its timeout;
* **refusing** — nothing listens, and the loopback answers with ICMP port unreachable at once,
  as hosts that are up without SNMP would: a tool that listens for ICMP (nmap) finishes early.

Each tool runs on the whole /24 with a 1 s wait per target (the others' defaults are noted):
``roomwatch discover --snmp 127.0.1.0/24 --timeout 1s`` (it also reads every card with its
profile), ``nmap -sU -Pn -p161 --script snmp-sysdescr`` (nmap's own timing), ``snmpget -t 1
-r 0`` one address after the other, and the same with ``xargs -P 64``. Runs alternate tool by
tool; the median of ``--repeat`` runs is reported (the sequential loop runs once: it costs a timeout per
address every time) with how many cards each tool found.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, header, median, table, versions, write_result

CARDS = ["apc_smt750x-nmc2", "hwg-poseidon", "eatonups_eaton-connectups", "avtech_roomalert12e",
         "apc_environmental-manager"]
NET = "127.0.1"
CARD_HOSTS = [10, 50, 100, 150, 200]


class Sinks:
    """A UDP socket on port 161 of every given address that reads and never answers."""

    def __init__(self, addresses: list[str]):
        self.socks = []
        for a in addresses:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((a, 161))
            s.settimeout(0.2)
            self.socks.append(s)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        import select

        while not self.stop_flag.is_set():
            ready, _, _ = select.select(self.socks, [], [], 0.2)
            for s in ready:
                try:
                    s.recv(65535)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(2)
        for s in self.socks:
            s.close()


def _run(argv: list[str], shell: bool = False, timeout: float = 900) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(argv if not shell else " ".join(argv), shell=shell, capture_output=True, text=True,
                         timeout=timeout, check=False, cwd=ROOT)
    return time.perf_counter() - t, out.stdout


def tools(net: str, hosts: int, timeout: float) -> dict[str, Any]:
    """tool → (argv or shell line, how to count found cards in its output)."""
    cidr = f"{net}.0/28" if hosts == 14 else f"{net}.0/24"
    addrs = " ".join(f"{net}.{i}" for i in range(1, hosts + 1))
    snmpget = f"snmpget -v2c -c public -t {timeout:g} -r 0 -Oqv"
    out: dict[str, Any] = {
        "roomwatch discover": ([sys.executable, "-m", "roomwatch", "discover", "--snmp", cidr, "--timeout",
                                f"{int(timeout * 1000)}ms"], False, lambda s: s.count("\n  - name: ")),
        "snmpget loop": ([f"for a in {addrs}; do {snmpget} $a:161 1.3.6.1.2.1.1.1.0 2>/dev/null; done"], True,
                         lambda s: s.count("\n")),
        "snmpget, xargs -P 64": ([f"printf '%s\\n' {addrs} | xargs -P 64 -I@ sh -c '{snmpget} @:161 "
                                  f"1.3.6.1.2.1.1.1.0 2>/dev/null'"], True, lambda s: s.count("\n")),
    }
    if shutil.which("nmap"):
        out["nmap -sU --script snmp-sysdescr"] = (["nmap", "-sU", "-Pn", "-p161", "--script", "snmp-sysdescr",
                                                    "--script-args", "snmpcommunity=public", cidr], False,
                                                   lambda s: s.count("snmp-sysdescr:"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a /28 with two cards, once (smoke check)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1.0)
    args = ap.parse_args()
    from tests.discover_rig import start_cards
    from tests.helpers import fixtures_dir

    fixtures = fixtures_dir()
    if fixtures is None:
        raise SystemExit("device recordings not found (set ROOMWATCH_FIXTURES)")
    hosts = 14 if args.quick else 254
    card_hosts = [10, 12] if args.quick else CARD_HOSTS
    repeat = 1 if args.quick else args.repeat
    tmp = Path(tempfile.mkdtemp(prefix="rw-bench-discover-"))
    cards = {f"{NET}.{h}": fixtures / "devices" / "snmp" / f"{CARDS[i]}.snmprec" for i, h in enumerate(card_hosts)}
    sims = start_cards(tmp, cards, 161)
    results: dict[str, dict[str, Any]] = {}
    try:
        for scenario in ("silent", "refusing"):
            sinks = Sinks([f"{NET}.{i}" for i in range(1, hosts + 1) if i not in card_hosts]) if scenario == "silent" else None
            try:
                runs: dict[str, list[float]] = {}
                found: dict[str, int] = {}
                for run in range(repeat):
                    for name, (argv, shell, count) in tools(NET, hosts, args.timeout).items():
                        if run and name == "snmpget loop":
                            continue  # about one timeout per address, every time: once is enough
                        secs, stdout = _run(argv, shell)
                        runs.setdefault(name, []).append(secs)
                        found[name] = count(stdout)
                        print(f"{scenario:9} {name:34} {secs:7.2f} s  {found[name]} found", flush=True)
            finally:
                if sinks is not None:
                    sinks.close()
            results[scenario] = {name: {"seconds": round(median(r), 2), "runs": [round(x, 2) for x in r],
                                        "found": found[name]} for name, r in runs.items()}
    finally:
        for sim in sims:
            sim.stop()
    nmap = subprocess.run(["nmap", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0] \
        if shutil.which("nmap") else "absent"
    snmp = subprocess.run(["snmpget", "--version"], capture_output=True, text=True, check=False)
    tool_versions = {"nmap": nmap.replace("Nmap version ", "").split(" (")[0],
                     "net-snmp": (snmp.stdout or snmp.stderr).strip().split()[-1]}
    write_result("discover", {"addresses": hosts, "cards": len(cards), "timeout": args.timeout, "repeat": repeat,
                              "results": results, "versions": {**versions("pysnmp"), **tool_versions}})
    for scenario, res in results.items():
        print(scenario)
        print(table(["tool", "seconds", "cards found"], [[n, r["seconds"], r["found"]] for n, r in res.items()]))


def markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md section."""
    rows = []
    names = list(res["results"]["silent"])
    for name in names:
        s, r = res["results"]["silent"][name], res["results"]["refusing"][name]
        rows.append([name, f"{s['seconds']:.1f}", f"{r['seconds']:.1f}", f"{s['found']} / {r['found']}"])
    return "\n".join([
        header(res, f"discover: a /24 with {res['cards']} SNMP cards (issue 13)"),
        f"{res['addresses']} addresses of 127.0.1.0/24, {res['cards']} snmpsim cards (UPS and environment monitors "
        f"from the shared recordings) on port 161, 1 s wait per target for every tool; median of {res['repeat']} "
        "runs. *silent*: the other addresses swallow the packets (absent or firewalled hosts on a LAN); "
        "*refusing*: they answer ICMP port unreachable (hosts up without SNMP).", "",
        table(["tool", "silent /24 (s)", "refusing /24 (s)", "cards found (silent / refusing)"], rows), "",
        "discover asks every address at once (v2c and v1, no retries), so a silent /24 costs one timeout, then "
        "reads each card with its profile (the comment with the values is part of its output); nmap listens for "
        "ICMP and retries silent ports by its own timing; a shell loop of snmpget pays the timeout per silent "
        "address, and the parallel one per batch of 64.",
    ])


if __name__ == "__main__":
    main()
