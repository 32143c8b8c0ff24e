"""``profile: auto`` over every profile file: sysObjectID first, then which MIB answers; and the schema additions.

The choice logic is tested with fakes for the two SNMP operations it uses (a
full read, one GETNEXT step); the recordings with a generic sysObjectID
(tests/data/snmp/xppc-3phase-generic, huawei-ups5000-generic) exercise it
against snmpsim, and :func:`test_generic_sysobjectid_devices_are_found_by_probing`
checks which profile it picked and what it cost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import Reading
from roomwatch.drivers.snmp.autoselect import MAX_TRIES, choose, probe_order
from roomwatch.drivers.snmp.profile import OID, Profile, ProfileError, all_profiles, load_profiles, match_profile, parse_oid
from tests.helpers import ROOT
from tests.peers.snmpsim import Snmpsim, start_snmpsim
from tests.test_snmp_recordings import poll_once

GENERIC = parse_oid("1.3.6.1.4.1.8072.3.2.10")  # net-snmp on Linux


def _answering(*prefixes: OID) -> dict[OID, tuple[OID, Any] | None]:
    return {p: (p + (1, 0), 1) for p in prefixes}


def test_every_vendor_profile_is_found_by_its_own_probes() -> None:
    """Data-driven: each profile (also ones added later, e.g. environment monitors) wins when its probes answer."""
    profiles = all_profiles()
    for prof in profiles.values():
        if not prof.vendor_specific:
            continue
        order = probe_order(profiles, _answering(*prof.probe))
        assert order, prof.name
        top = [p for p in order if set(p.probe) & set(prof.probe) and p.vendor_specific]
        assert prof in top and order[0] in top, (prof.name, [p.name for p in order])


def test_every_match_prefix_leads_to_its_profile() -> None:
    profiles = all_profiles()
    for prof in profiles.values():
        for prefix in prof.match:
            chosen = match_profile(prefix + (1, 2), profiles)
            assert chosen is prof or any(len(m) > len(prefix) and m[:len(prefix)] == prefix for m in chosen.match), \
                (prof.name, chosen.name)


def test_vendor_mibs_rank_before_standard_ones() -> None:
    profiles = all_profiles()
    xppc, ups = profiles["xppc"], profiles["ups-mib"]
    order = probe_order(profiles, _answering(*xppc.probe, *ups.probe))
    assert [p.name for p in order][:1] == ["xppc"] and order[-1] is ups
    assert probe_order(profiles, _answering(*ups.probe)) == [ups]
    # An answer outside the probed subtree (GETNEXT ran past it) is no answer.
    past = {p: (parse_oid("1.3.6.1.6.3.1.1.4.1.0"), 1) for p in xppc.probe}
    assert probe_order(profiles, past) == []
    assert probe_order(profiles, dict.fromkeys(xppc.probe)) == []  # end of MIB


class _Device:
    """What choose() sees of a device: which profiles read something, which subtrees answer."""

    def __init__(self, readable: set[str], answering: Sequence[OID], step_fails: bool = False):
        self.readable = readable
        self.answers = _answering(*answering)
        self.step_fails = step_fails
        self.reads: list[str] = []
        self.steps = 0

    async def read(self, profile: Profile) -> list[Reading]:
        self.reads.append(profile.name)
        return [Reading(v.UPS_BATTERY_CHARGE, 1.0)] if profile.name in self.readable else []

    async def step(self, oids: Sequence[OID]) -> Mapping[OID, tuple[OID, Any] | None]:
        self.steps += 1
        if self.step_fails:
            raise TimeoutError("no answer to GETNEXT")
        return {o: self.answers.get(o) for o in oids}


async def test_choose_by_sysobjectid_without_probing() -> None:
    profiles = all_profiles()
    dev = _Device({"apc", "ups-mib"}, [])
    choice = await choose(profiles, parse_oid("1.3.6.1.4.1.318.1.3.27"), dev.read, dev.step)
    assert choice is not None and choice.profile.name == "apc" and dev.steps == 0 and dev.reads == ["apc"]


async def test_generic_sysobjectid_probes_and_prefers_the_vendor_mib() -> None:
    profiles = all_profiles()
    dev = _Device({"huawei", "ups-mib"}, [*profiles["huawei"].probe, *profiles["ups-mib"].probe])
    choice = await choose(profiles, GENERIC, dev.read, dev.step)
    assert choice is not None and choice.profile.name == "huawei" and dev.steps == 1
    assert "its MIB answers" in choice.how


async def test_a_matched_profile_without_readings_falls_back_to_probing() -> None:
    profiles = all_profiles()
    # sysObjectID says XPPC, but this card only fills UPS-MIB (an OEM card with a PPC sysObjectID).
    dev = _Device({"ups-mib"}, [*profiles["ups-mib"].probe])
    choice = await choose(profiles, parse_oid("1.3.6.1.4.1.935.1.1.1"), dev.read, dev.step)
    assert choice is not None and choice.profile.name == "ups-mib" and dev.reads == ["xppc", "ups-mib"]


async def test_probing_failures_and_dead_ends_are_bounded() -> None:
    profiles = all_profiles()
    dev = _Device({"ups-mib"}, [], step_fails=True)  # an agent that drops GETNEXT: UPS-MIB still gets its turn
    choice = await choose(profiles, GENERIC, dev.read, dev.step)
    assert choice is not None and choice.profile.name == "ups-mib"
    everything = [p for prof in profiles.values() for p in prof.probe]
    dev = _Device(set(), everything)  # every MIB "answers", none gives a reading
    assert await choose(profiles, GENERIC, dev.read, dev.step) is None
    assert len(dev.reads) <= MAX_TRIES + 1 and dev.steps == 1


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Any:
    own = ROOT / "tests" / "data" / "snmp"
    names = ("xppc-3phase-generic", "huawei-ups5000-generic", "ups-mib-tenths")
    daemon = start_snmpsim(tmp_path_factory.mktemp("snmpsim"), {n: own / f"{n}.snmprec" for n in names})
    yield daemon
    daemon.stop()


@pytest.mark.peer("snmpsim")
@pytest.mark.parametrize(("community", "profile"), [("xppc-3phase-generic", "xppc"),
                                                      ("huawei-ups5000-generic", "huawei"),
                                                      ("ups-mib-tenths", "ups-mib")])
async def test_generic_sysobjectid_devices_are_found_by_probing(sim: Snmpsim, community: str, profile: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roomwatch")
    readings, pdus = await poll_once(sim.port, community=community, client="builtin")
    chosen = [r.getMessage() for r in caplog.records if ": profile " in r.getMessage()]
    assert chosen and f"profile {profile} (" in chosen[-1], chosen
    assert readings
    # sysObjectID GET, the GETNEXT probe of every profile (a few PDUs) and at most a few full reads.
    assert pdus <= 2 + 3 + 3 * (MAX_TRIES + 1), pdus


# ----------------------------------------------------------------- schema additions


def _write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(("body", "message"), [
    ("name: x\npoints: [{metric: roomwatch_ups_status_flag, oid: 1.3.6.1.1.0, flag: OFF}]", "in quotes"),
    ("name: x\npoints: [{metric: roomwatch_ups_status_flag, oid: 1.3.6.1.1.0, flag: SMOKE}]", "is not one of"),
    ("name: x\npoints: [{metric: roomwatch_ups_load_ratio, oid: 1.3.6.1.1.0, flag: OB}]", "needs a flag"),
    ("name: x\npoints: [{metric: roomwatch_ups_load_ratio, oid: 1.3.6.1.1.0, phase: L4}]", "phase must be one of"),
    ("name: x\nalarms: [{entry: 1.3.6.1.2, column: 2, flags: {1.3.6.1.9: OFF}}]", "in quotes"),
    ("name: x\nalarms: [{entry: 1.3.6.1.2, column: 2, metrics: {roomwatch_ups_load_ratio: 1.3.6.1.9}}]", "0/1 metric"),
    ("name: x\nalarms: [{entry: 1.3.6.1.2}]", "integer column"),
    ("name: x\nscale: [{metrics: roomwatch_ups_input_voltage_volts, scale: 0}]", "positive number"),
    ("name: x\nscale: [{metrics: roomwatch_nope, scale: 0.1}]", "not in roomwatch/core/vocabulary.py"),
    ("name: x\nlines: {roomwatch_nope: 1.3.6.1.1.0}", "lines must map"),
    ("name: x\ninclude_first: [nowhere]", "unknown profile"),
    ("name: x\nprobe: [1.3.x]", "not a numeric OID"),
])
def test_bad_schema_additions_are_refused(tmp_path: Path, body: str, message: str) -> None:
    _write(tmp_path, "ups-mib.yaml", "name: ups-mib\npoints: []\n")
    _write(tmp_path, "bad.yaml", body)
    with pytest.raises(ProfileError, match=message):
        load_profiles(tmp_path)


def test_scale_rule_applies_to_the_named_cards_only(tmp_path: Path) -> None:
    _write(tmp_path, "ups-mib.yaml", "name: ups-mib\npoints:\n"
           "  - {metric: roomwatch_ups_input_voltage_volts, oid: 1.3.6.1.2.1.33.1.3.3.1.3.1}\n"
           "  - {metric: roomwatch_ups_on_battery, oid: 1.3.6.1.2.1.33.1.4.1.0, map: {3: 0, 5: 1}}\n")
    _write(tmp_path, "acme.yaml", "name: acme\nmatch: [1.3.6.1.4.1.99999]\ninclude: [ups-mib]\nscale:\n"
           "  - metrics: [roomwatch_ups_input_voltage_volts, roomwatch_ups_on_battery]\n"
           "    scale: 0.1\n    under: 1.3.6.1.2.1.33\n    sysobjectid: [1.3.6.1.4.1.99999.2]\n"
           "    note: ACME v2 cards send tenths of volts in upsInputVoltage (ACME release notes)\n")
    acme = load_profiles(tmp_path)["acme"]
    tenths = acme.for_device(parse_oid("1.3.6.1.4.1.99999.2.7"))
    assert [p.scale for p in tenths.points] == [0.1, 1.0]  # a status map is never scaled
    assert tenths.points[0].read(2313) == 231.3
    assert acme.for_device(parse_oid("1.3.6.1.4.1.99999.1")) is acme  # another card: the MIB's units
    assert acme.for_device(None) is acme
    assert acme.points[0].read(2313) == "out_of_range"


def test_include_first_puts_the_standard_mib_before_the_vendor_rows() -> None:
    liebert = all_profiles()["liebert-gp"]
    first_charge = next(p for p in liebert.points if p.metric == v.UPS_BATTERY_CHARGE)
    assert first_charge.oid == parse_oid("1.3.6.1.2.1.33.1.2.4.0")


@pytest.mark.peer("snmpsim")
def test_dropped_readings_reach_the_collector(sim: Snmpsim, agent_factory: Any, collector: Any) -> None:
    """A real agent reading the tenths-of-volts card pushes roomwatch_device_readings_dropped_total to a real
    collector (and serves it itself), lint-clean; the input voltage itself appears nowhere."""
    from tests.helpers import http_get, metric_value, wait_for
    from tests.peers.prometheus import promtool_check_metrics

    devices = [{"name": "ups-t", "driver": "snmp", "host": "127.0.0.1", "port": sim.port, "community": "ups-mib-tenths",
                "interval": "1s"}]
    _, url = agent_factory(collector.url, devices=devices)

    def dropped(base: str) -> Any:
        text = http_get(base + "/metrics")[1].decode()
        got = metric_value(text, v.DEVICE_READINGS_DROPPED, device="ups-t", metric=v.UPS_INPUT_VOLTAGE,
                           reason="out_of_range")
        return text if got is not None and got >= 1 else None

    agent_text = wait_for(lambda: dropped(url), timeout=20, what="the drop counter on the agent")
    collector_text = wait_for(lambda: dropped(collector.url), timeout=20, what="the drop counter at the collector")
    for text in (agent_text, collector_text):
        assert metric_value(text, v.UPS_INPUT_VOLTAGE, device="ups-t") is None
        assert metric_value(text, v.UPS_OUTPUT_VOLTAGE, device="ups-t") == 230.0
    done = promtool_check_metrics(agent_text.encode())
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
