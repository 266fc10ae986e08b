#!/usr/bin/env bash
# The native local stack (no Docker): install what is missing, then run every service on 127.0.0.1
# under supervisord. Used by the Makefile:
#   infra/stack.sh up [component...]    install + start (all components by default), idempotent
#   infra/stack.sh down                 stop everything (supervisord included)
#   infra/stack.sh status               one line per component: state, pid, port
#   infra/stack.sh logs [component]     tail the logs
#   infra/stack.sh install              only install (venv, JVM jars, Debian packages)
#   infra/stack.sh fix-ownership        give .local/ back to the stack's user (after root wrote there)
# Every step prints its duration; a failing step names its log file.
# Least privilege: nothing of the stack runs as root. Run as root, `up` creates the system user
# STOCKPIPE_USER (default `stockpipe`) and starts supervisord — hence every service — as that user;
# .local/ belongs to it. Run as another user, the stack runs as that user.
set -euo pipefail

HOME_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export STOCKPIPE_HOME="$HOME_DIR"
export STOCKPIPE_LOCAL="$HOME_DIR/.local"
LOGS="$STOCKPIPE_LOCAL/logs"
VENV="$HOME_DIR/.venv"
PY="$VENV/bin/python"
SUPERVISOR_CONF="$HOME_DIR/infra/supervisord.conf"
# Distribution-specific package names and binary locations (Debian 12/13, Ubuntu 24.04): infra/platform.sh
# shellcheck source=infra/platform.sh
. "$HOME_DIR/infra/platform.sh"
# PostgreSQL: the version that made an existing data directory, else the highest installed >= 15.
PG_BIN="${PG_BIN:-$(platform_pg_bin "$(cat "$STOCKPIPE_LOCAL/postgres/data/PG_VERSION" 2>/dev/null || true)")}"
REDIS_SERVER="${REDIS_SERVER:-$(platform_redis_server)}"   # redis-server, else valkey-server
export PG_BIN REDIS_SERVER
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m -XX:G1PeriodicGCInterval=60000}"
ALL_COMPONENTS=(postgres redis kafka simulator airflow producer dashboard alerts exporter prometheus)
if [ "$(id -u)" = 0 ]; then STACK_USER="${STOCKPIPE_USER:-stockpipe}"; else STACK_USER="$(id -un)"; fi
SECRET_SCOPES="$STOCKPIPE_LOCAL/secrets"   # one secrets file per supervisord program (stockpipe.scopes)

mkdir -p "$LOGS" "$STOCKPIPE_LOCAL/supervisor"

# ---------------------------------------------------------------------------------------------
# output helpers
# shellcheck source=infra/steps.sh
. "$HOME_DIR/infra/steps.sh"

# ---------------------------------------------------------------------------------------------
# install
need_root_for() { [ "$(id -u)" = 0 ] || fail "installing $1 needs root (apt-get); install it yourself or rerun as root"; }

