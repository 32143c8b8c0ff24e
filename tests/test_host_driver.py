"""The host driver (psutil) on this machine, with fake hwmon sensors where the VM has none."""

from __future__ import annotations

import asyncio
import logging
from collections import namedtuple
from typing import Any

from roomwatch.drivers.host import HostConfig, HostDriver


class _Ctx:
    log = logging.getLogger("test")

    def emit(self, *a: Any) -> None: ...

    def shared(self, key: Any, factory: Any) -> Any:
        return factory()


def _by_metric(readings: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in readings:
        out.setdefault(r.metric, []).append(r)
    return out


async def test_reads_cpu_memory_disks_network_load() -> None:
    d = HostDriver(HostConfig(), _Ctx())
    first = _by_metric(await d.poll())
    # CPU usage needs two samples: absent on the first poll rather than a made-up 0.
    assert "roomwatch_host_cpu_usage_ratio" not in first
    await asyncio.sleep(0.3)  # let some CPU time pass between the two reads
    second = _by_metric(await d.poll())
    assert 0.0 <= second["roomwatch_host_cpu_usage_ratio"][0].value <= 1.0
    assert second["roomwatch_host_memory_total_bytes"][0].value > second["roomwatch_host_memory_available_bytes"][0].value > 0
    assert any(r.labels["mountpoint"] == "/" for r in second["roomwatch_host_filesystem_size_bytes"])
    nics = {r.labels["interface"] for r in second["roomwatch_host_network_receive_bytes_total"]}
    assert "lo" not in nics  # excluded by default
    assert second["roomwatch_host_load1"][0].value >= 0
    assert second["roomwatch_host_boot_time_seconds"][0].value > 1e9


async def test_hardware_temperatures_when_present() -> None:
    T = namedtuple("T", "label current high critical")
    d = HostDriver(HostConfig(), _Ctx())
    d.sensors_temperatures = lambda: {"coretemp": [T("Package id 0", 48.0, 80.0, 100.0), T("", 45.5, 80.0, 100.0)],
                                      "acpitz": [T("", -273.0, None, None)]}
    temps = _by_metric(await d.poll())["roomwatch_host_hardware_temperature_celsius"]
    assert {(r.labels["chip"], r.labels["sensor"], r.value) for r in temps} == {
        ("coretemp", "Package id 0", 48.0), ("coretemp", "1", 45.5)}  # the -273 placeholder is not a reading


async def test_no_sensors_means_no_temperature_series() -> None:
    d = HostDriver(HostConfig(), _Ctx())
    d.sensors_temperatures = dict
    assert "roomwatch_host_hardware_temperature_celsius" not in _by_metric(await d.poll())


async def test_filters() -> None:
    d = HostDriver(HostConfig(mountpoints=["/nonexistent*"], interfaces=["lo"], exclude_interfaces=[]), _Ctx())
    got = _by_metric(await d.poll())
    assert "roomwatch_host_filesystem_size_bytes" not in got
    assert {r.labels["interface"] for r in got["roomwatch_host_network_receive_bytes_total"]} == {"lo"}
