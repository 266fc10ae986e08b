#!/usr/bin/env bash
# infra/prometheus/run.sh prometheus|alertmanager — the supervisord programs of the same names:
# render the config from the settings into .local/prometheus/ (python -m stockpipe.monitoring.promconfig),
# then exec Debian's server with the flags it printed (127.0.0.1 only, data under .local/prometheus/).
set -euo pipefail
HOME_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export STOCKPIPE_HOME="${STOCKPIPE_HOME:-$HOME_DIR}"
LOCAL="${STOCKPIPE_LOCAL:-$HOME_DIR/.local}"
PY="$HOME_DIR/.venv/bin/python"
case "${1:-}" in
  prometheus) bin="${PROMETHEUS_BIN:-/usr/bin/prometheus}" ;;
  alertmanager) bin="${ALERTMANAGER_BIN:-/usr/bin/prometheus-alertmanager}" ;;
  *) echo "usage: $0 prometheus|alertmanager" >&2; exit 2 ;;
esac
[ -x "$bin" ] || { echo "$bin not found: 'make install' installs Debian's prometheus packages" >&2; exit 1; }
mkdir -p "$LOCAL/prometheus"
mapfile -t flags < <("$PY" -m stockpipe.monitoring.promconfig "$1" "$LOCAL/prometheus/$1.yml")
[ ${#flags[@]} -gt 0 ] || { echo "could not render $LOCAL/prometheus/$1.yml" >&2; exit 1; }
exec "$bin" "${flags[@]}"