install_debian_packages() {
  local missing=()
  { [ -n "$PG_BIN" ] && [ -x "$PG_BIN/postgres" ]; } || missing+=("$(platform_package postgres)")
  { [ -n "$REDIS_SERVER" ] && [ -x "$REDIS_SERVER" ]; } || missing+=("$(platform_package redis)")
  command -v java >/dev/null || missing+=("$(platform_package java)")
  command -v mvn >/dev/null || missing+=(maven)
  command -v openssl >/dev/null || missing+=(openssl)  # the local CA of Kafka's SASL_SSL listener
  { [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)
  [ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
  command -v python3 >/dev/null && python3 -c 'import ensurepip' 2>/dev/null || missing+=("$(platform_package venv)")
  step "system packages ($(platform_os))"
  if [ ${#missing[@]} -eq 0 ]; then step_done "present"; return; fi
  [ "$(platform_os)" != unsupported ] || fail "$(platform_unsupported_message)"
  need_root_for "${missing[*]}"
  local log="$LOGS/install-apt.log"
  # The distribution's packages try to start their own services; ours run on other ports, so keep them down.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  run_logged "$log" apt-get update -q
  run_logged "$log" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
  [ -x "${PG_BIN:-/nonexistent}/postgres" ] || PG_BIN=$(platform_pg_bin)
  [ -x "${REDIS_SERVER:-/nonexistent}" ] || REDIS_SERVER=$(platform_redis_server)
  [ -n "$PG_BIN" ] || fail "no PostgreSQL >= $PLATFORM_PG_MIN server under /usr/lib/postgresql after installing; see $log"
  [ -n "$REDIS_SERVER" ] || fail "no redis-server or valkey-server after installing; see $log"
  export PG_BIN REDIS_SERVER
  step_done "installed ${missing[*]}"
}

stack_user_can_run() {  # stack_user_can_run FILE : the stack's user reaches and may execute FILE
  [ "$(id -u)" = 0 ] || return 0
  setpriv --reuid="$STACK_USER" --regid="$STACK_USER" --clear-groups test -x "$(readlink -f "$1")" 2>/dev/null
}

install_venv() {
  step "Python venv + pinned requirements"
  local stamp="$VENV/.stockpipe-requirements" log="$LOGS/install-venv.log"
  if [ -x "$PY" ] && ! stack_user_can_run "$PY"; then
    # the services run as the stack's user: a venv on an interpreter it can't reach is rebuilt
    echo "venv interpreter $(readlink -f "$PY") is out of $STACK_USER's reach: rebuilding .venv" >>"$log"
    rm -rf "$VENV"
  fi
  local want; want=$(cat "$HOME_DIR/requirements.txt" "$HOME_DIR/pyproject.toml" | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then step_done "up to date"; return; fi
  if [ ! -x "$PY" ]; then
    local python; python=$(platform_python)
    # the services run as the stack's user: an interpreter it can't reach (e.g. pyenv under /root) won't do
    if [ -n "$python" ] && ! stack_user_can_run "$python"; then
      python=$(PLATFORM_PATH=/usr/local/bin:/usr/bin:/bin platform_python)
    fi
    if [ -n "$python" ]; then
      run_logged "$log" "$python" -m venv "$VENV"
    else
      # no Python 3.11 packaged (Debian 13: 3.13, Ubuntu 24.04: 3.12): uv fetches a standalone 3.11
      [ -x "$STOCKPIPE_LOCAL/uv/bin/uv" ] || { run_logged "$log" python3 -m venv "$STOCKPIPE_LOCAL/uv" \
        && run_logged "$log" "$STOCKPIPE_LOCAL/uv/bin/pip" install -q uv; }
      run_logged "$log" env UV_PYTHON_INSTALL_DIR="$STOCKPIPE_LOCAL/python" \
        "$STOCKPIPE_LOCAL/uv/bin/uv" venv --seed --python 3.11 --python-preference only-managed "$VENV"
    fi
  fi
  [ -x "$VENV/bin/uv" ] || run_logged "$log" "$VENV/bin/pip" install -q uv
  run_logged "$log" "$VENV/bin/uv" pip sync -p "$PY" "$HOME_DIR/requirements.txt"
  run_logged "$log" "$VENV/bin/uv" pip install -p "$PY" --no-deps -e "$HOME_DIR"
  echo "$want" > "$stamp"
  step_done "installed"
}

install_jars() {
  step "JVM jars (Kafka broker, Spark Kafka source)"
  local stamp="$HOME_DIR/infra/jars/.stamp"
  local want; want=$(cat "$HOME_DIR"/infra/pom.xml "$HOME_DIR"/infra/maven/*/pom.xml | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then step_done "up to date"; return; fi
  local log="$LOGS/install-jars.log"
  rm -rf "$HOME_DIR/infra/jars"
  run_logged "$log" mvn -B -q -f "$HOME_DIR/infra/pom.xml" dependency:copy-dependencies
  echo "$want" > "$stamp"
  step_done "$(ls "$HOME_DIR"/infra/jars/*/*.jar | wc -l) jars"
}

install_all() {
  ensure_stack_user
  install_debian_packages
  install_venv
  install_jars
}

# ---------------------------------------------------------------------------------------------
# the stack's user: every service runs as it (least privilege); root only installs and hands over
ensure_stack_user() {
  [ "$(id -u)" = 0 ] || return 0
  id -u "$STACK_USER" >/dev/null 2>&1 && return 0
  step "system user $STACK_USER"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$STACK_USER" \
    || fail "could not create the system user $STACK_USER"
  step_done "created"
}

as_stack() {  # as_stack CMD... : run CMD as the stack's user (HOME inside .local/)
  mkdir -p "$STOCKPIPE_LOCAL/home"
  if [ "$(id -u)" != 0 ]; then HOME="$STOCKPIPE_LOCAL/home" "$@"; return; fi
  setpriv --reuid="$STACK_USER" --regid="$STACK_USER" --init-groups --inh-caps=-all \
    env HOME="$STOCKPIPE_LOCAL/home" USER="$STACK_USER" LOGNAME="$STACK_USER" "$@"
}

fix_ownership() {  # .local/ belongs to the stack's user (an old stack, tests run as root write there)
  [ "$(id -u)" = 0 ] || return 0
  mkdir -p "$STOCKPIPE_LOCAL/home"
  find "$STOCKPIPE_LOCAL" \( ! -user "$STACK_USER" -o ! -group "$STACK_USER" \) -exec chown -h "$STACK_USER:$STACK_USER" {} +
  chmod 700 "$STOCKPIPE_LOCAL"
  # the stack's user must reach the checkout (code, venv, jars): o+x on every parent folder
  local d="$HOME_DIR"
  while [ "$d" != "/" ]; do
    if ! setpriv --reuid="$STACK_USER" --regid="$STACK_USER" --clear-groups test -x "$d" 2>/dev/null; then chmod o+x "$d"; fi
    d=$(dirname "$d")
  done
}

# ---------------------------------------------------------------------------------------------
# settings shared with the Python side (ports, passwords)
random_secret() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }

ensure_secrets() {
  local secrets="$STOCKPIPE_LOCAL/secrets.env" name
  umask 077
  [ -f "$secrets" ] || echo "# Generated by infra/stack.sh on first start; local passwords, never commit." > "$secrets"
  # an older secrets file gains the entries added since (existing values are kept)
  for name in STOCKPIPE_PG_ADMIN_PASSWORD STOCKPIPE_PG_WRITER_PASSWORD STOCKPIPE_PG_READER_PASSWORD STOCKPIPE_PG_RULES_PASSWORD \
              STOCKPIPE_REDIS_PASSWORD STOCKPIPE_SIMULATOR_ADMIN_TOKEN; do
    grep -q "^$name=" "$secrets" || echo "$name=$(random_secret)" >> "$secrets"
  done
  umask 022
  ensure_kafka_secrets  # Kafka's SCRAM login (below): before the programs' secrets files are written
  chmod 600 "$secrets"
}

write_secret_scopes() {  # after load_settings: Airflow's logins, each program's secrets, Redis' password
  "$PY" -m stockpipe.airflow.bootstrap secrets >/dev/null || fail "could not create .local/airflow secrets"
  "$PY" -m stockpipe.scopes scopes "$SECRET_SCOPES" || fail "could not write $SECRET_SCOPES"
  mkdir -p "$STOCKPIPE_LOCAL/redis"
  "$PY" -m stockpipe.scopes redis-conf "$STOCKPIPE_LOCAL/redis/redis.conf" || fail "could not write the Redis config"
  fix_ownership
}

_PRODUCER_MODE_GIVEN="${STOCKPIPE_PRODUCER_MODE+set}"  # set by the caller's environment, not .env
load_settings() {
  # Ports etc. come from stockpipe.config (env, .env, defaults): one source of truth.
  local out
  if ! out=$("$PY" -m stockpipe.config --shell 2>&1); then
    echo "$out" >&2; exit 1
  fi
  eval "$out"
  # The producer mode is stack.sh's to act on; the services (Airflow's tasks) read it from .env and the
  # defaults themselves, so switching modes takes a `make up`, not a restart of supervisord.
  PRODUCER_MODE="${STOCKPIPE_PRODUCER_MODE:-service}"
  [ -n "$_PRODUCER_MODE_GIVEN" ] || export -n STOCKPIPE_PRODUCER_MODE
}

# ---------------------------------------------------------------------------------------------
# supervisor
supervisorctl() { "$VENV/bin/supervisorctl" -c "$SUPERVISOR_CONF" "$@"; }
supervisord_running() { supervisorctl pid >/dev/null 2>&1; }

supervisord_user() { ps -o user= -p "$(supervisorctl pid 2>/dev/null)" 2>/dev/null | tr -d ' '; }

ensure_supervisord() {
  if supervisord_running && [ "$(supervisord_user)" != "$STACK_USER" ]; then
    echo "    supervisord runs as $(supervisord_user) (an older stack): restarting everything as $STACK_USER"
    cmd_down
    fix_ownership
  fi
  step "supervisord"
  if supervisord_running; then step_done "already up"; return; fi
  export STOCKPIPE_REDIS_PORT
  # as the stack's user, without any secret of the caller's environment: each program gets its
  # own secrets from its STOCKPIPE_SECRETS_FILE (infra/supervisord.conf)
  local unset_secrets=() v
  for v in $(compgen -e); do
    case "$v" in *PASSWORD*|*SECRET*|*TOKEN*|*API_KEY*|*WEBHOOK*|*FERNET*) unset_secrets+=(-u "$v") ;; esac
  done
  unset_secrets+=(-u STOCKPIPE_FEED)  # the programs read it from .env (make up FEED=... writes it there)
  as_stack env "${unset_secrets[@]}" "$VENV/bin/supervisord" -c "$SUPERVISOR_CONF" || fail "see $LOGS/supervisord.log"
  for _ in $(seq 50); do supervisord_running && break; sleep 0.1; done
  supervisord_running || fail "see $LOGS/supervisord.log"
  step_done "started"
}

program_state() { supervisorctl status "$1" 2>/dev/null | awk '{print $2}'; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # wait_port PORT SECONDS COMPONENT
  local deadline=$(( $(date +%s) + $2 ))
  until port_open "$1"; do
    if [ "$(program_state "$3")" != "RUNNING" ] && [ "$(program_state "$3")" != "STARTING" ]; then
      { tail -n 20 "$LOGS/$3.log" 2>/dev/null || true; } | sed 's/^/    | /' >&2
      fail "$3 exited; see $LOGS/$3.log"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "$3 did not open port $1 within $2 s; see $LOGS/$3.log"
    sleep 0.3
  done
}

start_program() {  # start_program NAME PORT TIMEOUT
  local name="$1" port="$2" timeout="$3"
  step "$name (127.0.0.1:$port)"
  if [ "$(program_state "$name")" = "RUNNING" ]; then step_done "already up"; return; fi
  if port_open "$port"; then fail "port $port is taken by another process; stop it or set its STOCKPIPE_*_PORT"; fi
  supervisorctl start "$name" >/dev/null 2>&1 || true
  wait_port "$port" "$timeout" "$name"
  step_done "started"
}

render() {  # render TEMPLATE OUT : replace @VAR@ with env values
  sed -e "s|@STOCKPIPE_LOCAL@|$STOCKPIPE_LOCAL|g" -e "s|@PG_PORT@|$STOCKPIPE_PG_PORT|g" \
      -e "s|@KAFKA_PORT@|$STOCKPIPE_KAFKA_PORT|g" -e "s|@KAFKA_CONTROLLER_PORT@|$STOCKPIPE_KAFKA_CONTROLLER_PORT|g" \
      "$1" > "$2"
}

# ---------------------------------------------------------------------------------------------
# components
up_postgres() {
  local pgdir="$STOCKPIPE_LOCAL/postgres"
  if [ ! -f "$pgdir/data/PG_VERSION" ]; then
    step "postgres: initdb"
    local log="$LOGS/postgres-init.log"
    mkdir -p "$pgdir/data" "$pgdir/run"
    fix_ownership  # the server runs as the stack's user (an older stack's data, owned by postgres, too)
    # the superuser's password reaches initdb through a 0600 file of the stack's user, never argv
    local pwfile; pwfile=$(mktemp "$STOCKPIPE_LOCAL/home/.initdb-pw.XXXXXX"); chmod 600 "$pwfile"
    # shellcheck disable=SC1091
    (set -a; . "$STOCKPIPE_LOCAL/secrets.env"; printf '%s\n' "$STOCKPIPE_PG_ADMIN_PASSWORD" > "$pwfile")
    [ "$(id -u)" != 0 ] || chown "$STACK_USER:$STACK_USER" "$pwfile"
    if ! as_stack "$PG_BIN/initdb" -D "$pgdir/data" -U postgres --pwfile="$pwfile" \
         --auth-host=scram-sha-256 --auth-local=peer -E UTF8 --locale=C.UTF-8 >>"$log" 2>&1; then
      rm -f "$pwfile"; tail -n 20 "$log" | sed 's/^/    | /' >&2; fail "see $log"
    fi
    rm -f "$pwfile"
    step_done "initialised"
  fi
  render "$HOME_DIR/infra/postgres/postgresql.conf.template" "$pgdir/postgresql.conf"
  cp "$HOME_DIR/infra/postgres/pg_hba.conf" "$pgdir/pg_hba.conf"
  fix_ownership
  start_program postgres "$STOCKPIPE_PG_PORT" 60
  step "postgres: roles, database, migrations"
  run_logged "$LOGS/migrate.log" "$PY" -m stockpipe.storage.migrate --wait 30
  step_done
}

up_redis() {
  mkdir -p "$STOCKPIPE_LOCAL/redis"
  start_program redis "$STOCKPIPE_REDIS_PORT" 30
}

# Kafka's SASL_SSL listener (STOCKPIPE_KAFKA_SCRAM_PORT, SCRAM-SHA-512): its SCRAM user in
# secrets.env (added to an existing one too), and a local CA + the broker's certificate.
ensure_kafka_secrets() {
  local secrets="$STOCKPIPE_LOCAL/secrets.env"
  grep -qs '^STOCKPIPE_KAFKA_SASL_USERNAME=' "$secrets" && grep -qs '^STOCKPIPE_KAFKA_SASL_PASSWORD=' "$secrets" && return
  (
    umask 077
    {
      grep -qs '^STOCKPIPE_KAFKA_SASL_USERNAME=' "$secrets" || echo "STOCKPIPE_KAFKA_SASL_USERNAME=stockpipe"
      grep -qs '^STOCKPIPE_KAFKA_SASL_PASSWORD=' "$secrets" \
        || echo "STOCKPIPE_KAFKA_SASL_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    } >> "$secrets"
  )
}

ensure_kafka_tls() {  # .local/kafka/tls: ca.pem (clients trust it), broker.pem (key + certificate, 0600)
  local tls="$STOCKPIPE_LOCAL/kafka/tls"
  if [ -s "$tls/ca.pem" ] && [ -s "$tls/broker.pem" ] \
     && openssl x509 -checkend 2592000 -noout -in "$tls/broker.crt" >/dev/null 2>&1; then
    return  # present and valid for 30 more days
  fi
  step "kafka: TLS certificate (local CA)"
  local log="$LOGS/kafka-tls.log" work; work=$(mktemp -d)
  mkdir -p "$tls"
  run_logged "$log" openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=stockpipe local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.pem"
  run_logged "$log" openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$work/broker.key" -out "$work/broker.csr"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$work/ext"
  run_logged "$log" openssl x509 -req -in "$work/broker.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 825 -extfile "$work/ext" -out "$work/broker.crt"
  (umask 077; cat "$work/broker.key" "$work/broker.crt" > "$tls/broker.pem.new") && mv "$tls/broker.pem.new" "$tls/broker.pem"
  install -m 644 "$work/broker.crt" "$tls/broker.crt"
  install -m 644 "$work/ca.pem" "$tls/ca.pem"
  rm -rf "$work"  # the CA's key is not kept: nothing else can be signed with it
  step_done "until $(openssl x509 -enddate -noout -in "$tls/broker.crt" | cut -d= -f2)"
}

up_kafka() {
  local kdir="$STOCKPIPE_LOCAL/kafka" before=""
  mkdir -p "$kdir/data"
  ensure_kafka_secrets
  ensure_kafka_tls
  [ -f "$kdir/server.properties" ] && before=$(sha256sum < "$kdir/server.properties")
  render "$HOME_DIR/infra/kafka/server.properties.template" "$kdir/server.properties.new"
  sed -i "s|@KAFKA_SCRAM_PORT@|$STOCKPIPE_KAFKA_SCRAM_PORT|g" "$kdir/server.properties.new"
  mv "$kdir/server.properties.new" "$kdir/server.properties"
  fix_ownership  # the broker (the stack's user) reads its TLS key and config
  if [ -n "$before" ] && [ "$before" != "$(sha256sum < "$kdir/server.properties")" ] \
     && [ "$(program_state kafka)" = RUNNING ]; then
    step "kafka: restart (server.properties changed)"
    supervisorctl restart kafka >/dev/null 2>&1 || true
    wait_port "$STOCKPIPE_KAFKA_PORT" 90 kafka
    step_done
  fi
  if [ ! -f "$kdir/data/meta.properties" ]; then
    step "kafka: format KRaft storage"
    local cp="$HOME_DIR/infra/jars/kafka/*" log="$LOGS/kafka-format.log"
    local cluster_id; cluster_id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$log")
    fix_ownership
    run_logged "$log" as_stack java -Dlog4j2.configurationFile="$HOME_DIR/infra/kafka/log4j2.properties" -cp "$cp" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$kdir/server.properties"
    step_done "cluster $cluster_id"
  fi
  start_program kafka "$STOCKPIPE_KAFKA_PORT" 90
  wait_port "$STOCKPIPE_KAFKA_SCRAM_PORT" 30 kafka
  step "kafka: SCRAM user, topics"
  # the user first, on the local broker's PLAINTEXT listener: the clients (topics too) may use SCRAM
  run_logged "$LOGS/kafka-topics.log" env STOCKPIPE_KAFKA_BOOTSTRAP="127.0.0.1:$STOCKPIPE_KAFKA_PORT" \
    STOCKPIPE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT STOCKPIPE_KAFKA_SSL_CA_FILE= "$PY" -m stockpipe.admin scram-user --wait 60
  run_logged "$LOGS/kafka-topics.log" "$PY" -m stockpipe.admin topics --wait 60
  step_done
}

up_simulator() { start_program simulator "$STOCKPIPE_SIMULATOR_PORT" 60; }

# The producer (STOCKPIPE_PRODUCER_MODE): `service` (default) = Airflow's market_producer DAG keeps
# `python -m stockpipe.producer` running (relaunched when it dies); `airflow` = market_ingest's
# per-minute runs; `supervisor` = the supervisord program `producer`. market_producer is unpaused
# only in service mode (in the others a run would pause it again anyway).
producer_dag() {  # producer_dag pause|unpause
  local deadline=$(( $(date +%s) + 120 )) log="$LOGS/airflow-init.log"
  # the dag-processor must have parsed it first (on a first start: within its refresh interval)
  until airflow_cli dags details market_producer >>"$log" 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "    market_producer was not parsed within 120 s (see $LOGS/airflow-dag-processor.log); $1 it in the UI" >&2
      return 0
    fi
    sleep 5
  done
  run_logged "$log" airflow_cli dags "$1" market_producer
}

remember_feed() {  # make up FEED=websocket|rest (or STOCKPIPE_FEED in the environment): kept in .env for every process
  [ -n "${STOCKPIPE_FEED:-}" ] || return 0
  case "$STOCKPIPE_FEED" in rest|websocket) ;; *) fail "FEED=$STOCKPIPE_FEED: use FEED=rest or FEED=websocket" ;; esac
  local dotenv="$HOME_DIR/.env"
  if [ -f "$dotenv" ] && grep -q '^STOCKPIPE_FEED=' "$dotenv"; then
    sed -i "s/^STOCKPIPE_FEED=.*/STOCKPIPE_FEED=$STOCKPIPE_FEED/" "$dotenv"
  else
    printf 'STOCKPIPE_FEED=%s\n' "$STOCKPIPE_FEED" >> "$dotenv"
  fi
}

switch_producer_feed() {  # the running producer started with another STOCKPIPE_FEED: start it again
  local marker="$STOCKPIPE_LOCAL/producer.feed" pid
  if [ "$(cat "$marker" 2>/dev/null || echo rest)" = "$STOCKPIPE_FEED" ]; then return 0; fi
  echo "$STOCKPIPE_FEED" > "$marker"
  if [ "$(program_state producer)" = "RUNNING" ]; then
    supervisorctl restart producer >/dev/null 2>&1 || true
  else
    # the stack's user runs Airflow's tasks, so their producer (a producer started by hand is not it)
  pid=$(pgrep -u "$(stat -c %U "$STOCKPIPE_LOCAL" 2>/dev/null || id -un)" -f -- "-m stockpipe\.producer\$" | head -1 || true)
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi  # Airflow's market_producer starts it again
  fi
  echo "    producer feed: $STOCKPIPE_FEED (STOCKPIPE_FEED in .env; 'make up FEED=rest' switches back)"
}

up_producer() {
  switch_producer_feed
  step "producer"
  case "$PRODUCER_MODE" in
    service)
      [ "$(program_state producer)" = "RUNNING" ] && supervisorctl stop producer >/dev/null 2>&1
      producer_dag unpause
      stale_producer_mode
      step_done "runs under Airflow: market_producer keeps it alive (STOCKPIPE_PRODUCER_MODE=service)"; return ;;
    airflow)
      [ "$(program_state producer)" = "RUNNING" ] && supervisorctl stop producer >/dev/null 2>&1
      producer_dag pause
      step_done "runs as Airflow's market_ingest DAG, one cycle a minute (STOCKPIPE_PRODUCER_MODE=airflow)"; return ;;
  esac
  producer_dag pause
  if [ "$(program_state producer)" = "RUNNING" ]; then step_done "already up"; return; fi
  supervisorctl start producer >/dev/null 2>&1 || fail "see $LOGS/producer.log"
  step_done "started"
}

