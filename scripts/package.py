"""Build roomwatch's installable artefacts into dist/ (``./dev package``).

For each architecture (x86_64, aarch64):

* ``roomwatch-<version>-offline-<arch>.tar.gz``: ``install.sh`` (scripts/install.sh, the one
  installer), ``python/`` — CPython 3.11 with its own glibc loader and libraries, made from Debian 12's
  packages (scripts/pyruntime.py), so the bundle installs where the system's Python is older or its glibc
  is — ``wheels/`` with roomwatch and every dependency for each supported CPython (:data:`PYTHONS`;
  manylinux wheels, so no compiler and no network on the target), the example configs and the systemd units;
* ``roomwatch_<version>-1_<amd64|arm64>.deb`` (dpkg-deb): the same tree under /usr/lib/roomwatch,
  the units in /lib/systemd/system, the examples in /etc/roomwatch as conffiles; its maintainer
  scripts run ``install.sh --package deb`` (the runtime into /opt/roomwatch/python, a venv /opt/roomwatch
  from the shipped wheels, the ``roomwatch`` user, generated secrets) and purge cleanly (scripts/pkg/debian/);
* ``roomwatch-<version>-1.<arch>.rpm`` (rpmbuild, from Debian's ``rpm`` package) likewise.

Downloads are kept in ``$ROOMWATCH_CACHE/packaging/`` (default ``.cache/packaging/``, gitignored): wheels
by pip's cross-platform download (``--platform/--python-version --only-binary=:all:``) — a dependency
that publishes no wheel for a target fails the build naming it, instead of shipping a bundle that would
need a compiler offline — and the runtime's Debian packages by apt (``runtime/``).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import pyruntime  # noqa: E402  (scripts/pyruntime.py: the bundled Python)

PKG = ROOT / "scripts" / "pkg"
#: CPython versions the bundle carries wheels for: Debian 12 and openEuler 24.03 (3.11), Ubuntu 24.04 (3.12),
#: Debian 13 (3.13), and the python3.11/3.12 packages of Ubuntu 22.04, RHEL/Rocky/Alma 8 and 9 (docs/install.md).
PYTHONS = ("3.11", "3.12", "3.13")
ARCHES = {"x86_64": {"deb": "amd64", "rpm": "x86_64"}, "aarch64": {"deb": "arm64", "rpm": "aarch64"}}
#: glibc baselines accepted (manylinux2014 = glibc 2.17 … 2.28, as on Kylin V10, UOS 20, RHEL 8).
MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_24", "manylinux_2_28")
EXTRAS = ("gpio",)  # optional extras whose wheels ride along (install.sh --gpio)
SHIPPED = ["config/agent.example.yaml", "config/collector.example.yaml", "systemd/roomwatch-agent.service",
           "systemd/roomwatch-collector.service", "systemd/roomwatch-agent-traps.conf",
           "systemd/polkit/50-roomwatch-poweroff.rules",
           "systemd/udev/60-roomwatch-gpio.rules", "docs/install.md"]


def cache_root() -> Path:
    """Where downloads are kept between runs: ``$ROOMWATCH_CACHE`` (CI keeps it outside its fresh clone), else .cache/."""
    return Path(os.environ.get("ROOMWATCH_CACHE") or ROOT / ".cache")


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def project() -> tuple[str, list[str], dict[str, list[str]]]:
    """Version, runtime requirements and optional extras from pyproject.toml / roomwatch/__init__.py."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    init = next(p for p in (ROOT / "roomwatch" / "__init__.py", ROOT / "src" / "roomwatch" / "__init__.py") if p.exists())
    m = re.search(r'^__version__ = "([^"]+)"', init.read_text(), re.M)
    if not m:
        raise SystemExit("no __version__ in roomwatch/__init__.py")
    return m.group(1), list(meta["dependencies"]), dict(meta.get("optional-dependencies", {}))


