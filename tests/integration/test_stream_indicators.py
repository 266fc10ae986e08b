"""The streaming job end to end: real Kafka, Spark, PostgreSQL and Redis.

Each test produces a scripted series into its own topic, runs the query until the topic is drained
(``availableNow``), and checks the invariants with ``streamkit.assert_invariants``: one row per
(symbol, ts) holding the latest fetched_at's values, indicators equal to TA-Lib over the stored
series, Redis latest equal to the last stored row. Restarts reuse the checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from stockpipe.streaming.query import start_stream
from stockpipe.streaming.sink import BatchWriter
from tests.integration import streamkit as kit

pytestmark = [pytest.mark.integration, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]


def scripted_phase(script: kit.Script, series: dict[str, list[dict]], lo: int, hi: int, tag: int) -> None:
    """Bars lo..hi-1 of every symbol with a duplicate, a stale resend, a same-fetched_at resend,
    a bar held back past later ones, and a correction of an earlier bar (newer fetched_at)."""
    for bars in series.values():
        held = lo + 50
        order = [i for i in range(lo, hi) if i != held]
        # adjacent swaps: out of order by one
        for j in range(5, len(order) - 1, 37):
            order[j], order[j + 1] = order[j + 1], order[j]
        for step, i in enumerate(order):
            script.bar(bars[i])
            if step == 30:
                script.bar(bars[lo + 10])  # exact duplicate
                script.bar(kit.revised(bars[lo + 20], -30, 1.01), wins=False)  # older fetched_at: loses
                script.bar(kit.revised(bars[lo + 25], 0, 1.02), wins=False)  # equal fetched_at: first wins
        script.bar(bars[held])  # late, within the horizon: recompute from it
        correction = kit.revised(bars[lo + tag], 600, 0.99)
        bars[lo + tag] = correction
        script.bar(correction)  # corrected bar, newer fetched_at: wins, recompute


@pytest.mark.slow
def test_stream_end_to_end_restart_and_replay(spark, stream_settings, pg_conn, redis_client):
    series = {s: kit.random_bars(s, kit.SESSION_OPEN, 320, seed=n) for n, s in enumerate(kit.SYMBOLS)}

    # Phase 1: 200 bars per symbol with every kind of irregularity, and dead letters.
    first = kit.Script()
    kit.malformed(first, "AAPL", kit.SESSION_OPEN)
    scripted_phase(first, series, 0, 200, tag=100)
    kit.produce(stream_settings, first.messages)
    kit.drain(spark, stream_settings)
    frame = kit.assert_invariants(pg_conn, redis_client, first)
    assert frame.groupby("symbol").size().to_dict() == {s: 200 for s in kit.SYMBOLS}

    # Phase 2 (restart from the same checkpoint): 120 more bars, a correction of a phase-1 bar
    # (recompute across the restart), resends of phase-1 bars, more dead letters. The first batch
    # with dead letters "crashes" right after its PostgreSQL commit, before Spark commits it.
    second = kit.Script()
    second.expected = dict(first.expected)
    kit.malformed(second, "MSFT", kit.SESSION_OPEN)
    for symbol in kit.SYMBOLS:
        for bar in series[symbol][:15]:
            second.bar(bar)  # replayed phase-1 bars: no change
    scripted_phase(second, series, 200, 320, tag=-30)  # corrects bar 170, from phase 1

    class CrashAfterCommit(BatchWriter):
        crashed_at: int | None = None

        def write_frame(self, frame, batch_id, **kwargs):
            super().write_frame(frame, batch_id, **kwargs)
            if self.crashed_at is None and frame["kind"].isin(["dead", "dead_sent"]).any():
                CrashAfterCommit.crashed_at = batch_id
                raise RuntimeError("simulated crash between the PostgreSQL commit and Spark's commit")

    kit.produce(stream_settings, second.messages)
    with pytest.raises(Exception, match="simulated crash"):
        kit.drain(spark, stream_settings, writer=CrashAfterCommit(stream_settings))
    assert CrashAfterCommit.crashed_at is not None
    kit.drain(spark, stream_settings)

    frame = kit.assert_invariants(pg_conn, redis_client, second)
    assert frame.groupby("symbol").size().to_dict() == {s: 320 for s in kit.SYMBOLS}

    # The replayed batch changed nothing: dead letters once each, batch ids once each, every
    # record counted once.
    letters = kit.dead_letters(stream_settings, expected=len(first.dead) + len(second.dead))
    assert len(letters) == len(first.dead) + len(second.dead)
    unmatched = list(letters)
    for reason in first.dead + second.dead:  # partitions interleave: match as a multiset
        letter = next((x for x in unmatched if reason in x["error"]), None)
        assert letter is not None, f"no dead letter for {reason!r} in {[x['error'] for x in unmatched]}"
        unmatched.remove(letter)
        assert letter["origin"]["topic"] == stream_settings.kafka_topic and letter["origin"]["offset"] >= 0
        assert letter["raw"]
    batches = pg_conn.execute(
        "SELECT batch_id, rows_in, bars_upserted, dead_letters, processing_ms, max_event_ts, latency_p95_ms "
        "FROM ops.stream_batches ORDER BY batch_id"
    ).fetchall()
    assert [b[0] for b in batches] == list(range(len(batches)))
    assert sum(b[1] for b in batches) == len(first.messages) + len(second.messages)
    assert sum(b[3] for b in batches) == len(first.dead) + len(second.dead)
    assert all(b[4] > 0 for b in batches) and max(b[5] for b in batches) == frame["ts"].max()


@pytest.mark.slow
def test_stream_survives_sigkill_of_the_driver(stream_settings, pg_conn, redis_client, tmp_path):
    """kill -9 of the whole job (driver JVM, Python driver and workers) mid-stream, then restart."""
    settings = stream_settings
    env = dict(os.environ)
    env.update(
        {
            "STOCKPIPE_KAFKA_TOPIC": settings.kafka_topic,
            "STOCKPIPE_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "STOCKPIPE_PG_DATABASE": settings.pg_database,
            "STOCKPIPE_REDIS_URL": settings.redis_url,
            "STOCKPIPE_STREAM_CHECKPOINT": settings.stream_checkpoint,
            "STOCKPIPE_STREAM_TRIGGER_S": "0.5",
            "STOCKPIPE_STREAM_MAX_OFFSETS_PER_TRIGGER": "150",
        }
    )
    job = [sys.executable, str(ROOT / "spark_jobs" / "stream_indicators.py")]
    series = {s: kit.random_bars(s, kit.SESSION_OPEN, 330, seed=10 + n) for n, s in enumerate(kit.SYMBOLS)}
    script = kit.Script()
    scripted_phase(script, series, 0, 220, tag=120)
    kit.produce(settings, script.messages)

    log = open(tmp_path / "job.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(job, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            (count,) = pg_conn.execute("SELECT count(*) FROM ops.stream_batches").fetchone()
            if count >= 3:
                break
            assert process.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the streaming job committed no batches in 120 s")
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    (committed,) = pg_conn.execute("SELECT count(*) FROM market.bars_1m").fetchone()
    assert 0 < committed < len(script.expected), "the kill was not mid-stream"

    sent = len(script.messages)
    scripted_phase(script, series, 220, 330, tag=-40)
    kit.produce(settings, script.messages[sent:])
    restarted = subprocess.run(
        [*job, "--available-now"],
        env={**env, "STOCKPIPE_STREAM_MAX_OFFSETS_PER_TRIGGER": "600"},
        stdout=log,
        stderr=subprocess.STDOUT,
        timeout=300,
    )
    assert restarted.returncode == 0, (tmp_path / "job.log").read_text()[-3000:]
    frame = kit.assert_invariants(pg_conn, redis_client, script)
    assert frame.groupby("symbol").size().to_dict() == {s: 330 for s in kit.SYMBOLS}
    ids = [row[0] for row in pg_conn.execute("SELECT batch_id FROM ops.stream_batches ORDER BY 1")]
    assert ids == list(range(len(ids)))


def test_new_checkpoint_continues_stored_series(spark, stream_settings, pg_conn, redis_client, tmp_path):
    """A lost checkpoint: the new query seeds each symbol from its stored bars (still exact)."""
    series = {s: kit.random_bars(s, kit.SESSION_OPEN - timedelta(days=1), 150, seed=40 + n)
              for n, s in enumerate(kit.SYMBOLS[:2])}  # fmt: skip
    script = kit.Script()
    for bars in series.values():
        for bar in bars[:100]:
            script.bar(bar)
    kit.produce(stream_settings, script.messages)
    kit.drain(spark, stream_settings)

    fresh = stream_settings.model_copy(
        update={"stream_checkpoint": str(tmp_path / "other"), "stream_starting_offsets": "latest"}
    )
    subscriber = redis_client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe("stockpipe:bars")
    query, writer = start_stream(spark, fresh)
    try:
        deadline = time.monotonic() + 120
        while not query.recentProgress:  # "latest" is resolved by the first trigger
            assert query.isActive and time.monotonic() < deadline, f"no first trigger: {query.exception()}"
            time.sleep(0.2)
        more = kit.Script()
        for bars in series.values():
            more.bar(kit.revised(bars[60], 120, 1.01))  # a correction inside the stored series
            for bar in bars[100:]:
                more.bar(bar)
        kit.produce(stream_settings, more.messages)
        query.processAllAvailable()
    finally:
        query.stop()
        writer.close()
    script.expected.update(more.expected)
    frame = kit.assert_invariants(pg_conn, redis_client, script)

    newest = {symbol: kit.iso(bars["ts"].iloc[-1].to_pydatetime()) for symbol, bars in frame.groupby("symbol")}
    published = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # None also stands for the (ignored) subscribe confirmation
        message = subscriber.get_message(timeout=0.5)
        if message is not None:
            published.append(json.loads(message["data"]))
        elif {m["symbol"]: m["ts"] for m in published} == newest:  # all read (the batches are done)
            break
    subscriber.close()
    last = {m["symbol"]: m for m in published}
    for symbol, bars in frame.groupby("symbol"):
        assert last[symbol]["ts"] == kit.iso(bars["ts"].iloc[-1].to_pydatetime())
        assert last[symbol]["close"] == bars["close"].iloc[-1]


def test_redis_outage_defers_the_latest_state_without_failing_batches(spark, stream_settings, pg_conn, redis_client):
    """Redis unreachable: every batch still commits to PostgreSQL; once Redis answers again, the
    latest row of every symbol left behind is written — also of symbols without a new bar."""
    from stockpipe.storage.redis_latest import LatestWriter

    series = {s: kit.random_bars(s, kit.SESSION_OPEN, 31, seed=70 + n) for n, s in enumerate(kit.SYMBOLS)}
    script = kit.Script()
    for i in range(30):
        for symbol in kit.SYMBOLS:
            script.bar(series[symbol][i])
    kit.produce(stream_settings, script.messages)
    writer = BatchWriter(stream_settings)
    writer.latest = LatestWriter(stream_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    kit.drain(spark, stream_settings, writer=writer)  # no exception: the batches committed
    assert len(kit.stored(pg_conn)) == 30 * len(kit.SYMBOLS)
    assert not redis_client.keys("stockpipe:latest:*")

    # Redis is back; only the first symbol gets a new bar, yet every symbol must catch up.
    first = kit.SYMBOLS[0]
    more = kit.Script(expected=dict(script.expected))
    more.bar(series[first][30])
    kit.produce(stream_settings, more.messages)
    writer.latest = LatestWriter(stream_settings)
    kit.drain(spark, stream_settings, writer=writer)
    kit.assert_invariants(pg_conn, redis_client, more)
    assert len(redis_client.keys("stockpipe:latest:*")) == len(kit.SYMBOLS)


@pytest.mark.parametrize("how", ["checkpoint moved aside", "new checkpoint directory", "new directory and query name"])
def test_checkpoint_reset_mid_stream_loses_nothing(spark, stream_settings, pg_conn, redis_client, tmp_path, how):
    """README's recovery step: after ≥ 5 committed batches the checkpoint is moved aside (or the job
    pointed at a new directory under a new query name) while bars keep coming. Batch ids restart at
    0; every bar must still be stored once, indicators TA-Lib-exact, Redis at the newest bar."""
    # 90 records a batch: 6 batches before the reset (the 500 records); the restarted query then reads
    # the 301 new ones in 300s (2 batches: the reset's claim does not need more, each batch costs ~1-2 s)
    settings = stream_settings.model_copy(update={"stream_max_offsets_per_trigger": 90})
    series = {s: kit.random_bars(s, kit.SESSION_OPEN, 160, seed=90 + n) for n, s in enumerate(kit.SYMBOLS)}
    script = kit.Script()
    for i in range(100):
        for symbol in kit.SYMBOLS:
            script.bar(series[symbol][i])
    kit.produce(settings, script.messages)
    kit.drain(spark, settings)
    (batches,) = pg_conn.execute("SELECT count(*) FROM ops.stream_batches").fetchone()
    assert batches >= 5, "the first query must commit several batches for this test to mean anything"
    assert len(kit.stored(pg_conn)) == 100 * len(kit.SYMBOLS)

    if how == "checkpoint moved aside":
        checkpoint = Path(settings.stream_checkpoint)
        checkpoint.rename(checkpoint.with_name(checkpoint.name + ".moved"))
        restarted = stream_settings
    elif how == "new checkpoint directory":
        restarted = stream_settings.model_copy(update={"stream_checkpoint": str(tmp_path / "elsewhere")})
    else:
        restarted = stream_settings.model_copy(
            update={"stream_checkpoint": str(tmp_path / "elsewhere"), "stream_query_name": "stream_renamed"}
        )
    more = kit.Script(expected=dict(script.expected))
    for i in range(100, 160):
        for symbol in kit.SYMBOLS:
            more.bar(series[symbol][i])
    more.bar(kit.revised(series[kit.SYMBOLS[0]][150], 300, 1.01))  # a correction after the reset
    kit.produce(settings, more.messages)
    kit.drain(spark, restarted)

    frame = kit.assert_invariants(pg_conn, redis_client, more)
    assert frame.groupby("symbol").size().to_dict() == {s: 160 for s in kit.SYMBOLS}
    (next_offsets,) = pg_conn.execute("SELECT sum(next_offset) FROM ops.stream_offsets").fetchone()
    assert next_offsets == len(script.messages) + len(more.messages), "every record applied exactly once"


def test_job_restarted_during_a_redis_outage_catches_up_every_symbol(spark, stream_settings, pg_conn, redis_client):
    """The symbols a Redis outage left behind are not only in the old job's memory: a job restarted
    during the outage brings every symbol's Redis state up to PostgreSQL's once Redis answers, also
    of symbols without a new bar."""
    from stockpipe.storage.redis_latest import LatestWriter

    series = {s: kit.random_bars(s, kit.SESSION_OPEN, 21, seed=80 + n) for n, s in enumerate(kit.SYMBOLS)}
    script = kit.Script()
    for i in range(20):
        for symbol in kit.SYMBOLS:
            script.bar(series[symbol][i])
    kit.produce(stream_settings, script.messages)
    down = stream_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    writer = BatchWriter(stream_settings)
    writer.latest = LatestWriter(down)
    kit.drain(spark, stream_settings, writer=writer)
    assert not redis_client.keys("stockpipe:latest:*")

    # The job restarts (a new writer: nothing of the old one's memory), Redis is back, one new bar.
    more = kit.Script(expected=dict(script.expected))
    more.bar(series[kit.SYMBOLS[0]][20])
    kit.produce(stream_settings, more.messages)
    kit.drain(spark, stream_settings, writer=BatchWriter(stream_settings))
    kit.assert_invariants(pg_conn, redis_client, more)
    assert len(redis_client.keys("stockpipe:latest:*")) == len(kit.SYMBOLS)


def test_dead_letters_are_sent_by_the_workers_not_gathered_on_the_driver(spark, stream_settings, pg_conn, redis_client):
    """A micro-batch of up to maxOffsetsPerTrigger invalid records must not bring their raw bytes to
    the driver: the operator's worker sends them; the driver sees only their origin and reason."""
    import pandas as pd

    script = kit.Script()
    kit.malformed(script, "AAPL", kit.SESSION_OPEN)
    for bar in kit.random_bars("AAPL", kit.SESSION_OPEN, 10, seed=5):
        script.bar(bar)
    seen: list[pd.DataFrame] = []

    class Spy(BatchWriter):
        def write_frame(self, frame, batch_id, **kwargs):
            seen.append(frame)
            super().write_frame(frame, batch_id, **kwargs)

    kit.produce(stream_settings, script.messages)
    kit.drain(spark, stream_settings, writer=Spy(stream_settings))
    frames = pd.concat(seen, ignore_index=True)
    assert frames["kind"].isin(["dead", "dead_sent"]).sum() == len(script.dead)
    assert frames["raw_value"].isna().all(), "raw bytes of dead letters reached the driver"
    letters = kit.dead_letters(stream_settings, expected=len(script.dead))
    assert len(letters) == len(script.dead) and all(letter["raw"] for letter in letters)
    kit.assert_invariants(pg_conn, redis_client, script)


def test_state_bucket_labels_are_computed_once_per_process_and_spread_evenly(spark):
    """Every query start asks for the bucket labels: the Spark job that finds them runs once per
    bucket count (the labels depend on Spark's seeded hash only), and each label lands in its slot."""
    from stockpipe.streaming import parse

    parse._LABELS.clear()
    labels = parse.bucket_labels(spark, 16)
    frame = spark.createDataFrame([(label,) for label in labels], "label string")
    slots = frame.selectExpr("pmod(hash(label), 64) AS s")
    assert [row.s for row in slots.collect()] == list(range(16)) and len(set(labels)) == 16
    assert parse.bucket_labels(None, 16) == labels  # no Spark: the cached labels
    assert parse.bucket_labels(spark, 4) == labels[:4]  # another count: computed, and the same first picks
