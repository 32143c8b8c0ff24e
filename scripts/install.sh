#!/usr/bin/env bash
# Install roomwatch: a private venv, configs with a generated agent token, systemd units.
# The one installer of the project: run from a git checkout (scripts/install.sh), from an
# offline bundle (roomwatch-<version>-offline-<arch>/install.sh), and by the .deb/.rpm
# maintainer scripts (--package). Safe to run again: upgrades the program, keeps configs,
# data and generated secrets. docs/install.md tells the whole story.
#
#   sudo ./install.sh [--agent] [--collector] [--enable] [--gpio] [--python PATH]
#   ./install.sh --prefix DIR --no-systemd        # everything under DIR, no root needed
#
#   --agent / --collector  which service(s) to set up (default: both)
#   --enable               systemctl enable --now the chosen services
#   --prefix DIR           the venv (default /opt/roomwatch); with --no-systemd also the
#                          configs (DIR/etc/roomwatch) and the data (DIR/var/lib/roomwatch)
#   --no-systemd           no system user, no units, no systemctl: a trial or test install
#   --python PATH          the interpreter for the venv: a Python >= 3.11 of this system; default: the
#                          bundle's own Python 3.11 (python/, any glibc), else the newest system one found
#   --wheels DIR           install offline from these wheels (default: the bundle's wheels/)
#   --source PATH|WHEEL    what pip installs when there are no wheels (a checkout: this one)
#   --gpio                 also the gpio extra (libgpiod bindings) for GPIO contacts
#   --root DIR             stage files into DIR only (packaging, tests): no user, no venv
#   --package deb|rpm      called by the package's maintainer scripts: files are in place
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)"
# The bundle (and the packages) carry wheels/, config/ and systemd/ beside this script;
# a checkout has them one level up (scripts/ ..).
if [ -d "$self/config" ]; then src="$self"; else src="$(cd "$self/.." && pwd)"; fi
prefix=/opt/roomwatch root="" source="" wheels="" python="" enable=0 systemd=1 package=""
want_agent=0 want_collector=0 extras="" prefix_set=0

while [ $# -gt 0 ]; do
  case "$1" in
    --agent) want_agent=1 ;;
    --collector) want_collector=1 ;;
    --enable) enable=1 ;;
    --source) source="$2"; shift ;;
    --wheels) wheels="$(realpath "$2")"; shift ;;
    --python) python="$2"; shift ;;
    --gpio) extras="[gpio]" ;;
    --prefix) prefix="$(realpath -m "$2")"; prefix_set=1; shift ;;
    --no-systemd) systemd=0 ;;
    --root) root="$(realpath -m "$2")"; shift ;;
    --package) package="$2"; shift ;;
    --no-venv) ;;  # accepted for old callers: an existing venv is kept and upgraded anyway
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$want_agent" = 0 ] && [ "$want_collector" = 0 ]; then want_agent=1 want_collector=1; fi
if [ -z "$wheels" ] && [ -d "$src/wheels" ]; then wheels="$src/wheels"; fi
if [ -z "$source" ] && [ -z "$wheels" ]; then source="$src"; fi

