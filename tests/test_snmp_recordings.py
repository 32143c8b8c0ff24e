"""Every SNMP recording, served by a real snmpsim, read by the driver: readings equal the truth file.

Two sources, both read from their folders at collection time (a new recording
is tested without code changes):

* ``<fixtures>/devices/snmp/*.snmprec`` — recordings of real devices, with
  ``<fixtures>/devices/truth/<name>.json`` (skipped, saying why, when the
  shared fixtures are not there);
* ``tests/data/snmp/*.snmprec`` — small hand-written ones with a ``.json`` next
  to them in the same format, so a fresh clone still tests the driver.

Rules checked: each value the truth gives is reported, converted to the
documented unit (docs/metrics.md) (percent → ratio …), within tolerance (or inside the truth's
``accept`` range); a quantity the truth marks ``available: false`` or null is
absent (never a made-up 0); an ``uncertain: true`` value may be dropped but
not changed (environment sensors must still be reported); every reading the
driver emits has its truth entry: no UPS metric (an environment monitor's
truth has ``"metrics": {}``), temperature, humidity or contact sensor is
invented. Quantities the shared truth format does not record (UPS output
voltage, battery install date) come from ``tests/data/truth-supplement.json``
(see :mod:`tests.truth`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import Reading
from roomwatch.drivers.snmp import SnmpConfig, SnmpDriver
from tests.helpers import ROOT, fixtures_dir
from tests.peers.snmpsim import Snmpsim, start_snmpsim
from tests.truth import (
    BATTERY_AGE_TOLERANCE_S,
    BATTERY_INSTALLED,
    SUPPLEMENT_KEYS,
    battery_age_seconds,
    judges,
    load_truth,
)

OWN = ROOT / "tests" / "data" / "snmp"

#: truth key → (metric, factor from the truth's unit to the metric's (docs/metrics.md), sensor label or None)
METRIC_KEYS: dict[str, tuple[str, float, str | None]] = {
    "battery_charge_percent": (v.UPS_BATTERY_CHARGE, 0.01, None),
    "battery_runtime_seconds": (v.UPS_BATTERY_RUNTIME, 1.0, None),
    "on_battery": (v.UPS_ON_BATTERY, 1.0, None),
    "low_battery": (v.UPS_BATTERY_LOW, 1.0, None),
    "replace_battery": (v.UPS_BATTERY_REPLACE, 1.0, None),
    "input_voltage_v": (v.UPS_INPUT_VOLTAGE, 1.0, None),
    "output_voltage_v": (v.UPS_OUTPUT_VOLTAGE, 1.0, None),
    "output_load_percent": (v.UPS_LOAD, 0.01, None),
    "battery_temperature_c": (v.UPS_BATTERY_TEMPERATURE, 1.0, None),
    "battery_voltage_v": (v.UPS_BATTERY_VOLTAGE, 1.0, None),
    "ups_temperature_c": (v.UPS_TEMPERATURE, 1.0, None),
    BATTERY_INSTALLED: (v.UPS_BATTERY_AGE, 1.0, None),
    # The UPS card's own ambient probe is a room temperature (docs/snmp.md).
    "ups_ambient_temperature_c": (v.TEMPERATURE, 1.0, "ambient"),
}
#: Enum names the truth records for people; docs/metrics.md has no metric for them (their 0/1 meaning is
#: checked through on_battery / low_battery).
INFORMATIONAL = {"output_source", "battery_abm_status", "battery_status", "ups_status_flags"}
#: Contact states that say whether the contact is closed (roomwatch_contact_closed).
CLOSED_STATES = {"closed": 1.0, "on": 1.0, "open": 0.0, "off": 0.0}
#: A truth contact's ``kind`` when the device says what the input is → the metric it is reported as.
TYPED_CONTACTS = {"door": v.DOOR_OPEN, "leak": v.WATER_LEAK, "water": v.WATER_LEAK, "smoke": v.SMOKE}
#: Checked sensor by sensor against the truth's ``environment`` lists (and ``ups_ambient_temperature_c``).
ENVIRONMENT_METRICS = {v.TEMPERATURE, v.HUMIDITY, v.CONTACT_ALARM, v.CONTACT_CLOSED, *TYPED_CONTACTS.values()}
#: Identity labels, not a measurement: the truth format has nothing to compare them with. (Status
#: flags are checked where a hand-written truth lists them: ``ups_status_flags``.)
IDENTITY_METRICS = {v.UPS_INFO, v.UPS_STATUS_FLAG}


def _cases() -> list[Any]:
    cases = [pytest.param(p, p.with_suffix(".json"), id=f"own-{p.stem}") for p in sorted(OWN.glob("*.snmprec"))]
    fx = fixtures_dir()
    if fx is None:
        cases.append(pytest.param(None, None, id="fixtures", marks=pytest.mark.skip(
            reason="device recordings not found: set ROOMWATCH_FIXTURES or put them in ../shared/fixtures")))
    else:
        cases += [pytest.param(p, fx / "devices" / "truth" / f"{p.stem}.json", id=p.stem)
                  for p in sorted((fx / "devices" / "snmp").glob("*.snmprec"))]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpsim]:
    """One snmpsim serving every recording (community = file name), copied to a temp dir."""
    recordings = {c.values[0].stem: c.values[0] for c in CASES if c.values[0] is not None}
    daemon = start_snmpsim(tmp_path_factory.mktemp("snmpsim"), recordings)
    yield daemon
    daemon.stop()


class _Ctx:
    log = logging.getLogger("roomwatch.driver.test")

    def __init__(self) -> None:
        self.objects: dict[Any, Any] = {}

    def emit(self, *a: Any) -> None: ...

    def shared(self, key: Any, factory: Any) -> Any:
        if key not in self.objects:
            self.objects[key] = factory()
        return self.objects[key]


async def poll_once(port: int, **options: Any) -> tuple[list[Reading], int]:
    """One poll of a device with ``options`` (profile auto by default); returns (readings, PDUs sent)."""
    ctx = _Ctx()
    driver = SnmpDriver(SnmpConfig.model_validate({"name": "dut", "driver": "snmp", "host": "127.0.0.1", "port": port,
                                                   **options}), ctx)
    try:
        await driver.start()
        readings = list(await driver.poll())
        return readings, driver._target.requests
    finally:
        await driver.stop()
        for obj in ctx.objects.values():
            await obj.aclose()


async def read_recording(port: int, community: str, **options: Any) -> list[Reading]:
    """One v2c poll of ``community`` on the simulator, as the agent would run it (profile auto)."""
    return (await poll_once(port, community=community, **options))[0]


def _close(got: float, want: float, entry: dict[str, Any], factor: float) -> bool:
    accept = entry.get("accept")
    if accept:
        return accept["min"] * factor - 1e-9 <= got <= accept["max"] * factor + 1e-9
    tol = float(entry.get("tolerance", 0.0)) * factor
    return math.isclose(got, want, rel_tol=1e-6, abs_tol=max(tol, 1e-6))


def _expected(entry: dict[str, Any], factor: float) -> float:
    if entry.get("unit") == "date":  # battery_installed_date: the age is measured from it
        return battery_age_seconds(entry)
    value = entry["value"]
    return (1.0 if value else 0.0) if isinstance(value, bool) else float(value) * factor


def _tolerant(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry, with a day of tolerance for a battery age (the clock moves between poll and check)."""
    return {**entry, "tolerance": BATTERY_AGE_TOLERANCE_S} if entry.get("unit") == "date" else entry