stale_producer_mode() {  # an Airflow started with another STOCKPIPE_PRODUCER_MODE in its environment
  local pid env_mode
  pid=$(supervisorctl pid airflow:airflow-scheduler 2>/dev/null || true)
  [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 0
  env_mode=$(tr '\0' '\n' < "/proc/$pid/environ" | sed -n 's/^STOCKPIPE_PRODUCER_MODE=//p')
  if [ -n "$env_mode" ] && [ "$env_mode" != "$PRODUCER_MODE" ]; then
    echo "    Airflow was started with STOCKPIPE_PRODUCER_MODE=$env_mode in its environment (its tasks follow it," \
      "not $PRODUCER_MODE): 'make down && make up' once to switch" >&2
  fi
}

producer_status_line() {  # make status's line for the producer when Airflow runs it (service mode)
  local pid="-" state="down" user="-" port="$STOCKPIPE_PRODUCER_METRICS_PORT"
  # the stack's user runs Airflow's tasks, so their producer (a producer started by hand is not it)
  pid=$(pgrep -u "$(stat -c %U "$STOCKPIPE_LOCAL" 2>/dev/null || id -un)" -f -- "-m stockpipe\.producer\$" | head -1 || true)
  if [ -n "$pid" ]; then state="up"; user=$(ps -o user= -p "$pid" 2>/dev/null | tr -d ' ' || echo -); else pid="-"; fi
  printf '%-12s %-9s %-8s %-17s %-10s %s\n' producer "$state" "$pid" "127.0.0.1:$port" "$user" \
    "under Airflow (market_producer)"
  stale_producer_mode
}

component_port() {
  case "$1" in
    postgres) echo "$STOCKPIPE_PG_PORT" ;; redis) echo "$STOCKPIPE_REDIS_PORT" ;;
    kafka) echo "$STOCKPIPE_KAFKA_PORT" ;; simulator) echo "$STOCKPIPE_SIMULATOR_PORT" ;;
    producer) echo "$STOCKPIPE_PRODUCER_METRICS_PORT" ;; airflow) echo "$STOCKPIPE_AIRFLOW_PORT" ;;
    dashboard) echo "$STOCKPIPE_DASHBOARD_PORT" ;;
    exporter) echo "$STOCKPIPE_EXPORTER_PORT" ;; prometheus) echo "$STOCKPIPE_PROMETHEUS_PORT" ;;
    spark) echo "$STOCKPIPE_SPARK_MASTER_PORT" ;;
    *) echo "-" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# airflow (infra/airflow/): init (secrets, login, `airflow` database, migrations, connections), then
