"""Every read of the dashboard: PostgreSQL (read-only role), Redis, Kafka and Airflow's REST API.

Pages never talk to a service themselves: they call these functions, which return pandas frames
(or plain values) and are cached with a short ttl. The SQL is in :mod:`stockpipe.storage.queries`
and the clients come from :mod:`stockpipe.clients`: this module caches and shapes. A service that
can't be reached raises :class:`ServiceDown`, which names the service, where it was looked for and
how to start it; the pages turn it into a banner (see ``ui.py``), never a traceback.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import psycopg
import redis
import streamlit as st

from stockpipe import clients
from stockpipe.calendar import NEW_YORK
from stockpipe.clients import AirflowLoginRefused, airflow_base_url, airflow_client
from stockpipe.config import Settings, load_settings
from stockpipe.indicators import INDICATOR_COLUMNS, compute_frame
from stockpipe.storage import alerts as alerts_store
from stockpipe.storage import queries

START_COMMAND = "make up"
BAR_COLUMNS = list(queries.BAR_COLUMNS)
NUMERIC_FIELDS = set(BAR_COLUMNS) | set(INDICATOR_COLUMNS) | {"trades", "ts_ms"}
PG_TIMEOUT_S = 3
KAFKA_TIMEOUT_S = 3.0
AIRFLOW_TIMEOUT_S = 3.0


# --- errors --------------------------------------------------------------------------------------
class ServiceDown(Exception):
    """A service the page needs is unreachable: one sentence saying which, where, and what to do."""

    def __init__(self, service: str, where: str, detail: str, hint: str = "") -> None:
        self.service, self.where, self.detail = service, where, detail.strip().splitlines()[0][:300] if detail else ""
        self.hint = hint or f"Start it with `{START_COMMAND}`."
        super().__init__(self.sentence)

    @property
    def headline(self) -> str:
        return f"{self.service} is down."

    @property
    def sentence(self) -> str:
        return f"{self.service} is unreachable at {self.where} ({self.detail}). {self.hint}"


class SchemaMissing(ServiceDown):
    """PostgreSQL answers but the market/ops schema is not there (migrations not applied)."""

    @property
    def headline(self) -> str:
        return "PostgreSQL has no stockpipe schema."

    @property
    def sentence(self) -> str:
        return f"Tables are missing in {self.where} ({self.detail}). {self.hint}"


def settings() -> Settings:
    """The effective settings (env ``STOCKPIPE_*``, .env, .local/secrets.env), read once per script run."""
    return load_settings()


def pg_where(s: Settings) -> str:
    return f"{s.pg_host}:{s.pg_port}/{s.pg_database} as {s.pg_reader_user}"


def redis_where(s: Settings) -> str:
    parts = urlsplit(s.redis_url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def airflow_url(s: Settings) -> str:
    return airflow_base_url(s)


# --- PostgreSQL ----------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _pg_pool(_s: Settings, dsn_key: str):
    """One pool of read-only connections per database address and login (``dsn_key``: its digest)."""
    return clients.pg_pool(
        _s, "reader", name="dashboard", timeout_s=PG_TIMEOUT_S, read_only=True, connect_timeout=PG_TIMEOUT_S
    )


def _pool(s: Settings):
    return _pg_pool(s, hashlib.sha256(s.pg_dsn("reader").encode()).hexdigest())


def read(fn, *args: Any) -> Any:
    """``fn(connection, *args)`` (a query of :mod:`stockpipe.storage.queries`) on a pooled read-only
    connection; an unreachable server raises :class:`ServiceDown`, a missing schema :class:`SchemaMissing`."""
    s = settings()
    pool = None
    try:
        pool = _pool(s)
        with pool.connection() as conn:
            return fn(conn, *args)
    except psycopg.errors.UndefinedTable as error:
        raise SchemaMissing(
            "PostgreSQL",
            pg_where(s),
            str(error),
            f"Apply the migrations with `{START_COMMAND}` (or `python -m stockpipe.storage.migrate`).",
        ) from None
    except psycopg.OperationalError as error:  # PoolTimeout included: next time, ask the server again
        _pg_pool.clear()
        if pool is not None:
            pool.close(timeout=1.0)
        raise ServiceDown("PostgreSQL", pg_where(s), str(error)) from None


# --- Redis ---------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2, decode_responses=True)


def _redis_call(fn):
    s = settings()
    try:
        return fn(_redis_client(s.redis_dsn))
    except redis.RedisError as error:
        raise ServiceDown("Redis", redis_where(s), str(error)) from None


def _parse_latest(fields: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, value in fields.items():
        if name in NUMERIC_FIELDS:
            try:
                row[name] = float(value)
            except ValueError:
                row[name] = None
        else:
            row[name] = value
    if "ts" in row:
        ts = pd.Timestamp(row["ts"])
        row["ts"] = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return row


def redis_latest(symbols: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The latest-state hashes written by the streaming sink (not cached: this is the live part)."""

    def read(client: redis.Redis) -> dict[str, dict[str, Any]]:
        pipe = client.pipeline(transaction=False)
        for symbol in symbols:
            pipe.hgetall(settings().redis_latest_key(symbol))
        return {sym: _parse_latest(h) for sym, h in zip(symbols, pipe.execute(), strict=True) if h}

    return _redis_call(read)