def pip(*args: str) -> None:
    # The machine's pip configuration may name extra local indexes: packaging uses PyPI as configured,
    # but never the project's own venv state.
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def source_tree(dest: Path) -> Path:
    """The checkout's files (tracked, or new and not ignored) copied to ``dest``: the wheel is built from
    these alone, so a stale ``build/`` or ``*.egg-info`` of an older layout cannot leak into it."""
    if dest.exists():
        shutil.rmtree(dest)
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=False)
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
    else:  # an exported tree (no .git): everything but the usual leftovers
        skip = {".git", ".venv", ".cache", "build", "dist", "test-artifacts", ".typecheck", "__pycache__"}
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
                 and not skip & set(p.relative_to(ROOT).parts) and not p.name.endswith(".egg-info")]
    for name in names:
        src = ROOT / name
        if src.is_file():  # a deleted but still listed file is left out
            shutil.copy2(src, _mkparent(dest / name))
    return dest


def build_wheel(out: Path, work: Path) -> Path:
    """roomwatch's own wheel (pure Python), from a clean copy of the source; it holds only ``roomwatch/``."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("roomwatch-*.whl"):
        old.unlink()
    src = source_tree(work / "src")
    pip("wheel", "-q", "--no-deps", "-w", str(out), str(src))
    wheel = next(out.glob("roomwatch-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        top = {n.split("/", 1)[0] for n in z.namelist()}
    stray = sorted(t for t in top if t != "roomwatch" and not t.endswith(".dist-info"))
    if stray:
        raise SystemExit(f"{wheel.name} holds {stray} besides roomwatch/: check pyproject.toml's package-dir")
    shutil.rmtree(src)
    return wheel


def download_wheels(arch: str, requirements: list[str], cache: Path, pythons: tuple[str, ...],
                    refresh: bool = False) -> Path:
    """Every dependency as a wheel for ``arch`` and each Python in ``pythons``, into ``cache/<arch>``.

    Resolved once per set of requirements (a stamp in the folder): a later build is offline and takes the
    same versions; ``refresh`` (``--refresh``) resolves again, taking new releases.
    """
    dest = cache / arch
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [a for tag in MANYLINUX for a in ("--platform", f"{tag}_{arch}")]
    key = hashlib.sha256(repr((sorted(requirements), pythons, MANYLINUX)).encode()).hexdigest()[:16]
    stamp = dest / f".resolved-{key}"
    if stamp.exists() and not refresh:
        say(f"wheels for {arch}: as resolved on {stamp.read_text().strip()} (--refresh to resolve again)")
        return dest
    for py in pythons:
        abi = "cp" + py.replace(".", "")
        say(f"wheels for {arch}, CPython {py}")
        pip("download", "-q", "--only-binary=:all:", "--implementation", "cp", "--python-version", py,
            "--abi", abi, "--abi", "abi3", "--abi", "none", *platforms, "-d", str(dest), "pip", *requirements)
    for old in dest.glob(".resolved-*"):
        old.unlink()
    stamp.write_text(time.strftime("%Y-%m-%d %H:%M") + "\n")
    return dest


def wheel_set(dest: Path, pythons: tuple[str, ...]) -> list[Path]:
    """The wheels in ``dest`` a supported Python can use (older downloads of other versions are left out)."""
    names = sorted(dest.glob("*.whl"))
    newest: dict[str, tuple[tuple[int, ...], Path]] = {}
    keep = []
    abis = {"cp" + p.replace(".", "") for p in pythons}
    for w in names:
        dist, ver, *_rest, pytag, abitag, _plat = w.name[:-4].split("-")
        if abitag not in abis | {"abi3", "none"}:
            continue
        key = f"{dist.lower()}|{pytag}|{abitag}|{_plat}"
        version = tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[.+]", ver))
        if key not in newest or version > newest[key][0]:
            newest[key] = (version, w)
    keep = [w for _, w in newest.values()]
    return sorted(keep)


def stage_tree(dest: Path, wheels: list[Path], own_wheel: Path) -> None:
    """The installer's tree: install.sh, wheels/, config/, systemd/, docs/ (the Python runtime comes after)."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "wheels").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "install.sh", dest / "install.sh")
    os.chmod(dest / "install.sh", 0o755)
    for rel in SHIPPED:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    for w in [*wheels, own_wheel]:
        shutil.copy2(w, dest / "wheels" / w.name)


def write_sums(tree: Path) -> None:
    """SHA256SUMS of every file of the tree (``sha256sum -c SHA256SUMS`` on the target)."""
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(tree)}"
            for p in sorted(tree.rglob("*")) if p.is_file() and not p.is_symlink() and p.name != "SHA256SUMS"]
    (tree / "SHA256SUMS").write_text("\n".join(sums) + "\n")


