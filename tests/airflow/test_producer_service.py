"""market_producer: the producer's long-running loop as the child process of one task (``dag.test()``
against the test services and an in-thread simulator). A kill -9 of the producer fails the task (the
``@continuous`` schedule's next run relaunches it; test_dagbag checks that wiring), pausing the DAG
stops it, each cycle is one ``ops.ingest_cycles`` row, and the child holds only the producer's
secrets; a dying producer queues the next run at once. market_ingest in service mode: scheduled runs
skip, manual runs re-send their interval. Airflow's REST API is a stand-in (FakeAirflowApi)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pendulum
import psutil
import pytest

from tests.airflow.test_dag_runs import consume, task_states

pytestmark = pytest.mark.usefixtures("airflow_db")


class FakeAirflowApi:
    """A stand-in for Airflow's REST API (the dev stack's is never contacted): logs in anyone, says
    whether market_producer is paused (``paused``), records every call, queues a run on POST."""

    def __init__(self) -> None:
        self.paused = False
        self.calls: list[tuple[str, str, dict | None]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: dict, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict | None:
                length = int(self.headers.get("Content-Length", 0))
                return json.loads(self.rfile.read(length)) if length else None

            def do_POST(self):  # noqa: N802
                body = self._body()
                api.calls.append(("POST", self.path, body))
                if self.path == "/auth/token":
                    return self._reply({"access_token": "tok"}, 201)
                self._reply({"dag_run_id": "manual__relaunch"}, 200)

            def do_GET(self):  # noqa: N802
                api.calls.append(("GET", self.path, None))
                if "/dagRuns" in self.path:
                    return self._reply({"dag_runs": [], "total_entries": 0})
                self._reply({"dag_id": "market_producer", "is_paused": api.paused})

            def do_PATCH(self):  # noqa: N802
                body = self._body()
                api.calls.append(("PATCH", self.path, body))
                api.paused = bool((body or {}).get("is_paused"))
                self._reply({"dag_id": "market_producer", "is_paused": api.paused})

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def paths(self, method: str) -> list[str]:
        return [path.split("?")[0] for m, path, _ in self.calls if m == method]


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch, tmp_path):
    api = FakeAirflowApi()
    passwords = tmp_path / "passwords.json"
    passwords.write_text('{"admin": "pw"}')
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv("STOCKPIPE_AIRFLOW_API_URL", api.url)
    yield api
    api.server.shutdown()


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch, dag_env, fake_api):
    """dag_env in service mode; the producer's first fetch reaches 5 minutes back, no metrics port;
    Airflow's API is the fake one."""
    from stockpipe.config import get_settings

    monkeypatch.setenv("STOCKPIPE_PRODUCER_MODE", "service")
    monkeypatch.setenv("STOCKPIPE_PRODUCER_METRICS_PORT", "0")
    monkeypatch.setenv("STOCKPIPE_BACKFILL_START_MINUTES", "5")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def producer_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "stockpipe.producer" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def cycle_rows(conn) -> list[tuple]:
    return conn.execute("SELECT run_id, symbols, bars_sent, failed_symbols FROM ops.ingest_cycles").fetchall()


class Watcher(threading.Thread):
    """Waits for the producer child and its first ops.ingest_cycles row, then runs ``action(child)``."""

    def __init__(self, conn, action, timeout_s: float = 90) -> None:
        super().__init__(daemon=True)
        self.conn, self.action, self.timeout_s = conn, action, timeout_s
        self.child: psutil.Process | None = None
        self.environ: dict[str, str] = {}
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            children = producer_children()
            if children and cycle_rows(self.conn):
                self.child = children[0]
                self.environ = self.child.environ()
                self.action(self.child)
                return
            time.sleep(0.5)
        self.error = "no producer child with a recorded cycle within the timeout"
        for child in producer_children():  # don't leave dag.test() waiting forever
            child.kill()


def run_producer_dag(dagbag):
    dag = dagbag.get_dag("market_producer")
    return dag.test(logical_date=pendulum.now("UTC"))


