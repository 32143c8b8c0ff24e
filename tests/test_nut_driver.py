"""NUT driver against a real upsd + dummy-ups replaying recordings of real UPS units.

Every ``nut/*.dev`` in the shared fixtures (list read from the folder) and every
hand-written ``tests/data/nut/*.dev`` is served by one private upsd; the agent's
readings must equal the truth file's values, and nothing the truth file lacks
may be invented: every device metric the driver emits (besides the identity
``roomwatch_ups_info`` and the link-health series) needs a truth entry.
Quantities the shared truth format does not record (output voltage, battery
install date) come from ``tests/data/truth-supplement.json`` (:mod:`tests.truth`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roomwatch.agent.config import AgentConfig
from roomwatch.agent.runtime import Agent
from roomwatch.core import vocabulary as v
from roomwatch.core.wire import SampleRecord
from tests.helpers import fixtures_dir, require_fixtures
from tests.peers.nut import NutServer
from tests.truth import BATTERY_AGE_TOLERANCE_S, BATTERY_INSTALLED, battery_age_seconds, judges, load_truth

pytestmark = pytest.mark.peer("upsd")

OWN = Path(__file__).parent / "data" / "nut"
FIXTURES = fixtures_dir()

#: truth key → (metric, factor from the truth's unit to the metric's unit)
TRUTH_METRICS: dict[str, tuple[str, float]] = {
    "battery_charge_percent": (v.UPS_BATTERY_CHARGE, 0.01),
    "battery_runtime_seconds": (v.UPS_BATTERY_RUNTIME, 1.0),
    "on_battery": (v.UPS_ON_BATTERY, 1.0),
    "low_battery": (v.UPS_BATTERY_LOW, 1.0),
    "replace_battery": (v.UPS_BATTERY_REPLACE, 1.0),
    "input_voltage_v": (v.UPS_INPUT_VOLTAGE, 1.0),
    "output_load_percent": (v.UPS_LOAD, 0.01),
    "battery_temperature_c": (v.UPS_BATTERY_TEMPERATURE, 1.0),
    "battery_voltage_v": (v.UPS_BATTERY_VOLTAGE, 1.0),
    "ups_temperature_c": (v.UPS_TEMPERATURE, 1.0),
    "output_voltage_v": (v.UPS_OUTPUT_VOLTAGE, 1.0),
    BATTERY_INSTALLED: (v.UPS_BATTERY_AGE, 1.0),
}
#: Emitted without a truth key of their own: identity labels, the status flags (checked against
#: ``ups_status_tokens``) and the agent's link-health series.
NOT_MEASUREMENTS = {v.UPS_INFO, v.UPS_STATUS_FLAG, *v.HEALTH_METRICS}


def _cases() -> list[Any]:
    cases = [pytest.param(p, OWN / f"{p.stem}.json", id=f"own-{p.stem}") for p in sorted(OWN.glob("*.dev"))]
    if FIXTURES is None:
        cases.append(pytest.param(None, None, id="shared-fixtures-missing"))
    else:
        devices = FIXTURES / "devices"
        cases += [pytest.param(p, devices / "truth" / f"{p.stem}.json", id=p.stem)
                  for p in sorted((devices / "nut").glob("*.dev"))]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def nut_all(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NutServer]:
    """One upsd serving every recording, each as a UPS named after its file."""
    devices = {c.values[0].stem: c.values[0] for c in CASES if c.values[0] is not None}
    server = NutServer(tmp_path_factory.mktemp("nut-all"), devices)
    yield server
    server.stop()


_AGENTS: list[Agent] = []


@pytest.fixture(autouse=True)
async def _stop_agents() -> Any:
    yield
    while _AGENTS:
        await _AGENTS.pop().stop()  # closes the shared upsd connections


def _agent(*devices: dict[str, Any]) -> Agent:
    cfg = AgentConfig.model_validate({"agent": {"id": "t", "site": "s", "room": "r"}, "host": {"enabled": False},
                                      "devices": list(devices)})
    agent = Agent(cfg)
    _AGENTS.append(agent)
    return agent


async def _poll_once(agent: Agent, name: str) -> list[SampleRecord]:
    seen: list[SampleRecord] = []
    agent.observers.append(lambda dev, samples, events: seen.extend(samples) if dev.name == name else None)
    await agent.poll_device(agent.devices[name])
    return seen


def _truth_check(samples: list[SampleRecord], truth: dict[str, Any], where: str) -> None:
    """Every truth value read (within tolerance), nothing reported that the truth file lacks."""
    invented = sorted({s.metric for s in samples} - {m for m, _ in TRUTH_METRICS.values()} - NOT_MEASUREMENTS)
    assert not invented, f"{where}: {invented} reported, but the truth format has no such quantity"
    for key, (metric, factor) in TRUTH_METRICS.items():
        got = [s.value for s in samples if s.metric == metric]
        assert len(got) <= 1, f"{where}: {metric} reported {len(got)} times"
        entry = truth["metrics"].get(key)
        if not judges(truth, key):
            continue  # a recording the supplement does not cover yet: neither confirmed nor invented
        if entry is None or entry.get("available") is False or entry.get("value") is None:
            assert not got, f"{where}: {metric}={got} invented; the truth file has no {key}"
            continue
        dated = key == BATTERY_INSTALLED
        want = battery_age_seconds(entry) if dated else float(entry["value"]) * factor
        tol = BATTERY_AGE_TOLERANCE_S if dated else 1e-9
        if entry.get("uncertain"):
            # A value the recording itself flags as a placeholder: dropping it is right, changing it is not.
            assert not got or got[0] == pytest.approx(want, rel=1e-6, abs=tol), f"{where}: {key}"
            continue
        assert got, f"{where}: {metric} missing (truth {key}={entry['value']})"
        assert got[0] == pytest.approx(want, rel=1e-6, abs=tol), f"{where}: {key} truth {entry['value']}, got {got[0]}"
    tokens = truth["metrics"].get("ups_status_tokens", {}).get("value")
    flags = [s.labels["flag"] for s in samples if s.metric == v.UPS_STATUS_FLAG]
    assert sorted(flags) == sorted(tokens or []), where


@pytest.mark.parametrize(("dev", "truth_path"), CASES)
async def test_readings_match_truth(dev: Path | None, truth_path: Path | None, nut_all: NutServer) -> None:
    """Agent readings of one UPS (``ups`` set) equal the truth file, and the device is up."""
    if dev is None:
        require_fixtures()  # skips, saying where the recordings were looked for
        return
    truth = load_truth(truth_path)  # type: ignore[arg-type]
    agent = _agent({"name": "ups", "driver": "nut", "port": nut_all.port, "ups": dev.stem})
    samples = await _poll_once(agent, "ups")
    assert agent.devices["ups"].up, agent.devices["ups"].reason
    assert all("ups" not in s.labels for s in samples), "single-UPS mode adds no ups label"
    _truth_check(samples, truth, dev.name)
    info = [s for s in samples if s.metric == v.UPS_INFO]
    assert len(info) == 1 and info[0].value == 1.0 and info[0].labels.get("model"), info


async def test_every_ups_of_an_upsd_with_ups_label(nut_all: NutServer) -> None:
    """Without ``ups`` the device reports every UPS upsd lists, each with its ``ups`` label and its own values."""
    agent = _agent({"name": "nutbox", "driver": "nut", "port": nut_all.port})
    samples = await _poll_once(agent, "nutbox")
    assert agent.devices["nutbox"].up
    for name, dev in nut_all.devices.items():
        mine = [s for s in samples if s.labels.get("ups") == name]
        truth_path = (OWN / f"{name}.json") if dev.parent == OWN else dev.parent.parent / "truth" / f"{name}.json"
        _truth_check(mine, load_truth(truth_path), f"{name} (all-UPS mode)")


async def test_info_and_battery_age(nut_all: NutServer) -> None:
    """Identity as info labels; battery age from battery.date, the config's date wins."""
    agent = _agent({"name": "a", "driver": "nut", "port": nut_all.port, "ups": "rw_online_full"},
                   {"name": "b", "driver": "nut", "port": nut_all.port, "ups": "rw_online_full",
                    "battery_installed": "2020-01-01"},
                   {"name": "c", "driver": "nut", "port": nut_all.port, "ups": "rw_onbattery_low"})
    a = await _poll_once(agent, "a")
    info = next(s for s in a if s.metric == v.UPS_INFO)
    assert {k: info.labels[k] for k in ("manufacturer", "model", "serial", "firmware")} == {
        "manufacturer": "Test Power", "model": "TP-1500 Rack", "serial": "TP15-000123", "firmware": "2.1.4"}
    import datetime as dt

    def age_days(samples: list[SampleRecord]) -> float | None:
        ages = [s.value for s in samples if s.metric == v.UPS_BATTERY_AGE]
        return ages[0] / 86400 if ages else None

    today = dt.date.today()
    assert age_days(a) == pytest.approx((today - dt.date(2023, 5, 10)).days, abs=1.01)
    assert age_days(await _poll_once(agent, "b")) == pytest.approx((today - dt.date(2020, 1, 1)).days, abs=1.01)
    assert age_days(await _poll_once(agent, "c")) is None  # no date anywhere: absent, not 0


def test_agent_metrics_pass_promtool(nut_all: NutServer, agent_factory: Any) -> None:
    """A real agent process reading every recorded UPS: its /metrics passes `promtool check metrics`."""
    from tests.helpers import http_get, wait_for
    from tests.peers.prometheus import promtool_check_metrics

    _, url = agent_factory(None, host={"enabled": False},
                           devices=[{"name": "nutbox", "driver": "nut", "port": nut_all.port, "interval": "1s"}])
    body = wait_for(lambda: (lambda r: r[1] if b"roomwatch_ups_status_flag" in r[1] else None)(http_get(url + "/metrics")),
                    timeout=20, what="UPS series in agent /metrics")
    res = promtool_check_metrics(body)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res
    assert body.count(b"roomwatch_ups_info{") == len(nut_all.devices)
