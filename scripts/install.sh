#!/usr/bin/env bash
# Install roomwatch as systemd services: a venv under /opt/roomwatch, the system user
# "roomwatch", configs in /etc/roomwatch, the units, the polkit rule for the shutdown
# action and the udev rule for GPIO chips. Safe to run again (upgrades the venv, keeps configs).
#
#   sudo scripts/install.sh [--agent] [--collector] [--enable] [--source PATH|WHEEL]
#                           [--gpio] [--prefix /opt/roomwatch] [--root DIR] [--no-venv]
#
#   --agent / --collector  which service(s) to set up (default: both)
#   --enable               systemctl enable --now the chosen services
#   --source               what pip installs (default: this checkout); a wheel works too
#   --gpio                 also install the gpio extra (libgpiod bindings) for GPIO contacts
#   --root DIR             install into DIR as a staging root (packaging, tests): no user,
#                          no venv, no systemctl — only files
#   --no-venv              keep an existing /opt/roomwatch as it is
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
prefix=/opt/roomwatch root="" source="$here" enable=0 venv=1 want_agent=0 want_collector=0 extras=""

while [ $# -gt 0 ]; do
  case "$1" in
    --agent) want_agent=1 ;;
    --collector) want_collector=1 ;;
    --enable) enable=1 ;;
    --source) source="$2"; shift ;;
    --gpio) extras="[gpio]" ;;
    --prefix) prefix="$2"; shift ;;
    --root) root="$(realpath -m "$2")"; shift ;;
    --no-venv) venv=0 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$want_agent" = 0 ] && [ "$want_collector" = 0 ]; then want_agent=1 want_collector=1; fi
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then echo "run as root (sudo $0)" >&2; exit 2; fi

say() { printf '==> %s\n' "$*"; }
staging() { [ -n "$root" ]; }
put() {  # put MODE SRC DEST: copy a file, creating the folder
  install -D -m "$1" "$2" "$root$3"
}
put_once() {  # like put, but never overwrite a file the admin may have edited
  if [ -e "$root$3" ]; then say "keeping existing $3"; else put "$@"; fi
}

# 1. The user: a static system user, so the polkit rule and file ownership can name it.
if ! staging; then
  getent group gpio >/dev/null || { say "creating group gpio"; groupadd --system gpio; }
  if ! id roomwatch >/dev/null 2>&1; then
    say "creating system user roomwatch"
    useradd --system --user-group --home-dir /var/lib/roomwatch --no-create-home \
            --shell /usr/sbin/nologin --comment "roomwatch monitor" roomwatch
  fi
fi

# 2. The program: a venv under $prefix, roomwatch installed into it.
if ! staging && [ "$venv" = 1 ]; then
  py=""
  for c in python3.13 python3.12 python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then py="$c"; break; fi
  done
  [ -n "$py" ] || { echo "roomwatch needs Python 3.11 or newer" >&2; exit 2; }
  [ -x "$prefix/bin/python" ] || { say "creating venv $prefix"; "$py" -m venv "$prefix"; }
  say "installing roomwatch from $source into $prefix"
  "$prefix/bin/python" -m pip install -q --upgrade pip
  "$prefix/bin/python" -m pip install -q --upgrade "$source$extras"  # PATH[gpio] and WHEEL[gpio] both work
  "$prefix/bin/roomwatch" --version
fi

# 3. Configuration in /etc/roomwatch (readable by the service, not by other users).
etc=/etc/roomwatch
if [ "$want_agent" = 1 ]; then
  # Under systemd the token comes in as a credential (LoadCredential=agent-token:...).
  tmp="$(mktemp)"
  sed -e 's|^  token: .*|  token_file: ${CREDENTIALS_DIRECTORY:-/etc/roomwatch}/agent-token|' \
      -e '/^  # token_file: \/etc/d' "$here/config/agent.example.yaml" > "$tmp"
  put_once 0640 "$tmp" "$etc/agent.yaml"; rm -f "$tmp"
  if [ ! -e "$root$etc/agent-token" ]; then
    say "writing a placeholder $etc/agent-token: put the agent's token there (roomwatch gen-token)"
    tmp="$(mktemp)"; echo "replace-me-with-the-agent-token" > "$tmp"
    put 0600 "$tmp" "$etc/agent-token"; rm -f "$tmp"
  fi
  put 0644 "$here/systemd/roomwatch-agent.service" /etc/systemd/system/roomwatch-agent.service
  put 0644 "$here/systemd/polkit/50-roomwatch-poweroff.rules" /etc/polkit-1/rules.d/50-roomwatch-poweroff.rules
  put 0644 "$here/systemd/udev/60-roomwatch-gpio.rules" /etc/udev/rules.d/60-roomwatch-gpio.rules
fi
if [ "$want_collector" = 1 ]; then
  put_once 0640 "$here/config/collector.example.yaml" "$etc/collector.yaml"
  put 0644 "$here/systemd/roomwatch-collector.service" /etc/systemd/system/roomwatch-collector.service
fi
if [ "$prefix" != /opt/roomwatch ]; then
  for u in "$root"/etc/systemd/system/roomwatch-*.service; do
    sed -i "s|^ExecStart=/opt/roomwatch/|ExecStart=$prefix/|" "$u"
  done
fi
if ! staging; then
  chown root:roomwatch "$etc" "$etc"/*.yaml
  chmod 0750 "$etc"
  udevadm control --reload-rules 2>/dev/null && udevadm trigger --subsystem-match=gpio 2>/dev/null || true
  systemctl daemon-reload
  units=()
  [ "$want_collector" = 1 ] && units+=(roomwatch-collector.service)
  [ "$want_agent" = 1 ] && units+=(roomwatch-agent.service)
  for f in "$etc"/*.yaml; do "$prefix/bin/roomwatch" check-config "$f" || say "fix $f before starting"; done
  if [ "$enable" = 1 ]; then
    systemctl enable --now "${units[@]}"
    systemctl --no-pager status "${units[@]}" || true
  else
    say "edit the files in $etc, then: systemctl enable --now ${units[*]}"
  fi
fi
say "done"
