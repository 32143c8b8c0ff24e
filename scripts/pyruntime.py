"""A relocatable CPython 3.11 for the offline bundle and the packages, made from Debian 12's own packages.

Why: the distributions the bundle is for (Kylin V10, UOS 20, openEuler 22.03, Debian 11) ship Python 3.7–3.9,
and roomwatch's libraries need ≥ 3.11. python-build-standalone cannot be fetched on the build machine (only
package registries are reachable), so the interpreter comes from Debian 12 (bookworm): ``python3.11-minimal``,
``libpython3.11-{minimal,stdlib}`` and the shared libraries those need — **including glibc's own dynamic
loader and libc**, so the interpreter never touches the host's libc and runs on any older glibc (2.28 on Kylin
V10/UOS 20, 2.31 on Debian 11, 2.34 on openEuler 22.03). Kernel ≥ 3.2 is glibc 2.36's only demand.

How it runs without a launcher: ``bin/python3.11`` gets (patchelf, at build time)

* ``DT_RPATH=$ORIGIN/../lib``: every library — its own and those of the stdlib's extension modules and of the
  wheels' — is found in the runtime's ``lib/`` first (an RPATH, not a RUNPATH, because the executable's RPATH
  also serves the libraries it loads);
* a ``PT_INTERP`` padded to :data:`INTERP_SPACE` bytes: ``install.sh`` writes the absolute path of the runtime's
  own loader into it once the runtime is in place (``$prefix/python/lib/ld-linux-….so.…``), at the offset this
  module records in ``RUNTIME``. The kernel then starts the interpreter through that loader directly.

So ``python3.11`` is an ordinary executable afterwards: ``sys.executable`` is right (subprocesses, venvs and
console scripts work unchanged), nothing is put in ``LD_LIBRARY_PATH`` (children such as ``systemctl`` keep the
host's libraries). Starting it through ``ld-linux… --library-path …`` from a shell launcher would make
``/proc/self/exe`` the loader and ``sys.executable`` a path that cannot be started directly.

The Debian packages are fetched by apt with a private configuration under the cache (no change to the build
machine's apt set-up, and always bookworm whatever the build machine runs); their versions are written into
``RUNTIME`` and their copyright files into ``share/doc/``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Iterable
from pathlib import Path

PY = "3.11"
SUITE = "bookworm"
MIRROR = os.environ.get("ROOMWATCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("ROOMWATCH_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: Debian's name for each architecture, its multiarch triplet and glibc's loader there.
ARCH = {"x86_64": ("amd64", "x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
        "aarch64": ("arm64", "aarch64-linux-gnu", "ld-linux-aarch64.so.1")}
#: The interpreter and what its stdlib's extension modules link to (libpython3.11-stdlib's Depends, less
#: libdb5.3 and libnsl2/libtirpc3: the ``_dbm`` and ``nis`` modules are left out). libgcc-s1 and libstdc++6:
#: the wheels' Rust and C++ extensions link them (manylinux lets wheels take them from the system).
PACKAGES = ("libc6", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libexpat1", "zlib1g",
            "libssl3", "libsqlite3-0", "libffi8", "libbz2-1.0", "liblzma5", "libuuid1", "libcrypt1", "libncursesw6",
            "libtinfo6", "libreadline8", "libgcc-s1", "libstdc++6")
#: Extension modules whose libraries are not shipped (old database and NIS bindings roomwatch never uses).
DROPPED_MODULES = ("_dbm", "nis")
#: Stdlib folders nothing of roomwatch needs (tests, GUI, the help texts, 2to3).
PRUNED = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "pydoc_data", "ensurepip")
#: glibc libraries the loader or libc open by name at run time (not DT_NEEDED): unwinding for thread cancellation.
PRELOADED = ("libgcc_s.so.1",)
#: Bytes for the loader's absolute path (install.sh refuses a longer one); rpmbuild's file-type check fails at 1024.
INTERP_SPACE = 512
PLACEHOLDER = "/roomwatch-runtime-not-installed/ld.so"
PAGE_64K = 0x10000


# --- ELF (64-bit little-endian: x86_64 and aarch64) ---------------------------------------------------------

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 1, 5, 15, 29


class Elf:
    """The few facts of an ELF file this module needs: its DT_NEEDED, RPATH/RUNPATH and PT_INTERP."""

    def __init__(self, data: bytes, name: str = "?") -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ValueError(f"{name}: not a 64-bit little-endian ELF file")
        self.data, self.name = data, name
        phoff, = struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        self.segments = [struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize) for i in range(phnum)]

    def _offset(self, vaddr: int) -> int:
        for p_type, _f, off, addr, _pa, filesz, _m, _al in self.segments:
            if p_type == PT_LOAD and addr <= vaddr < addr + filesz:
                return vaddr - addr + off
        raise ValueError(f"{self.name}: address {vaddr:#x} is in no loaded segment")

    def dynamic(self) -> list[tuple[int, int]]:
        dyn = next((s for s in self.segments if s[0] == PT_DYNAMIC), None)
        if dyn is None:
            return []
        out = []
        for i in range(dyn[5] // 16):
            tag, val = struct.unpack_from("<qQ", self.data, dyn[2] + 16 * i)
            if tag == 0:
                break
            out.append((tag, val))
        return out

    def _strings(self, tags: set[int]) -> list[str]:
        dyn = self.dynamic()
        strtab = next((v for t, v in dyn if t == DT_STRTAB), None)
        if strtab is None:
            return []
        base = self._offset(strtab)
        return [self.data[base + v:self.data.index(b"\0", base + v)].decode() for t, v in dyn if t in tags]

    def needed(self) -> list[str]:
        return self._strings({DT_NEEDED})

    def runpath(self) -> list[str]:
        return self._strings({DT_RUNPATH})

    def rpath(self) -> list[str]:
        return self._strings({DT_RPATH})

    def load_align(self) -> int:
        """The smallest alignment of its loadable segments (64 KiB lets it run under a 64K-page aarch64 kernel)."""
        return min((s[7] for s in self.segments if s[0] == PT_LOAD), default=0)

    def interp(self) -> tuple[int, int]:
        """(file offset, size) of PT_INTERP."""
        seg = next((s for s in self.segments if s[0] == PT_INTERP), None)
        if seg is None:
            raise ValueError(f"{self.name}: no PT_INTERP (not an executable)")
        return seg[2], seg[5]


# --- fetching ---------------------------------------------------------------------------------------------

def _apt_options(root: Path) -> list[str]:
    """apt with its own sources, lists and cache under ``root``: bookworm for both architectures."""
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "empty").mkdir(exist_ok=True)
    status = root / "status"
    status.touch()
    sources = root / "sources.list"
    arches = ",".join(a[0] for a in ARCH.values())
    sources.write_text("".join(f"deb [arch={arches} signed-by={KEYRING}] {url} {suite} main\n" for url, suite in
                               ((MIRROR, SUITE), (MIRROR, f"{SUITE}-updates"), (SECURITY, f"{SUITE}-security"))))
    opts = {"Dir::Etc::SourceList": sources, "Dir::Etc::SourceParts": root / "empty", "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": root / "empty", "Dir::Etc::Trusted": "/dev/null",
            "Dir::Etc::TrustedParts": root / "empty", "Dir::State": root, "Dir::State::Lists": root / "lists",
            "Dir::State::status": status, "Dir::Cache": root, "Dir::Cache::Archives": root / "archives",
            "APT::Architecture": "amd64", "Debug::NoLocking": "1", "APT::Sandbox::User": "root",
            "Acquire::Languages": "none"}
    out = [f"-o{k}={v}" for k, v in opts.items()]
    return out + [f"-oAPT::Architectures::={a[0]}" for a in ARCH.values()]


def fetch_debs(arch: str, cache: Path, say=print) -> list[Path]:  # type: ignore[no-untyped-def]
    """bookworm's current .deb of each of :data:`PACKAGES` for ``arch``, downloaded once into the cache."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SystemExit("the bundled Python is made from Debian's packages with apt-get and dpkg-deb: build on "
                         "Debian or Ubuntu, or leave it out with --no-python")
    if not Path(KEYRING).exists():
        raise SystemExit(f"{KEYRING} missing: apt-get install debian-archive-keyring")
    deb_arch = ARCH[arch][0]
    apt_root = cache / "apt"
    opts = _apt_options(apt_root)
    dest = cache / "debs" / deb_arch
    dest.mkdir(parents=True, exist_ok=True)
    chosen = dest / "CHOSEN"  # the files of the last resolution: a build without network uses them again
    update = subprocess.run(["apt-get", "-q", *opts, "update"], capture_output=True, text=True, check=False)
    if update.returncode != 0 or "W: Failed" in update.stderr or "E:" in update.stderr:
        kept = [dest / n for n in chosen.read_text().split()] if chosen.exists() else []
        if kept and all(p.exists() for p in kept):
            say(f"Python runtime: {MIRROR} not reachable, using the {deb_arch} packages fetched before")
            return kept
        raise SystemExit(f"apt-get update for the Python runtime ({MIRROR}, {SUITE}) failed:\n{update.stderr}")
    wanted = [f"{p}:{deb_arch}" for p in PACKAGES]
    show = subprocess.run(["apt-cache", *opts, "show", "--no-all-versions", *wanted], capture_output=True, text=True,
                          check=True).stdout
    files = {}  # package → file name as apt-get download writes it: PACKAGE_VERSION_ARCH.deb, the epoch's ':' as %3a
    for stanza in show.strip().split("\n\n"):
        f = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        files[f["Package"]] = f"{f['Package']}_{f['Version'].replace(':', '%3a')}_{f['Architecture']}.deb"
    if set(files) != set(PACKAGES):
        raise SystemExit(f"apt-cache found no {sorted(set(PACKAGES) - set(files))} for {deb_arch} in {SUITE}")
    missing = [f"{p}:{deb_arch}" for p, n in files.items() if not (dest / n).exists()]
    if missing:
        say(f"Python runtime: downloading {len(missing)} Debian {SUITE} packages for {deb_arch}")
        subprocess.run(["apt-get", "-q", *opts, "download", *missing], cwd=dest, check=True, stdout=subprocess.DEVNULL)
    for stale in {p.name for p in dest.glob("*.deb")} - set(files.values()):
        (dest / stale).unlink()  # superseded by a (security) update
    chosen.write_text("\n".join(files[p] for p in PACKAGES) + "\n")
    return [dest / files[p] for p in PACKAGES]