etc=/etc/roomwatch state=/var/lib/roomwatch units_dir=/etc/systemd/system
if [ "$systemd" = 0 ] && [ "$prefix_set" = 1 ]; then etc="$prefix/etc/roomwatch" state="$prefix/var/lib/roomwatch"; fi
if [ -n "$root" ]; then systemd=0; fi
if [ "$systemd" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "run as root (sudo $0), or use --prefix DIR --no-systemd for a trial under DIR" >&2; exit 2
fi
# Packages own their unit files (/lib/systemd/system, /usr/lib/systemd/system); this script only
# installs units in a plain (bundle or checkout) install.
[ -n "$package" ] && units_dir=""

say() { printf '==> %s\n' "$*"; }
put() {  # put MODE SRC DEST: copy a file, creating the folder
  install -D -m "$1" "$2" "$root$3"
}
put_once() {  # like put, but never overwrite a file the admin may have edited
  if [ -e "$root$3" ]; then say "keeping existing $3"; else put "$@"; fi
}

# 1. The user: a static system user, so the polkit rule and file ownership can name it.
if [ "$systemd" = 1 ]; then
  getent group gpio >/dev/null || { say "creating group gpio"; groupadd --system gpio; }
  if ! id roomwatch >/dev/null 2>&1; then
    say "creating system user roomwatch"
    nologin=/usr/sbin/nologin; [ -x "$nologin" ] || nologin=/sbin/nologin
    useradd --system --user-group --home-dir "$state" --no-create-home \
            --shell "$nologin" --comment "roomwatch monitor" roomwatch
  fi
fi

# 2. The program: a venv under $prefix, roomwatch installed into it (from wheels: no network).
py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
rt_field() { sed -n "s/^$1=//p" "$src/python/RUNTIME"; }
# The bundle's own Python (scripts/pyruntime.py): Debian 12's CPython 3.11 with its own glibc loader and
# libraries, so it runs where the system's Python is older (Kylin V10, UOS 20, openEuler 22.03, Debian 11)
# and whatever the system's glibc. Its interpreter learns where its loader is: the loader's absolute path is
# written into the space left for it (PT_INTERP) once the runtime is in place under $prefix/python.
install_runtime() {
  local rt="$prefix/python" new="$prefix/python.new" old="$prefix/python.old" loader offset size path len
  loader="$(rt_field loader)" offset="$(rt_field interp_offset)" size="$(rt_field interp_size)"
  path="$rt/lib/$loader"
  len="$(printf '%s' "$path" | wc -c)"
  if [ "$len" -ge "$size" ]; then
    echo "the install folder's path is too long for the bundled Python ($len bytes, at most $((size - 1)))" >&2; exit 2
  fi
  say "installing the bundled Python $(rt_field python) into $rt"
  rm -rf "$new" "$old"
  mkdir -p "$prefix"
  cp -a "$src/python" "$new"
  { printf '%s' "$path"; head -c "$((size - len))" /dev/zero; } \
    | dd of="$new/bin/python$(rt_field python)" bs=1 seek="$offset" conv=notrunc status=none
  # Swap in (a running service keeps the files it has open), then check it starts; else put the old one back.
  [ -e "$rt" ] && mv "$rt" "$old"
  mv "$new" "$rt"
  if ! "$rt/bin/python3" -I -c 'import ssl, sqlite3, ctypes, zlib' >/dev/null; then
    rm -rf "$rt"; [ -e "$old" ] && mv "$old" "$rt"
    echo "the bundled Python does not start on this machine (kernel $(uname -r), $(uname -m)); pass --python PATH" \
         "to a Python >= 3.11 of this system instead (docs/install.md)" >&2
    exit 1
  fi
  rm -rf "$old"
  # Byte-code once (unchecked-hash: valid whatever the files' times), as the service user cannot write it.
  "$rt/bin/python3" -I -m compileall -q -j 0 --invalidation-mode unchecked-hash "$rt/lib" >/dev/null || true
  python="$rt/bin/python$(rt_field python)"
}
if [ -z "$root" ] && [ -f "$src/python/RUNTIME" ] && [ "$(rt_field arch)" != "$(uname -m)" ]; then
  echo "this bundle is for $(rt_field arch), this machine is $(uname -m): use roomwatch-<version>-offline-$(uname -m)" >&2
  exit 2
fi
if [ -z "$root" ]; then
  if [ -z "$python" ] && [ -f "$src/python/RUNTIME" ]; then
    install_runtime
  elif [ -z "$python" ]; then
    # The system's interpreters first: the service user must be able to run the venv's Python
    # (one under /root, e.g. pyenv's, is not readable by it).
    for c in /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11 /usr/bin/python3 \
             /usr/local/bin/python3.13 /usr/local/bin/python3.12 /usr/local/bin/python3.11 python3.13 python3.12 python3.11 python3; do
      if command -v "$c" >/dev/null && py_ok "$c"; then python="$(command -v "$c")"; break; fi
    done
  fi
  if [ -z "$python" ] || ! py_ok "$python"; then
    echo "roomwatch needs Python 3.11 or newer (found: ${python:-none}); the offline bundle and the packages" \
         "bring their own; docs/install.md lists where each distribution gets one; then: $0 --python /path/to/python3.11" >&2
    exit 2
  fi
  # A system Python chosen now: the bundled one of an earlier install is no longer used.
  case "$python" in "$prefix/python/"*) ;; *) rm -rf "$prefix/python" ;; esac
  # A venv made by another interpreter (the system's Python was upgraded, or the bundled one replaces it) is made anew.
  if [ -e "$prefix/pyvenv.cfg" ] && [ "$(readlink -f "$prefix/bin/python")" != "$(readlink -f "$python")" ]; then
    say "the venv $prefix was made by another Python: making it anew"
    rm -rf "$prefix/bin" "$prefix/lib" "$prefix/lib64" "$prefix/include" "$prefix/pyvenv.cfg"
  fi
  if [ ! -x "$prefix/bin/python" ]; then
    say "creating venv $prefix with $python"
    # --without-pip: works without Debian's python3-venv (ensurepip); pip comes from the wheels.
    "$python" -m venv --without-pip "$prefix"
  fi
  pip=("$prefix/bin/python" -m pip)
  if [ -n "$wheels" ]; then
    say "installing roomwatch from $wheels (offline) into $prefix"
    if ! "$prefix/bin/python" -m pip --version >/dev/null 2>&1; then
      pipwhl="$(ls "$wheels"/pip-*.whl | head -n1)"
      pip=("$prefix/bin/python" "$pipwhl/pip")  # pip runs from its own wheel to install itself
    fi
    env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
        "${pip[@]}" install -q --disable-pip-version-check --no-index --find-links "$wheels" \
        --upgrade pip "roomwatch$extras"
  else
    say "installing roomwatch from $source into $prefix"
    "$prefix/bin/python" -m pip --version >/dev/null 2>&1 || "$prefix/bin/python" -m ensurepip -q
    "${pip[@]}" install -q --disable-pip-version-check --upgrade pip
    "${pip[@]}" install -q --disable-pip-version-check --upgrade "$source$extras"  # PATH[gpio], WHEEL[gpio]
  fi
  "$prefix/bin/roomwatch" --version