# api-server (127.0.0.1), scheduler, dag-processor, triggerer — the supervisord group `airflow`.
# On first start it also backfills the last trading sessions (STOCKPIPE_BACKFILL_INITIAL_SESSIONS).
AIRFLOW_PROGRAMS=(airflow-apiserver airflow-scheduler airflow-dag-processor airflow-triggerer)
airflow_cli() { as_stack "$HOME_DIR/infra/airflow/airflow.sh" "$@"; }
airflow_login() { "$PY" -m stockpipe.airflow.bootstrap login; }

supervisor_name() {  # the supervisord program a component's status line stands for
  case "$1" in airflow) echo "airflow:airflow-apiserver" ;; spark) echo "spark-master" ;; *) echo "$1" ;; esac
}

start_airflow_program() {  # start_airflow_program PROGRAM [PORT]
  local name="airflow:$1" port="${2:-}" deadline=$(( $(date +%s) + 180 ))
  step "$1${port:+ (127.0.0.1:$port)}"
  if [ "$(program_state "$name")" = "RUNNING" ]; then step_done "already up"; return; fi
  if [ -n "$port" ] && port_open "$port"; then fail "port $port is taken by another process; stop it or set STOCKPIPE_AIRFLOW_PORT"; fi
  supervisorctl start "$name" >/dev/null 2>&1 || true
  until { [ -z "$port" ] && [ "$(program_state "$name")" = "RUNNING" ]; } || { [ -n "$port" ] && port_open "$port"; }; do
    case "$(program_state "$name")" in
      RUNNING|STARTING) ;;
      *) { tail -n 20 "$LOGS/$1.log" 2>/dev/null || true; } | sed 's/^/    | /' >&2; fail "$1 exited; see $LOGS/$1.log" ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] || fail "$1 did not start within 180 s; see $LOGS/$1.log"
    sleep 0.5
  done
  step_done "started"
}

