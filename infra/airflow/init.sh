#!/usr/bin/env bash
# Initialise Airflow for the local stack (idempotent; called by `make up` before starting it):
# secrets and the admin login under .local/airflow, the `airflow` role and database in the project's
# PostgreSQL, `airflow db migrate`, and the connections made from the settings.
set -euo pipefail
HOME_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="$HOME_DIR/.venv/bin/python"
AIRFLOW="$HOME_DIR/infra/airflow/airflow.sh"

"$PY" -m stockpipe.airflow.bootstrap secrets >/dev/null
"$PY" -m stockpipe.airflow.bootstrap database
state="${STOCKPIPE_LOCAL:-$HOME_DIR/.local}/airflow"
# `db migrate` is idempotent but slow (~10 s): once per Airflow version (the stamp lives next to
# the secrets, so `make clean` resets both).
stamp="$state/.migrated-$("$PY" -c 'import airflow; print(airflow.__version__)')"
if [ ! -f "$stamp" ]; then
  "$AIRFLOW" db migrate
  touch "$stamp"
fi
# Connections follow the settings: re-imported whenever they changed.
conns="$(mktemp --suffix=.json)"
trap 'rm -f "$conns"' EXIT
"$PY" -m stockpipe.airflow.bootstrap connections "$conns"
digest="$(sha256sum "$conns" | cut -c1-16)"
if [ "$(cat "$state/.connections" 2>/dev/null)" != "$digest" ]; then
  "$AIRFLOW" connections import "$conns" --overwrite
  echo "$digest" > "$state/.connections"
fi