def _tar_filter(mtime: int):  # type: ignore[no-untyped-def]
    def f(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = mtime
        return info
    return f


def source_date() -> int:
    """Commit time of HEAD (reproducible archives), or now outside a git checkout."""
    r = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True, text=True, check=False)
    return int(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip() else int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def make_bundle(tree: Path, out: Path) -> Path:
    """tar.gz of ``tree`` (its folder name as the top directory), files in sorted order."""
    path = out / f"{tree.name}.tar.gz"
    mtime = source_date()
    with tarfile.open(path, "w:gz", compresslevel=6) as tar:  # mostly wheels (zip): 9 is 4x slower for 0.2 %
        for p in [tree, *sorted(tree.rglob("*"))]:
            tar.add(p, arcname=str(p.relative_to(tree.parent)), recursive=False, filter=_tar_filter(mtime))
    return path


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _fill(template: str, **values: str) -> str:
    for k, v in values.items():
        template = template.replace("@" + k + "@", v)
    return template


def system_root(root: Path, tree: Path, unit_dir: str, udev_dir: str) -> None:
    """The files a .deb/.rpm installs, laid out under ``root``."""
    shutil.copytree(tree, root / "usr/lib/roomwatch", symlinks=True)
    for unit in ("roomwatch-agent.service", "roomwatch-collector.service"):
        text = (tree / "systemd" / unit).read_text().replace("scripts/install.sh", "the roomwatch package")
        _write(root / unit_dir.lstrip("/") / unit, text)
    shutil.copy2(tree / "systemd/polkit/50-roomwatch-poweroff.rules",
                 _mkparent(root / "usr/share/polkit-1/rules.d/50-roomwatch-poweroff.rules"))
    shutil.copy2(tree / "systemd/udev/60-roomwatch-gpio.rules",
                 _mkparent(root / udev_dir.lstrip("/") / "60-roomwatch-gpio.rules"))
    for name in ("agent.example.yaml", "collector.example.yaml"):
        shutil.copy2(tree / "config" / name, _mkparent(root / "etc/roomwatch" / name))
    doc = root / "usr/share/doc/roomwatch"
    shutil.copy2(tree / "docs/install.md", _mkparent(doc / "install.md"))
    _write(doc / "copyright", (PKG / "copyright").read_text())


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def build_deb(tree: Path, version: str, arch: str, out: Path, work: Path) -> Path:
    """A .deb from the staged installer tree (dpkg-deb; no debhelper needed)."""
    deb_arch = ARCHES[arch]["deb"]
    root = work / f"deb-{deb_arch}"
    if root.exists():
        shutil.rmtree(root)
    system_root(root, tree, "/lib/systemd/system", "/lib/udev/rules.d")
    control = root / "DEBIAN"
    size_kib = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) // 1024
    _write(control / "control", _fill((PKG / "debian" / "control").read_text(), VERSION=f"{version}-1", ARCH=deb_arch,
                                      SIZE=str(size_kib)))
    conffiles = sorted("/" + str(p.relative_to(root)) for p in (root / "etc").rglob("*") if p.is_file())
    _write(control / "conffiles", "\n".join(conffiles) + "\n")
    for script in ("postinst", "prerm", "postrm"):
        _write(control / script, (PKG / "debian" / script).read_text(), 0o755)
    sums = [f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}"
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and "DEBIAN" not in p.parts]
    _write(control / "md5sums", "\n".join(sums) + "\n")
    path = out / f"roomwatch_{version}-1_{deb_arch}.deb"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date())}
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-z2", "--build", str(root), str(path)], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    return path