def _lacks(entry: dict[str, Any]) -> bool:
    return entry.get("available") is False or entry.get("value") is None


def _matches(sensor: str, name: str) -> bool:
    # Two probes with the same name are told apart by their index: "Unknown #1", "Unknown #2".
    return sensor == name or sensor.startswith(f"{name} #")


def _phase_and_flag_problems(truth: dict[str, Any], phased: dict[tuple[str, str], float], flags: list[str]) -> list[str]:
    """Checks only hand-written truth files make: ``phases`` of an entry (L1..L3 values; ``{}`` = no phase
    label at all) and ``ups_status_flags`` (the roomwatch_ups_status_flag series expected)."""
    problems = []
    metrics = truth.get("metrics", {})
    for key, entry in metrics.items():
        if key not in METRIC_KEYS or "phases" not in entry:
            continue
        metric, factor, _ = METRIC_KEYS[key]
        want = {p: float(x) * factor for p, x in (entry["phases"] or {}).items()}
        got = {p: x for (m, p), x in phased.items() if m == metric}
        if set(got) != set(want) or any(not math.isclose(got[p], want[p], abs_tol=1e-6) for p in want):
            problems.append(f"{key}: phases {got}, expected {want}")
    if "ups_status_flags" in metrics and sorted(flags) != sorted(metrics["ups_status_flags"]["value"]):
        problems.append(f"status flags {sorted(flags)}, expected {sorted(metrics['ups_status_flags']['value'])}")
    return problems