initial_backfill() {
  local marker="$STOCKPIPE_LOCAL/airflow/initial-backfill.done" range
  [ -f "$marker" ] && return
  range=$("$PY" -m stockpipe.airflow.bootstrap backfill-range)
  if [ -z "$range" ]; then touch "$marker"; return; fi
  step "airflow: backfill ${range/ /..}"
  local deadline=$(( $(date +%s) + 240 )) log="$LOGS/airflow-init.log"
  # the dag-processor must have parsed market_backfill before a backfill can be created
  until airflow_cli dags details market_backfill >>"$log" 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "market_backfill was not parsed within 240 s; see $LOGS/airflow-dag-processor.log"
    sleep 5
  done
  run_logged "$log" airflow_cli backfill create --dag-id market_backfill --from-date "${range% *}" --to-date "${range#* }" --max-active-runs 1
  touch "$marker"
  step_done "created (runs in the background)"
}

up_airflow() {
  # a supervisord started before the Airflow programs existed learns them without touching the others
  if { supervisorctl status airflow:airflow-apiserver 2>&1 || true; } | grep -q "no such"; then
    supervisorctl reread >/dev/null && supervisorctl update airflow >/dev/null
  fi
  step "airflow: init (db, migrations, connections)"
  run_logged "$LOGS/airflow-init.log" as_stack "$HOME_DIR/infra/airflow/init.sh"
  step_done
  start_airflow_program airflow-apiserver "$STOCKPIPE_AIRFLOW_PORT"
  start_airflow_program airflow-scheduler
  start_airflow_program airflow-dag-processor
  start_airflow_program airflow-triggerer
  initial_backfill
  echo "    $(airflow_login)"
}

