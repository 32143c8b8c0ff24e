"""./dev package: the offline bundle installs with no network at all; the .deb installs, upgrades,
removes and purges in a throw-away copy of this machine; the .rpm carries the same tree.

The packages are built once per session (scripts/package.py; wheels cached in .cache/packaging).
The offline install runs under ``unshare -n`` (no network namespace but loopback, which is down);
the .deb under ``unshare -m -n`` in an overlay of / (nothing reaches the real system).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.helpers import require_binary
from tests.peers.debian_root import unavailable
from tests.peers.dist import builder, version

pytestmark = [pytest.mark.slow, pytest.mark.peer("dpkg-deb"), pytest.mark.timeout(900)]

WELL_KNOWN = b"s3cret-token"


def _version() -> str:
    return version()


def _unpack(dist: Path, arch: str, dest: Path) -> Path:
    with tarfile.open(dist / f"roomwatch-{_version()}-offline-{arch}.tar.gz") as tar:
        tar.extractall(dest, filter="data")
    return dest / f"roomwatch-{_version()}-offline-{arch}"


def _offline(*cmd: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """Run with no network at all: a fresh network namespace (only a down loopback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    return subprocess.run(["unshare", "-n", *cmd], capture_output=True, text=True, timeout=600, check=False,
                          env=env, **kw)


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def test_dist_has_every_kind_for_both_architectures(dist: Path) -> None:
    v = _version()
    names = {p.name for p in dist.iterdir()}
    assert {f"roomwatch-{v}-offline-x86_64.tar.gz", f"roomwatch-{v}-offline-aarch64.tar.gz",
            f"roomwatch_{v}-1_amd64.deb", f"roomwatch_{v}-1_arm64.deb",
            f"roomwatch-{v}-1.x86_64.rpm", f"roomwatch-{v}-1.aarch64.rpm"} <= names


def test_bundle_installs_with_no_network_and_no_well_known_secret(dist: Path, tmp_path: Path) -> None:
    """Offline, on this machine's own Python 3.11 (``--python``); then again with the bundle's Python (the default)."""
    bundle = _unpack(dist, "x86_64", tmp_path)
    prefix = tmp_path / "prefix"
    system_python = shutil.which("python3.11", path="/usr/bin")
    assert system_python, "Debian 12's python3.11"
    started = time.monotonic()
    r = _offline("bash", str(bundle / "install.sh"), "--prefix", str(prefix), "--no-systemd", "--python", system_python)
    print(f"\n[figure] offline install (unshare -n, --prefix, the system's Python): {time.monotonic() - started:.1f} s")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (prefix / "bin" / "python").resolve() == Path(system_python).resolve()
    assert not (prefix / "python").exists()
    rw = prefix / "bin" / "roomwatch"
    assert _offline(str(rw), "--version").stdout.strip() == f"roomwatch {_version()}"
    tok = _offline(str(rw), "gen-token")
    assert tok.returncode == 0 and re.search(r"^token_hash: sha256:[0-9a-f]{64}$", tok.stdout, re.M), tok.stdout
    etc = prefix / "etc" / "roomwatch"
    configs = sorted(etc.glob("*.yaml"))
    assert [p.name for p in configs] == ["agent.yaml", "collector.yaml"]
    check = _offline(str(rw), "check-config", *map(str, configs))
    assert check.returncode == 0, check.stdout + check.stderr
    # The generated secret: private, and the collector knows its hash (so the pair works as installed).
    token_file = etc / "agent-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 40
    import hashlib

    assert f"token_hash: sha256:{hashlib.sha256(token.encode()).hexdigest()}" in (etc / "collector.yaml").read_text()
    assert _files_containing(prefix, WELL_KNOWN) == []
    # Nothing points outside the prefix: the agent's spool and the collector's store live under it.
    for cfg in configs:
        live = [ln for ln in cfg.read_text().splitlines() if not ln.strip().startswith("#")]
        assert [ln for ln in live if "/var/lib/roomwatch" in ln or "/etc/roomwatch" in ln], cfg
        assert all(str(prefix) in ln for ln in live if "/var/lib/roomwatch" in ln or "/etc/roomwatch" in ln), cfg

    # Again (an upgrade), now on the bundle's own Python: the venv is made anew on it; the token and the
    # admin's edits stay.
    (etc / "agent.yaml").write_text((etc / "agent.yaml").read_text() + "# edited by the admin\n")
    started = time.monotonic()
    r = _offline("bash", str(bundle / "install.sh"), "--prefix", str(prefix), "--no-systemd")
    print(f"[figure] offline install over it (unshare -n, --prefix, the bundled Python): {time.monotonic() - started:.1f} s")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "made by another Python: making it anew" in r.stdout
    assert (prefix / "bin" / "python").resolve() == prefix / "python" / "bin" / "python3.11"
    assert _offline(str(rw), "--version").stdout.strip() == f"roomwatch {_version()}"
    assert token_file.read_text().strip() == token
    assert (etc / "agent.yaml").read_text().endswith("# edited by the admin\n")
    assert "keeping the existing agent token" in r.stdout
    assert _files_containing(prefix, WELL_KNOWN) == []


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_bundle_wheels_cover_every_supported_python(dist: Path, tmp_path: Path, arch: str) -> None:
    """pip resolves roomwatch (and the gpio extra) from the bundle alone for each supported CPython."""
    bundle = _unpack(dist, arch, tmp_path)
    for py in builder.PYTHONS:
        abi = "cp" + py.replace(".", "")
        plats = [a for tag in builder.MANYLINUX for a in ("--platform", f"{tag}_{arch}")]
        r = _offline(sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--no-index", "--find-links",
                     str(bundle / "wheels"), "--only-binary=:all:", "--target", str(tmp_path / f"t{py}"),
                     "--implementation", "cp", "--python-version", py, "--abi", abi, "--abi", "abi3", "--abi", "none",
                     *plats, "roomwatch[gpio]")
        assert r.returncode == 0, f"{arch} CPython {py}:\n{r.stdout}{r.stderr}"
        assert "Would install" in r.stdout


def test_deb_carries_units_conffiles_and_maintainer_scripts(dist: Path) -> None:
    for arch in ("amd64", "arm64"):
        deb = dist / f"roomwatch_{_version()}-1_{arch}.deb"
        info = subprocess.run(["dpkg-deb", "-I", str(deb)], capture_output=True, text=True, check=True).stdout
        assert f"Architecture: {arch}" in info and "Depends: passwd\n" in info  # no Python: it brings its own
        for script in ("postinst", "prerm", "postrm", "conffiles"):
            assert script in info
        listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
        for path in ("./lib/systemd/system/roomwatch-agent.service", "./lib/systemd/system/roomwatch-collector.service",
                     "./etc/roomwatch/agent.example.yaml", "./usr/lib/roomwatch/install.sh",
                     "./usr/share/polkit-1/rules.d/50-roomwatch-poweroff.rules",
                     "./usr/lib/roomwatch/systemd/roomwatch-agent-traps.conf"):  # opt-in drop-in (docs/snmp.md)
            assert path in listing, path
        wheel_arch = "x86_64" if arch == "amd64" else "aarch64"
        assert re.search(rf"wheels/pydantic_core-\S+{wheel_arch}", listing)
        other = "aarch64" if arch == "amd64" else "x86_64"
        assert not re.search(rf"wheels/\S+{other}\S*\.whl", listing), f"{arch} carries {other} wheels"


def test_rpm_carries_the_same_tree(dist: Path) -> None:
    rpm = require_binary("rpm")
    path = dist / f"roomwatch-{_version()}-1.aarch64.rpm"
    files = subprocess.run([rpm, "-qpl", str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert "/usr/lib/systemd/system/roomwatch-agent.service" in files
    assert "/usr/lib/roomwatch/install.sh" in files
    configs = subprocess.run([rpm, "-qpc", str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert configs == ["/etc/roomwatch/agent.example.yaml", "/etc/roomwatch/collector.example.yaml"]
    scripts = subprocess.run([rpm, "-qp", "--scripts", str(path)], capture_output=True, text=True, check=True).stdout
    assert "/usr/lib/roomwatch/install.sh --package rpm" in scripts
    arch = subprocess.run([rpm, "-qp", "--qf", "%{ARCH}", str(path)], capture_output=True, text=True, check=True).stdout
    assert arch == "aarch64"


#: Runs as root inside `unshare -m -n`: an overlay of / (changes land in a tmpfs), then dpkg in a chroot.
_OVERLAY = r"""
set -eu
base="$1"; deb="$2"; script="$3"
mount -t tmpfs tmpfs "$base"
mkdir -p "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
mount --rbind /proc "$base/root/proc"
mount --rbind /dev "$base/root/dev"
mount -t tmpfs tmpfs "$base/root/run"   # no systemd in there: the scripts must cope
mount -t tmpfs tmpfs "$base/root/tmp"
cp "$deb" "$base/root/tmp/roomwatch.deb"
cp "$script" "$base/root/tmp/steps.sh"
exec chroot "$base/root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 bash /tmp/steps.sh
"""

_STEPS = r"""
set -u
say() { echo "## $*"; }
dpkg -i /tmp/roomwatch.deb >/tmp/log 2>&1 || { cat /tmp/log; exit 1; }
say installed $(/opt/roomwatch/bin/roomwatch --version)
say python $(readlink -f /opt/roomwatch/bin/python)
say user $(id -u roomwatch >/dev/null && echo yes)
say token $(stat -c '%a %U' /etc/roomwatch/agent-token)
say config $(stat -c '%a %U:%G' /etc/roomwatch/agent.yaml)
say check $(/opt/roomwatch/bin/roomwatch check-config -q /etc/roomwatch/agent.yaml /etc/roomwatch/collector.yaml && echo ok)
# The examples are valid too (the collector's warns that its placeholder hash lets no agent in).
say examples $(/opt/roomwatch/bin/roomwatch check-config -q /etc/roomwatch/*.example.yaml >/dev/null 2>&1 && echo ok)
say secret $(grep -rl s3cret-token /opt/roomwatch /etc/roomwatch /usr/lib/roomwatch | wc -l)
say conffiles $(dpkg-query -W -f='${Conffiles}' roomwatch | awk '{print $1}' | tr '\n' ' ')
sum=$(sha256sum /etc/roomwatch/agent-token)
echo "# edited" >> /etc/roomwatch/agent.yaml
dpkg -i /tmp/roomwatch.deb >/tmp/log 2>&1 || { cat /tmp/log; exit 1; }
say upgrade-token $([ "$sum" = "$(sha256sum /etc/roomwatch/agent-token)" ] && echo kept)
say upgrade-config $(tail -n1 /etc/roomwatch/agent.yaml)
mkdir -p /var/lib/roomwatch && touch /var/lib/roomwatch/collector.db
dpkg -r roomwatch >/tmp/log 2>&1 || { cat /tmp/log; exit 1; }
say removed-venv $([ -e /opt/roomwatch ] && echo present || echo gone)
say removed-config $([ -e /etc/roomwatch/agent.yaml ] && echo kept)
say removed-data $([ -e /var/lib/roomwatch/collector.db ] && echo kept)
dpkg -P roomwatch >/tmp/log 2>&1 || { cat /tmp/log; exit 1; }
say purged $([ -e /etc/roomwatch ] || [ -e /var/lib/roomwatch ] || [ -e /opt/roomwatch ] && echo leftovers || echo clean)
"""


def test_deb_installs_upgrades_removes_and_purges_offline(dist: Path, tmp_path: Path) -> None:
    """The real dpkg, the real maintainer scripts, in an overlay of this machine with no network."""
    if os.geteuid() != 0:
        unavailable("needs root for the overlay")
    base = tmp_path / "ovl"
    base.mkdir()
    (tmp_path / "overlay.sh").write_text(_OVERLAY)
    (tmp_path / "steps.sh").write_text(_STEPS)
    deb = dist / f"roomwatch_{_version()}-1_amd64.deb"
    started = time.monotonic()
    r = subprocess.run(["unshare", "-m", "-n", "--propagation", "private", "bash", str(tmp_path / "overlay.sh"),
                        str(base), str(deb), str(tmp_path / "steps.sh")], capture_output=True, text=True, timeout=600,
                       check=False)
    print(f"\n[figure] .deb install+upgrade+remove+purge offline: {time.monotonic() - started:.1f} s")
    if r.returncode != 0 and "overlay" in r.stderr and "mount" in r.stderr:
        unavailable(f"no overlayfs here: {r.stderr.strip()}")
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    got = dict(line[3:].split(" ", 1) if " " in line[3:] else (line[3:], "") for line in out.splitlines()
               if line.startswith("## "))
    assert got["installed"] == f"roomwatch {_version()}", out
    assert got["python"] == "/opt/roomwatch/python/bin/python3.11", out  # the package's own Python
    assert got["user"] == "yes"
    assert got["token"] == "600 root"
    assert got["config"] == "640 root:roomwatch"
    assert got["check"] == "ok" and got["examples"] == "ok", out
    assert got["secret"] == "0"
    assert got["conffiles"].split() == ["/etc/roomwatch/agent.example.yaml", "/etc/roomwatch/collector.example.yaml"]
    assert got["upgrade-token"] == "kept" and got["upgrade-config"] == "# edited"
    assert got["removed-venv"] == "gone" and got["removed-config"] == "kept" and got["removed-data"] == "kept"
    assert got["purged"] == "clean", out
    shutil.rmtree(base, ignore_errors=True)
