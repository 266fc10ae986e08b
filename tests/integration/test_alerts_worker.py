"""The alerts delivery worker against real PostgreSQL, Redis pub/sub and local HTTP webhooks.

Alerts come from the sink's own evaluation (PostgresSink.write with Kafka offsets, as the stream
calls it); a webhook that always answers 500 and one that takes them, both real HTTP servers on
127.0.0.1. Every alert is published once on ``stockpipe:alerts``; the good webhook gets each alert
once as Slack-compatible ``{"text": ...}``; the dead one is retried (1, 2 s) then marked failed,
without delaying the other rule's deliveries; a retraction of a delivered alert is delivered too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from stockpipe.alerts.worker import Worker
from stockpipe.storage import alerts as store
from stockpipe.storage.postgres import PostgresSink
from stockpipe.streaming import state as st
from tests.integration import alertkit
from tests.integration import streamkit as kit

pytestmark = [pytest.mark.integration]


class Hook:
    """A webhook on 127.0.0.1 answering ``status``; records (time, JSON body) of each POST."""

    def __init__(self, status: int) -> None:
        self.calls: list[tuple[float, dict]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.calls.append((time.monotonic(), json.loads(body)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks():
    good, dead = Hook(200), Hook(500)
    yield good, dead
    good.close()
    dead.close()


def wait_for(condition, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_worker_publishes_posts_retries_and_never_waits_for_a_dead_webhook(settings, pg_conn, redis_client, hooks):
    good, dead = hooks
    settings = settings.model_copy(update={"user_alerts_webhook_retries": 2})
    to_good = store.add_rule(pg_conn, "AAPL", "close crosses above sma_20", webhook_url=good.url)
    to_dead = store.add_rule(pg_conn, "AAPL", "close crosses below sma_20", webhook_url=dead.url)
    subscriber = redis_client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(settings.redis_alerts_channel)

    bars = kit.random_bars("AAPL", kit.SESSION_OPEN, 200, seed=3)
    sink = PostgresSink(settings)
    state, rows = alertkit.operator_rows(bars, st.SymbolState())
    sink.write(rows, offsets={("t", 0): (0, 199)}, query_name="test", batch_id=0)
    alerts = pg_conn.execute("SELECT id, rule_id, delivery FROM market.alerts ORDER BY id").fetchall()
    good_ids = {a[0] for a in alerts if a[1] == to_good.id}
    dead_ids = {a[0] for a in alerts if a[1] == to_dead.id}
    assert good_ids and dead_ids and all(a[2] == "pending" for a in alerts)

    worker = Worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        published: list[dict] = []

        def all_published():
            while (msg := subscriber.get_message(timeout=0.2)) is not None:
                published.append(json.loads(msg["data"]))
            return {m["id"] for m in published} >= good_ids | dead_ids

        wait_for(all_published)
        # the good webhook got everything while the dead one was still being retried
        wait_for(lambda: len(good.calls) >= len(good_ids))
        wait_for(lambda: len(dead.calls) >= 3 * len(dead_ids))
        assert max(t for t, _ in good.calls) < max(t for t, _ in dead.calls), "the good webhook waited for the dead one"
        wait_for(
            lambda: pg_conn.execute(
                "SELECT count(*) = 0 FROM market.alerts WHERE delivery IN ('pending', 'sending')"
            ).fetchone()[0]
        )
        rows_now = pg_conn.execute(
            "SELECT id, delivery, webhook_status, webhook_attempts, webhook_error, published_at IS NOT NULL "
            "FROM market.alerts ORDER BY id"
        ).fetchall()
        for alert_id, delivery, status, attempts, error, was_published in rows_now:
            assert was_published
            if alert_id in good_ids:
                assert (delivery, status, attempts, error) == ("delivered", "sent", 1, None)
            else:
                assert (delivery, status, attempts, error) == ("failed", "failed", 3, "HTTP 500")
        assert len(dead.calls) == 3 * len(dead_ids)
        assert sorted(m["id"] for m in published) == sorted(good_ids | dead_ids), "published twice or not at all"
        texts = [body["text"] for _, body in good.calls]
        assert sorted(texts) == sorted(set(texts)) and all(set(body) == {"text"} for _, body in good.calls)
        assert all(t.startswith("AAPL 2026-11-24 ") and "close crosses above sma_20" in t for t in texts)

        # A correction that undoes the last delivered crossing: retracted, and that is delivered too.
        (last_id, last_ts) = pg_conn.execute(
            "SELECT id, ts FROM market.alerts WHERE rule_id = %s ORDER BY ts DESC LIMIT 1", (to_good.id,)
        ).fetchone()
        i = next(k for k, b in enumerate(bars) if pd.Timestamp(b["ts"]) == pd.Timestamp(last_ts))
        correction = kit.revised(bars[i], 600, 0.97)  # 3 % lower: below its SMA 20 again
        state, rows = alertkit.operator_rows([correction], state)
        sink.write(rows, offsets={("t", 0): (200, 200)}, query_name="test", batch_id=1)
        assert pg_conn.execute("SELECT status FROM market.alerts WHERE id = %s", (last_id,)).fetchone() == (
            "retracted",
        )

        def retraction_published():
            all_published()
            return any(m["id"] == last_id and m["status"] == "retracted" for m in published)

        wait_for(retraction_published)
        wait_for(lambda: any(b["text"].startswith("Retracted") for _, b in good.calls))
    finally:
        worker.stopping.set()
        thread.join(10)
        worker.close()
        subscriber.close()
        sink.close()


def test_a_worker_killed_after_taking_alerts_leaves_none_behind(settings, pg_conn, redis_client):
    """Alerts a worker took (``sending``) and never finished are delivered by the next worker."""
    store.add_rule(pg_conn, "AAPL", "close crosses above sma_20")
    sink = PostgresSink(settings)
    try:
        _state, rows = alertkit.operator_rows(kit.random_bars("AAPL", kit.SESSION_OPEN, 200, seed=5), st.SymbolState())
        sink.write(rows, offsets={("t", 0): (0, 199)}, query_name="test", batch_id=0)
    finally:
        sink.close()
    ids = [r[0] for r in pg_conn.execute("SELECT id FROM market.alerts ORDER BY id")]
    assert len(ids) >= 2
    taken = store.claim_pending(pg_conn, limit=len(ids) // 2)  # the killed worker's claim
    assert {a["id"] for a in taken} < set(ids)

    subscriber = redis_client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(settings.redis_alerts_channel)
    worker = Worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    published: list[int] = []
    try:

        def all_published():
            while (msg := subscriber.get_message(timeout=0.2)) is not None:
                published.append(json.loads(msg["data"])["id"])
            return set(published) >= set(ids)

        wait_for(all_published)
        wait_for(
            lambda: pg_conn.execute(
                "SELECT bool_and(delivery = 'delivered' AND webhook_status = 'no_url') FROM market.alerts"
            ).fetchone()[0]
        )
        time.sleep(1)
        all_published()
        assert sorted(published) == ids, "each alert published once"
    finally:
        worker.stopping.set()
        thread.join(10)
        worker.close()
        subscriber.close()


def test_the_worker_names_an_unreachable_postgresql_in_one_sentence(settings):
    env = dict(os.environ, STOCKPIPE_PG_DATABASE=settings.pg_database, STOCKPIPE_PG_PORT="1")
    check = [sys.executable, "-m", "stockpipe.alerts.worker", "--check"]
    done = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("PostgreSQL at 127.0.0.1:1 ") and "make up" in lines[0]
    healthy = subprocess.run(
        [sys.executable, "-m", "stockpipe.alerts.worker", "--check"],
        env=dict(os.environ, STOCKPIPE_PG_DATABASE=settings.pg_database, STOCKPIPE_REDIS_URL=settings.redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert healthy.returncode == 0, healthy.stderr