status_airflow() {
  supervisord_running || return 0
  local p line
  for p in "${AIRFLOW_PROGRAMS[@]:1}"; do
    line=$(supervisorctl status "airflow:$p" 2>/dev/null || true)
    printf '  %-21s %s\n' "$p" "$(awk '{print $2}' <<<"$line")"
  done
  airflow_login
}

# dashboard (dashboard/serve.sh): Streamlit on 127.0.0.1:$STOCKPIPE_DASHBOARD_PORT
up_dashboard() {
  # a supervisord started before [program:dashboard] existed learns it without touching the others
  if { supervisorctl status dashboard 2>&1 || true; } | grep -q "no such"; then
    supervisorctl reread >/dev/null && supervisorctl add dashboard >/dev/null
  fi
  start_program dashboard "$STOCKPIPE_DASHBOARD_PORT" 60
}

# alerts delivery worker (stockpipe.alerts.worker): no port; supervisorctl start waits its startsecs
up_alerts() {
  monitoring_program_known alerts
  step "alerts (delivery worker)"
  if [ "$(program_state alerts)" = "RUNNING" ]; then step_done "already up"; return; fi
  supervisorctl start alerts >/dev/null 2>&1 || fail "the alerts worker did not start; see $LOGS/alerts.log"
  step_done "started"
}

