"""The demo's simulated NUT UPS: a real upsd the agent reads; a clear error without NUT."""

from __future__ import annotations

from pathlib import Path

import pytest

import roomwatch.demo.sims.nut_ups as sim
from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core import vocabulary as v
from roomwatch.demo.run import DemoContext, _stop
from tests.helpers import require_binary


@pytest.mark.peer
async def test_demo_ups_is_read_by_the_agent(tmp_path: Path) -> None:
    require_binary(str(sim.NUT_BIN / "upsd"))
    ctx = DemoContext(tmp_path)
    try:
        devices = sim.start(ctx)
        assert [d["driver"] for d in devices] == ["nut"]
        agent = Agent(AgentConfig.model_validate({"agent": {"id": "demo"}, "host": {"enabled": False},
                                                  "devices": devices}))
        seen: list = []
        agent.observers.append(lambda dev, samples, events: seen.extend(samples))
        await agent.poll_device(agent.devices["ups-nut"])
        await agent.stop()
        assert agent.devices["ups-nut"].up, agent.devices["ups-nut"].reason
        values = {s.metric: s.value for s in seen}
        assert values[v.UPS_ON_BATTERY] == 0.0 and values[v.UPS_BATTERY_CHARGE] == 1.0
        info = next(s for s in seen if s.metric == v.UPS_INFO)
        assert info.labels["model"] == "SimUPS 1500"
        assert "demo-ups@127.0.0.1:" in ctx.notes[0]
    finally:
        _stop(ctx.processes)
        for cleanup in ctx.cleanups:
            cleanup()


def test_demo_without_nut_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim, "NUT_BIN", tmp_path / "no-nut-here")
    with pytest.raises(sim.NutMissing, match=r"dummy-ups not found: install NUT \(Debian: apt-get install nut-server\)"):
        sim.start(DemoContext(tmp_path))


def test_sequence_goes_on_battery_and_back() -> None:
    text = sim.demo_sequence()
    assert text.count("TIMER ") == len(sim._STEPS)
    assert "ups.status: OB DISCHRG LB" in text and text.rstrip().splitlines()[-1].startswith("battery.voltage")
    assert "ups.status: OL CHRG" in text
