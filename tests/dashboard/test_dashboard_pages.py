"""AppTest of every page against the real test database, Redis db 15 and Kafka (seeded here)."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from conftest import APP, REDIS_CLOSE, free_port
from streamlit.testing.v1 import AppTest

from stockpipe.contract import dead_letter

pytestmark = pytest.mark.integration
NEW_YORK = "America/New_York"


def run_page(page: str | None = None, **widgets) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def metrics(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta or "") for m in at.metric}


def _decode(value):
    """Plotly 6 ships numeric arrays as {"dtype", "bdata"}; lists of floats with None stay lists."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def figures(at: AppTest) -> list[dict]:
    return [_decode(json.loads(chart.proto.spec)) for chart in at.get("plotly_chart")]


def previous_close(frame: pd.DataFrame, symbol: str, ts: pd.Timestamp) -> float:
    midnight = ts.tz_convert(NEW_YORK).normalize().tz_convert("UTC")
    rows = frame[(frame["symbol"] == symbol) & (frame["ts"] < midnight)]
    return float(rows["close"].iloc[-1])


# --- overview ------------------------------------------------------------------------------------
def test_overview_tiles_come_from_redis_then_postgres(seeded):
    at = run_page()
    found = metrics(at)
    aapl_ts = seeded[seeded["symbol"] == "ZAPL"]["ts"].iloc[-1] + pd.Timedelta(minutes=1)
    change = REDIS_CLOSE - previous_close(seeded, "ZAPL", aapl_ts)
    assert found["ZAPL"][0] == f"{REDIS_CLOSE:,.2f}"  # Redis, one bar ahead of PostgreSQL
    assert found["ZAPL"][1].startswith(f"{change:+,.2f}")
    msft = seeded[seeded["symbol"] == "ZMSF"].iloc[-1]  # not in Redis: PostgreSQL's latest bar
    assert found["ZMSF"][0] == f"{msft['close']:,.2f}"
    msft_change = msft["close"] - previous_close(seeded, "ZMSF", msft["ts"])
    assert found["ZMSF"][1].startswith(f"{msft_change:+,.2f}")
    markdown = texts(at, "markdown")
    assert "Vol **12,345** · RSI 75.5 · overbought" in markdown
    assert f"Vol **{msft['volume']:,.0f}**" in markdown
    captions = texts(at, "caption")
    assert "from redis" in captions and "from postgres" in captions
    assert "NYSE" in captions
    assert len(at.get("plotly_chart")) == 2  # a sparkline per tile
    assert not at.error


def test_overview_shows_a_new_redis_bar_on_the_next_refresh(seeded, redis_client):
    at = run_page()
    redis_client.hset("stockpipe:latest:ZAPL", mapping={"close": "250.5"})
    at.run()
    assert metrics(at)["ZAPL"][0] == "250.50"


# --- symbol --------------------------------------------------------------------------------------
def test_symbol_page_1d_draws_the_stored_minute_bars_and_indicators(seeded):
    at = run_page("symbol")
    aapl = seeded[seeded["symbol"] == "ZAPL"]
    last = aapl.iloc[-1]
    midnight = last["ts"].tz_convert(NEW_YORK).normalize().tz_convert("UTC")
    day = aapl[aapl["ts"] >= midnight]
    assert "ZAPL · Apple Inc." in texts(at, "title")
    assert metrics(at)["Last"][0] == f"{last['close']:,.2f}"
    (figure,) = figures(at)
    traces = {t.get("name"): t for t in figure["data"]}
    assert len(traces["ZAPL"]["close"]) == len(day)
    sma = traces["SMA 20"]["y"]
    expected = [None if pd.isna(v) else pytest.approx(v, rel=1e-12) for v in day["sma_20"]]
    assert sma == expected
    assert {"SMA 50", "BB upper", "BB lower", "RSI 14", "MACD", "Signal", "Volume"} <= set(traces)


def test_symbol_page_5d_reads_the_rollup_plus_fresh_minutes_and_warms_up_as_gaps(seeded):
    at = run_page("symbol")
    at.radio(key="range").set_value("5D").run()
    assert not at.exception
    msft_at = at.selectbox(key="symbol").set_value("ZMSF").run()
    (figure,) = figures(msft_at)
    msft = seeded[seeded["symbol"] == "ZMSF"].set_index("ts")
    buckets = msft.resample("5min", origin="epoch").agg({"open": "first", "close": "last", "high": "max"}).dropna()
    traces = {t.get("name"): t for t in figure["data"]}
    candles = traces["ZMSF"]
    assert len(candles["close"]) == len(buckets)  # < a few thousand points for 5 days
    assert candles["close"] == pytest.approx(buckets["close"].tolist(), rel=1e-12)  # incl. buckets after refresh
    assert candles["high"] == pytest.approx(buckets["high"].tolist(), rel=1e-12)
    sma20 = traces["SMA 20"]["y"]
    assert sma20[:19] == [None] * 19  # warm-up is a gap, never a zero
    assert sma20[19] == pytest.approx(buckets["close"].iloc[:20].mean(), rel=1e-9)
    assert "5-minute bars" in texts(msft_at, "caption")