def test_kill_9_fails_the_task_and_queues_the_relaunch(dagbag, service_env, af_conn, fake_api):
    watcher = Watcher(af_conn, lambda child: child.send_signal(signal.SIGKILL))
    watcher.start()
    dag_run = run_producer_dag(dagbag)
    watcher.join(10)
    assert watcher.error is None, watcher.error
    assert task_states(dag_run) == {"run_producer": "failed"}
    assert dag_run.state == "failed"
    assert not watcher.child.is_running() and producer_children() == []
    # the next run is queued at once (the continuous schedule alone would take up to a minute)
    assert fake_api.paths("POST")[-1] == "/api/v2/dags/market_producer/dagRuns"
    assert "killed by signal 9" in fake_api.calls[-1][2]["note"]

    # the loop recorded its cycle, named after the Airflow run; every symbol fetched, none failed
    rows = cycle_rows(af_conn)
    assert rows and all(run_id == f"market_producer/{dag_run.run_id}" for run_id, *_ in rows)
    assert rows[0][1] == len(service_env.watchlist) and rows[0][3] == []

    # least privilege: the producer's secrets only, no Airflow configuration, no secrets file
    env = watcher.environ
    assert env["STOCKPIPE_SECRETS_FILE"] == os.devnull
    assert not [k for k in env if k.startswith("AIRFLOW__")]
    assert "STOCKPIPE_PG_ADMIN_PASSWORD" not in env and "STOCKPIPE_PG_READER_PASSWORD" not in env
    assert env["STOCKPIPE_PG_DATABASE"] == service_env.pg_database

    # what it sent before it died is in Kafka: one bar per symbol and minute, 5 minutes back
    messages = consume(service_env, service_env.kafka_topic, len(service_env.watchlist) * 5)
    assert {m.key().decode() for m in messages} == set(service_env.watchlist)


def test_pausing_the_dag_stops_the_producer(dagbag, service_env, af_conn, fake_api):
    fake_api.paused = True
    task = dagbag.get_dag("market_producer").get_task("run_producer")
    poll, task.pause_poll_s = task.pause_poll_s, 1.0
    watchdog = threading.Timer(60, lambda: [c.kill() for c in producer_children()])  # fail, never hang
    watchdog.start()
    try:
        dag_run = run_producer_dag(dagbag)
    finally:
        task.pause_poll_s = poll
        watchdog.cancel()
    assert "/api/v2/dags/market_producer" in fake_api.paths("GET")
    # stopped on purpose (SIGTERM, clean exit): the run succeeds, and no other run is queued
    assert task_states(dag_run) == {"run_producer": "success"}
    assert producer_children() == []
    assert "/api/v2/dags/market_producer/dagRuns" not in fake_api.paths("POST")


def test_in_supervisor_mode_the_dag_pauses_itself(dagbag, service_env, fake_api, monkeypatch):
    from stockpipe.config import get_settings

    monkeypatch.setenv("STOCKPIPE_PRODUCER_MODE", "supervisor")
    get_settings.cache_clear()
    dag_run = run_producer_dag(dagbag)
    assert task_states(dag_run) == {"run_producer": "skipped"}
    assert fake_api.paused and fake_api.paths("PATCH") == ["/api/v2/dags/market_producer"]
    assert producer_children() == []


def test_market_ingest_in_service_mode(dagbag, service_env, af_conn):
    """Scheduled runs skip (the service owns the live cycles); a manual run re-sends its interval
    without touching the service's checkpoints."""
    from airflow.sdk.exceptions import AirflowSkipException

    from stockpipe.airflow.ingest import ingest_interval
    from stockpipe.producer.core import CHECKPOINT_KEY

    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    start = end - timedelta(minutes=1)
    with pytest.raises(AirflowSkipException, match="scheduled market_ingest runs skip"):
        ingest_interval("scheduled__x", start, end, rerun=False, scheduled=True)

    dag_run = dagbag.get_dag("market_ingest").test(logical_date=pendulum.instance(end))
    assert task_states(dag_run) == {"produce_bars": "success"}
    messages = consume(service_env, service_env.kafka_topic, len(service_env.watchlist))
    assert len(messages) == len(service_env.watchlist)
    interval = {json.loads(m.value())["ts"] for m in messages}
    assert len(interval) == 1
    redis = service_env.redis_client(decode_responses=True)
    assert redis.hgetall(CHECKPOINT_KEY) == {}  # the live loop's checkpoints are its own
    redis.close()
    ((run_id, symbols, sent, failed),) = cycle_rows(af_conn)
    assert (run_id, symbols, sent, failed) == (dag_run.run_id, len(service_env.watchlist), len(messages), [])