@st.cache_data(ttl=30, show_spinner=False)
def market_plan() -> dict[str, str]:
    """The market-data plan the producer learned from the answers (stockpipe.producer.plan): ``plan``,
    ``sentence``, ...; {} until its first fetch."""
    from stockpipe.producer import plan

    return _redis_call(plan.read)


@st.cache_data(ttl=30, show_spinner=False)
def stale_by_design() -> dict[str, dict[str, float]]:
    """Per symbol, how stale the producer's polling plan keeps it by design (stockpipe.producer.schedule):
    ``every_s`` between fetches, ``mean_s`` / ``max_s`` from a bar's close to its fetch; {} without a
    live planned producer (none published within the last 5 minutes)."""
    import time

    from stockpipe.producer import schedule

    known = _redis_call(schedule.read)
    if not known or known.get("policy") != "planned" or time.time() - known.get("published_unix", 0) > 300:
        return {}
    return known.get("stale_by_design") or {}


@st.cache_data(ttl=2, show_spinner=False)
def pg_latest(symbols: tuple[str, ...]) -> pd.DataFrame:
    return read(queries.latest_bars, symbols)


@dataclass
class Latest:
    rows: dict[str, dict[str, Any]]  # symbol -> last bar + indicators
    source: dict[str, str]  # symbol -> "redis" | "postgres"
    down: list[ServiceDown]


def latest(symbols: tuple[str, ...]) -> Latest:
    """Each symbol's latest bar from Redis, falling back to PostgreSQL for what Redis lacks."""
    rows: dict[str, dict[str, Any]] = {}
    source: dict[str, str] = {}
    down: list[ServiceDown] = []
    try:
        rows = redis_latest(symbols)
        source = {sym: "redis" for sym in rows}
    except ServiceDown as error:
        down.append(error)
    missing = tuple(sym for sym in symbols if sym not in rows)
    if missing:
        try:
            frame = pg_latest(missing)
            for record in frame.to_dict("records"):
                rows[record["symbol"]] = {k: (None if _isnan(v) else v) for k, v in record.items()}
                rows[record["symbol"]]["ts"] = pd.Timestamp(record["ts"]).tz_convert("UTC")
                source[record["symbol"]] = "postgres"
        except ServiceDown as error:
            down.append(error)
    return Latest(rows, source, down)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and value != value


@st.cache_data(ttl=60, show_spinner=False)
def previous_close(symbol: str, before: datetime) -> float | None:
    """The last close before ``before`` (the New York midnight of the latest bar's day): the
    previous session's close for both the NYSE calendar and the simulator's demo clock."""
    return read(queries.close_before, symbol, before)


@st.cache_data(ttl=5, show_spinner=False)
def sparklines(symbols: tuple[str, ...], points: int = 120) -> pd.DataFrame:
    """Per symbol, the minute closes of the ``points`` minutes up to its newest bar (symbol, ts,
    close), oldest first: no line drawn across a night or an outage."""
    return read(queries.recent_closes, symbols, points)