def test_symbol_page_1y_draws_daily_candles(seeded):
    at = run_page("symbol")
    at.radio(key="range").set_value("1Y").run()
    aapl = seeded[seeded["symbol"] == "ZAPL"].copy()
    aapl["day"] = aapl["ts"].dt.tz_convert(NEW_YORK).dt.date
    daily = aapl.groupby("day")["close"].last()
    (figure,) = figures(at)
    candles = next(t for t in figure["data"] if t.get("name") == "ZAPL")
    assert candles["close"] == pytest.approx(daily.tolist(), rel=1e-12)


# --- pipeline ------------------------------------------------------------------------------------
class FakeAirflow(BaseHTTPRequestHandler):
    runs = [
        {
            "dag_id": "market_stream",
            "dag_run_id": "manual__1",
            "state": "running",
            "run_type": "manual",
            "start_date": "2026-11-24T14:00:00Z",
            "end_date": None,
        },
        {
            "dag_id": "stream_health",
            "dag_run_id": "scheduled__2",
            "state": "failed",
            "run_type": "scheduled",
            "start_date": "2026-11-24T13:55:00Z",
            "end_date": "2026-11-24T13:55:09Z",
        },
    ]

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ok = body == {"username": "admin", "password": "pw"}
        self._send(201 if ok else 401, {"access_token": "jwt-token"} if ok else {"detail": "bad login"})

    def do_GET(self):  # noqa: N802
        if self.headers.get("Authorization") != "Bearer jwt-token":
            return self._send(401, {"detail": "no token"})
        if not self.path.startswith("/api/v2/dags/~/dagRuns"):
            return self._send(404, {})
        return self._send(200, {"dag_runs": self.runs, "total_entries": len(self.runs)})

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_airflow(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FakeAirflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("STOCKPIPE_AIRFLOW_API_URL", url)
    monkeypatch.setenv("STOCKPIPE_AIRFLOW_API_USER", "admin")
    monkeypatch.setenv("STOCKPIPE_AIRFLOW_API_PASSWORD", "pw")
    yield url
    server.shutdown()


@pytest.fixture
def kafka_seeded(settings, monkeypatch, app_env):
    """30 bars on a fresh topic, 3 dead letters, a consumer group that read 12 of the bars."""
    monkeypatch.setenv("STOCKPIPE_KAFKA_TOPIC", settings.kafka_topic)
    monkeypatch.setenv("STOCKPIPE_KAFKA_DLQ_TOPIC", settings.kafka_dlq_topic)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for n in range(30):
        producer.produce(settings.kafka_topic, key=["ZAPL", "ZMSF"][n % 2], value=json.dumps({"v": 1, "n": n}))
    for n in range(3):
        producer.produce(
            settings.kafka_dlq_topic,
            dead_letter(b"{broken", f"bad json #{n}", {"topic": settings.kafka_topic, "offset": n}),
        )
    producer.flush(10)
    group = f"dash-test-{settings.kafka_topic}"
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    offsets = [TopicPartition(settings.kafka_topic, p, 2) for p in range(settings.kafka_partitions)]
    consumer.commit(offsets=offsets, asynchronous=False)  # offset 2 committed on every partition
    ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in offsets]
    consumer.close()
    return settings, group, sum(max(end - 2, 0) for end in ends)


def test_pipeline_page_batches_freshness_dead_letters_and_dag_runs(seeded, kafka_seeded, fake_airflow):
    at = run_page("pipeline")
    found = metrics(at)
    assert found["Last batch"][0] == "#29"
    assert found["Latency p95"][0] == "1,500 ms"
    assert found["Dead letters (stream)"][0] == "1"
    assert found["Dead letters on " + kafka_seeded[0].kafka_dlq_topic][0] == "3"
    assert found["Messages waiting"][0] == "30"  # no checkpoint: everything waits
    values = [df.value for df in at.dataframe]
    freshness = next(v for v in values if "fresh" in v.columns)
    assert freshness.set_index("symbol")["fresh"].to_dict() == {"ZAPL": True, "ZMSF": True}
    letters = next(v for v in values if "error" in v.columns)
    assert sorted(letters["error"]) == ["bad json #0", "bad json #1", "bad json #2"]
    runs = next(v for v in values if "dag_id" in v.columns)
    assert runs["state"].tolist() == ["running", "failed"]
    assert runs["link"].iloc[0] == f"{fake_airflow}/dags/market_stream/runs/manual__1"
    assert len(at.get("plotly_chart")) == 2  # batches over time, lag per partition
    assert not at.error


