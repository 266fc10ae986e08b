"""The long-running producer (``python -m stockpipe.producer``, what market_producer runs): one
``ops.ingest_cycles`` row per cycle, and a PostgreSQL outage costs the bookkeeping, not the bars."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from stockpipe.sources.simulator import start_in_thread


@pytest.fixture
def loop_env(settings, pg_database):
    with start_in_thread(seed=5, clock="demo") as sim:
        yield {
            **os.environ,
            "STOCKPIPE_PG_DATABASE": pg_database,
            "STOCKPIPE_REDIS_URL": settings.redis_url,
            "STOCKPIPE_KAFKA_TOPIC": settings.kafka_topic,
            "STOCKPIPE_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "STOCKPIPE_SIMULATOR_PORT": sim.url.rsplit(":", 1)[1],
            "STOCKPIPE_SIMULATOR_CLOCK": "demo",
            "STOCKPIPE_WATCHLIST": "AAPL,MSFT",
            "STOCKPIPE_PRODUCER_METRICS_PORT": "0",
            "STOCKPIPE_RATE_LIMIT_PER_MINUTE": "1000",
            "STOCKPIPE_BACKFILL_START_MINUTES": "5",
            # the whole watchlist every second (not one cycle a minute at planned offsets): fast cycles
            "STOCKPIPE_PRODUCER_POLICY": "cycle",
            "STOCKPIPE_PRODUCER_INTERVAL_S": "1",
            "AIRFLOW_CTX_DAG_ID": "market_producer",
            "AIRFLOW_CTX_DAG_RUN_ID": "scheduled__loop-test",
        }


def run_loop(env: dict[str, str], cycles: int, timeout_s: float = 60) -> list[str]:
    """Run the loop until it logged ``cycles`` finished cycles, then SIGTERM it; its output lines."""
    command = [sys.executable, "-m", "stockpipe.producer"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line.rstrip())
            if sum("cycle done" in text for text in lines) >= cycles:
                done.set()

    threading.Thread(target=read, daemon=True).start()
    finished = done.wait(timeout_s)
    alive = process.poll() is None
    process.send_signal(signal.SIGTERM)
    code = process.wait(30)
    time.sleep(0.2)
    assert finished and alive, "\n".join(lines[-30:])
    assert code == 0, "\n".join(lines[-30:])
    return lines


def test_each_cycle_is_one_row(loop_env, pg_conn):
    pg_conn.execute("TRUNCATE ops.ingest_cycles")
    lines = run_loop(loop_env, cycles=3)
    done = sum("cycle done" in line for line in lines)
    rows = pg_conn.execute(
        "SELECT run_id, symbols, bars_sent, failed_symbols FROM ops.ingest_cycles ORDER BY finished_at"
    ).fetchall()
    assert len(rows) == done >= 3
    assert {r[0] for r in rows} == {"market_producer/scheduled__loop-test"}
    assert rows[0][1:] == (2, 10, [])  # the first cycle: 5 minutes of 2 symbols


def test_the_loop_survives_a_postgresql_outage(loop_env, pg_conn):
    import socket

    with socket.socket() as sock:  # a port nothing listens on: PostgreSQL is "down"
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    lines = run_loop({**loop_env, "STOCKPIPE_PG_PORT": str(dead)}, cycles=3)
    warnings = [line for line in lines if "could not record the cycle in ops.ingest_cycles" in line]
    assert len(warnings) >= 3  # every cycle said so, and the loop went on
    assert "cycle done" in next(line for line in lines if "bars fetched" in line)