# ---------------------------------------------------------------------------------------------
# monitoring (infra/prometheus/run.sh): stockpipe's exporter, Prometheus, and Alertmanager when
# STOCKPIPE_ALERTMANAGER_ENABLED=true; each config is rendered from the settings at start.
monitoring_program_known() {  # a supervisord started before [program:NAME] existed learns it
  if { supervisorctl status "$1" 2>&1 || true; } | grep -q "no such"; then
    supervisorctl reread >/dev/null && supervisorctl add "$1" >/dev/null
  fi
}
up_exporter() { monitoring_program_known exporter; start_program exporter "$STOCKPIPE_EXPORTER_PORT" 30; }
up_prometheus() {
  monitoring_program_known prometheus
  start_program prometheus "$STOCKPIPE_PROMETHEUS_PORT" 60
  if [ "${STOCKPIPE_ALERTMANAGER_ENABLED:-0}" = 1 ]; then
    monitoring_program_known alertmanager
    start_program alertmanager "$STOCKPIPE_ALERTMANAGER_PORT" 60
  fi
}

# ---------------------------------------------------------------------------------------------
# Spark standalone cluster (STOCKPIPE_SPARK_CLUSTER=standalone; plugins/stockpipe/streaming/cluster.py):
# the supervisord programs spark-master (127.0.0.1:STOCKPIPE_SPARK_MASTER_PORT, UI _MASTER_WEBUI_PORT)
# and spark-worker (UI _WORKER_WEBUI_PORT; work folders in .local/spark), from the venv's pyspark, started
# before Airflow: the jobs' master then defaults to spark://127.0.0.1:STOCKPIPE_SPARK_MASTER_PORT (and so
# does the spark_default connection). With the default `local` nothing runs (and a running cluster is stopped).
SPARK_PROGRAMS=(spark-master spark-worker)
_with_spark=()
for _c in "${ALL_COMPONENTS[@]}"; do [ "$_c" = airflow ] && _with_spark+=(spark); _with_spark+=("$_c"); done
ALL_COMPONENTS=("${_with_spark[@]}"); unset _c _with_spark

