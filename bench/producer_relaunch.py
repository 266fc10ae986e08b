"""Benchmark (not a test): kill -9 of the producer — relaunched ≤ 30 s, 0 bars lost, the rate limit
never exceeded.

    .venv/bin/python bench/producer_relaunch.py [--kills 5] [--every-s 45] [--baseline-kills 3] [--settle-s 90]
                                                [--on-stack]

Needs the stack's PostgreSQL, Kafka and Redis (`make up`); runs as root or the stack's user. By
default it runs beside the stack without touching it: its own Airflow (api-server, scheduler,
dag-processor on 127.0.0.1:18093, LocalExecutor, metadata database ``stockpipe_bench_airflow``, a
dags folder holding only ``dags/market_producer.py``, the connections pointed at the benchmark's
resources), its own simulator (the request log is its producers' alone), Kafka topic, Redis db 7
and market database ``stockpipe_bench_relaunch`` — every one removed at the end. ``--on-stack`` runs
on the stack's own Airflow and simulator instead (it pauses ``market_ingest`` and unpauses
``market_producer`` for the run and restores both; other benchmarks that switch the producer DAGs
must not run meanwhile). In the same run:

* **service** (the target, ``STOCKPIPE_PRODUCER_MODE=service``): ``market_producer`` unpaused, then
  ``--kills`` times, ``--every-s`` after the last relaunched producer recorded its first cycle:
  ``kill -9`` of the producer process market_producer's task started; timed until a new one runs (the
  next run's task started it) and until its first cycle is in ``ops.ingest_cycles``.
* **baseline** — the same kill -9 of a supervisord ``producer`` program (``autorestart``, the
  stack's program definition), the pre-Airflow way of keeping the loop alive, ``--baseline-kills`` times.
* After ``--settle-s`` of catch-up: ``python -m stockpipe.verify --json`` over the run's messages
  (gaps = bars lost; duplicates — the same bar sent again after a kill between Kafka's ack and the
  checkpoint — are harmless: the stream keeps one row), and the simulator's request log
  (``GET /_admin/requests``): most calls per API key in any 60 s window vs
  ``STOCKPIPE_RATE_LIMIT_PER_MINUTE``.

Prints a table and writes bench/results/producer_relaunch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import httpx  # noqa: E402
import psutil  # noqa: E402

from stockpipe.airflow.restart import dag_is_paused, set_dag_paused  # noqa: E402
from stockpipe.clients import pg_connect  # noqa: E402
from stockpipe.config import Settings, load_settings  # noqa: E402
from stockpipe.sources.simulator.app import ADMIN_TOKEN_HEADER  # noqa: E402

TARGET_RELAUNCH_S = 30.0
SERVICE_DAG, INGEST_DAG = "market_producer", "market_ingest"
LOCAL = Path(os.environ.get("STOCKPIPE_LOCAL", ROOT / ".local"))
VENV_BIN = ROOT / ".venv" / "bin"
# Redis db 7: market_scale 10, alerts_latency 11, stream_throughput 12, backfill 13, dashboard 14 (each flushes its own)
BENCH_DB, AIRFLOW_DB, REDIS_DB, API_PORT = "stockpipe_bench_relaunch", "stockpipe_bench_airflow", 7, 18093


def log(text: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {text}", flush=True)


# --- processes -----------------------------------------------------------------------------------
def _is_producer(proc: psutil.Process) -> bool:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return len(cmd) >= 3 and cmd[-2:] == ["-m", "stockpipe.producer"] and "python" in Path(cmd[0]).name


class Producers:
    """Finds the benchmark's producer processes: market_producer's (its Airflow task's child) and the
    supervisord program's, told apart from other producers by their Kafka topic."""

    def __init__(self, topic: str, supervisorctl) -> None:
        self.topic, self.supervisorctl = topic, supervisorctl

    def service(self) -> tuple[int, str] | None:
        """(pid, Airflow run id) of the producer market_producer's task runs, if one does."""
        for proc in psutil.process_iter():
            if not _is_producer(proc):
                continue
            try:
                env = proc.environ()
                if (
                    env.get("AIRFLOW_CTX_DAG_ID") == SERVICE_DAG
                    and env.get("STOCKPIPE_KAFKA_TOPIC", self.topic) == self.topic
                    and proc.status() != psutil.STATUS_ZOMBIE
                ):
                    return proc.pid, env.get("AIRFLOW_CTX_DAG_RUN_ID", "")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return None

    def supervised(self) -> int | None:
        text = self.supervisorctl("pid", "producer")
        return int(text) if text.isdigit() and text != "0" else None


def supervised_run(pid: int) -> str:
    """The run id the supervisord producer's cycles carry (stockpipe.producer.cycles.service_run_id)."""
    return f"producer@{socket.gethostname()}:{pid}"


def stack_supervisorctl(*args: str) -> str:
    env = {**os.environ, "STOCKPIPE_HOME": str(ROOT), "STOCKPIPE_LOCAL": str(LOCAL)}
    command = [str(VENV_BIN / "supervisorctl"), "-c", str(ROOT / "infra" / "supervisord.conf"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60).stdout.strip()


# --- the benchmark's own Airflow and supervisord ----------------------------------------------------
def airflow_env(settings: Settings, home: Path, dags: Path, producer_env: dict[str, str]) -> dict[str, str]:
    """infra/airflow/airflow.sh's configuration, on the benchmark's home, database and port."""
    from stockpipe.airflow.connections import connection_specs

    admin = settings.pg_admin_password.get_secret_value()
    url = f"http://127.0.0.1:{API_PORT}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "STOCKPIPE_SECRETS_FILE"))}
    env.update(producer_env)
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg2://{settings.pg_admin_user}:{admin}@127.0.0.1:{settings.pg_port}/{AIRFLOW_DB}"
            ),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(API_PORT),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__EXPOSE_CONFIG": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "10",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    for conn_id, spec in connection_specs(settings).items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(spec)
    return env


class Daemons:
    """Processes the benchmark starts (each in its own session), stopped together."""

    def __init__(self, logs: Path) -> None:
        self.logs, self.procs = logs, []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        out = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs.append((name, subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                  cwd=ROOT, start_new_session=True)))  # fmt: skip

    def stop(self) -> None:
        for _, proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        for _, proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


