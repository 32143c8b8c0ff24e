"""What a simulated device of ``roomwatch demo`` gets: a work directory and a way to start processes."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DOOR_EVERY_DEFAULT", "DemoContext", "Simulator", "free_port"]

#: How often the simulated door opens unless ``--door-every`` says otherwise (seconds).
DOOR_EVERY_DEFAULT = 180.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



@dataclass
class DemoContext:
    """Where a simulator may put files and what it started (to stop it later)."""

    workdir: Path
    #: Seconds between openings of a simulated door (``roomwatch demo --door-every``).
    door_every: float = DOOR_EVERY_DEFAULT
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
        self.processes.append(proc)
        self.cleanups.append(log.close)
        return proc


@dataclass
class Simulator:
    """One simulated device family: ``start`` returns agent device entries (dicts)."""

    name: str
    start: Callable[[DemoContext], list[dict[str, Any]]]