def check_against_truth(readings: list[Reading], truth: dict[str, Any]) -> list[str]:
    """Every rule of the module docstring; returns the problems (empty when all hold)."""
    problems: list[str] = []
    by_key: dict[tuple[str, str | None], list[float]] = {}
    phased: dict[tuple[str, str], float] = {}
    flags: list[str] = []
    for r in readings:
        assert r.metric in v.METRICS, f"{r.metric} is not in the vocabulary"
        labels = r.labels or {}
        if r.metric == v.UPS_STATUS_FLAG:
            flags.append(labels.get("flag", ""))
            continue
        phase = labels.get("phase")
        if phase is not None:
            if (r.metric, phase) in phased:
                problems.append(f"{r.metric}{{phase={phase!r}}} reported twice")
            phased[(r.metric, phase)] = r.value
            if phase != "L1":  # the truth's single value is line 1 (phase 1 of a three-phase unit)
                continue
        by_key.setdefault((r.metric, labels.get("sensor")), []).append(r.value)
    problems += _phase_and_flag_problems(truth, phased, flags)
    for key, values in by_key.items():
        if len(values) > 1 and key[0] != v.UPS_INFO:
            problems.append(f"{key} reported {len(values)} times")

    for key, entry in truth.get("metrics", {}).items():
        if key in INFORMATIONAL:
            continue
        if key not in METRIC_KEYS:
            problems.append(f"truth key {key!r} has no mapping in METRIC_KEYS: add it")
            continue
        metric, factor, sensor = METRIC_KEYS[key]
        got = by_key.get((metric, sensor))
        if _lacks(entry):
            if got is not None:
                problems.append(f"{key}: the device lacks it but {metric} = {got[0]} was reported")
        elif got is None:
            if not entry.get("uncertain"):  # a value the device flags as doubtful may be dropped …
                problems.append(f"{key}: expected {metric} = {_expected(entry, factor)}, not reported")
        elif not _close(got[0], _expected(entry, factor), _tolerant(entry), factor):  # … never changed
            problems.append(f"{key}: {metric} = {got[0]}, expected {_expected(entry, factor)}")

    # Strict: a UPS (or any other non-environment) reading needs a truth entry with a value.
    covered = {(METRIC_KEYS[k][0], METRIC_KEYS[k][2]) for k, e in truth.get("metrics", {}).items()
               if k in METRIC_KEYS and not _lacks(e)}
    unjudged = {(METRIC_KEYS[k][0], METRIC_KEYS[k][2]) for k in SUPPLEMENT_KEYS if not judges(truth, k)}
    for (metric, sensor), values in by_key.items():
        if metric in ENVIRONMENT_METRICS or metric in IDENTITY_METRICS or (metric, sensor) in covered | unjudged:
            continue
        shown = metric if sensor is None else f"{metric}{{sensor={sensor!r}}}"
        problems.append(f"{shown} = {values[0]} is not in the truth file (invented?)")

    env = truth.get("environment", {})
    ambient = [("ambient", e) for k, e in truth.get("metrics", {}).items() if k == "ups_ambient_temperature_c"]
    for metric, factor, entries in ((v.TEMPERATURE, 1.0, [(e["name"], e) for e in env.get("temperatures", [])] + ambient),
                                    (v.HUMIDITY, 0.01, [(e["name"], e) for e in env.get("humidity", [])])):
        reported = {s: vals[0] for (m, s), vals in by_key.items() if m == metric}
        for name, entry in entries:
            found = [s for s in reported if s is not None and _matches(s, name)]
            if _lacks(entry):
                if found:
                    problems.append(f"{metric}{{sensor={found[0]!r}}}: the device has no reading, yet it was reported")
                continue
            if not found:
                problems.append(f"{metric}{{sensor={name!r}}} not reported (expected {_expected(entry, factor)})")
                continue
            got = reported.pop(found[0])
            if not entry.get("uncertain") and not _close(got, _expected(entry, factor), entry, factor):
                problems.append(f"{metric}{{sensor={found[0]!r}}} = {got}, expected {_expected(entry, factor)}")
        for sensor in reported:
            if (metric, sensor) in {(METRIC_KEYS[k][0], METRIC_KEYS[k][2]) for k in truth.get("metrics", {})
                                    if k in METRIC_KEYS and not _lacks(truth["metrics"][k])}:
                continue
            problems.append(f"{metric}{{sensor={sensor!r}}} is not in the truth file (invented?)")

    # A contact the device itself types (NetBotz door switch, HW group WLD leak cable, NetBotz 50 smoke
    # detector) is a door/leak/smoke reading, judged by the entry's alarm state; raw dry contacts are
    # judged as contact_closed / contact_alarm below.
    typed = [e for e in env.get("contacts", []) if e.get("kind") in TYPED_CONTACTS]
    for metric in set(TYPED_CONTACTS.values()):
        reported = {s: vals[0] for (m, s), vals in by_key.items() if m == metric}
        for entry in (e for e in typed if TYPED_CONTACTS[e["kind"]] == metric):
            found = [s for s in reported if s is not None and _matches(s, entry["name"])]
            want = entry.get("alarm")
            if want is None:
                if found:
                    problems.append(f"{metric}{{sensor={found[0]!r}}}: the device has no reading, yet it was reported")
                continue
            if not found:
                problems.append(f"{metric}{{sensor={entry['name']!r}}} not reported (expected {float(want)})")
                continue
            got = reported.pop(found[0])
            if got != float(want):
                problems.append(f"{metric}{{sensor={found[0]!r}}} = {got}, expected {float(want)}")
        problems += [f"{metric}{{sensor={s!r}}} is not in the truth file (invented?)" for s in reported]
    for metric in (v.CONTACT_ALARM, v.CONTACT_CLOSED):
        reported = {s: vals[0] for (m, s), vals in by_key.items() if m == metric}
        for entry in (e for e in env.get("contacts", []) if e.get("kind") not in TYPED_CONTACTS):
            found = [s for s in reported if s is not None and _matches(s, entry["name"])]
            if metric == v.CONTACT_ALARM:
                want = entry.get("alarm")
                want = None if want is None else (1.0 if want else 0.0)
            else:
                want = CLOSED_STATES.get(str(entry.get("value")))
            if want is None:
                if found:
                    problems.append(f"{metric}{{sensor={found[0]!r}}}: the truth does not know this state")
                continue
            if not found:
                problems.append(f"{metric}{{sensor={entry['name']!r}}} not reported (expected {want})")
                continue
            got = reported.pop(found[0])
            if not entry.get("uncertain") and got != want:
                problems.append(f"{metric}{{sensor={found[0]!r}}} = {got}, expected {want}")
        problems += [f"{metric}{{sensor={s!r}}} is not in the truth file (invented?)" for s in reported]
    return problems


