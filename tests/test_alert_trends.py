"""Rules on change and prediction (``rate … per …``, ``reaches … within …``), on a controlled clock.

The default pack's RoomTemperatureRisingFast and UPSRuntimeWillNotLast, the
grammar and its errors, and the fit itself (compared with Prometheus' formulas).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from roomwatch.alerts.conditions import check_hysteresis, parse_expr
from roomwatch.alerts.templates import format_alert_value, format_expr
from roomwatch.alerts.trend import MAX_POINTS, Trend
from tests.alert_harness import Harness

TEMP = "roomwatch_temperature_celsius"
TH1 = {"site": "s1", "room": "r1", "device": "th1"}
UPS = {"site": "s1", "room": "r1", "device": "ups1"}
CHARGE, RUNTIME, ON_BATTERY = ("roomwatch_ups_battery_charge_ratio", "roomwatch_ups_battery_runtime_seconds",
                               "roomwatch_ups_on_battery")
SEQUENCE = "roomwatch_ups_shutdown_sequence_seconds"


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def _ramp(h: Harness, start: float, per_minute: float, minutes: float, step: float = 10.0,
          labels: dict[str, str] = TH1) -> float:
    """Push a temperature changing by ``per_minute`` every ``step`` seconds for ``minutes``; return the last value."""
    value = start
    for _ in range(int(minutes * 60 / step)):
        h.advance(step)
        value += per_minute * step / 60
        h.push([(TEMP, labels, value)])
    return value


def test_air_conditioning_failure_warns_before_the_threshold(h: Harness) -> None:
    """22 °C steady, then +0.6 °C/min (3 °C per 5 min): RisingFast fires at ~24 °C, long before 27 °C."""
    _ramp(h, 22.0, 0.0, 6)
    assert h.states() == {}
    last = _ramp(h, 22.0, 0.6, 5)  # the fit over 5 min crosses +2 per 5m, then for: 1m
    assert h.states() == {"RoomTemperatureRisingFast": "firing"} and last < 25.5
    [n] = h.queued()
    alert = n.alerts[0]
    assert alert.labels["alertname"] == "RoomTemperatureRisingFast"
    # The message says the rate, not a temperature: "当前：+2.7 °C / 5 分钟（阈值 >= +2 °C / 5 分钟）".
    assert re.search(r"当前：\+[23](\.\d)? °C / 5 分钟（阈值 >= \+2 °C / 5 分钟）", n.text), n.text
    _ramp(h, last, 0.6, 6)  # still rising: stays firing, RoomTemperatureHigh joins at 27
    assert h.states()["RoomTemperatureRisingFast"] == "firing"
    assert h.states()["RoomTemperatureHigh"] in ("pending", "firing")


def test_rise_then_plateau_clears_with_hysteresis(h: Harness) -> None:
    _ramp(h, 22.0, 0.0, 5)
    last = _ramp(h, 22.0, 0.6, 5)
    assert h.states() == {"RoomTemperatureRisingFast": "firing"}
    h.queued()
    last = _ramp(h, last, 0.2, 5)  # slows to 1 °C / 5 min: between clear (0.5) and when (2): still firing
    assert h.states().get("RoomTemperatureRisingFast") == "firing"
    _ramp(h, last, 0.0, 5)  # flat: the fitted slope drops under +0.5 per 5m
    assert "RoomTemperatureRisingFast" not in h.states()


def test_noise_and_short_history_do_not_fire(h: Harness) -> None:
    """A 0.5 °C sensor step with two samples, or quantisation noise, is not a rise: the fit needs half the
    window and smooths over the whole of it."""
    h.push([(TEMP, TH1, 22.0)])
    h.advance(10)
    h.push([(TEMP, TH1, 22.5)])  # 2 samples, 10 s: would be +15 °C / 5 min on two points
    h.advance(10)
    h.push([(TEMP, TH1, 23.0)])
    assert h.states() == {}
    for i in range(60):  # ±0.5 °C noise around 23 for 10 minutes
        h.advance(10)
        h.push([(TEMP, TH1, 23.0 + (0.5 if i % 2 else -0.5))])
    assert "RoomTemperatureRisingFast" not in h.states()


def _outage(h: Harness, charge_per_min: float, sequence: float | None, runtime: float | None = None,
            minutes: float = 6, step: float = 10.0) -> None:
    charge = 1.0
    for _ in range(int(minutes * 60 / step)):
        h.advance(step)
        charge = max(0.0, charge - charge_per_min * step / 60)
        samples = [(ON_BATTERY, UPS, 1.0), (CHARGE, UPS, charge)]
        if sequence is not None:
            samples.append((SEQUENCE, UPS, sequence))
        if runtime is not None:
            samples.append((RUNTIME, UPS, runtime))
        h.push(samples)


def test_runtime_will_not_last_by_the_fitted_charge(h: Harness) -> None:
    """The UPS claims 40 min, but the charge falls 5 %/min: empty in under 20 min, and the agent's shutdown
    sequence needs 25 min. The fit sees it; the UPS's own estimate did not."""
    _outage(h, 0.05, sequence=1500.0, runtime=2400.0, minutes=4)
    assert h.states()["UPSRuntimeWillNotLast"] == "firing" and "UPSRuntimeLow" not in h.states()
    [n] = [n for n in h.queued() if n.alerts[0].labels["alertname"] == "UPSRuntimeWillNotLast"]
    assert "分钟" in n.text  # the value is a time left, e.g. "16 分钟"


