"""An older distribution to install into: a Debian root made by debootstrap, kept in the cache, run in a chroot.

:func:`debian_root` debootstraps a suite (``bullseye``: Debian 11, glibc 2.31, Python 3.9 — the oldest suite
Debian's mirror still serves) once into ``$ROOMWATCH_CACHE/roots/<suite>-<arch>`` (default ``.cache/roots``),
with ``python3`` so the distribution's own, too-old Python is there as on a real machine. Another architecture
runs under qemu-user: :func:`ensure_binfmt` registers ``qemu-aarch64-static`` with the kernel (flag F, so the
chroot needs no copy of it). :func:`run_in_root` runs a script in a throw-away overlay of that root (the cached
root is never changed), in new mount and network namespaces: no network at all but a loopback.

Needs root, debootstrap and (for arm64) qemu-user-static; ``./dev test`` installs them (qemu-user-static
with ``ROOMWATCH_FOREIGN_ARCH=1``). Where they are
missing, or the mirror cannot be reached for a first debootstrap, the test fails under
``ROOMWATCH_REQUIRE_PEERS=1`` (CI, ``./dev test``) instead of skipping.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, require_binary

MIRROR = os.environ.get("ROOMWATCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
QEMU = {"aarch64": ("arm64", "qemu-aarch64", "/usr/lib/binfmt.d/qemu-aarch64.conf")}
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def unavailable(msg: str) -> None:
    """Fail under ROOMWATCH_REQUIRE_PEERS=1 (CI must run these tests), else skip."""
    if os.environ.get("ROOMWATCH_REQUIRE_PEERS") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def cache_dir() -> Path:
    return Path(os.environ.get("ROOMWATCH_CACHE") or ROOT / ".cache")


def host_arch() -> str:
    return platform.machine()


def ensure_binfmt(arch: str) -> None:
    """Let the kernel run ``arch`` binaries through qemu-user (registers qemu-<arch>-static once per boot)."""
    if arch == host_arch():
        return
    _deb, name, conf = QEMU[arch]
    require_binary(f"{name}-static")
    entry = BINFMT / name
    if entry.exists() and entry.read_text().startswith("enabled"):
        return
    if os.geteuid() != 0:
        unavailable(f"running {arch} binaries needs binfmt_misc registration, which needs root")
    if not (BINFMT / "register").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True, text=True,
                           check=False)
        if r.returncode != 0:
            unavailable(f"cannot mount binfmt_misc for qemu-user ({arch}): {r.stderr.strip()}")
    if not Path(conf).exists():
        unavailable(f"{conf} missing: apt-get install qemu-user-static")
    try:
        (BINFMT / "register").write_text(Path(conf).read_text().strip())
    except OSError as exc:
        if not entry.exists():
            unavailable(f"cannot register {name} with binfmt_misc: {exc}")


def debian_root(suite: str, arch: str) -> Path:
    """A debootstrapped ``suite`` for ``arch`` (minbase + python3 + ca-certificates), made once and cached."""
    deb_arch = QEMU[arch][0] if arch in QEMU else "amd64"
    root = cache_dir() / "roots" / f"{suite}-{deb_arch}"
    if (root / ".roomwatch-ready").exists():
        return root
    if os.geteuid() != 0:
        unavailable("debootstrap and chroot need root")
    require_binary("debootstrap")
    ensure_binfmt(arch)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "w") as lock:  # another run sharing the cache may be at it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".roomwatch-ready").exists():
            _debootstrap(suite, deb_arch, root)
    return root


def _debootstrap(suite: str, deb_arch: str, root: Path) -> None:
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.monotonic()
    r = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,ca-certificates", f"--arch={deb_arch}",
                        suite, str(partial), MIRROR], capture_output=True, text=True, timeout=1800, check=False)
    if r.returncode != 0:
        log = (partial / "debootstrap" / "debootstrap.log")
        tail = log.read_text()[-2000:] if log.exists() else r.stdout[-2000:] + r.stderr[-2000:]
        shutil.rmtree(partial, ignore_errors=True)
        unavailable(f"debootstrap {suite} {deb_arch} from {MIRROR} failed (network? mirror?):\n{tail}")
    # The root's apt and cache are never used here: drop them (smaller cache, faster overlay).
    shutil.rmtree(partial / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (partial / ".roomwatch-ready").write_text(f"{suite} {deb_arch} {time.monotonic() - started:.0f}s\n")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    print(f"\n[figure] debootstrap {suite} {deb_arch} (first run, kept in {root.parent}): "
          f"{time.monotonic() - started:.0f} s")


#: Runs as root inside `unshare -m -n`: an overlay of the cached root (changes land in a tmpfs), its own /proc,
#: the host's /dev, loopback up, then the script in a chroot with a clean environment.
_ENTER = r"""
set -eu
base="$1"; lower="$2"; script="$3"; shift 3
mount -t tmpfs tmpfs "$base"
mkdir -p "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$base/upper,workdir=$base/work" "$base/root"
mount -t proc proc "$base/root/proc"
mount --rbind /dev "$base/root/dev"
mount -t tmpfs tmpfs "$base/root/tmp"
ip link set lo up
for f in "$@"; do cp -a "$f" "$base/root/tmp/"; done
cp "$script" "$base/root/tmp/steps.sh"
if [ "$INSIDE" = 1 ]; then
  exec chroot "$base/root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 bash /tmp/steps.sh
fi
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 R="$base/root" bash "$base/root/tmp/steps.sh"
"""


def run_in_root(root: Path, script: str, files: list[Path], work: Path, timeout: float = 900, inside: bool = True) -> str:
    """Run ``script`` (bash) in a throw-away overlay of ``root`` with ``files`` in /tmp, with no network; its output.

    ``inside=False``: the script runs on this machine's side (in the same namespaces), the overlay's root in
    ``$R`` — for a tool of this machine that works on a root (``rpm --root``). Fails the test with the whole
    output when the script exits non-zero.
    """
    require_binary("unshare")
    require_binary("ip")
    base = work / "ovl"
    base.mkdir()
    (work / "enter.sh").write_text(_ENTER)
    (work / "steps.sh").write_text(script)
    r = subprocess.run(["unshare", "-m", "-n", "--propagation", "private", "bash", str(work / "enter.sh"), str(base),
                        str(root), str(work / "steps.sh"), *map(str, files)],
                       capture_output=True, text=True, timeout=timeout, check=False,
                       env={**os.environ, "INSIDE": "1" if inside else "0"})
    if r.returncode != 0 and "overlay" in r.stderr and "mount" in r.stderr:
        unavailable(f"no overlayfs here: {r.stderr.strip()}")
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def report(out: str) -> dict[str, str]:
    """The ``## key value`` lines a script printed, as a dict."""
    got = {}
    for line in out.splitlines():
        if line.startswith("## "):
            key, _, value = line[3:].partition(" ")
            got[key] = value.strip()
    return got