@st.cache_data(ttl=10, show_spinner=False)
def has_market_data() -> bool:
    return read(queries.has_bars)


@st.cache_data(ttl=300, show_spinner=False)
def known_symbols(watchlist: tuple[str, ...]) -> list[str]:
    stored = read(queries.stored_symbols)
    return list(dict.fromkeys([*watchlist, *stored]))


@st.cache_data(ttl=300, show_spinner=False)
def symbol_metadata(symbol: str) -> dict[str, Any]:
    """Company metadata from market.symbols, else the producer's Redis cache, else {}."""
    frame = read(queries.symbol_row, symbol)
    if not frame.empty:
        return {k: v for k, v in frame.iloc[0].to_dict().items() if v is not None and not _isnan(v)}
    try:
        cached = _redis_call(lambda c: c.get(settings().redis_meta_key(symbol)))
        return json.loads(cached) if cached else {}
    except (ServiceDown, ValueError):
        return {}


# --- price history for the symbol page -----------------------------------------------------------
@dataclass(frozen=True)
class Range:
    key: str
    span: timedelta
    rollup: str  # the table or materialized view it reads
    label: str


RANGES: dict[str, Range] = {
    "1D": Range("1D", timedelta(days=1), "market.bars_1m", "1-minute bars"),
    "5D": Range("5D", timedelta(days=5), "market.bars_5m", "5-minute bars"),
    "1M": Range("1M", timedelta(days=31), "market.bars_1h", "1-hour bars"),
    "6M": Range("6M", timedelta(days=183), "market.bars_1d", "daily bars"),
    "1Y": Range("1Y", timedelta(days=366), "market.bars_1d", "daily bars"),
}


@st.cache_data(ttl=30, show_spinner=False)
def latest_bar_ts(symbol: str) -> datetime | None:
    return read(queries.newest_bar_time, symbol)


def _daily_rollup(symbol: str, start: datetime) -> pd.DataFrame:
    frame = read(queries.daily_rollup, symbol, pd.Timestamp(start).tz_convert(NEW_YORK).date())
    if frame.empty:
        return frame.assign(ts=pd.Series(dtype="datetime64[ns, UTC]"))
    frame["ts"] = pd.to_datetime(frame.pop("day")).dt.tz_localize(NEW_YORK).dt.tz_convert("UTC")
    return frame


@st.cache_data(ttl=30, show_spinner=False)
def price_history(symbol: str, range_key: str) -> pd.DataFrame:
    """Bars + indicators of one symbol over a range, at the range's resolution.

    1D shows the pipeline's stored 1-minute indicators (market.indicators_1m). Longer ranges read a
    rollup, and their indicators are computed on those bars by the same TA-Lib-exact state machines
    (stockpipe.indicators), warmed up on the buckets before the range. NULL (warm-up) stays NaN,
    which the charts draw as a gap.
    """
    rng = RANGES[range_key]
    last = latest_bar_ts(symbol)
    if last is None:
        return pd.DataFrame(columns=["ts", *BAR_COLUMNS, *INDICATOR_COLUMNS])
    ny_last = pd.Timestamp(last).tz_convert(NEW_YORK)
    if range_key == "1D":  # the latest New York day with data
        start = ny_last.normalize().tz_convert("UTC").to_pydatetime()
        frame = read(queries.bars_with_indicators, symbol, start)
        return _floats(frame)
    start = (ny_last.normalize() - rng.span + timedelta(days=1)).tz_convert("UTC").to_pydatetime()
    if rng.rollup == "market.bars_1d":
        frame = _daily_rollup(symbol, start)
    else:
        frame = read(queries.intraday_rollup, symbol, rng.rollup, start)
    if frame.empty:
        return _floats(frame.reindex(columns=["ts", *BAR_COLUMNS, *INDICATOR_COLUMNS]))
    frame = _floats(frame)
    with_indicators, _ = compute_frame(frame[["ts", *BAR_COLUMNS]])
    return with_indicators[with_indicators["ts"] >= pd.Timestamp(start)].reset_index(drop=True)


