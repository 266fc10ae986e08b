#!/usr/bin/env bash
# `airflow` with stockpipe's local configuration: infra/airflow/airflow.sh <airflow args...>
# Used by supervisord (api-server, scheduler, dag-processor, triggerer), by init.sh, and by hand,
# e.g. infra/airflow/airflow.sh backfill create --dag-id market_backfill --from-date 2026-11-20 --to-date 2026-11-24
# Non-secret settings come from here (env wins); secrets from .local/airflow/secrets.env (init.sh).
set -euo pipefail
HOME_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export STOCKPIPE_HOME="${STOCKPIPE_HOME:-$HOME_DIR}"
LOCAL="${STOCKPIPE_LOCAL:-$HOME_DIR/.local}"
VENV="$HOME_DIR/.venv"
export PATH="$VENV/bin:$PATH"
# By hand as root (the README's backfill command): run as the stack's user, the owner of .local/, so
# that what Airflow writes there (logs, ...) stays writable by the services (least privilege).
if [ "$(id -u)" = 0 ] && [ -d "$LOCAL/airflow" ] && [ "$(stat -c %u "$LOCAL")" != 0 ]; then
  owner="$(stat -c %U "$LOCAL")"
  exec setpriv --reuid="$owner" --regid="$owner" --init-groups env HOME="$LOCAL/home" USER="$owner" "$0" "$@"
fi

if [ -z "${STOCKPIPE_PG_PORT:-}" ] || [ -z "${STOCKPIPE_AIRFLOW_PORT:-}" ]; then
  eval "$("$VENV/bin/python" -m stockpipe.config --shell)"
fi
SECRETS="$LOCAL/airflow/secrets.env"
if [ ! -f "$SECRETS" ]; then
  echo "Airflow is not initialised ($SECRETS missing): run 'make up'." >&2; exit 1
fi
set -a
# shellcheck disable=SC1090
. "$SECRETS"
set +a

export AIRFLOW_HOME="${AIRFLOW_HOME:-$LOCAL/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$HOME_DIR/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$HOME_DIR/plugins}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://airflow:${STOCKPIPE_AIRFLOW_DB_PASSWORD}@127.0.0.1:${STOCKPIPE_PG_PORT}/airflow"
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-${STOCKPIPE_AIRFLOW_PARALLELISM:-4}}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-$([ "${STOCKPIPE_AIRFLOW_DAGS_UNPAUSED:-1}" = 1 ] && echo False || echo True)}"
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
# admin: the UI login and stream_health's restarts; viewer: read-only, for the dashboard and the exporter
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin,viewer:viewer
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$LOCAL/airflow/passwords.json"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:${STOCKPIPE_AIRFLOW_PORT}/execution/"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="${STOCKPIPE_AIRFLOW_PORT}"
export AIRFLOW__API__BASE_URL="http://127.0.0.1:${STOCKPIPE_AIRFLOW_PORT}"
export AIRFLOW__API__WORKERS="${AIRFLOW__API__WORKERS:-1}"
export AIRFLOW__API__EXPOSE_CONFIG=False
# Nothing leaves loopback: the log servers bind every interface, so they are skipped (--skip-serve-logs
# in supervisord.conf) and the api-server reads task logs from the shared local folder instead.
export AIRFLOW__LOGGING__BASE_LOG_FOLDER="$LOCAL/airflow/logs"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="${AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT:-8793}"
export AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=False
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST=127.0.0.1
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-30}"
export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="${AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES:-1}"
export AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL=10
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export SPARK_LOCAL_IP=127.0.0.1
mkdir -p "$AIRFLOW_HOME"
exec "$VENV/bin/airflow" "$@"