up_spark() {
  local p out
  if [ "${STOCKPIPE_SPARK_CLUSTER:-local}" != standalone ]; then
    step "spark"
    for p in spark-worker spark-master; do
      if [ "$(program_state "$p")" = RUNNING ]; then supervisorctl stop "$p" >/dev/null 2>&1 || true; fi
    done
    step_done "local mode (each job runs Spark itself)"
    return
  fi
  for p in "${SPARK_PROGRAMS[@]}"; do  # a supervisord started before [program:spark-*] existed learns them
    if { supervisorctl status "$p" 2>&1 || true; } | grep -q "no such"; then
      supervisorctl reread >/dev/null && supervisorctl add "$p" >/dev/null
    fi
  done
  mkdir -p "$STOCKPIPE_LOCAL/spark"
  fix_ownership  # the worker (the stack's user) writes its work folders there
  start_program spark-master "$STOCKPIPE_SPARK_MASTER_PORT" 60
  start_program spark-worker "$STOCKPIPE_SPARK_WORKER_WEBUI_PORT" 60
  step "spark: worker registered (UI 127.0.0.1:$STOCKPIPE_SPARK_MASTER_WEBUI_PORT)"
  if ! out=$("$PY" -m stockpipe.streaming.cluster wait --timeout 90 2>&1); then
    echo "$out" | sed 's/^/    | /' >&2
    fail "see $LOGS/spark-worker.log and $LOGS/spark-master.log"
  fi
  step_done "$out"
}

status_spark() {
  supervisord_running || return 0
  [ "${STOCKPIPE_SPARK_CLUSTER:-local}" = standalone ] || return 0
  printf '  %-21s %s\n' spark-worker "$(program_state spark-worker)"
}

# ---------------------------------------------------------------------------------------------
cmd_up() {
  local components=("$@")
  [ ${#components[@]} -gt 0 ] || components=("${ALL_COMPONENTS[@]}")
  local t0; t0=$(date +%s)
  install_all
  ensure_secrets
  remember_feed
  load_settings
  write_secret_scopes
  ensure_supervisord
  for c in "${components[@]}"; do "up_$c"; done
  date -u +%Y-%m-%dT%H:%M:%S.%3NZ >"$STOCKPIPE_LOCAL/up-finished"  # bench/first_start.py measures from here
  echo "stack up in $(( $(date +%s) - t0 )) s — 'make status' to see it, 'make logs' to follow it."
}

cmd_down() {
  load_settings 2>/dev/null || true
  if ! [ -x "$VENV/bin/supervisorctl" ] || ! supervisord_running; then echo "stack is down"; return; fi
  step "stopping services"
  # reverse dependency order: producers first, storage last
  supervisorctl stop 'airflow:*' >/dev/null 2>&1 || true
  supervisorctl stop spark-worker spark-master >/dev/null 2>&1 || true
  supervisorctl stop producer simulator >/dev/null 2>&1 || true
  supervisorctl stop kafka >/dev/null 2>&1 || true
  supervisorctl stop redis postgres >/dev/null 2>&1 || true
  step_done "stopped"
  step "supervisord"
  local pid; pid=$(supervisorctl pid 2>/dev/null || true)
  supervisorctl shutdown >/dev/null 2>&1 || true
  # it stops the remaining programs (dashboard, exporter, ...) before it exits; while it does, its RPC
  # answers SHUTDOWN_STATE, so wait for the process itself (an immediate `make up` would find its socket)
  for _ in $(seq 600); do
    if [ -n "$pid" ]; then kill -0 "$pid" 2>/dev/null || break; else supervisord_running || break; fi
    sleep 0.1
  done
  step_done "stopped"
}

cmd_status() {
  load_settings
  printf '%-12s %-9s %-8s %-17s %s\n' COMPONENT STATE PID PORT USER
  local running=0
  supervisord_running && running=1
  for c in "${ALL_COMPONENTS[@]}"; do
    if [ "$c" = producer ] && [ "$PRODUCER_MODE" = service ]; then producer_status_line; continue; fi
    local state="down" pid="-" port; port=$(component_port "$c")
    if [ $running = 1 ]; then
      local line; line=$(supervisorctl status "$(supervisor_name "$c")" 2>/dev/null || true)
      case "$(awk '{print $2}' <<<"$line")" in
        RUNNING) state="up"; pid=$(sed -n 's/.*pid \([0-9]*\),.*/\1/p' <<<"$line") ;;
        STARTING|BACKOFF) state="starting" ;;
        FATAL) state="failed" ;;
      esac
    fi
    local user="-"; [ "$pid" = "-" ] || user=$(ps -o user= -p "$pid" 2>/dev/null | tr -d ' ' || echo -)
    printf '%-12s %-9s %-8s %-17s %s\n' "$c" "$state" "$pid" "127.0.0.1:$port" "$user"
  done
  status_airflow
  status_spark
  "$PY" -m stockpipe.producer.plan 2>/dev/null || true  # what the market-data plan serves (the producer learns it)
}

cmd_logs() {
  if [ $# -gt 0 ]; then tail -n 50 -F "$LOGS/$1.log"; else tail -n 20 -F "$LOGS"/*.log; fi
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  install) install_all ;;
  fix-ownership) fix_ownership ;;
  *) echo "usage: $0 up [component...]|down|status|logs [component]|install|fix-ownership" >&2; exit 2 ;;
esac
