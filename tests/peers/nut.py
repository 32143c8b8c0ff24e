"""A real NUT upsd with dummy-ups drivers replaying ``.dev`` files, on an ephemeral loopback port.

Each UPS is one ``dummy-ups`` process (section named after the file) behind one
``upsd``. ``set_var`` changes a value at once through upsd (``upsrw``, as an
admin would); ``write_dev`` rewrites the file (dummy-ups rereads it when its
mtime changes, within ``pollinterval``). Users: ``monitor``/``monpass``
(``upsmon secondary``: may LOGIN), ``admin``/``adminpass`` (SET), ``reader``/``readpass`` (no rights).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from roomwatch.demo.sims.nut_ups import NUT_BIN, start_nut, upsd_ready, write_nut_config
from tests.helpers import free_port, require_binary, wait_for
from tests.peers.process import PeerProcess

USERS: dict[str, dict[str, str]] = {
    "monitor": {"password": "monpass", "upsmon": "secondary"},
    "admin": {"password": "adminpass", "actions": "SET", "instcmds": "ALL"},
    "reader": {"password": "readpass"},
}


class NutServer:
    """dummy-ups + upsd in ``workdir``; ``devices`` maps UPS name → .dev file."""

    def __init__(self, workdir: Path, devices: Mapping[str, Path], tls: bool = False):
        require_binary(str(NUT_BIN / "dummy-ups"))
        require_binary(str(NUT_BIN / "upsd"))
        self.workdir = workdir
        self.port = free_port()
        self.devices = dict(devices)
        self.procs: dict[str, PeerProcess] = {}
        self.ca_file: Path | None = None
        write_nut_config(workdir, self.port, self.devices, USERS)
        if tls:
            self._make_certificate()
        self._start(list(self.devices))

    def _make_certificate(self) -> None:
        """Debian's upsd uses NSS: a certificate database with a self-signed cert for 127.0.0.1."""
        certutil = require_binary("certutil")  # Debian: libnss3-tools
        db = self.workdir / "nss"
        db.mkdir()
        (db / "pw").write_text("dbpass\n")
        (db / "noise").write_bytes(os.urandom(64))

        def run(*args: str) -> bytes:
            return subprocess.run([certutil, *args], check=True, capture_output=True, timeout=60).stdout

        run("-N", "-d", f"sql:{db}", "-f", str(db / "pw"))
        run("-S", "-d", f"sql:{db}", "-f", str(db / "pw"), "-z", str(db / "noise"), "-x", "-n", "upsd",
            "-s", "CN=127.0.0.1", "-t", "CTu,,", "--extSAN", "ip:127.0.0.1", "-v", "12", "-k", "rsa", "-g", "2048")
        self.ca_file = self.workdir / "upsd-ca.pem"
        self.ca_file.write_bytes(run("-L", "-d", f"sql:{db}", "-n", "upsd", "-a"))
        with (self.workdir / "upsd.conf").open("a") as f:
            f.write(f'CERTPATH {db}\nCERTIDENT "upsd" "dbpass"\n')

    def _spawn(self, argv: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        peer = PeerProcess(name, argv, self.workdir, env)
        self.procs[name] = peer
        return peer.proc

    def _start(self, names: list[str]) -> None:
        try:
            start_nut(self.workdir, self.port, names, self._spawn)
        except RuntimeError as exc:
            logs = "\n".join(f"--- {n} ---\n{p.log()}" for n, p in self.procs.items())
            self.stop()
            raise AssertionError(f"{exc}\n{logs}") from None

    def upsc(self, ups: str, var: str) -> str:
        out = subprocess.run(["upsc", f"{ups}@127.0.0.1:{self.port}", var], capture_output=True, text=True,
                             timeout=10, check=False)
        return out.stdout.strip()

    def set_var(self, ups: str, var: str, value: str) -> None:
        """Change a variable now, through upsd (dummy-ups accepts SET on every variable)."""
        upsrw = shutil.which("upsrw") or "upsrw"
        subprocess.run([upsrw, "-s", f"{var}={value}", "-u", "admin", "-p", "adminpass", "-w",
                        f"{ups}@127.0.0.1:{self.port}"], check=True, capture_output=True, timeout=10)
        wait_for(lambda: self.upsc(ups, var) == value, timeout=10, what=f"{ups} {var}={value}")

    def stop_upsd(self) -> None:
        self.procs.pop("upsd").stop()

    def start_upsd(self) -> None:
        """Start upsd again on the same port (drivers kept running)."""
        env = {"NUT_CONFPATH": str(self.workdir), "NUT_STATEPATH": str(self.workdir / "state")}
        # A previous upsd left its pid file; upsd would try to signal that pid.
        (self.workdir / "state" / "upsd.pid").unlink(missing_ok=True)
        self._spawn([str(NUT_BIN / "upsd"), "-F", "-u", "root"], "upsd", env)
        running = [n for n in self.devices if f"dummy-ups-{n}" in self.procs]
        self.procs["upsd"].wait_ready(lambda: upsd_ready(self.port, running))

    def stop_driver(self, ups: str) -> None:
        self.procs.pop(f"dummy-ups-{ups}").stop()

    def stop(self) -> None:
        for name in list(self.procs)[::-1]:
            self.procs.pop(name).stop()


def write_dev(path: Path, values: Mapping[str, Any]) -> Path:
    """Write a .dev file (``var: value`` lines)."""
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    return path


@pytest.fixture
def nut_factory(tmp_path: Path) -> Iterator[Any]:
    """Call with {ups name: .dev path}; returns a running :class:`NutServer`, stopped after the test."""
    started: list[NutServer] = []

    def make(devices: Mapping[str, Path], tls: bool = False) -> NutServer:
        workdir = tmp_path / f"nut{len(started)}"
        workdir.mkdir()
        server = NutServer(workdir, devices, tls)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


__all__ = ["USERS", "NutServer", "nut_factory", "write_dev"]