# --- assembling -------------------------------------------------------------------------------------------

def _deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, check=True).stdout.strip()


def _wheel_extensions(wheels: Iterable[Path], arch: str) -> list[tuple[str, Elf, set[str]]]:
    """Every extension module in the CPython 3.11 (or abi3) wheels for ``arch``: (name, ELF, libraries it bundles)."""
    out = []
    for wheel in wheels:
        tags = wheel.name[:-4].split("-")
        if not tags[-1].endswith(arch) or tags[-2] not in ("cp311", "abi3"):
            continue
        with zipfile.ZipFile(wheel) as z:
            sos = [n for n in z.namelist() if ".so" in n.rsplit("/", 1)[-1]]
            bundled = {n.rsplit("/", 1)[-1] for n in sos if ".libs/" in n}
            out += [(f"{wheel.name}:{n}", Elf(z.read(n), n), bundled) for n in sos]
    return out


def build_runtime(arch: str, debs: list[Path], wheels: Iterable[Path], dest: Path, work: Path) -> dict[str, object]:
    """Lay the runtime out in ``dest`` (bin/, lib/, lib/python3.11/, share/doc/, RUNTIME); returns the manifest."""
    deb_arch, triplet, loader = ARCH[arch]
    if shutil.which("patchelf") is None:
        raise SystemExit("patchelf not found: apt-get install patchelf")
    extract = work / f"runtime-x-{deb_arch}"
    for d in (extract, dest):
        if d.exists():
            shutil.rmtree(d)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(extract)], check=True)
    # Every shared library of those packages, by file name (sonames are symlinks to the real file).
    pool: dict[str, Path] = {}
    for d in (extract / "lib" / triplet, extract / "usr" / "lib" / triplet):
        for p in sorted(d.glob("*.so*")) if d.is_dir() else []:
            if p.is_file():
                pool.setdefault(p.name, p.resolve())
    stdlib_src = extract / "usr" / "lib" / f"python{PY}"
    (dest / "bin").mkdir(parents=True)
    lib = dest / "lib"
    shutil.copytree(stdlib_src, lib / f"python{PY}", symlinks=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == stdlib_src and n in PRUNED])
    (lib / f"python{PY}" / "sitecustomize.py").unlink()  # Debian's links to /etc/python3.11 (apport's hook)
    shutil.copy2(Path(__file__).with_name("pkg") / "runtime" / "sitecustomize.py", lib / f"python{PY}" / "sitecustomize.py")
    exe = dest / "bin" / f"python{PY}"
    shutil.copy2(extract / "usr" / "bin" / f"python{PY}", exe)
    for alias in ("python3", "python"):
        (dest / "bin" / alias).symlink_to(f"python{PY}")

    # The libraries: what the interpreter, the stdlib's modules and the wheels' modules need, transitively.
    dynload = lib / f"python{PY}" / "lib-dynload"
    roots: list[tuple[str, Elf, set[str]]] = [(exe.name, Elf(exe.read_bytes(), exe.name), set())]
    for mod in sorted(dynload.glob("*.so")):
        if mod.name.split(".")[0] in DROPPED_MODULES:
            mod.unlink()
            continue
        roots.append((mod.name, Elf(mod.read_bytes(), mod.name), set()))
    wheel_mods = _wheel_extensions(wheels, arch)
    roots += wheel_mods
    shipped: dict[str, Path] = {}
    todo = [(name, lib_name) for name, elf, bundled in roots for lib_name in elf.needed() if lib_name not in bundled]
    todo += [("(loaded at run time)", n) for n in (loader, *PRELOADED)]
    problems = []
    while todo:
        who, soname = todo.pop()
        if soname in shipped:
            continue
        if soname not in pool:
            problems.append(f"{who} needs {soname}, which no runtime package provides")
            continue
        shipped[soname] = pool[soname]
        todo += [(soname, n) for n in Elf(pool[soname].read_bytes(), soname).needed()]
    if problems:
        raise SystemExit("Python runtime for " + arch + ":\n  " + "\n  ".join(sorted(set(problems))))
    for soname, real in sorted(shipped.items()):
        shutil.copy2(real, lib / soname)
    if arch == "aarch64":  # Kunpeng/Phytium servers often run kernels with 64 KiB pages (openEuler, Kylin server)
        elves = [*roots, *((n, Elf(p.read_bytes(), n), set()) for n, p in shipped.items())]
        small = sorted(name for name, elf, _b in elves if elf.load_align() < PAGE_64K)
        if small:
            raise SystemExit("not loadable under a 64K-page kernel (segments aligned below 64 KiB): " + ", ".join(small))
    # A wheel module with its own RUNPATH does not use the interpreter's RPATH: what it takes from the system
    # (libgcc_s, libstdc++ …) is loaded at start instead, so the host's copy is never picked.
    preload = sorted({n for _w, elf, bundled in wheel_mods if elf.runpath() for n in elf.needed()
                      if n not in bundled and n in shipped} | set(PRELOADED))
    # Two runs: patchelf 0.14 writes a wrong RPATH when --add-needed comes in the same run.
    subprocess.run(["patchelf", *(a for n in preload for a in ("--add-needed", n)), str(exe)], check=True)
    subprocess.run(["patchelf", "--set-interpreter", PLACEHOLDER.ljust(INTERP_SPACE - 1, "/"), "--force-rpath",
                    "--set-rpath", "$ORIGIN/../lib", str(exe)], check=True)
    elf = Elf(exe.read_bytes(), exe.name)
    if elf.rpath() != ["$ORIGIN/../lib"] or not set(preload) <= set(elf.needed()):
        raise SystemExit(f"patchelf did not set what was asked: RPATH {elf.rpath()}, NEEDED {elf.needed()}")
    offset, size = elf.interp()
    if size != INTERP_SPACE:
        raise SystemExit(f"patchelf left PT_INTERP at {size} bytes, not {INTERP_SPACE}")

    packages = {}
    for deb in debs:
        name = _deb_field(deb, "Package")
        packages[name] = _deb_field(deb, "Version")
        copyright_file = extract / "usr" / "share" / "doc" / name / "copyright"
        if copyright_file.exists():
            shutil.copy2(copyright_file, _parent(dest / "share" / "doc" / name / "copyright"))
    manifest: dict[str, object] = {
        "python": PY, "arch": arch, "loader": loader, "interp_offset": offset, "interp_size": size,
        "source": f"Debian {SUITE} ({MIRROR})", "packages": packages,
        "libraries": sorted(shipped), "dropped_modules": list(DROPPED_MODULES)}
    (dest / "RUNTIME").write_text(_runtime_text(manifest))
    shutil.rmtree(extract)
    return manifest