def build_rpm(tree: Path, version: str, arch: str, out: Path, work: Path) -> Path | None:
    """An .rpm (rpmbuild, from Debian's rpm package); None, with a note, where rpmbuild is missing."""
    rpmbuild = shutil.which("rpmbuild")
    if not rpmbuild:
        say("rpmbuild not found (Debian: apt-get install rpm): no .rpm built")
        return None
    rpm_arch = ARCHES[arch]["rpm"]
    top = work / f"rpm-{rpm_arch}"
    if top.exists():
        shutil.rmtree(top)
    staged = top / "staged"
    system_root(staged, tree, "/usr/lib/systemd/system", "/usr/lib/udev/rules.d")
    files = sorted("/" + str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
    listed = "\n".join(f"%config(noreplace) {f}" if f.startswith("/etc/") else
                       f"%doc {f}" if f.startswith("/usr/share/doc/") else f for f in files)
    spec = _fill((PKG / "rpm" / "roomwatch.spec").read_text(), VERSION=version, ARCH=rpm_arch, STAGED=str(staged),
                 FILES=listed)
    _write(top / "roomwatch.spec", spec)
    subprocess.run([rpmbuild, "-bb", "--quiet", "--target", f"{rpm_arch}-linux", "--define", f"_topdir {top}",
                    "--define", "_build_id_links none", str(top / "roomwatch.spec")], check=True,
                   env={**os.environ, "SOURCE_DATE_EPOCH": str(source_date())}, stdout=subprocess.DEVNULL)
    built = next((top / "RPMS" / rpm_arch).glob("*.rpm"))
    path = out / built.name
    shutil.move(built, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the offline bundle, .deb and .rpm into dist/.")
    parser.add_argument("--arch", default=",".join(ARCHES), help="comma-separated: x86_64,aarch64 (default: both)")
    parser.add_argument("--python", default=",".join(PYTHONS), help="CPython versions to carry wheels for")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default dist/)")
    parser.add_argument("--cache", default=str(cache_root() / "packaging"),
                        help="downloads are kept here (default $ROOMWATCH_CACHE/packaging, or .cache/packaging)")
    parser.add_argument("--only", choices=["bundle", "deb", "rpm"], action="append",
                        help="build only these kinds (repeatable; default all)")
    parser.add_argument("--refresh", action="store_true",
                        help="resolve the wheels again (new releases); otherwise a build reuses the cached set")
    parser.add_argument("--no-python", action="store_true",
                        help="leave the bundled Python out (install.sh then needs a system Python >= 3.11)")
    args = parser.parse_args(argv)
    arches = [a.strip() for a in args.arch.split(",") if a.strip()]
    for a in arches:
        if a not in ARCHES:
            parser.error(f"unknown architecture {a!r} (known: {', '.join(ARCHES)})")
    pythons = tuple(p.strip() for p in args.python.split(",") if p.strip())
    kinds = set(args.only or ["bundle", "deb", "rpm"])
    out, cache = Path(args.out), Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    # One build at a time per cache (CI and worktrees may share one); the staging is private to this build.
    with open(cache / ".lock", "w") as lock, tempfile.TemporaryDirectory(prefix="roomwatch-package-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = build_all(args, arches, pythons, kinds, out, cache, Path(tmp))
    for p in made:
        say(f"{p.relative_to(out.parent) if out.parent in p.parents else p}  {p.stat().st_size / 2**20:.1f} MiB")
    return 0


def build_all(args: argparse.Namespace, arches: list[str], pythons: tuple[str, ...], kinds: set[str], out: Path,
              cache: Path, work: Path) -> list[Path]:
    version, requirements, optional = project()
    requirements += [r for extra in EXTRAS for r in optional.get(extra, [])]
    own = build_wheel(work / "own", work)
    say(f"roomwatch {version}: {own.name}")
    made: list[Path] = []
    for arch in arches:
        wheels = wheel_set(download_wheels(arch, requirements, cache / "wheels", pythons, args.refresh), pythons)
        tree = work / f"roomwatch-{version}-offline-{arch}"
        stage_tree(tree, wheels, own)
        if not args.no_python:
            debs = pyruntime.fetch_debs(arch, cache / "runtime", say)
            rt = pyruntime.build_runtime(arch, debs, wheels, tree / "python", work)
            say(f"Python {rt['python']} for {arch} from Debian {pyruntime.SUITE}: {len(rt['libraries'])} libraries, "  # type: ignore[arg-type]
                f"{_du(tree / 'python') / 2**20:.1f} MiB")
        write_sums(tree)
        if "bundle" in kinds:
            made.append(make_bundle(tree, out))
        if "deb" in kinds:
            made.append(build_deb(tree, version, arch, out, work))
        if "rpm" in kinds and (rpm := build_rpm(tree, version, arch, out, work)):
            made.append(rpm)
        shutil.rmtree(tree)
    return made

if __name__ == "__main__":
    sys.exit(main())
