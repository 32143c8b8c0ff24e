"""The shutdown decision as a pure state machine: table-driven, with explicit times."""

from __future__ import annotations

from typing import Any

import pytest

from roomwatch.agent.shutdown import Observation, ShutdownActionConfig, ShutdownLogic, observation_from
from roomwatch.core import vocabulary as v
from roomwatch.core.wire import SampleRecord

CFG = {"type": "shutdown", "ups": "ups1", "runtime_below": "5m", "on_battery_for": "10m",
       "unreachable_on_battery": "2m", "confirm_readings": 2}

OL = Observation(up=True, on_battery=False, low=False, runtime=1800)
OL_LB = Observation(up=True, on_battery=False, low=True, runtime=1800)  # charging after an outage: not critical
OB = Observation(up=True, on_battery=True, low=False, runtime=1500)
OB_LB = Observation(up=True, on_battery=True, low=True, runtime=1500)
OB_SHORT = Observation(up=True, on_battery=True, low=False, runtime=240)  # under 5 min
DOWN = Observation(up=False)


def run(steps: list[tuple[float, Observation]], **overrides: Any) -> tuple[ShutdownLogic, list[tuple[float, str]]]:
    logic = ShutdownLogic(ShutdownActionConfig.model_validate({**CFG, **overrides}))
    changes = []
    for t, obs in steps:
        change = logic.observe(t, obs)
        if change:
            changes.append((t, change))
    return logic, changes


@pytest.mark.parametrize(("steps", "expected"), [
    # A single glitchy reading (even on battery with LB) never triggers.
    ([(0, OL), (10, OB_LB), (20, OL), (30, OL), (40, OB_LB), (50, OL)], []),
    # Low battery confirmed by two readings on battery.
    ([(0, OL), (10, OB_LB), (20, OB_LB)], [(20, "pending")]),
    # On battery first, low battery later: two LB readings needed.
    ([(0, OB), (10, OB), (20, OB_LB), (30, OB_LB)], [(30, "pending")]),
    # Runtime under the threshold.
    ([(0, OB), (10, OB_SHORT), (20, OB_SHORT)], [(20, "pending")]),
    # One short-runtime reading between good ones is a glitch.
    ([(0, OB), (10, OB_SHORT), (20, OB), (30, OB_SHORT), (40, OB)], []),
    # On battery for 10 minutes, timed from the first on-battery reading.
    ([(0, OB), (300, OB), (599, OB), (600, OB), (610, OB)], [(610, "pending")]),
    # LB while on mains (recharging) is not critical.
    ([(0, OL_LB), (10, OL_LB), (20, OL_LB)], []),
    # Mains back for two readings cancels; one reading on mains does not.
    ([(0, OB_LB), (10, OB_LB), (15, OL), (20, OB_LB), (25, OL), (30, OL)], [(10, "pending"), (30, "cancelled")]),
    # After a cancel a new outage can trigger again.
    ([(0, OB_LB), (10, OB_LB), (20, OL), (30, OL), (40, OB_LB), (50, OB_LB)],
     [(10, "pending"), (30, "cancelled"), (50, "pending")]),
    # UPS confirmed on battery, then silent for 2 minutes (upsmon's rule).
    ([(0, OB), (10, OB), (20, DOWN), (80, DOWN), (139, DOWN), (140, DOWN)], [(140, "pending")]),
    # Silent after a single on-battery reading: not confirmed, no action.
    ([(0, OL), (10, OB), (20, DOWN), (300, DOWN)], []),
    # Silent while on mains: no action.
    ([(0, OL), (10, OL), (20, DOWN), (300, DOWN)], []),
    # Mains back while the UPS was silent, seen before the limit: the clock restarts.
    ([(0, OB), (10, OB), (20, DOWN), (100, OL), (110, OL), (120, DOWN), (300, DOWN)], []),
])
def test_transitions(steps: list[tuple[float, Observation]], expected: list[tuple[float, str]]) -> None:
    assert run(steps)[1] == expected


def test_thresholds_off_only_low_battery_counts() -> None:
    """Without runtime_below/on_battery_for/unreachable_on_battery only the UPS's own LB triggers."""
    steps = [(0, OB_SHORT), (10, OB_SHORT), (4000, OB_SHORT), (4010, DOWN), (9000, DOWN)]
    assert run(steps, runtime_below=None, on_battery_for=None, unreachable_on_battery="0s")[1] == []
    assert run([(0, OB_LB), (1, OB_LB)], runtime_below=None, on_battery_for=None)[1] == [(1, "pending")]


def test_confirm_readings_three() -> None:
    assert run([(0, OB_LB), (1, OB_LB), (2, OB_LB)], confirm_readings=3)[1] == [(2, "pending")]


def test_reason_is_given() -> None:
    logic, _ = run([(0, OB), (10, OB_SHORT), (20, OB_SHORT)])
    assert logic.reason == "runtime left 240s is below 5m"


