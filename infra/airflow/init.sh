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
# `db migrate` is idempotent but slow (~15 s): once per Airflow version and database.
stamp="${STOCKPIPE_LOCAL:-$HOME_DIR/.local}/airflow/.migrated-$("$PY" -c 'import airflow; print(airflow.__version__)')"
if [ ! -f "$stamp" ] || ! "$AIRFLOW" db check-migrations -t 0 >/dev/null 2>&1; then
  "$AIRFLOW" db migrate
  touch "$stamp"
fi
conns="$(mktemp --suffix=.json)"
trap 'rm -f "$conns"' EXIT
"$PY" -m stockpipe.airflow.bootstrap connections "$conns"
"$AIRFLOW" connections import "$conns" --overwrite