def test_pipeline_page_shows_the_producer_cycles(pg_conn, redis_client, app_env, monkeypatch):
    monkeypatch.setenv("STOCKPIPE_PRODUCER_MODE", "service")
    pg_conn.execute("DELETE FROM ops.ingest_cycles")
    for n, failed in enumerate([[], ["ZMSF"], []]):  # three cycles a minute apart, the newest 20 s ago
        pg_conn.execute(
            "INSERT INTO ops.ingest_cycles (run_id, interval_start, symbols, failed_symbols, bars_fetched,"
            " bars_sent, dead_letters, duration_s, finished_at) VALUES ('market_producer/scheduled__1',"
            " date_trunc('minute', now()), 2, %s, 2, 2, 0, %s, now() - make_interval(secs => %s))",
            (failed, 1.5 + n, 20 + 60 * n),
        )
    at = run_page("pipeline")
    found = metrics(at)
    assert found["Last cycle"][0] in {f"{n} s" for n in range(20, 30)} and found["Last cycle"][1] == ""
    assert found["Bars sent"][0] == "6" and found["Failed fetches"][0] == "1"
    cycles = next(df.value for df in at.dataframe if "run" in df.value.columns)
    assert cycles["run"].tolist() == ["market_producer/scheduled__1"] * 3
    assert cycles["failed symbols"].tolist() == ["", "ZMSF", ""]
    assert "market_producer" in texts(at, "caption")
    pg_conn.execute("DELETE FROM ops.ingest_cycles")


def test_kafka_page_topics_tail_and_group_lag(kafka_seeded):
    settings, group, expected_lag = kafka_seeded
    at = run_page("kafka")
    at.text_input(key="filter").set_value(settings.kafka_topic).run()
    values = [df.value for df in at.dataframe]
    topics = values[0].set_index("topic")
    assert topics.loc[settings.kafka_topic, "messages"] == 30
    assert topics.loc[settings.kafka_topic, "partitions"] == settings.kafka_partitions
    assert at.selectbox(key="topic").value == settings.kafka_topic
    tail = next(v for v in values if "value" in v.columns)
    assert len(tail) == 20
    assert {json.loads(v)["n"] for v in tail["value"]} <= set(range(30))
    groups = next(v for v in values if "group" in v.columns and "lag" in v.columns)
    mine = groups[groups["group"] == group]
    assert int(mine["lag"].sum()) == expected_lag > 0
    assert not at.error


# --- empty and down ------------------------------------------------------------------------------
@pytest.mark.parametrize("page", [None, "symbol", "pipeline"])
def test_empty_database_says_no_data_yet_with_the_start_command(pg_conn, redis_client, app_env, page):
    at = run_page(page)
    info = texts(at, "info")
    assert "make up" in info and ("No market data yet" in info or "No micro-batch" in info)


def test_every_page_names_what_is_down_and_where(app_env, monkeypatch):
    # nothing listens on the dead port: a Kafka client waits out its whole timeout (3 s, several
    # calls a page) before it says so; 1 s tells the same
    monkeypatch.setattr("dashboard.data.KAFKA_TIMEOUT_S", 1.0)
    dead = free_port()
    monkeypatch.setenv("STOCKPIPE_PG_PORT", str(dead))
    monkeypatch.setenv("STOCKPIPE_REDIS_URL", f"redis://127.0.0.1:{dead}/15")
    monkeypatch.setenv("STOCKPIPE_KAFKA_BOOTSTRAP", f"127.0.0.1:{dead}")
    expected = {
        None: ["PostgreSQL is down", "Redis is down"],
        "symbol": ["PostgreSQL is down"],
        "pipeline": ["PostgreSQL is down", "Kafka is down", "Airflow is down"],
        "kafka": ["Kafka is down"],
    }
    for page, services in expected.items():
        at = run_page(page)
        errors = texts(at, "error")
        for service in services:
            assert service in errors, (page, errors)
        assert f"127.0.0.1:{dead}" in errors and "make up" in errors
        assert "Traceback" not in errors and "section failed" not in errors


# --- the market-data plan ------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["delayed", "end-of-day"])
def test_a_delayed_or_end_of_day_plan_is_a_banner_in_the_sidebar(pg_conn, redis_client, app_env, which):
    # The banner is drawn by app.py, the entrypoint of every page; AppTest shows the entrypoint's
    # elements only on the first page it runs, so the default page is the one checked.
    import streamlit as st

    from stockpipe.producer import plan

    st.cache_data.clear()  # the plan is cached for 30 s
    assert texts(run_page(), "warning") == ""  # real-time or not known yet: no banner
    plan.record(redis_client, which, "simulator")
    st.cache_data.clear()
    assert plan.SENTENCES[which] in texts(run_page(), "warning")