def _runtime_text(m: dict[str, object]) -> str:
    """RUNTIME: ``key=value`` lines install.sh reads with plain shell, then the details as JSON."""
    head = "".join(f"{k}={m[k]}\n" for k in ("python", "arch", "loader", "interp_offset", "interp_size"))
    return head + "# Debian packages, shipped libraries:\n" + json.dumps(m, indent=1, sort_keys=True) + "\n"


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def install_interp(runtime: Path) -> None:
    """Write the runtime's loader path into its interpreter (what install.sh does; for tests and the build)."""
    fields = dict(line.split("=", 1) for line in (runtime / "RUNTIME").read_text().splitlines()
                  if "=" in line and not line.startswith(("#", " ", "{", "}")))
    path = str(runtime.resolve() / "lib" / fields["loader"]).encode()
    size = int(fields["interp_size"])
    if len(path) >= size:
        raise ValueError(f"{path!r} is too long for the interpreter's {size} bytes")
    exe = runtime / "bin" / f"python{PY}"
    with open(exe, "r+b") as f:
        f.seek(int(fields["interp_offset"]))
        f.write(path + b"\0" * (size - len(path)))


def smoke(runtime: Path) -> str:
    """Run the runtime's interpreter on this machine (same architecture, or qemu-user): its version, or the error."""
    code = "import ssl, sqlite3, ctypes, lzma, bz2, zlib, decimal, uuid, pyexpat, sys; print(sys.version.split()[0])"
    r = subprocess.run([str(runtime / "bin" / f"python{PY}"), "-I", "-c", code], capture_output=True, text=True,
                       check=False, env={"PATH": "/usr/bin:/bin"})
    return r.stdout.strip() if r.returncode == 0 else f"error: {r.stderr.strip()}"


__all__ = ["ARCH", "Elf", "build_runtime", "fetch_debs", "install_interp", "smoke"]

if __name__ == "__main__":  # quick look: python3 scripts/pyruntime.py x86_64 DEST
    import sys

    arch_, dest_ = sys.argv[1], Path(sys.argv[2])
    cache_ = Path(__file__).resolve().parent.parent / ".cache" / "packaging" / "runtime"
    debs_ = fetch_debs(arch_, cache_)
    wheels_ = sorted((cache_.parent / "wheels" / arch_).glob("*.whl"))
    m_ = build_runtime(arch_, debs_, wheels_, dest_, cache_)
    install_interp(dest_)
    print(json.dumps(m_["libraries"]), smoke(dest_))