def _floats(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in frame.columns:
        if column != "ts" and column != "symbol":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    if "ts" in frame and not frame.empty:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


# --- pipeline health -----------------------------------------------------------------------------
@st.cache_data(ttl=5, show_spinner=False)
def stream_batches(query_name: str, window: timedelta, buckets: int = 240) -> pd.DataFrame:
    """Micro-batches of the streaming query over ``window``, summed into at most ``buckets`` buckets:
    input rows per second, bars upserted, dead letters, latency p50 (mean of the batches' p50s) and
    p95 (max of their p95s)."""
    width = max(int(window.total_seconds() / buckets), 1)
    return read(queries.stream_batch_buckets, query_name, window, width)


@st.cache_data(ttl=5, show_spinner=False)
def last_batch(query_name: str) -> dict[str, Any] | None:
    frame = read(queries.stream_batch_summary, query_name)
    return None if frame.empty else frame.iloc[0].to_dict()


@st.cache_data(ttl=5, show_spinner=False)
def freshness(symbols: tuple[str, ...]) -> pd.DataFrame:
    """Per symbol: newest stored bar, when it was written, and its age now."""
    return read(queries.freshness, symbols)


@st.cache_data(ttl=15, show_spinner=False)
def health_checks() -> pd.DataFrame:
    """The latest result of each stream_health check (empty when that DAG never ran)."""
    try:
        return read(queries.latest_health_checks)
    except SchemaMissing:  # ops.health_checks comes with the Airflow layer's migration
        return pd.DataFrame()


@st.cache_data(ttl=5, show_spinner=False)
def ingest_cycles(limit: int = 30) -> pd.DataFrame:
    """The producer's newest cycles (``ops.ingest_cycles``), newest first; empty before the first."""
    try:
        return read(queries.recent_ingest_cycles, limit)
    except SchemaMissing:  # ops.ingest_cycles comes with the Airflow layer's migration
        return pd.DataFrame()


# --- Kafka ---------------------------------------------------------------------------------------
def _kafka_down(s: Settings, error: Exception) -> ServiceDown:
    return ServiceDown("Kafka", s.kafka_bootstrap, str(error) or type(error).__name__)


@st.cache_resource(show_spinner=False)
def _kafka_admin(_s: Settings, config_key: str):
    """One admin client per Kafka configuration (``config_key``: its digest; the settings aren't hashed)."""
    # role dashboard: log_level 0, a down broker is reported once by the banner, not every second on stderr
    return clients.kafka_admin(_s, "dashboard")


def _admin():
    s = settings()
    config = json.dumps(clients.kafka_config(s, "dashboard"), sort_keys=True, default=str)
    return s, _kafka_admin(s, hashlib.sha256(config.encode()).hexdigest())


def _offsets(admin, partitions: list[tuple[str, int]], spec: str) -> dict[tuple[str, int], int]:
    # partial: one partition moving leaders must not blank the page
    return clients.partition_offsets(admin, partitions, spec, timeout_s=KAFKA_TIMEOUT_S, partial=True)


@st.cache_data(ttl=10, show_spinner=False)
def kafka_topics(include_internal: bool = False) -> pd.DataFrame:
    """Topics with their partition count, first and end offsets (messages retained = end - first)."""
    s, admin = _admin()
    try:
        metadata = admin.list_topics(timeout=KAFKA_TIMEOUT_S)
        parts = [
            (name, p)
            for name, t in metadata.topics.items()
            if include_internal or not name.startswith("__")
            for p in t.partitions
        ]
        ends, starts = _offsets(admin, parts, "latest"), _offsets(admin, parts, "earliest")
    except Exception as error:  # KafkaException, timeouts: all mean "can't read Kafka"
        raise _kafka_down(s, error) from None
    rows = [
        {"topic": t, "partition": p, "start_offset": starts[(t, p)], "end_offset": ends[(t, p)]}
        for t, p in parts
        if (t, p) in starts and (t, p) in ends
    ]  # unanswered partitions: next refresh
    frame = pd.DataFrame(rows, columns=["topic", "partition", "start_offset", "end_offset"])
    frame["messages"] = frame["end_offset"] - frame["start_offset"]
    return frame.sort_values(["topic", "partition"]).reset_index(drop=True)


@st.cache_data(ttl=10, show_spinner=False)
def kafka_consumer_groups() -> pd.DataFrame:
    """Committed offset and lag per (group, topic, partition) of every consumer group."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    s, admin = _admin()
    try:
        listed = admin.list_consumer_groups(request_timeout=KAFKA_TIMEOUT_S).result()
        rows = []
        groups = sorted(g.group_id for g in listed.valid)
        for group in groups:
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=KAFKA_TIMEOUT_S
            )
            for tp in futures[group].result().topic_partitions or []:
                rows.append({"group": group, "topic": tp.topic, "partition": tp.partition, "committed": tp.offset})
        ends = _offsets(admin, list({(r["topic"], r["partition"]) for r in rows}), "latest")
    except Exception as error:
        raise _kafka_down(s, error) from None
    frame = pd.DataFrame(rows, columns=["group", "topic", "partition", "committed"])
    frame["end_offset"] = [ends.get((t, p), 0) for t, p in zip(frame["topic"], frame["partition"], strict=True)]
    frame["lag"] = (frame["end_offset"] - frame["committed"].clip(lower=0)).clip(lower=0)
    return frame


@st.cache_data(ttl=5, show_spinner=False)
def kafka_tail(topic: str, count: int = 20) -> pd.DataFrame:
    """The last ``count`` messages of a topic across its partitions, newest first."""
    from confluent_kafka import TopicPartition

    s = settings()
    parts = kafka_topics(include_internal=True)
    parts = parts[parts["topic"] == topic]
    consumer = clients.kafka_consumer(s, "dashboard")
    rows: list[dict[str, Any]] = []
    try:
        assignment, remaining = [], {}
        for record in parts.itertuples():
            first = max(record.start_offset, record.end_offset - count)
            if first < record.end_offset:
                assignment.append(TopicPartition(topic, int(record.partition), int(first)))
                remaining[int(record.partition)] = record.end_offset - first
        if assignment:
            consumer.assign(assignment)
            deadline = datetime.now(UTC) + timedelta(seconds=KAFKA_TIMEOUT_S * 2)
            while sum(remaining.values()) > 0 and datetime.now(UTC) < deadline:
                for message in consumer.consume(num_messages=500, timeout=0.5):
                    if message.error():
                        continue
                    remaining[message.partition()] -= 1
                    _, stamp = message.timestamp()
                    rows.append(
                        {
                            "timestamp": pd.Timestamp(stamp, unit="ms", tz="UTC"),
                            "partition": message.partition(),
                            "offset": message.offset(),
                            "key": (message.key() or b"").decode("utf-8", "replace"),
                            "value": (message.value() or b"").decode("utf-8", "replace"),
                        }
                    )
    except Exception as error:
        raise _kafka_down(s, error) from None
    finally:
        consumer.close()
    frame = pd.DataFrame(rows, columns=["timestamp", "partition", "offset", "key", "value"])
    return frame.sort_values(["timestamp", "offset"], ascending=False).head(count).reset_index(drop=True)


def dead_letters(count: int = 20) -> tuple[int, pd.DataFrame]:
    """Dead letters retained on the DLQ topic, and the latest ones with their error and origin."""
    s = settings()
    topics = kafka_topics(include_internal=False)
    dlq = topics[topics["topic"] == s.kafka_dlq_topic]
    total = int(dlq["messages"].sum())
    tail = kafka_tail(s.kafka_dlq_topic, count) if total else pd.DataFrame()
    rows = []
    for record in tail.to_dict("records"):
        try:
            letter = json.loads(record["value"])
        except ValueError:
            letter = {"error": "unreadable dead letter", "raw": record["value"]}
        rows.append(
            {
                "failed_at": letter.get("failed_at") or record["timestamp"],
                "error": letter.get("error"),
                "origin": json.dumps(letter.get("origin"), separators=(",", ":")),
                "raw": letter.get("raw"),
            }
        )
    return total, pd.DataFrame(rows, columns=["failed_at", "error", "origin", "raw"])


@st.cache_data(ttl=5, show_spinner=False)
def stream_lag() -> pd.DataFrame:
    """Per partition of the bars topic: end offset, the offset the streaming query has committed
    (its Spark checkpoint, as stream_health reads it) and the difference."""
    from stockpipe.monitoring.health import checkpoint_offsets

    s = settings()
    topics = kafka_topics(include_internal=False)
    bars = topics[topics["topic"] == s.kafka_topic]
    done = checkpoint_offsets(s.stream_checkpoint, s.kafka_topic) or {}
    frame = bars[["partition", "end_offset"]].copy()
    frame["processed"] = [done.get(int(p)) for p in frame["partition"]]
    frame["lag"] = frame["end_offset"] - frame["processed"].fillna(0)
    return frame.reset_index(drop=True)


# --- Airflow -------------------------------------------------------------------------------------
@st.cache_data(ttl=15, show_spinner=False)
def airflow_dag_runs(limit: int = 25) -> pd.DataFrame:
    """The latest DAG runs of every DAG (Airflow 3 REST API, JWT from /auth/token)."""
    import httpx

    s = settings()
    base = airflow_url(s)
    hint = f"Start it with `{START_COMMAND}`; DAG runs show here once the api-server answers."
    try:
        with airflow_client(s, "viewer", timeout_s=AIRFLOW_TIMEOUT_S) as client:
            response = client.get("/api/v2/dags/~/dagRuns", params={"order_by": "-start_date", "limit": limit})
            response.raise_for_status()
            runs = response.json().get("dag_runs", [])
    except AirflowLoginRefused as error:
        raise ServiceDown(
            "Airflow", base, str(error), "Set STOCKPIPE_AIRFLOW_API_USER / STOCKPIPE_AIRFLOW_API_PASSWORD."
        ) from None
    except (httpx.HTTPError, ValueError, KeyError) as error:
        raise ServiceDown("Airflow", base, str(error) or type(error).__name__, hint) from None
    rows = [
        {
            "dag_id": r.get("dag_id"),
            "run_id": r.get("dag_run_id"),
            "state": r.get("state"),
            "run_type": r.get("run_type"),
            "start_date": r.get("start_date"),
            "end_date": r.get("end_date"),
            "link": f"{base}/dags/{r.get('dag_id')}/runs/{r.get('dag_run_id')}",
        }
        for r in runs
    ]
    frame = pd.DataFrame(rows, columns=["dag_id", "run_id", "state", "run_type", "start_date", "end_date", "link"])
    for column in ("start_date", "end_date"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    return frame


# --- the whole market (Market page; stockpipe.storage.market) ------------------------------------
@dataclass
class MarketView:
    """The Market page's data: the session (newest New York date in market.latest_1m), how many
    symbols have a bar in it, and the lists (each symbol with its Symbol-page link)."""

    session: Any
    as_of: Any
    symbols: int
    gainers: pd.DataFrame
    losers: pd.DataFrame
    oversold: pd.DataFrame
    overbought: pd.DataFrame
    oversold_count: int
    overbought_count: int
    crossovers: pd.DataFrame


def symbol_link(symbol: str) -> str:
    """The Symbol page of ``symbol`` (relative URL: the Market page's tables link to it)."""
    return f"symbol?symbol={symbol}"


def _with_links(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame.assign(chart=pd.Series(dtype=object))
    return frame.assign(chart=[symbol_link(s) for s in frame["symbol"]])


@st.cache_data(ttl=5, show_spinner=False)
def market_view(limit: int = 20, rsi_low: float = 30.0, rsi_high: float = 70.0, cross_minutes: int = 15) -> MarketView:
    """Top gainers/losers of the session, RSI extremes and the MACD crossovers of the last
    ``cross_minutes`` (up to the newest bar), across every streamed symbol; one pooled connection."""
    from stockpipe.storage import market

    def query(conn: psycopg.Connection) -> MarketView:
        session, as_of, symbols = market.market_session(conn)
        empty = pd.DataFrame(columns=["symbol"])
        if session is None:
            return MarketView(None, None, 0, empty, empty, empty, empty, 0, 0, empty)
        gainers, losers = market.movers(conn, session, limit)
        oversold, overbought, n_low, n_high = market.rsi_extremes(conn, session, rsi_low, rsi_high, limit)
        crossovers = market.macd_crossovers(conn, as_of, cross_minutes)
        return MarketView(
            session,
            as_of,
            symbols,
            _with_links(gainers),
            _with_links(losers),
            _with_links(oversold),
            _with_links(overbought),
            n_low,
            n_high,
            _with_links(crossovers),
        )

    return read(query)


@st.cache_data(ttl=300, show_spinner=False)
def streamed_symbol(symbol: str) -> bool:
    """Whether the stream stored a bar of ``symbol`` (market.latest_1m): a Market-page link to a
    symbol outside the watchlist and market.symbols still opens its chart."""
    from stockpipe.storage import market

    return bool(read(market.has_symbol, symbol))


@st.cache_data(ttl=60, show_spinner=False)
def storage_summary() -> dict[str, Any]:
    """Database size, the market tables' size and the days of bars they hold (Pipeline page)."""
    from stockpipe.storage import market

    return read(market.storage_summary)


# --- user alerts (stockpipe.storage.alerts) --------------------------------------------------------
@st.cache_data(ttl=2, show_spinner=False)
def alert_rules() -> list:
    return read(lambda conn: alerts_store.list_rules(conn))


@st.cache_data(ttl=2, show_spinner=False)
def alert_history(symbol: str | None = None, status: str | None = None, rule_id: int | None = None) -> pd.DataFrame:
    return read(lambda conn: alerts_store.alert_history(conn, symbol=symbol, status=status, rule_id=rule_id))


@st.cache_data(ttl=2, show_spinner=False)
def latest_alerts(symbols: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """symbol → its newest fired alert (Overview tiles)."""
    return read(alerts_store.latest_alert_per_symbol, list(symbols))


@st.cache_data(ttl=10, show_spinner=False)
def chart_alerts(symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
    return read(alerts_store.chart_alerts, symbol, start, end)


def change_rules(fn, *args: Any) -> Any:
    """``fn(connection, *args)`` as the rules role (it may change market.alert_rules, nothing else).
    A bad rule raises ``RuleError`` (one sentence for the page); an unreachable server ServiceDown."""
    s = settings()
    try:
        with clients.pg_connect(s, "rules", autocommit=True, connect_timeout=PG_TIMEOUT_S) as conn:
            result = fn(conn, *args)
    except psycopg.OperationalError as error:
        where = f"{s.pg_host}:{s.pg_port}/{s.pg_database} as {s.pg_rules_user}"
        raise ServiceDown("PostgreSQL", where, str(error)) from None
    alert_rules.clear()
    return result


def alert_feed(keep: int = 50) -> list[dict[str, Any]]:
    """The alerts published on Redis ``stockpipe:alerts`` since this browser session subscribed, newest first."""
    s = settings()
    state = st.session_state
    try:
        if "alert_pubsub" not in state:
            pubsub = _redis_client(s.redis_dsn).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(s.redis_alerts_channel)
            state["alert_pubsub"] = pubsub
            state.setdefault("alert_feed", [])
        feed = state["alert_feed"]
        while (message := state["alert_pubsub"].get_message(timeout=0)) is not None:
            feed.insert(0, json.loads(message["data"]))
        del feed[keep:]
        return list(feed)
    except redis.RedisError as error:
        state.pop("alert_pubsub", None)  # subscribe again next time
        raise ServiceDown("Redis", redis_where(s), str(error)) from None


def clear_caches() -> None:
    """Forget every cached query and connection (tests; the sidebar's refresh button)."""
    st.cache_data.clear()
    st.cache_resource.clear()