def test_runtime_will_not_last_by_the_ups_estimate_and_not_on_mains(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    _outage(h, 0.001, sequence=600.0, runtime=400.0, minutes=1)  # slow drain, but the UPS says 400 s < 600 s
    assert h.states()["UPSRuntimeWillNotLast"] == "firing"
    (tmp_path / "q").mkdir()
    quiet = Harness(tmp_path / "q")
    for _ in range(40):  # the same on mains (recharging): nothing
        quiet.advance(10)
        quiet.push([(ON_BATTERY, UPS, 0.0), (CHARGE, UPS, 0.5), (RUNTIME, UPS, 400.0), (SEQUENCE, UPS, 600.0)])
    assert quiet.states() == {}


def test_no_sequence_metric_no_alert_and_a_long_battery_is_fine(h: Harness) -> None:
    _outage(h, 0.05, sequence=None, runtime=2400.0, minutes=4)  # agent without a shutdown action
    assert "UPSRuntimeWillNotLast" not in h.states()
    (h.tmp_path / "fine").mkdir()
    fine = Harness(h.tmp_path / "fine")
    _outage(fine, 0.01, sequence=600.0, runtime=5000.0, minutes=6)  # 100 min to empty vs 10 min needed
    assert "UPSRuntimeWillNotLast" not in fine.states()


def test_fixed_prediction_and_window_in_a_rule(tmp_path: Path) -> None:
    h = Harness(tmp_path, rules={"defaults": False, "extra": [
        {"alert": "DiskFillsSoon", "metric": "roomwatch_host_filesystem_avail_bytes",
         "when": "reaches 0 within 4h", "window": "30m", "for": "0s"}]})
    free = 10e9
    for _ in range(100):  # losing 1 GB every 10 minutes: empty in 100 min
        h.advance(60)
        free -= 1e8
        h.push([("roomwatch_host_filesystem_avail_bytes", {"device": "host"}, free)])
    assert h.states() == {"DiskFillsSoon": "firing"}


def test_grammar_and_errors() -> None:
    e = parse_expr("rate >= +2 per 5m")
    assert (e.kind, e.per, str(e)) == ("rate", 300.0, "rate >= +2 per 5m")
    assert e.test(2.0) and not e.test(1.9)
    p = parse_expr("reaches 0 within roomwatch_ups_shutdown_sequence_seconds")
    assert (p.kind, p.within_metric, p.target) == ("reaches", SEQUENCE, 0.0)
    assert parse_expr("reaches 0.1 within 10m").within == 600.0
    m = parse_expr("< roomwatch_ups_shutdown_sequence_seconds")
    assert (m.kind, m.within_metric, m.limit_op, str(m)) == ("value", SEQUENCE, "<", "< " + SEQUENCE)
    for bad, words in [("rate > 2", "is not a rate comparison"), ("rate > 2 per 0s", "more than 0"),
                       ("rate > 2 per 5m or rate < 1 per 1m", "one duration after per"),
                       ("reaches zero within 5m", "is not a prediction"), ("== x y", "not a comparison")]:
        with pytest.raises(ValueError, match=words):
            parse_expr(bad)
    check_hysteresis(parse_expr("rate >= 2 per 5m"), parse_expr("rate < 6 per 1h"))  # 6/h = 0.5/5m: a gap
    for when, clear, words in [("rate >= 2 per 5m", "rate < 3 per 5m", "no gap"),
                               ("reaches 0 within 5m", "> 1", "no clear"), ("rate > 1 per 1m", "< 3", "must both be rates")]:
        with pytest.raises(ValueError, match=words):
            check_hysteresis(parse_expr(when), parse_expr(clear))


def test_config_errors_are_located(tmp_path: Path) -> None:
    from roomwatch.collector.config import CollectorConfig
    from roomwatch.core.configbase import ConfigError, load_model
    from tests.helpers import write_yaml

    path = write_yaml(tmp_path / "c.yaml", {"agents": [{"id": "a1", "token": "t" * 20}], "rules": {"extra": [
        {"alert": "A", "metric": TEMP, "when": "> 30", "window": "5m"},
        {"alert": "B", "metric": TEMP, "when": "rate > 1 per 1m", "only_if": {"metric": "x", "when": "rate > 1 per 1m"}},
        {"alert": "C", "metric": TEMP, "when": "rate >= 2 per 5m", "clear": "rate < 2.5 per 5m"}]}})
    with pytest.raises(ConfigError) as err:
        load_model(path, CollectorConfig)
    text = str(err.value)
    assert "window applies to rate and prediction" in text and "only_if takes a threshold" in text
    assert "no gap" in text


def test_messages_say_rates_and_times() -> None:
    assert format_alert_value(TEMP, 2.4, "rate >= +2 per 5m", "en") == "+2.4 °C / 5 min"
    assert format_alert_value(TEMP, -1.0, "rate <= -1 per 1m", "zh-CN") == "-1 °C / 1 分钟"
    assert format_alert_value(CHARGE, 960.0, "reaches 0 within 10m", "zh-CN") == "16 分钟"
    assert format_expr(CHARGE, "reaches 0 within roomwatch_ups_shutdown_sequence_seconds", "zh-CN") == \
        "关机流程所需时间内达到 0%"
    assert format_expr(RUNTIME, "< roomwatch_ups_shutdown_sequence_seconds", "en") == "< the shutdown sequence's time"
    assert format_alert_value(TEMP, 28.0, "> 27", "en") == "28 °C"


def _prometheus_deriv(points: list[tuple[float, float]]) -> float:
    """Prometheus' linearRegression (promql/functions.go) with intercept time 0, for comparison."""
    n = len(points)
    t0 = points[0][0]  # Prometheus subtracts the intercept time too, which keeps the sums exact
    points = [(t - t0, y) for t, y in points]
    sx = sum(t for t, _ in points)
    sy = sum(y for _, y in points)
    sxy = sum(t * y for t, y in points)
    sx2 = sum(t * t for t, _ in points)
    cov = sxy - sx * sy / n
    var = sx2 - sx * sx / n
    return cov / var


def test_fit_matches_prometheus_and_stays_bounded() -> None:
    trend = Trend(300.0)
    points = [(1_700_000_000.0 + 10 * i, 20 + 0.01 * i + (0.3 if i % 3 == 0 else 0.0)) for i in range(45)]
    for t, y in points:
        trend.add(t, y)
    window = [(t, y) for t, y in points if t >= points[-1][0] - 300]
    assert math.isclose(trend.slope() or 0.0, _prometheus_deriv(window), rel_tol=1e-9)
    assert trend.n == len(window)
    down = Trend(300.0)
    for i in range(31):
        down.add(10.0 * i, 1.0 - 0.001 * i)  # 0.1 % per 10 s: from 0.97 at the newest sample, 0 in 9700 s
    assert math.isclose(down.seconds_to(0.0) or 0.0, 9700.0, rel_tol=1e-6)
    assert down.seconds_to(2.0) == math.inf  # moving away
    flood = Trend(1e9)
    for i in range(MAX_POINTS * 3):
        flood.add(float(i), 1.0)
    assert flood.n == MAX_POINTS and len(flood.ts) == MAX_POINTS
    gap = Trend(300.0)
    gap.add(0.0, 1.0)
    gap.add(10.0, 1.0)
    gap.add(1e6, 5.0)  # a day later: the old points leave, the origin is re-based
    assert gap.n == 1 and gap.slope() is None