fi

# 3. Configuration: generated once, never replaced. The agent's token is random (roomwatch
#    gen-token), mode 0600, handed to the sandboxed agent as a systemd credential; the
#    collector file holds only its sha256 hash. No well-known secret is ever installed.
fix_paths() {  # the examples name /etc/roomwatch and /var/lib/roomwatch: point them at this install
  sed -e "s|/etc/roomwatch|$etc|g" -e "s|/var/lib/roomwatch|$state|g" "$1"
}
token_file="$etc/agent-token"
new_secret() {
  if [ -z "$root" ]; then "$prefix/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))'
  else python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; fi
}
token_hash() {  # sha256:<hex> of the token in a file, as the collector compares it (surrounding space stripped)
  python3_=${prefix}/bin/python; [ -x "$python3_" ] || python3_=python3
  "$python3_" -c 'import hashlib, sys; t = open(sys.argv[1], encoding="utf-8").read().strip()
print("sha256:" + hashlib.sha256(t.encode()).hexdigest())' "$1"
}
mkdir -p "$root$etc"
# An earlier installer wrote this placeholder; it is no secret, so it is replaced.
if [ ! -s "$root$token_file" ] || grep -qx 'replace-me-with-the-agent-token' "$root$token_file"; then
  say "generating the agent token $token_file (mode 0600)"
  (umask 077; new_secret > "$root$token_file.new" && mv "$root$token_file.new" "$root$token_file")
else
  say "keeping the existing agent token $token_file"
fi
chmod 0600 "$root$token_file"
tmp="$(mktemp)"; trap 'rm -f "$tmp"' EXIT
if [ "$want_agent" = 1 ]; then
  fix_paths "$src/config/agent.example.yaml" > "$tmp"
  put_once 0640 "$tmp" "$etc/agent.yaml"
fi
if [ "$want_collector" = 1 ]; then
  # The example's agent entry carries an all-zero hash no token matches: put the real one in.
  hash="$(token_hash "$root$token_file")"
  fix_paths "$src/config/collector.example.yaml" \
    | sed -e "s|sha256:0\{64\}|$hash|" > "$tmp"
  put_once 0640 "$tmp" "$etc/collector.yaml"
fi
mkdir -p "$root$state"

# 4. systemd units and the rules the agent needs (a package installs its own copies).
if [ -n "$units_dir" ] && { [ "$systemd" = 1 ] || [ -n "$root" ]; }; then
  unit() {  # unit NAME: the unit with this install's paths
    sed -e "s|/opt/roomwatch/|$prefix/|g" "$src/systemd/$1" > "$tmp"
    put 0644 "$tmp" "$units_dir/$1"
  }
  if [ "$want_agent" = 1 ]; then
    unit roomwatch-agent.service
    put 0644 "$src/systemd/polkit/50-roomwatch-poweroff.rules" /etc/polkit-1/rules.d/50-roomwatch-poweroff.rules
    put 0644 "$src/systemd/udev/60-roomwatch-gpio.rules" /etc/udev/rules.d/60-roomwatch-gpio.rules
  fi
  [ "$want_collector" = 1 ] && unit roomwatch-collector.service
fi

if [ "$systemd" = 1 ]; then
  chown root:roomwatch "$etc" "$etc"/*.yaml
  chmod 0750 "$etc"
  chown roomwatch:roomwatch "$state"
  chmod 0750 "$state"
  if [ -d /run/systemd/system ]; then
    udevadm control --reload-rules 2>/dev/null && udevadm trigger --subsystem-match=gpio 2>/dev/null || true
    systemctl daemon-reload || true
  fi
fi
if [ -z "$root" ]; then
  for f in "$etc"/agent.yaml "$etc"/collector.yaml; do
    [ -e "$f" ] || continue
    "$prefix/bin/roomwatch" check-config "$f" || say "fix $f before starting"
  done
fi
units=()
[ "$want_collector" = 1 ] && units+=(roomwatch-collector.service)
[ "$want_agent" = 1 ] && units+=(roomwatch-agent.service)
if [ "$systemd" = 1 ] && [ -d /run/systemd/system ]; then
  if [ "$enable" = 1 ]; then
    systemctl enable --now "${units[@]}"
    systemctl --no-pager status "${units[@]}" || true
  elif [ -n "$package" ]; then
    # An upgrade restarts what was running; a first install starts nothing before setup.
    systemctl try-restart "${units[@]}" || true
  fi
fi
if [ -z "$root" ] && [ -z "$package" ]; then
  if [ "$systemd" = 1 ]; then
    say "next: sudo $prefix/bin/roomwatch setup   (or edit $etc/*.yaml), then: systemctl enable --now ${units[*]}"
  else
    say "installed under $prefix: $prefix/bin/roomwatch --help; configs in $etc"
  fi
fi
say "done"
