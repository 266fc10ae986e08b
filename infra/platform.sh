#!/usr/bin/env bash
# Which system packages the native stack needs on this machine, and where their binaries are.
# Sourced by infra/stack.sh and infra/run-tests.sh; also a small CLI for tests and humans:
#   infra/platform.sh os                  debian-12 | debian-13 | ubuntu-24.04 | unsupported
#   infra/platform.sh packages            component=package lines for this system (apt names)
#   infra/platform.sh detect              PG_BIN=… REDIS_SERVER=… CHROMIUM=… PYTHON=… (found binaries)
#   infra/platform.sh unsupported         the one sentence printed when the system is not supported
# Inputs, so that every branch can be tested on any machine:
#   PLATFORM_OS_RELEASE  the os-release file (default /etc/os-release)
#   PLATFORM_ROOT        prefix of every looked-up path (default: none, i.e. the real filesystem)
#   PLATFORM_PATH        the directories searched for chromium/chrome (default: $PATH)
# Functions print their answer (empty when nothing fits) and always return 0, so `set -e` callers
# can use $(…) freely.

# Supported systems and the distribution's own package for each component. PostgreSQL is the
# distribution's default major (>= 15); Java the default JRE that Spark 4 and Kafka 4 run on.
#   os id         postgres        redis         java                     chromium   venv
_PLATFORM_TABLE="
debian-12       postgresql-15   redis-server  openjdk-17-jre-headless  chromium   python3-venv
debian-13       postgresql-17   redis-server  openjdk-21-jre-headless  chromium   python3-venv
ubuntu-24.04    postgresql-16   redis-server  openjdk-17-jre-headless  -          python3-venv
"
PLATFORM_SUPPORTED="Debian 12, Debian 13 and Ubuntu 24.04"
PLATFORM_PG_MIN=15

_os_release_value() {  # _os_release_value KEY : the unquoted value of KEY in the os-release file
  local file="${PLATFORM_OS_RELEASE:-${PLATFORM_ROOT:-}/etc/os-release}"
  [ -r "$file" ] || return 0
  sed -n "s/^$1=//p" "$file" | head -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/"
}

platform_os() {  # debian-12 | debian-13 | ubuntu-24.04 | unsupported
  local id version
  id=$(_os_release_value ID)
  version=$(_os_release_value VERSION_ID)
  # Debian testing/sid have no VERSION_ID; a derivative (ID_LIKE=debian) is not assumed to match.
  if awk -v os="$id-$version" '$1 == os {found=1} END {exit !found}' <<<"$_PLATFORM_TABLE"; then
    echo "$id-$version"
  else
    echo unsupported
  fi
}

platform_unsupported_message() {
  local name; name=$(_os_release_value PRETTY_NAME)
  echo "stockpipe installs its services on $PLATFORM_SUPPORTED only; this is ${name:-an unknown system}: install PostgreSQL >= $PLATFORM_PG_MIN, Redis (or Valkey), Java 17+, Maven, Prometheus and a headless Chromium yourself, set PG_BIN / REDIS_SERVER / STOCKPIPE_CHROMIUM, and rerun."
}

platform_package() {  # platform_package COMPONENT : postgres|redis|java|chromium|venv → apt package ("" if none)
  local os; os=$(platform_os)
  local col
  case "$1" in postgres) col=2 ;; redis) col=3 ;; java) col=4 ;; chromium) col=5 ;; venv) col=6 ;; *) return 0 ;; esac
  awk -v os="$os" -v col="$col" '$1 == os && $col != "-" {print $col}' <<<"$_PLATFORM_TABLE"
}

platform_packages() {  # component=package for this system, one a line
  local c
  for c in postgres redis java chromium venv; do echo "$c=$(platform_package "$c")"; done
}

