"""A real snmpsim (SNMP agent simulator) on 127.0.0.1, serving .snmprec recordings.

snmpsim answers v1/v2c with the recording's file name as community, and v3
with the recording's name as context. Recordings are copied into the peer's
own temp data dir (never into the repository).
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from roomwatch.demo.sims.snmp_ups import snmp_ping
from tests.helpers import free_port, require_binary
from tests.peers.process import PeerProcess


@dataclass(frozen=True)
class V3User:
    user: str
    auth_proto: str  # snmpsim names: MD5, SHA, SHA256 …
    auth_key: str
    priv_proto: str  # DES, AES, AES256 … or NONE
    priv_key: str = ""


#: The users every snmpsim peer knows (the driver tests log in as each of them).
V3_USERS = (
    V3User("monitor", "SHA", "authpass123", "AES", "privpass123"),
    V3User("md5des", "MD5", "authpass123", "DES", "privpass123"),
    V3User("sha256", "SHA256", "authpass123", "AES256", "privpass123"),
    V3User("authonly", "SHA", "authpass123", "NONE"),  # authNoPriv
)


class Snmpsim:
    """A running snmpsim: ``port`` and the communities (= recording names) it serves."""

    def __init__(self, proc: PeerProcess, port: int, communities: list[str]):
        self.proc = proc
        self.port = port
        self.communities = communities

    def stop(self) -> None:
        self.proc.stop()


def snmpsim_binary() -> str:
    """snmpsim's command, next to this interpreter (a test extra) or on PATH."""
    local = Path(sys.executable).with_name("snmpsim-command-responder")
    return str(local) if local.exists() else require_binary("snmpsim-command-responder")


def start_snmpsim(workdir: Path, recordings: Mapping[str, Path | str], users: tuple[V3User, ...] = V3_USERS,
                  ports: int = 1, host: str = "127.0.0.1", port: int | None = None) -> Snmpsim:
    """Serve ``recordings`` (community → .snmprec path or text) on ``ports`` UDP endpoints of loopback ``host``
    (any 127.x.y.z: Linux routes all of 127/8 to the loopback interface); ``port`` fixes the first port."""
    data = workdir / "data"
    data.mkdir(parents=True)
    for name, src in recordings.items():
        target = data / f"{name}.snmprec"
        if isinstance(src, Path):
            shutil.copyfile(src, target)
        else:
            target.write_text(src)
    port_list = ([port] if port else []) + [free_port(socket.SOCK_DGRAM) for _ in range(ports - (1 if port else 0))]
    argv = [snmpsim_binary(), f"--data-dir={data}", f"--cache-dir={workdir / 'cache'}",
            "--logging-method=stderr", "--log-level=error"]
    for u in users:
        argv += [f"--v3-user={u.user}", f"--v3-auth-key={u.auth_key}", f"--v3-auth-proto={u.auth_proto}"]
        if u.priv_key:
            argv += [f"--v3-priv-proto={u.priv_proto}", f"--v3-priv-key={u.priv_key}"]
    argv += [f"--agent-udpv4-endpoint={host}:{p}" for p in port_list]
    # As root snmpsim insists on dropping privileges, which fails under a 0700 home (PEERS.md).
    proc = PeerProcess("snmpsim", argv, workdir, env={"SNMPSIM_ALLOW_ROOT": "true"})
    first = next(iter(recordings))
    try:
        proc.wait_ready(lambda: all(snmp_ping(p, first, host) for p in port_list), timeout=60)
    except BaseException:
        proc.stop()
        raise
    return Snmpsim(proc, port_list[0], list(recordings))


@pytest.fixture
def snmpsim_factory(tmp_path: Path) -> Iterator[Any]:
    """Call with {community: recording}; every simulator started is stopped after the test."""
    started: list[Snmpsim] = []

    def make(recordings: Mapping[str, Path | str], **kw: Any) -> Snmpsim:
        d = tmp_path / f"snmpsim{len(started)}"
        sim = start_snmpsim(d, recordings, **kw)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()

