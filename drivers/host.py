"""``host`` driver: the machine the agent runs on, read with psutil.

CPU usage, load, memory, swap, filesystems, network counters, boot time and
hardware temperatures where the host exposes them (``/sys/class/hwmon``; VMs
and CI usually have none, and then no temperature series exists at all).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field

from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import DeviceConfig, DeviceError, Driver, Reading
from roomwatch.drivers.registry import register

# Filesystems that hold no data worth watching (kernel views, RAM, images).
_PSEUDO_FS = frozenset(
    {"tmpfs", "devtmpfs", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "nsfs", "autofs", "devpts",
     "debugfs", "tracefs", "securityfs", "pstore", "bpf", "mqueue", "hugetlbfs", "configfs", "fusectl",
     "binfmt_misc", "ramfs", "efivarfs", "rpc_pipefs", "nfsd", "iso9660"}
)


class HostConfig(DeviceConfig):
    """Options of the ``host`` driver (all optional)."""

    driver: Literal["host"] = "host"
    name: str = Field(default="host", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    mountpoints: list[str] = Field(default_factory=lambda: ["*"], description="glob patterns of mount points to report")
    exclude_mountpoints: list[str] = Field(default_factory=lambda: ["/boot/efi", "/snap/*", "/var/lib/docker/*"])
    interfaces: list[str] = Field(default_factory=lambda: ["*"], description="glob patterns of network interfaces")
    exclude_interfaces: list[str] = Field(default_factory=lambda: ["lo", "veth*", "docker*", "br-*"])
    temperatures: bool = True


# One small pool of its own: a hung statfs must not eat the loop's default executor.
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="host-driver")


def _match(name: str, include: list[str], exclude: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(fnmatch.fnmatchcase(name, p) for p in exclude)


@register
class HostDriver(Driver):
    """psutil readings of the local host."""

    name = "host"
    config_model = HostConfig
    requires = ("psutil",)

    #: Seam for tests: VMs have no hwmon sensors, so tests substitute a function returning fake ones.
    sensors_temperatures: Callable[[], dict[str, Any]] | None = None

    def __init__(self, config: HostConfig, context: Any):
        super().__init__(config, context)
        self._prev_cpu: Any = None
        self._inflight: concurrent.futures.Future[list[Reading]] | None = None

    async def poll(self) -> Sequence[Reading]:
        # psutil reads /proc and statfs(): fast, but statfs on a dead NFS mount blocks forever,
        # so read in a thread and refuse to stack a new read on one that is still stuck.
        if self._inflight is not None and not self._inflight.done():
            raise DeviceError("previous host read is still blocked (a hung filesystem mount?)")
        loop = asyncio.get_running_loop()
        self._inflight = _EXECUTOR.submit(self._read)
        return await asyncio.wrap_future(self._inflight, loop=loop)

    def _read(self) -> list[Reading]:
        import psutil

        cfg: HostConfig = self.config
        out: list[Reading] = []
        add = out.append

        times = psutil.cpu_times()
        if self._prev_cpu is not None:
            busy_prev = sum(self._prev_cpu) - self._prev_cpu.idle - getattr(self._prev_cpu, "iowait", 0.0)
            busy_now = sum(times) - times.idle - getattr(times, "iowait", 0.0)
            total = sum(times) - sum(self._prev_cpu)
            if total > 0:
                add(Reading(v.HOST_CPU_USAGE, min(1.0, max(0.0, (busy_now - busy_prev) / total))))
        self._prev_cpu = times
        add(Reading(v.HOST_CPU_COUNT, float(psutil.cpu_count() or 0)))

        try:
            l1, l5, l15 = psutil.getloadavg()
            add(Reading(v.HOST_LOAD1, l1))
            add(Reading(v.HOST_LOAD5, l5))
            add(Reading(v.HOST_LOAD15, l15))
        except (OSError, AttributeError):
            pass

        mem = psutil.virtual_memory()
        add(Reading(v.HOST_MEMORY_TOTAL, float(mem.total)))
        add(Reading(v.HOST_MEMORY_AVAILABLE, float(mem.available)))
        add(Reading(v.HOST_SWAP_USED, float(psutil.swap_memory().used)))
        add(Reading(v.HOST_BOOT_TIME, float(psutil.boot_time())))

        seen: set[str] = set()
        for part in psutil.disk_partitions(all=False):
            mp = part.mountpoint
            if part.fstype in _PSEUDO_FS or mp in seen or not _match(mp, cfg.mountpoints, cfg.exclude_mountpoints):
                continue
            seen.add(mp)
            try:
                usage = psutil.disk_usage(mp)
            except OSError:
                continue  # unmounted between listing and statfs, or no permission
            labels = {"mountpoint": mp, "fstype": part.fstype}
            add(Reading(v.HOST_FS_SIZE, float(usage.total), labels))
            add(Reading(v.HOST_FS_AVAIL, float(usage.free), labels))

        for nic, c in psutil.net_io_counters(pernic=True).items():
            if not _match(nic, cfg.interfaces, cfg.exclude_interfaces):
                continue
            labels = {"interface": nic}
            add(Reading(v.HOST_NET_RX, float(c.bytes_recv), labels))
            add(Reading(v.HOST_NET_TX, float(c.bytes_sent), labels))
            add(Reading(v.HOST_NET_RX_ERR, float(c.errin), labels))
            add(Reading(v.HOST_NET_TX_ERR, float(c.errout), labels))

        if cfg.temperatures:
            out.extend(self._temperatures(psutil))
        return out

    def _temperatures(self, psutil: Any) -> list[Reading]:
        reader = self.sensors_temperatures or getattr(psutil, "sensors_temperatures", None)
        if reader is None:
            return []
        try:
            chips = reader() or {}
        except (OSError, RuntimeError):
            return []
        out = []
        for chip, entries in chips.items():
            for i, entry in enumerate(entries):
                current = getattr(entry, "current", None)
                # Some boards report -273 or 0 for absent probes; those are not readings.
                if current is None or not -40.0 < float(current) < 150.0:
                    continue
                sensor = getattr(entry, "label", "") or str(i)
                out.append(Reading(v.HOST_HW_TEMPERATURE, float(current), {"chip": chip, "sensor": sensor}))
        return out