platform_pg_bin() {  # platform_pg_bin [MAJOR] : bin dir of the highest installed PostgreSQL >= 15
  # (or of MAJOR when it is installed: an existing data directory needs the server that made it)
  local root="${PLATFORM_ROOT:-}" want="${1:-}" best="" best_v=0 dir v
  if [ -n "$want" ] && [ -x "$root/usr/lib/postgresql/$want/bin/postgres" ]; then
    echo "/usr/lib/postgresql/$want/bin"; return 0
  fi
  for dir in "$root"/usr/lib/postgresql/*/bin; do
    v=$(basename "$(dirname "$dir")")
    case "$v" in ''|*[!0-9]*) continue ;; esac
    [ -x "$dir/postgres" ] && [ "$v" -ge "$PLATFORM_PG_MIN" ] && [ "$v" -gt "$best_v" ] && { best_v=$v; best="/usr/lib/postgresql/$v/bin"; }
  done
  if [ -z "$best" ] && [ -z "$root" ] && command -v pg_config >/dev/null 2>&1; then
    # not Debian's layout (e.g. a PGDG or source build): pg_config knows where its server is
    dir=$(pg_config --bindir 2>/dev/null || true)
    v=$(pg_config --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
    [ -n "$dir" ] && [ -x "$dir/postgres" ] && [ "${v:-0}" -ge "$PLATFORM_PG_MIN" ] && best="$dir"
  fi
  echo "$best"
}

platform_redis_server() {  # the Redis-protocol server binary: redis-server, else valkey-server
  local root="${PLATFORM_ROOT:-}" name dir
  for name in redis-server valkey-server; do
    for dir in /usr/bin /usr/local/bin /usr/sbin; do
      [ -x "$root$dir/$name" ] && { echo "$dir/$name"; return 0; }
    done
  done
  return 0
}

_is_snap_stub() {  # Ubuntu's chromium(-browser) debs only hand over to the snap
  local path="$1" real
  real=$(readlink -f "$path" 2>/dev/null || echo "$path")
  case "$real" in */snap/*) return 0 ;; esac
  [ "$(head -c 2 "$path" 2>/dev/null)" = "#!" ] && grep -q snap "$path" 2>/dev/null
}

platform_chromium() {  # a real headless-capable Chromium/Chrome: Debian's, or one already on PATH
  local root="${PLATFORM_ROOT:-}" name dir candidate
  local IFS=:
  local dirs=(${PLATFORM_PATH:-$PATH})
  unset IFS
  for name in chromium chromium-browser google-chrome-stable google-chrome chrome; do
    for dir in "${dirs[@]}"; do
      [ -n "$dir" ] || continue
      candidate="$root$dir/$name"
      [ -f "$candidate" ] && [ -x "$candidate" ] || continue
      _is_snap_stub "$candidate" && continue
      echo "$dir/$name"; return 0
    done
  done
  return 0
}

platform_python() {  # an interpreter for the venv: Python 3.11 (pyproject: >=3.11,<3.12)
  local root="${PLATFORM_ROOT:-}" name dir
  local IFS=:
  local dirs=(${PLATFORM_PATH:-$PATH})
  unset IFS
  for name in python3.11 python3; do
    for dir in "${dirs[@]}"; do
      [ -n "$dir" ] && [ -x "$root$dir/$name" ] || continue
      if [ -z "$root" ]; then
        "$dir/$name" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || continue
      elif [ "$name" = python3 ]; then
        continue  # a fake tree can't run its python3 to ask its version
      fi
      echo "$dir/$name"; return 0
    done
  done
  return 0
}

platform_detect() {
  echo "OS=$(platform_os)"
  echo "PG_BIN=$(platform_pg_bin "${1:-}")"
  echo "REDIS_SERVER=$(platform_redis_server)"
  echo "CHROMIUM=$(platform_chromium)"
  echo "PYTHON=$(platform_python)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    os) platform_os ;;
    packages) platform_packages ;;
    detect) shift; platform_detect "$@" ;;
    unsupported) platform_unsupported_message ;;
    *) echo "usage: $0 os|packages|detect [PG_MAJOR]|unsupported" >&2; exit 2 ;;
  esac
fi