def test_config_refuses_single_reading_and_bare_numbers() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        ShutdownActionConfig.model_validate({**CFG, "confirm_readings": 1})
    with pytest.raises(ValidationError, match="has no unit"):
        ShutdownActionConfig.model_validate({**CFG, "grace": 30})
    assert ShutdownActionConfig.model_validate({"type": "shutdown", "ups": "u"}).command == ["systemctl", "poweroff"]


def _s(metric: str, value: float, **labels: str) -> SampleRecord:
    return SampleRecord(metric, {"device": "nutbox", **labels}, value, 0)


def test_observation_from_samples() -> None:
    """The action reads the agent's own samples; labels pick one UPS of several; device_up is per device."""
    samples = [_s(v.DEVICE_UP, 1.0, driver="nut"),
               _s(v.UPS_ON_BATTERY, 0.0, ups="a"), _s(v.UPS_BATTERY_LOW, 0.0, ups="a"),
               _s(v.UPS_ON_BATTERY, 1.0, ups="b"), _s(v.UPS_BATTERY_LOW, 1.0, ups="b"),
               _s(v.UPS_BATTERY_RUNTIME, 90.0, ups="b")]
    obs, seen = observation_from(samples, {"ups": "b"})
    assert (obs.up, obs.on_battery, obs.low, obs.runtime, seen) == (True, True, True, 90.0, 1)
    obs, seen = observation_from(samples, {})
    assert seen == 2 and obs.on_battery is False  # the first; the action logs an error once
    obs, _ = observation_from([_s(v.DEVICE_UP, 1.0)], {"ups": "b"})
    assert obs.up is False  # the chosen UPS did not report: its state is unknown
    obs, _ = observation_from([_s(v.DEVICE_UP, 0.0)], {})
    assert obs.up is False


def test_check_config_names_file_line_key(tmp_path: Any) -> None:
    """Action mistakes exit 2 with file:line: key: what is wrong."""
    from tests.helpers import cli, write_yaml

    path = write_yaml(tmp_path / "agent.yaml", {
        "devices": [{"name": "nutbox", "driver": "nut"}, {"name": "u1", "driver": "nut", "ups": "rack"}],
        "actions": [{"type": "shutdown", "ups": "nosuch"},
                    {"type": "shutdown", "name": "s2", "ups": "nutbox"},
                    {"type": "shutdown", "name": "s3", "ups": "u1", "on_battery_for": 600},
                    {"type": "reboot", "ups": "u1"}]})
    res = cli("check-config", str(path))
    assert res.returncode == 2, res
    assert "agent.yaml:16: actions[2].on_battery_for: 600 has no unit" in res.stderr + res.stdout
    assert "actions[3].type: unknown type 'reboot'; expected one of 'shutdown', 'battery_test'" in res.stderr + res.stdout
    ok = write_yaml(tmp_path / "ok.yaml", {
        "devices": [{"name": "nutbox", "driver": "nut"}],
        "actions": [{"type": "shutdown", "ups": "nosuch"},
                    {"type": "shutdown", "name": "s2", "ups": "nutbox"}]})
    res = cli("check-config", str(ok))
    out = res.stderr + res.stdout
    assert res.returncode == 2
    assert "ok.yaml:6: actions[0].ups: no device is named 'nosuch' (devices: host, nutbox)" in out
    assert "actions[1].labels: device 'nutbox' reports every UPS of its upsd: pick one with labels: {ups: NAME}" in out


OL_FSD = Observation(up=True, on_battery=False, low=False, runtime=1800, fsd=True)


def test_fsd_from_the_primary_triggers_at_once_and_mains_does_not_cancel() -> None:
    """FSD is a latch the primary set on purpose: one reading, on mains or not; mains back does not cancel."""
    logic, changes = run([(0, OL), (10, OL_FSD), (20, OL), (30, OL), (40, OL)])
    assert changes == [(10, "pending")] and logic.fsd and logic.state == "pending"
    assert "forced shutdown (FSD)" in logic.reason
    _, ignored = run([(0, OL), (10, OL_FSD)], on_fsd=False)
    assert ignored == []


def test_fsd_flag_read_from_samples() -> None:
    base = {"device": "ups1"}
    samples = [SampleRecord(v.DEVICE_UP, base, 1.0, 0), SampleRecord(v.UPS_ON_BATTERY, base, 0.0, 0),
               SampleRecord(v.UPS_STATUS_FLAG, {**base, "flag": "FSD"}, 1.0, 0)]
    obs, _ = observation_from(samples, {})
    assert obs.fsd and obs.on_battery is False
    down = [SampleRecord(v.DEVICE_UP, base, 0.0, 0), *samples[1:]]
    assert not observation_from(down, {})[0].fsd


def test_sequence_seconds() -> None:
    cfg = ShutdownActionConfig.model_validate({**CFG, "grace": "30s", "nut_primary": True, "hostsync": "1m",
                                               "host_shutdown_time": "2m"})
    assert cfg.sequence_seconds(10.0) == 2 * 10 + 30 + 60 + 120
    assert ShutdownActionConfig.model_validate({**CFG, "grace": "30s"}).sequence_seconds(10.0) == 20 + 30 + 120
