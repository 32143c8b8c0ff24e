"""The offline bundle on the distributions it is for: Debian 11 (glibc 2.31, Python 3.9), amd64 and arm64.

A debootstrapped bullseye (tests/peers/debian_root.py; arm64 under qemu-user, only with
``ROOMWATCH_FOREIGN_ARCH=1``: tests/conftest.py) stands in for the machines
whose own Python is too old for roomwatch — Debian 11, openEuler 22.03, Kylin V10, UOS 20. In a throw-away
overlay of it, with no network at all, the bundle's ``install.sh --prefix DIR --no-systemd`` installs
roomwatch on the bundle's own Python (Debian 12's CPython 3.11 with its own glibc, scripts/pyruntime.py),
and ``roomwatch --version``, ``gen-token``, ``check-config`` and an agent with the host driver (serving
/metrics) run. The agent's process maps no library from the host: what glibc the host has does not matter.

The .rpm (for openEuler and Kylin server, which this machine cannot run) is installed into the same Debian 11
root by this machine's ``rpm --root``: its scriptlets run there as on an RPM system, on the same old glibc.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.peers.debian_root import debian_root, ensure_binfmt, host_arch, report, run_in_root
from tests.peers.dist import version

pytestmark = [pytest.mark.slow, pytest.mark.peer("debootstrap"), pytest.mark.timeout(2400)]

SUITE = "bullseye"  # Debian 11: glibc 2.31, Python 3.9 (buster, glibc 2.28, is no longer on the mirror)

_STEPS = r"""
set -eu
say() { echo "## $*"; }
cd /tmp && tar xzf roomwatch-*-offline-*.tar.gz && cd roomwatch-*-offline-*/
say sums $(sha256sum -c --quiet SHA256SUMS && echo ok)
say system-python $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
say glibc $(getconf GNU_LIBC_VERSION | cut -d' ' -f2)
say arch $(uname -m)
./install.sh --prefix /opt/rw0 --no-systemd --python /usr/bin/python3 >/tmp/old.log 2>&1 && rc=0 || rc=$?
say old-python-refused "$rc $(grep -c 'needs Python 3.11 or newer' /tmp/old.log)"
start=$(date +%s%N)
./install.sh --prefix /opt/rw --no-systemd >/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
say install-ms $(( ($(date +%s%N) - start) / 1000000 ))
rw=/opt/rw/bin/roomwatch
say version $($rw --version)
say venv-python $(readlink -f /opt/rw/bin/python)
say gen-token $($rw gen-token 2>/dev/null | grep -c '^token_hash: sha256:')
say check-config $($rw check-config -q /opt/rw/etc/roomwatch/*.yaml && echo ok)
say secret $(grep -rl s3cret-token /opt/rw | wc -l)

cat > /tmp/agent.yaml <<'YAML'
agent:
  id: old-distro-agent
  site: test-site
  room: chroot
  listen: 127.0.0.1:19641
  interval: 2s
  spool: /opt/rw/var/lib/roomwatch/agent-spool.db
collector:
  urls: [http://127.0.0.1:9]
  token_file: /opt/rw/etc/roomwatch/agent-token
host:
  enabled: true
  interval: 2s
devices: []
YAML
$rw agent -c /tmp/agent.yaml >/tmp/agent.log 2>&1 &
agent=$!
# Wait for the agent's first host poll on /metrics (bounded: qemu is slow), then look at what it has mapped.
/opt/rw/bin/python - "$agent" <<'PY' || { cat /tmp/agent.log; exit 1; }
import os, sys, time, urllib.request
pid, deadline, body = sys.argv[1], time.monotonic() + 240, ""
while "roomwatch_host_memory_total_bytes{" not in body:
    if time.monotonic() > deadline or not os.path.exists(f"/proc/{pid}"):
        sys.exit("the agent served no host metrics")
    try:
        body = urllib.request.urlopen("http://127.0.0.1:19641/metrics", timeout=10).read().decode()
    except OSError:
        time.sleep(0.5)
print("## metrics", sum(line.startswith("roomwatch_host_") for line in body.splitlines()))
libs = {line.split()[-1] for line in open(f"/proc/{pid}/maps") if ".so" in line}
print("## agent-libs", len(libs))
print("## foreign-libs", " ".join(sorted(p for p in libs if not p.startswith("/opt/rw/"))) or "none")
PY
kill "$agent"; wait "$agent" || true

# An RPM-style system (openEuler, Kylin server): no /usr/lib/ssl, the CA bundle under /etc/pki.
mkdir -p /etc/pki/tls/certs
mv /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt
mv /usr/lib/ssl /usr/lib/ssl.away
say ca-rpm-layout $(/opt/rw/bin/python -c 'import os, ssl
n = len(ssl.create_default_context().get_ca_certs())
print(os.environ.get("SSL_CERT_FILE"), "many" if n > 50 else n)')

# Again (an upgrade): the runtime is replaced, the venv and the token stay.
token=$(sha256sum /opt/rw/etc/roomwatch/agent-token)
./install.sh --prefix /opt/rw --no-systemd >/tmp/again.log 2>&1 || { cat /tmp/again.log; exit 1; }
say again "$($rw --version) $([ "$token" = "$(sha256sum /opt/rw/etc/roomwatch/agent-token)" ] && echo token-kept)"
"""


def _bundle(dist: Path, arch: str) -> Path:
    return dist / f"roomwatch-{version()}-offline-{arch}.tar.gz"


@pytest.mark.parametrize("arch", ["x86_64", pytest.param("aarch64", marks=pytest.mark.foreign_arch)])
def test_bundle_installs_and_runs_on_debian_11(dist: Path, tmp_path: Path, arch: str) -> None:
    ensure_binfmt(arch)
    root = debian_root(SUITE, arch)
    out = run_in_root(root, _STEPS, [_bundle(dist, arch)], tmp_path, timeout=900)
    got = report(out)
    print(f"\n[figure] offline install of the bundle on Debian 11 {arch}"
          f"{' (qemu-user)' if arch == 'aarch64' else ''}: {int(got['install-ms']) / 1000:.1f} s")
    assert got["sums"] == "ok"
    assert got["arch"] == arch and got["system-python"] == "3.9" and got["glibc"] == "2.31", got
    assert got["old-python-refused"] == "2 1", out  # --python with the system's 3.9: a clear refusal
    assert got["version"] == f"roomwatch {version()}"
    assert got["venv-python"] == "/opt/rw/python/bin/python3.11"
    assert got["gen-token"] == "1" and got["check-config"] == "ok" and got["secret"] == "0", out
    assert int(got["metrics"]) >= 5, out
    assert got["foreign-libs"] == "none", f"the agent loaded host libraries: {got['foreign-libs']}"
    assert int(got["agent-libs"]) >= 10
    assert got["ca-rpm-layout"] == "/etc/pki/tls/certs/ca-bundle.crt many", out
    assert got["again"] == f"roomwatch {version()} token-kept", out


def _unpacked(dist: Path, arch: str, dest: Path) -> Path:
    with tarfile.open(_bundle(dist, arch)) as tar:
        tar.extractall(dest, filter="data")
    return dest / f"roomwatch-{version()}-offline-{arch}"


def _install(bundle: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(bundle / "install.sh"), "--prefix", str(prefix), "--no-systemd"],
                          capture_output=True, text=True, timeout=120, check=False)


def test_bundle_for_another_architecture_is_refused_clearly(dist: Path, tmp_path: Path) -> None:
    """The aarch64 bundle on an x86_64 machine (or the reverse) stops before touching anything, naming the right file."""
    other = "aarch64" if host_arch() == "x86_64" else "x86_64"
    prefix = tmp_path / "prefix"
    r = _install(_unpacked(dist, other, tmp_path), prefix)
    assert r.returncode == 2
    assert f"this bundle is for {other}" in r.stderr and "offline-" in r.stderr
    assert not prefix.exists()


def test_install_folder_too_long_for_the_bundled_python_is_refused(dist: Path, tmp_path: Path) -> None:
    """The loader's path must fit the space left for it in the interpreter: a longer one is refused up front."""
    prefix = tmp_path / ("x" * 200) / ("y" * 200) / ("z" * 200) / "prefix"  # each name within NAME_MAX
    r = _install(_unpacked(dist, host_arch(), tmp_path), prefix)
    assert r.returncode == 2
    assert "too long for the bundled Python" in r.stderr
    assert not prefix.exists()


_RPM_STEPS = r"""
set -u
say() { echo "## $*"; }
in_root() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
rpm --root "$R" --initdb
# --nodeps: the root's software is in dpkg's database, not rpm's (shadow-utils, /bin/sh are there all the same).
rpm --root "$R" -i --nodeps "$R"/tmp/roomwatch-*.rpm >/tmp/rpm.log 2>&1 || { cat /tmp/rpm.log; exit 1; }
say installed $(in_root /opt/roomwatch/bin/roomwatch --version)
say python $(in_root readlink -f /opt/roomwatch/bin/python)
say user $(in_root id -u roomwatch >/dev/null && echo yes)
say token $(in_root stat -c '%a %U' /etc/roomwatch/agent-token)
say config $(in_root stat -c '%a %U:%G' /etc/roomwatch/agent.yaml)
say check $(in_root /opt/roomwatch/bin/roomwatch check-config -q /etc/roomwatch/agent.yaml \
  /etc/roomwatch/collector.yaml && echo ok)
say configs $(rpm --root "$R" -qc roomwatch | tr '\n' ' ')
rpm --root "$R" -e --nodeps roomwatch >/tmp/rpm.log 2>&1 || { cat /tmp/rpm.log; exit 1; }
say erased-program $([ -e "$R/opt/roomwatch" ] && echo present || echo gone)
say erased-kept $([ -e "$R/etc/roomwatch/agent-token" ] && [ -e "$R/etc/roomwatch/agent.yaml" ] && echo configs-and-token)
"""


def test_rpm_installs_and_erases_on_debian_11(dist: Path, tmp_path: Path) -> None:
    """The .rpm's scriptlets on an old-glibc root: the bundled Python, the user, the token; erase keeps configs."""
    rpm = dist / f"roomwatch-{version()}-1.x86_64.rpm"
    root = debian_root(SUITE, "x86_64")
    got = report(run_in_root(root, _RPM_STEPS, [rpm], tmp_path, inside=False))
    assert got["installed"] == f"roomwatch {version()}", got
    assert got["python"] == "/opt/roomwatch/python/bin/python3.11"
    assert got["user"] == "yes" and got["token"] == "600 root" and got["config"] == "640 root:roomwatch", got
    assert got["check"] == "ok", got
    assert got["configs"].split() == ["/etc/roomwatch/agent.example.yaml", "/etc/roomwatch/collector.example.yaml"]
    assert got["erased-program"] == "gone" and got["erased-kept"] == "configs-and-token", got