@pytest.mark.peer("snmpsim")
@pytest.mark.parametrize("client", ["builtin", "pysnmp"])
@pytest.mark.parametrize(("recording", "truth_file"), CASES)
async def test_recording_matches_truth(sim: Snmpsim, recording: Path, truth_file: Path, client: str) -> None:
    """``builtin`` reads v2c with the built-in client; ``pysnmp`` with pysnmp: both must match the truth."""
    truth = load_truth(truth_file)
    community = truth.get("access", {}).get("community", recording.stem)
    readings = await read_recording(sim.port, community, client=client)
    problems = check_against_truth(readings, truth)
    shown = "\n".join(f"  {r.metric}{dict(r.labels or {})} = {r.value}" for r in readings)
    assert not problems, "\n".join(problems) + f"\nreadings:\n{shown}"
    if truth.get("kind") == "ups":
        assert any(r.metric == v.UPS_ON_BATTERY for r in readings) or any(
            _lacks(e) for k, e in truth["metrics"].items() if k == "on_battery"), "a UPS must report on_battery"


def test_checker_catches_wrong_and_invented_values() -> None:
    """The comparison itself must be able to fail (a test that cannot fail proves nothing)."""
    truth = {"metrics": {"battery_charge_percent": {"value": 80, "uncertain": False},
                         "low_battery": {"value": None, "available": False}},
             "environment": {"temperatures": [{"name": "T1", "value": 20, "uncertain": False}], "humidity": [],
                             "contacts": [{"name": "C1", "value": "open", "alarm": None}]}}
    good = [Reading(v.UPS_BATTERY_CHARGE, 0.8), Reading(v.TEMPERATURE, 20.0, {"sensor": "T1"}),
            Reading(v.CONTACT_CLOSED, 0.0, {"sensor": "C1"})]
    assert check_against_truth(good, truth) == []
    assert check_against_truth([Reading(v.UPS_BATTERY_CHARGE, 80.0), *good[1:]], truth)  # percent, not ratio
    assert check_against_truth([*good, Reading(v.UPS_BATTERY_LOW, 0.0)], truth)  # made-up 0
    assert check_against_truth([*good, Reading(v.TEMPERATURE, 21.0, {"sensor": "T2"})], truth)  # invented sensor
    assert check_against_truth([*good, Reading(v.CONTACT_ALARM, 0.0, {"sensor": "C1"})], truth)  # unknown alarm state
    assert check_against_truth(good[:1], truth)  # missing sensor