def supervisord_conf(directory: Path, env: dict[str, str]) -> Path:
    """The stack's [program:producer] (infra/supervisord.conf), alone under a supervisord of its own."""
    environment = ",".join(f'{k}="{v}"' for k, v in env.items() if '"' not in v and "%" not in v)
    conf = directory / "supervisord.conf"
    conf.write_text(
        f"""[unix_http_server]
file={directory}/supervisor.sock
[supervisord]
logfile={directory}/supervisord.log
pidfile={directory}/supervisord.pid
nodaemon=false
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{directory}/supervisor.sock
[program:producer]
command={VENV_BIN}/python -m stockpipe.producer
directory={ROOT}
environment={environment}
autostart=false
autorestart=true
startsecs=3
stopsignal=TERM
stopwaitsecs=30
redirect_stderr=true
stdout_logfile={directory}/producer.log
"""
    )
    return conf


# --- what the pipeline recorded ------------------------------------------------------------------
def first_cycle_after(settings, run_prefix: str, after: datetime) -> datetime | None:
    with pg_connect(settings, "writer", connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(
            "SELECT min(finished_at) FROM ops.ingest_cycles WHERE run_id LIKE %s AND finished_at > %s",
            (run_prefix + "%", after),
        ).fetchone()
    return row[0]


def other_producers(settings, since: datetime, mine: set[str]) -> dict[str, int]:
    """Cycles recorded since ``since`` by producers the benchmark did not run (by hand, tests): while
    one runs, it could refill what a killed producer missed, so the loss figure is said with them."""
    with pg_connect(settings, "writer", connect_timeout=5, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT run_id, count(*) FROM ops.ingest_cycles WHERE finished_at > %s AND symbols > 0 GROUP BY 1",
            (since,),
        ).fetchall()
    return {run: n for run, n in rows if not run.startswith(f"{SERVICE_DAG}/") and run not in mine}


def wait_for(what: str, probe, timeout_s: float, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(step_s)
    raise SystemExit(f"{what} did not happen within {timeout_s:.0f} s")


def kill_and_time(settings, find, run_prefix_of, kills: int, every_s: float, label: str) -> list[dict[str, Any]]:
    """kill -9 the producer ``find()`` names, ``kills`` times; per kill: seconds to a new process and
    to its first recorded cycle."""
    results = []
    for n in range(1, kills + 1):
        time.sleep(every_s)
        old = find()
        if old is None:
            raise SystemExit(f"{label}: no producer running before kill {n}")
        old_pid = old if isinstance(old, int) else old[0]
        killed_at = datetime.now(UTC)
        t0 = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        kill_epoch = time.time()

        def relaunched(old_pid=old_pid):
            now = find()
            pid = now if isinstance(now, int) or now is None else now[0]
            return now if pid not in (None, old_pid) else None

        new = wait_for(f"{label}: a new producer after kill {n}", relaunched, 180)
        relaunch_s = time.monotonic() - t0
        prefix = run_prefix_of(new)

        def recorded(prefix=prefix, killed_at=killed_at):
            return first_cycle_after(settings, prefix, killed_at)

        first = wait_for(f"{label}: the relaunched producer's first cycle", recorded, 180, 1)
        cycle_s = (first - killed_at).total_seconds()
        new_pid = new if isinstance(new, int) else new[0]
        log(f"{label} kill {n}: pid {old_pid} → {new_pid} in {relaunch_s:.1f} s, first cycle after {cycle_s:.1f} s")
        results.append(
            {
                "kill": n,
                "at": kill_epoch,
                "old_pid": old_pid,
                "new_pid": new_pid,
                "relaunch_s": relaunch_s,
                "first_cycle_s": cycle_s,
            }
        )
    return results


# --- rate limit and loss -------------------------------------------------------------------------
def max_in_window(times: list[float], window: float = 60.0) -> int:
    return len(busiest_window(times, window))


def busiest_window(times: list[float], window: float = 60.0) -> list[float]:
    """The most calls that arrived within ``window`` seconds of each other (the first such run)."""
    times, best, lo = sorted(times), (0, 0), 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        if hi - lo + 1 > best[1] - best[0]:
            best = (lo, hi + 1)
    return times[best[0] : best[1]]


def request_log(url: str, token: str, since: float) -> dict[str, Any]:
    response = httpx.get(
        f"{url}/_admin/requests", params={"since": since}, headers={ADMIN_TOKEN_HEADER: token}, timeout=30
    )
    response.raise_for_status()
    by_key: dict[str, list[float]] = {}
    for row in response.json()["requests"]:
        by_key.setdefault(row["key_id"], []).append(row["ts"])
    return {
        key: {"calls": len(ts), "max_in_any_60s": max_in_window(ts), "busiest_60s": busiest_window(ts), "times": ts}
        for key, ts in by_key.items()
    }


def verify(since_s: float, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "stockpipe.verify", "--since", f"{int(since_s)}s", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise SystemExit(f"verify failed: {out.stderr[-2000:]}") from None


def summary(values: list[float]) -> tuple[float, float]:
    return (statistics.median(values), max(values)) if values else (float("nan"), float("nan"))


# --- the two set-ups -----------------------------------------------------------------------------
class Isolated:
    """The benchmark's own Airflow, simulator, topic, Redis db and databases (the default)."""

    def __init__(self, base: Settings, redis_db: int = REDIS_DB) -> None:
        self.base, self.tag, self.redis_db = base, uuid.uuid4().hex[:8], redis_db
        self.dir = Path(tempfile.mkdtemp(prefix="stockpipe-relaunch-"))
        self.daemons = Daemons(self.dir)
        self.sim = None

    def __enter__(self) -> Isolated:
        try:
            return self._start()
        except BaseException as error:
            self.__exit__(type(error), error, None)
            raise

    def _start(self) -> Isolated:
        import psycopg

        from stockpipe.admin import ensure_topics
        from stockpipe.sources.simulator import start_in_thread
        from stockpipe.storage.migrate import migrate

        base = self.base
        self.sim = start_in_thread(seed=7, clock="demo")
        topic, dlq = f"bench-relaunch-{self.tag}", f"bench-relaunch-{self.tag}.dlq"
        redis_url = base.redis_url.rsplit("/", 1)[0] + f"/{self.redis_db}"
        self.settings = base.model_copy(
            update={
                "pg_database": BENCH_DB,
                "redis_url": redis_url,
                "kafka_topic": topic,
                "kafka_dlq_topic": dlq,
                "simulator_port": int(self.sim.url.rsplit(":", 1)[1]),
                "airflow_api_url": f"http://127.0.0.1:{API_PORT}",
            }
        )
        with psycopg.connect(base.pg_dsn("admin", "postgres"), autocommit=True) as conn:
            for db in (BENCH_DB, AIRFLOW_DB):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{AIRFLOW_DB}"')
        migrate(base, BENCH_DB, wait_s=30)
        client = self.settings.redis_client()
        client.flushdb()
        client.close()
        ensure_topics(self.settings, {topic: base.kafka_partitions, dlq: 1}, wait_s=30)
        self.producer_env = {  # what every producer of the benchmark (Airflow's or supervisord's) is told
            "STOCKPIPE_HOME": str(ROOT),
            "STOCKPIPE_PRODUCER_MODE": "service",
            "STOCKPIPE_PG_DATABASE": BENCH_DB,
            "STOCKPIPE_REDIS_URL": redis_url,
            "STOCKPIPE_KAFKA_TOPIC": topic,
            "STOCKPIPE_KAFKA_DLQ_TOPIC": dlq,
            "STOCKPIPE_SIMULATOR_PORT": str(self.settings.simulator_port),
            "STOCKPIPE_SIMULATOR_CLOCK": "demo",
            "STOCKPIPE_PRODUCER_METRICS_PORT": "0",
            "STOCKPIPE_AIRFLOW_API_URL": self.settings.airflow_api_url,
        }
        os.environ.update(self.producer_env)  # verify, this process's API calls
        dags = self.dir / "dags"
        dags.mkdir()
        shutil.copy(ROOT / "dags" / f"{SERVICE_DAG}.py", dags)
        self.env = airflow_env(self.settings, self.dir / "airflow", dags, self.producer_env)
        (self.dir / "airflow").mkdir()
        password = secrets.token_urlsafe(12)
        (self.dir / "airflow" / "passwords.json").write_text(json.dumps({"admin": password}))
        os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(self.dir / "airflow" / "passwords.json")
        log(f"own Airflow in {self.dir}: db migrate")
        subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=self.env, check=True, capture_output=True)
        self.daemons.start("api-server", [str(VENV_BIN / "airflow"), "api-server", "-H", "127.0.0.1", "-p",
                                          str(API_PORT)], self.env)  # fmt: skip
        self.daemons.start("scheduler", [str(VENV_BIN / "airflow"), "scheduler", "--skip-serve-logs"], self.env)
        self.daemons.start("dag-processor", [str(VENV_BIN / "airflow"), "dag-processor"], self.env)

        def api_up() -> bool:
            try:
                return httpx.get(f"{self.settings.airflow_api_url}/api/v2/monitor/health", timeout=5).is_success
            except httpx.HTTPError:
                return False

        wait_for("the benchmark's Airflow api-server", api_up, 240, 2)

        def parsed() -> bool:
            try:
                dag_is_paused(self.settings, SERVICE_DAG)
                return True
            except Exception:
                return False

        wait_for("market_producer parsed by the benchmark's dag-processor", parsed, 240, 2)
        self.sup_dir = self.dir / "supervisor"
        self.sup_dir.mkdir()
        self.sup_env = {**{k: v for k, v in self.env.items() if not k.startswith("AIRFLOW")}}
        self.sup_conf = supervisord_conf(self.sup_dir, self.producer_env)
        subprocess.run([str(VENV_BIN / "supervisord"), "-c", str(self.sup_conf)], env=self.sup_env, check=True)
        return self

    def supervisorctl(self, *args: str) -> str:
        command = [str(VENV_BIN / "supervisorctl"), "-c", str(self.sup_conf), *args]
        return subprocess.run(command, capture_output=True, text=True, env=self.sup_env, timeout=60).stdout.strip()

    def start_service(self) -> None:
        set_dag_paused(self.settings, SERVICE_DAG, False)

    def stop_service(self) -> None:
        set_dag_paused(self.settings, SERVICE_DAG, True)

    def request_log(self, since: float) -> dict[str, Any]:
        return request_log(self.sim.url, self.sim.admin_token, since)

    def __exit__(self, *exc: object) -> None:
        import psycopg

        from stockpipe.admin import admin_client

        if hasattr(self, "sup_conf"):
            try:
                self.supervisorctl("shutdown")
            except Exception:
                pass
        self.daemons.stop()
        if self.sim is not None:
            self.sim.stop()
        try:
            client = admin_client(self.settings) if hasattr(self, "settings") else None
            if client is None:
                raise RuntimeError("no topics yet")
            for future in client.delete_topics(
                [self.settings.kafka_topic, self.settings.kafka_dlq_topic], operation_timeout=30
            ).values():
                future.result(timeout=30)
        except Exception as error:
            log(f"could not delete the benchmark's topics: {error}")
        with psycopg.connect(self.base.pg_dsn("admin", "postgres"), autocommit=True) as conn:
            for db in (BENCH_DB, AIRFLOW_DB):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if exc and exc[0] is not None:
            log(f"kept {self.dir} (Airflow's logs) for a look")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class OnStack:
    """The stack's own Airflow, simulator and supervisord program (``--on-stack``)."""

    def __init__(self, base: Settings) -> None:
        self.settings = base
        self.producer_env: dict[str, str] = {}

    def __enter__(self) -> OnStack:
        self.paused_before = {dag: dag_is_paused(self.settings, dag) for dag in (SERVICE_DAG, INGEST_DAG)}
        self.supervised_before = bool(self.supervisorctl("pid", "producer").strip("0"))
        log(f"pause states before: {self.paused_before}; supervisord producer running: {self.supervised_before}")
        if self.supervised_before:
            self.supervisorctl("stop", "producer")
        set_dag_paused(self.settings, INGEST_DAG, True)
        return self

    def supervisorctl(self, *args: str) -> str:
        return stack_supervisorctl(*args)

    def start_service(self) -> None:
        set_dag_paused(self.settings, SERVICE_DAG, False)

    def stop_service(self) -> None:
        set_dag_paused(self.settings, SERVICE_DAG, True)

    def request_log(self, since: float) -> dict[str, Any]:
        token = self.settings.simulator_admin_token.get_secret_value()
        return request_log(self.settings.simulator_url, token, since)

    def __exit__(self, *exc: object) -> None:
        if not self.supervised_before:
            self.supervisorctl("stop", "producer")
        for dag, paused in self.paused_before.items():
            try:
                set_dag_paused(self.settings, dag, paused)
            except Exception as error:  # say it, the operator must restore it by hand
                log(f"could not restore {dag} to {'paused' if paused else 'unpaused'}: {error}")
        if self.supervised_before:
            self.supervisorctl("start", "producer")
        log(f"restored: {self.paused_before}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5, help="kill -9 of the service's producer (default 5)")
    parser.add_argument("--every-s", type=float, default=45, help="seconds between a relaunch and the next kill")
    parser.add_argument("--baseline-kills", type=int, default=3, help="kill -9 of supervisord's producer (default 3)")
    parser.add_argument("--settle-s", type=float, default=90, help="catch-up time before verify (default 90)")
    parser.add_argument("--on-stack", action="store_true", help="use the stack's Airflow and simulator")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB, help=f"Redis db of its own (default {REDIS_DB})")
    args = parser.parse_args()

    base = load_settings()
    started_at, started = datetime.now(UTC), time.time()
    load_before = os.getloadavg()
    service: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    setup = OnStack(base) if args.on_stack else Isolated(base, args.redis_db)
    with setup:
        settings = setup.settings
        found = Producers(settings.kafka_topic, setup.supervisorctl)
        # --- service: market_producer, nothing else produces
        setup.start_service()
        first = wait_for(
            "market_producer's producer to start (on the stack: is it in STOCKPIPE_PRODUCER_MODE=service? make status)",
            found.service,
            240,
            0.5,
        )
        run = f"{SERVICE_DAG}/{first[1]}"
        wait_for("its first cycle", lambda: first_cycle_after(settings, run, started_at), 180, 1)
        log(f"service up: pid {first[0]} ({first[1]})")
        service = kill_and_time(
            settings, found.service, lambda new: f"{SERVICE_DAG}/{new[1]}", args.kills, args.every_s, "service"
        )
        # --- baseline: supervisord's program, market_producer paused
        if args.baseline_kills:
            setup.stop_service()
            wait_for("market_producer's producer to stop", lambda: found.service() is None, 90, 0.5)
            setup.supervisorctl("start", "producer")
            pid = wait_for("supervisord's producer", found.supervised, 60, 0.5)
            wait_for("its first cycle", lambda: first_cycle_after(settings, supervised_run(pid), started_at), 180, 1)
            log(f"baseline up: supervisord producer pid {pid}")
            baseline = kill_and_time(
                settings, found.supervised, supervised_run, args.baseline_kills, args.every_s, "baseline"
            )
        log(f"catch-up: {args.settle_s:.0f} s")
        time.sleep(args.settle_s)
        setup.supervisorctl("stop", "producer")
        duration_s = time.time() - started
        mine = {supervised_run(r[k]) for r in baseline for k in ("old_pid", "new_pid")}
        others = other_producers(settings, started_at, mine)
        checked = verify(duration_s, {**os.environ, **setup.producer_env})
        keys = setup.request_log(started)
    gaps = sum(s["gaps"] for s in checked["symbols"])
    duplicates = sum(s["duplicates"] for s in checked["symbols"])
    watch = [s for s in checked["symbols"] if s["symbol"] in settings.watchlist]
    limit = settings.rate_limit_per_minute
    worst = max((k["max_in_any_60s"] for k in keys.values()), default=0)
    load_after = os.getloadavg()

    rel_p50, rel_max = summary([r["relaunch_s"] for r in service])
    cyc_p50, cyc_max = summary([r["first_cycle_s"] for r in service])
    base_p50, base_max = summary([r["relaunch_s"] for r in baseline])
    bcyc_p50, bcyc_max = summary([r["first_cycle_s"] for r in baseline])
    rows = [
        (
            "kill -9 → new producer process (s), p50 / max",
            f"{rel_p50:.1f} / {rel_max:.1f}",
            f"{base_p50:.1f} / {base_max:.1f}",
            f"≤ {TARGET_RELAUNCH_S:.0f}",
            "yes" if rel_max <= TARGET_RELAUNCH_S else "NO",
        ),
        (
            "kill -9 → its first cycle recorded (s), p50 / max",
            f"{cyc_p50:.1f} / {cyc_max:.1f}",
            f"{bcyc_p50:.1f} / {bcyc_max:.1f}",
            "",
            "",
        ),
        ("bars lost (verify: gaps, whole run)", f"{gaps}", "", "0", "yes" if gaps == 0 else "NO"),
        ("bars sent twice (verify: duplicates, harmless)", f"{duplicates}", "", "", ""),
        (
            "most API calls in any 60 s (request log)",
            f"{worst} ({len(keys)} key{'s' if len(keys) != 1 else ''})",
            "",
            f"≤ {limit}",
            "yes" if worst <= limit else "NO",
        ),
    ]
    print(
        f"\nproducer kill -9 ({'the stack' if args.on_stack else 'own Airflow beside the stack'}): "
        f"{len(service)} kills of market_producer's producer, {len(baseline)} of supervisord's, "
        f"{args.every_s:.0f} s apart; run {duration_s / 60:.1f} min; load {load_before[0]:.2f} → "
        f"{load_after[0]:.2f}"
    )
    header = ("figure", "service (Airflow)", "baseline (supervisord)", "target", "met?")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print("verify: " + ", ".join(f"{s['symbol']} {s['bars']} bars {s['gaps']} gaps" for s in watch))
    for key, entry in keys.items():
        if entry["max_in_any_60s"] > limit:
            kills = [(label, r["at"]) for label, runs in (("service", service), ("baseline", baseline)) for r in runs]
            busy = entry["busiest_60s"]
            near = [f"{label} kill {t - busy[0]:+.1f} s" for label, t in kills if busy[0] - 70 <= t <= busy[-1] + 10]
            began = datetime.fromtimestamp(busy[0], UTC)
            gaps = ", ".join(f"{b - a:.1f}" for a, b in zip(busy, busy[1:], strict=False))
            print(
                f"{key}: {len(busy)} calls within {busy[-1] - busy[0]:.1f} s from {began:%H:%M:%S} (gaps {gaps} s); "
                + (", ".join(near) if near else "no kill near it")
            )
    if others:
        print(
            "other producers recorded cycles meanwhile (they share the checkpoints and could refill a loss): "
            + ", ".join(f"{run} ({n})" for run, n in sorted(others.items()))
        )

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "producer_relaunch",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(duration_s, 1),
        "params": vars(args),
        "setup": "the stack's Airflow" if args.on_stack else "own Airflow (api-server, scheduler, dag-processor)",
        "watchlist": settings.watchlist,
        "rate_limit_per_minute": limit,
        "service": {"kills": service, "relaunch_p50_s": rel_p50, "relaunch_max_s": rel_max,
                    "first_cycle_p50_s": cyc_p50, "first_cycle_max_s": cyc_max},
        "baseline_supervisord": {"kills": baseline, "relaunch_p50_s": base_p50, "relaunch_max_s": base_max,
                                 "first_cycle_p50_s": bcyc_p50, "first_cycle_max_s": bcyc_max},
        "verify": {"gaps": gaps, "duplicates": duplicates, "symbols": checked["symbols"],
                   "calendar": checked["calendar"]},
        "request_log": {"keys": keys, "max_in_any_60s": worst},
        "other_producers": others,
        "targets": {"relaunch_s": TARGET_RELAUNCH_S, "bars_lost": 0, "calls_per_60s": limit},
        "met": {"relaunch": rel_max <= TARGET_RELAUNCH_S, "no_loss": gaps == 0, "rate_limit": worst <= limit},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "table": [dict(zip(header, r, strict=True)) for r in rows],
    }  # fmt: skip
    path = out / "producer_relaunch.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
