#!/usr/bin/env bash
# `airflow` inside docker-compose.yaml's containers (the native stack uses infra/airflow/airflow.sh).
#   airflow.sh init        the airflow-init job: secrets + admin login in the shared volume
#                          (.local/airflow), the `airflow` role/database, `db migrate`, connections
#   airflow.sh ARGS...     any airflow command with those secrets and the metadata DB in `postgres`
set -euo pipefail
LOCAL="${STOCKPIPE_LOCAL:-/opt/stockpipe/.local}"
if [ "${1:-}" = init ]; then
  python -m stockpipe.airflow.bootstrap secrets >/dev/null
  python -m stockpipe.airflow.bootstrap database
fi
set -a
# shellcheck disable=SC1091
. "$LOCAL/airflow/secrets.env"
set +a
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://airflow:${STOCKPIPE_AIRFLOW_DB_PASSWORD}@${STOCKPIPE_PG_HOST}:${STOCKPIPE_PG_PORT}/airflow"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$LOCAL/airflow/passwords.json"
if [ "${1:-}" = init ]; then
  airflow db migrate
  conns="$(mktemp --suffix=.json)"
  trap 'rm -f "$conns"' EXIT
  python -m stockpipe.airflow.bootstrap connections "$conns"
  airflow connections import "$conns" --overwrite
  exit 0
fi
exec airflow "$@"