def test_checker_refuses_readings_the_truth_file_lacks() -> None:
    """Strictness: a reading with no truth entry fails, whether the truth never mentions the quantity
    (an environment monitor's ``"metrics": {}``) or the driver reads a value the truth has differently."""
    env_truth: dict[str, Any] = {"metrics": {}, "environment": {
        "temperatures": [{"name": "T1", "value": 20, "uncertain": False}], "humidity": [], "contacts": []}}
    room = [Reading(v.TEMPERATURE, 20.0, {"sensor": "T1"})]
    assert check_against_truth(room, env_truth) == []
    assert check_against_truth([*room, Reading(v.UPS_ON_BATTERY, 0.0)], env_truth)  # a UPS metric on an env monitor
    # output voltage has no key in the shared format: judged for recordings the supplement covers …
    assert check_against_truth([*room, Reading(v.UPS_OUTPUT_VOLTAGE, 230.0)], {**env_truth, "supplemented": True})
    # … not for a recording added to the shared folder since (tested without code changes)
    assert check_against_truth([*room, Reading(v.UPS_OUTPUT_VOLTAGE, 230.0)], env_truth) == []
    assert check_against_truth([*room, Reading(v.UPS_TEMPERATURE, 30.0)], env_truth)  # the UPS's own temperature
    assert check_against_truth([*room, Reading(v.DOOR_OPEN, 0.0)], env_truth)  # not a quantity the truth covers

    ups_truth: dict[str, Any] = {"metrics": {
        "output_voltage_v": {"value": 230.0, "uncertain": False},
        "ups_temperature_c": {"value": 31.0, "uncertain": False},
        "battery_runtime_seconds": {"value": 1200, "uncertain": True},
        BATTERY_INSTALLED: {"value": "2022-03-15", "unit": "date", "uncertain": False}}, "environment": {}}
    age = battery_age_seconds(ups_truth["metrics"][BATTERY_INSTALLED])
    ups = [Reading(v.UPS_OUTPUT_VOLTAGE, 230.0), Reading(v.UPS_TEMPERATURE, 31.0), Reading(v.UPS_BATTERY_AGE, age),
           Reading(v.UPS_INFO, 1.0, {"model": "X"})]
    assert check_against_truth(ups, ups_truth) == []  # an uncertain value may be dropped
    assert check_against_truth([*ups, Reading(v.UPS_BATTERY_RUNTIME, 1200.0)], ups_truth) == []
    assert check_against_truth([*ups, Reading(v.UPS_BATTERY_RUNTIME, 60.0)], ups_truth)  # … but not changed
    assert check_against_truth([Reading(v.UPS_OUTPUT_VOLTAGE, 23.0), *ups[1:]], ups_truth)  # tenths read as volts
    assert check_against_truth([ups[0], Reading(v.UPS_TEMPERATURE, 3.1), *ups[2:]], ups_truth)
    assert check_against_truth([*ups[:2], Reading(v.UPS_BATTERY_AGE, age + 400 * 86400), ups[3]], ups_truth)
    assert check_against_truth(ups[1:], ups_truth)  # output voltage not reported
