"""A test-only device whose readings carry a counter, so a test can check exactly-once delivery.

Each poll returns ``roomwatch_test_counter = run * 1_000_000 + n`` (``run`` from
``$ROOMWATCH_TEST_RUN``, ``n`` counting polls from 1) with the poll's timestamp,
plus ``fanout`` filler series (heavier batches), and every ``door_every`` polls
toggles ``roomwatch_door_open`` (the agent turns that into door_open/door_close
events); ``state_file`` adds the readings listed in it (``metric value`` lines).
Before returning, the poll appends ``value ts_ms door`` to ``log`` (the
produced set), flushed: a kill -9 of the agent keeps what was written.

The agent subprocess imports this module before ``roomwatch.cli`` (see
:func:`tests.reliability_rig.agent_argv`), so the driver registers like a real one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Literal

from roomwatch.drivers.base import DeviceConfig, Driver, Reading
from roomwatch.drivers.registry import register

COUNTER = "roomwatch_test_counter"
FILLER = "roomwatch_test_filler"


class CounterConfig(DeviceConfig):
    driver: Literal["test-counter"] = "test-counter"
    log: str
    fanout: int = 0
    door_every: int = 0
    state_file: str | None = None  # lines "metric value": extra readings the test switches (a leak, smoke)


def _states(path: str | None) -> list[tuple[str, float]]:
    """``metric value`` lines of the state file (a tiny local read; fine on the loop in a test driver)."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [(m, float(x)) for m, x in (line.split() for line in f.read().splitlines() if line.strip())]


@register
class CounterDriver(Driver):
    name = "test-counter"
    config_model = CounterConfig

    def __init__(self, config: Any, context: Any):
        super().__init__(config, context)
        self.run = int(os.environ.get("ROOMWATCH_TEST_RUN", "0"))
        self.n = 0
        self._log = open(config.log, "a", buffering=1)  # noqa: SIM115 - line buffered, closed in stop()

    async def poll(self) -> Sequence[Reading]:
        self.n += 1
        ts = time.time()
        value = float(self.run * 1_000_000 + self.n)
        door = -1
        out = [Reading(COUNTER, value, ts=ts)]
        out += [Reading(FILLER, value, {"sensor": str(i)}, ts=ts) for i in range(self.config.fanout)]
        if self.config.door_every:
            door = (self.n // self.config.door_every) % 2
            out.append(Reading("roomwatch_door_open", float(door), ts=ts))
        for metric, val in _states(self.config.state_file):
            out.append(Reading(metric, val, ts=ts))
        self._log.write(f"{int(value)} {int(ts * 1000)} {door}\n")
        return out

    async def stop(self) -> None:
        self._log.close()
