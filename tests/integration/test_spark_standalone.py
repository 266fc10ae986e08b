"""The jobs on a Spark standalone cluster (STOCKPIPE_SPARK_CLUSTER=standalone): a master and a worker
from the installed pyspark, started here on free ports of 127.0.0.1 exactly as supervisord starts
them (stockpipe.streaming.cluster), then the streaming job (availableNow) and the backfill job run
against it as their own processes — this suite's local SparkSession is already the one SparkContext
this process may have. The stored result is checked against TA-Lib like every other Spark test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from stockpipe.config import ROOT, Settings
from stockpipe.streaming import cluster
from tests.integration import streamkit as kit

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

SYMBOLS = kit.SYMBOLS[:3]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop(process: subprocess.Popen | None) -> None:
    """SIGTERM the daemon's process group (the worker's executors too), SIGKILL what is left."""
    if process is None:
        return
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def standalone(base_settings: Settings, tmp_path: Path):
    """A master and a worker of our own (never the stack's), torn down whatever happens."""
    master_port, master_ui, worker_ui = free_ports(3)
    settings = base_settings.model_copy(
        update={
            "spark_master_port": master_port,
            "spark_master_webui_port": master_ui,
            "spark_worker_webui_port": worker_ui,
        }
    )
    work = tmp_path / "spark"
    (work / "tmp").mkdir(parents=True)
    env = cluster.daemon_env(work)
    logs = {role: tmp_path / f"spark-{role}.log" for role in ("master", "worker")}
    master = worker = None
    try:
        with open(logs["master"], "wb") as log:
            master = subprocess.Popen(
                cluster.master_command(settings), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while not listening(master_port):
            assert master.poll() is None, logs["master"].read_text()[-3000:]
            assert time.monotonic() < deadline, "the master did not open its port in 60 s"
            time.sleep(0.3)
        with open(logs["worker"], "wb") as log:
            worker = subprocess.Popen(
                cluster.worker_command(settings, work), env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            cluster.wait_for_worker(settings, timeout_s=90)
        except TimeoutError as error:
            pytest.fail(f"{error}\n{logs['worker'].read_text()[-3000:]}")
        yield settings, logs
    finally:
        stop(worker)
        stop(master)


def run_job(settings: Settings, master_port: int, args: list[str], log: Path) -> None:
    env = dict(os.environ)
    env.update(
        {
            # what `make up` gives the jobs with STOCKPIPE_SPARK_CLUSTER=standalone (the master URL explicit
            # too, so a developer's .env cannot point the jobs elsewhere; its derivation: tests/unit)
            "STOCKPIPE_SPARK_CLUSTER": "standalone",
            "STOCKPIPE_SPARK_MASTER_PORT": str(master_port),
            "STOCKPIPE_SPARK_MASTER": f"spark://127.0.0.1:{master_port}",
            "STOCKPIPE_KAFKA_TOPIC": settings.kafka_topic,
            "STOCKPIPE_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "STOCKPIPE_PG_DATABASE": settings.pg_database,
            "STOCKPIPE_REDIS_URL": settings.redis_url,
            "STOCKPIPE_STREAM_CHECKPOINT": settings.stream_checkpoint,
            "STOCKPIPE_STREAM_MAX_OFFSETS_PER_TRIGGER": "300",
        }
    )
    with open(log, "ab") as out:
        done = subprocess.run(
            [sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300, cwd=ROOT
        )
    assert done.returncode == 0, log.read_text()[-4000:]


def test_stream_and_backfill_on_a_standalone_cluster(standalone, stream_settings, pg_conn, redis_client, tmp_path):
    cluster_settings, logs = standalone
    port = cluster_settings.spark_master_port
    job_log = tmp_path / "jobs.log"

    # 1. The streaming job drains a session's first two hours of 3 symbols (several micro-batches).
    live = kit.Script()
    for n, symbol in enumerate(SYMBOLS):
        for bar in kit.random_bars(symbol, kit.SESSION_OPEN, 120, seed=700 + n):
            live.bar(bar)
    kit.produce(stream_settings, live.messages)
    run_job(stream_settings, port, [str(ROOT / "spark_jobs" / "stream_indicators.py"), "--available-now"], job_log)
    frame = kit.assert_invariants(pg_conn, redis_client, live)
    assert len(frame) == 3 * 120
    (batches,) = pg_conn.execute("SELECT count(*) FROM ops.stream_batches").fetchone()
    assert batches >= 2

    # 2. The day before arrives late (what market_backfill stores), and the backfill job recomputes
    # from it: every indicator, the streamed ones included, follows the longer series.
    history = {
        s: kit.random_bars(s, kit.SESSION_OPEN - timedelta(days=1), 90, seed=800 + n) for n, s in enumerate(SYMBOLS)
    }
    with pg_conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO market.bars_1m (symbol, ts, open, high, low, close, volume, vwap, trades, source, "
            "fetched_at) VALUES (%(symbol)s, %(ts)s, %(open)s, %(high)s, %(low)s, %(close)s, %(volume)s, "
            "%(vwap)s, %(trades)s, %(source)s, %(fetched_at)s)",
            [bar for bars in history.values() for bar in bars],
        )
    day = (kit.SESSION_OPEN - timedelta(days=1)).date().isoformat()
    run_job(
        stream_settings,
        port,
        [str(ROOT / "spark_jobs" / "backfill_indicators.py"), "--symbols", ",".join(SYMBOLS), "--start", day],
        job_log,
    )
    everything = kit.Script()
    everything.expected = dict(live.expected)
    for bars in history.values():
        for bar in bars:
            everything.expected[(bar["symbol"], kit._parse(bar["ts"]))] = bar
    frame = kit.assert_invariants(pg_conn, redis_client, everything)
    assert len(frame) == 3 * (90 + 120)

    # 3. Both ran on the cluster: the master saw each application come and finish.
    state = cluster.master_state(cluster_settings)
    finished = {app["name"]: app for app in state["completedapps"]}
    assert {stream_settings.stream_query_name, "backfill_indicators"} <= set(finished), (
        sorted(finished),
        logs["master"].read_text()[-2000:],
    )
    assert all(app["state"] == "FINISHED" for app in finished.values()), finished
    assert not state["activeapps"]
