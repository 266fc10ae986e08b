"""The PostgreSQL sink of the stream and the backfill: COPY → staging → upsert, one transaction.

:meth:`PostgresSink.write` takes the operator's rows (a pandas frame, see
``stockpipe.streaming.operator.OUTPUT_SCHEMA``; ``kind`` ``bar`` or ``late``) and, in one
transaction:

1. locks the batch's Kafka partitions in ``ops.stream_offsets`` — if every record the batch
   consumed is below their ``next_offset`` (a replay after a crash, or a query re-reading what
   another checkpoint already applied), nothing else happens and the call returns ``None``;
   otherwise it advances them past the batch, in this transaction: exactly-once is keyed on what
   was consumed, so a new checkpoint or a renamed query (whose batch ids restart at 0) loses
   nothing;
2. COPYs the rows into a session temp table (binary: floats keep their exact bits);
3. upserts changed bars into ``market.bars_1m`` where the incoming ``fetched_at`` is newer than the
   stored one (latest fetched_at wins; an equal one changes nothing), stamping ``written_at``; in the
   same statement it queues bars that arrived beyond the stream's recompute horizon in
   ``ops.repair_queue``, and bars the stream computed on although a newer version is stored
   (written by someone else) — looked up only for the bars the upsert did not apply;
4. upserts the indicators of every ``bar`` row into ``market.indicators_1m`` (only rows whose
   values differ are rewritten);
5. upserts each symbol's newest row into ``market.latest_1m`` (migration 014: what Redis mirrors
   and the dashboard's Market page ranks) and returns the rows it changed, which the caller then
   writes to Redis; then (stream rows carry the ``epoch`` they were computed on) locks
   ``ops.symbol_epochs`` against a backfill's bump until the commit and queues in
   ``ops.repair_queue`` the symbols whose epoch a backfill moved after the operator read it (their
   rows were computed without the rewritten history: see :data:`_LOCK_EPOCHS`);
6. records the batch's bookkeeping in ``ops.stream_batches`` (rows, rows/s, processing time, max
   event ts, latency ``written_at − fetched_at`` p50/p95/max).

Monthly partitions for the batch's months are created first, in their own short transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from stockpipe.clients import pg_connect
from stockpipe.config import Settings
from stockpipe.indicators import INDICATOR_COLUMNS
from stockpipe.storage import copy_binary
from stockpipe.storage.alerts import AlertCounts, evaluate_for_sink
from stockpipe.storage.redis_latest import Staged

log = logging.getLogger(__name__)

BAR_COLUMNS = ["open", "high", "low", "close", "volume", "vwap", "trades", "source"]
STAGE_COLUMNS = ["kind", "symbol", "ts", *BAR_COLUMNS, "fetched_at", "bar_changed", *INDICATOR_COLUMNS, "epoch"]
_NOT_FLOAT8 = {
    "kind": "text",
    "symbol": "text",
    "ts": "timestamptz",
    "trades": "int4",
    "source": "text",
    "fetched_at": "timestamptz",
    "bar_changed": "bool",
    "epoch": "int8",
}
#: The staging columns' types, for the binary COPY.
STAGE_TYPES = [_NOT_FLOAT8.get(name, "float8") for name in STAGE_COLUMNS]
REASON_LATE = "arrived beyond the stream's recompute horizon"
REASON_STALE = "a newer version of the bar is stored than the one the stream computed on"
REASON_EPOCH = "computed on a state a backfill has rewritten the history of since (its epoch moved)"

# The epoch check (step 5b): a backfill moves a symbol's epoch (ops.symbol_epochs) and then reads the
# stored bars. The table lock (SHARE: conflicts with the backfill's INSERT/UPDATE, not with readers
# or with itself) makes a bump that comes after it wait until this transaction commits — the
# backfill's read then sees this batch's rows; a bump committed before it is seen by the query
# below, which queues each symbol whose epoch differs from the one its rows were computed on, at
# its earliest row of the batch: the next repair recomputes that bar and every later one.
_LOCK_EPOCHS = "LOCK TABLE ops.symbol_epochs IN SHARE MODE"
_QUEUE_MOVED_EPOCHS = """
INSERT INTO ops.repair_queue AS q (symbol, ts, reason)
SELECT s.symbol, min(s.ts), %(reason)s
FROM stage_rows s LEFT JOIN ops.symbol_epochs e ON e.symbol = s.symbol
WHERE s.kind = 'bar' AND s.epoch IS NOT NULL AND s.epoch <> coalesce(e.epoch, 0)
GROUP BY s.symbol
ON CONFLICT (symbol, ts) DO UPDATE SET reason = excluded.reason, flagged_at = now(), repaired_at = NULL
RETURNING q.symbol
"""

_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS stage_rows (
    kind text NOT NULL, symbol text NOT NULL, ts timestamptz NOT NULL,
    open float8, high float8, low float8, close float8, volume float8, vwap float8, trades integer,
    source text, fetched_at timestamptz, bar_changed boolean NOT NULL,
    {", ".join(f"{name} float8" for name in INDICATOR_COLUMNS)},
    epoch bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_written (
    symbol text NOT NULL, ts timestamptz NOT NULL, written_at timestamptz NOT NULL
) ON COMMIT DELETE ROWS
"""

_BAR_SET = ", ".join(f"{c} = excluded.{c}" for c in (*BAR_COLUMNS, "fetched_at", "written_at"))
# One statement: the upsert, the repair queue for late bars and for stale ones, and the latency
# figures. A stale bar (bar_changed, not upserted because a newer fetched_at is stored) is looked up
# in bars_1m only when it was not upserted (the statement's snapshot still has the stored version):
# one index probe per bar that lost, not per bar of the batch. The rows it wrote go into stage_written
# (symbol, ts, written_at; its rows' xmin is this transaction's): the latest_1m upsert takes them from there.
_UPSERT_BARS = f"""
WITH up AS (
    INSERT INTO market.bars_1m AS b (symbol, ts, {", ".join(BAR_COLUMNS)}, fetched_at, written_at)
    SELECT symbol, ts, {", ".join(BAR_COLUMNS)}, fetched_at, clock_timestamp()
    FROM stage_rows WHERE bar_changed
    ON CONFLICT (symbol, ts) DO UPDATE SET {_BAR_SET}
    WHERE excluded.fetched_at > b.fetched_at
    RETURNING b.symbol, b.ts, b.fetched_at, b.written_at
), written AS (
    INSERT INTO stage_written (symbol, ts, written_at) SELECT symbol, ts, written_at FROM up
), queued AS (
    INSERT INTO ops.repair_queue AS q (symbol, ts, reason)
    SELECT up.symbol, up.ts, %(late)s
    FROM up JOIN stage_rows s ON s.symbol = up.symbol AND s.ts = up.ts AND s.kind = 'late'
    ON CONFLICT (symbol, ts) DO UPDATE SET reason = excluded.reason, flagged_at = now(), repaired_at = NULL
), stale AS (
    INSERT INTO ops.repair_queue AS q (symbol, ts, reason)
    SELECT s.symbol, s.ts, %(stale)s
    FROM stage_rows s LEFT JOIN up ON up.symbol = s.symbol AND up.ts = s.ts
    WHERE s.kind = 'bar' AND s.bar_changed AND up.symbol IS NULL
      AND EXISTS (SELECT FROM market.bars_1m b
                  WHERE b.symbol = s.symbol AND b.ts = s.ts AND b.fetched_at > s.fetched_at)
    ON CONFLICT (symbol, ts) DO UPDATE SET reason = excluded.reason, flagged_at = now(), repaired_at = NULL
), latency AS (
    SELECT ts, extract(epoch FROM written_at - fetched_at) * 1000 AS ms FROM up
)
SELECT count(*) AS bars,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95,
       max(ms) AS max_ms,
       max(ts) AS max_ts
FROM latency
"""

_IND_LIST = ", ".join(INDICATOR_COLUMNS)
_UPSERT_INDICATORS = f"""
INSERT INTO market.indicators_1m AS i (symbol, ts, {_IND_LIST})
SELECT symbol, ts, {_IND_LIST} FROM stage_rows WHERE kind = 'bar'
ON CONFLICT (symbol, ts) DO UPDATE SET ({_IND_LIST}) = ROW({", ".join(f"excluded.{c}" for c in INDICATOR_COLUMNS)})
WHERE ({", ".join(f"i.{c}" for c in INDICATOR_COLUMNS)})
      IS DISTINCT FROM ({", ".join(f"excluded.{c}" for c in INDICATOR_COLUMNS)})
"""

LATEST_COLUMNS = [
    "symbol", "ts", *BAR_COLUMNS, "fetched_at", "written_at", *INDICATOR_COLUMNS, "session_date", "prev_close",
    "prev_close_ts",
]  # fmt: skip
_NY_DATE = "(({ts}) AT TIME ZONE 'America/New_York')::date"
# The stored candidate for prev_close: the replaced row itself when the session moved on, else its prev_close.
_PREV_TS = "CASE WHEN excluded.session_date > l.session_date THEN l.ts ELSE l.prev_close_ts END"
# market.latest_1m (migration 014) after the upserts, same transaction: each symbol's newest staged
# bar, as stored (bars_1m + indicators_1m), if it is at least as new as the row there. prev_close:
# the batch's last bar of an earlier session than that one, else — when the session moved on — the
# row it replaces, else what the row had. Returns the rows it wrote (what Redis mirrors). Hash
# aggregates only (no sort of the batch); the session arithmetic runs per symbol, not per bar.
#
# The fast path (issue 14): a symbol whose only staged row is a 'bar' row, bar_changed, that the bars
# upsert wrote (stage_written: its RETURNING, same statement) and with no indicator equal to zero (the
# indicators upsert keeps a stored 0.0 for a staged -0.0: ``IS DISTINCT FROM`` finds the rows equal)
# is stored value for value as staged: its row is taken from the stage (one hash aggregate per symbol
# over stage_rows + stage_written: with one row, min() is that row's value, bit for bit), written_at
# from stage_written, ``fresh`` from stage_written's xmin (written by the same command as the bar, so
# the same transaction id as the bar's xmin) — no probe into bars_1m/indicators_1m (10,000 of each at
# 10,000 symbols a batch). Every other symbol (several rows, re-emitted, stale, late, a zero indicator)
# reads the stored row as before, through LATERAL … LIMIT 1 subqueries (unique keys): a parameterized
# index probe whatever the planner thinks of the stage (stage_rows has no statistics; with some it
# chose a full scan of bars_1m); no join between two stage-sized relations (tiny estimates made a
# nested loop of 10,000 × 10,000 rows). A single-row symbol has no prev_close of the batch's own.
_LATEST_VALUE_COLUMNS = [*BAR_COLUMNS, "fetched_at", *INDICATOR_COLUMNS]
_LATEST_SPAN = f"""
WITH tagged AS (
    SELECT symbol, ts, kind, bar_changed, {", ".join(_LATEST_VALUE_COLUMNS)},
           NULL::timestamptz AS written_at, NULL::boolean AS fresh
    FROM stage_rows
    UNION ALL
    SELECT symbol, ts, NULL, NULL, {", ".join(["NULL"] * len(_LATEST_VALUE_COLUMNS))},
           written_at, xmin = pg_current_xact_id()::xid
    FROM stage_written
), agg AS (
    SELECT symbol, count(kind) AS n, min(ts) FILTER (WHERE kind = 'bar') AS first,
           max(ts) FILTER (WHERE kind = 'bar') AS last, min(kind) AS kind, bool_and(bar_changed) AS bar_changed,
           {", ".join(f"min({c}) AS {c}" for c in _LATEST_VALUE_COLUMNS)},
           max(written_at) AS written_at, bool_or(fresh) AS fresh
    FROM tagged GROUP BY symbol
), span AS (
    SELECT *, n = 1 AND kind = 'bar' AND bar_changed AND written_at IS NOT NULL
              AND (0 = ANY (ARRAY[{_IND_LIST}])) IS NOT TRUE AS single
    FROM agg WHERE last IS NOT NULL
), prev AS (
    SELECT s.symbol, max(s.ts) AS ts FROM stage_rows s JOIN span USING (symbol)
    WHERE span.n > 1 AND {_NY_DATE.format(ts="span.first")} < {_NY_DATE.format(ts="span.last")}
      AND s.ts < ({_NY_DATE.format(ts="span.last")}::timestamp AT TIME ZONE 'America/New_York')
    GROUP BY s.symbol
), src AS (
    SELECT n.symbol, n.last AS ts, {", ".join(f"n.{c}" for c in _LATEST_VALUE_COLUMNS[:9])}, n.written_at,
           {", ".join(f"n.{c}" for c in INDICATOR_COLUMNS)}, {_NY_DATE.format(ts="n.last")} AS session_date,
           NULL::float8 AS prev_close, NULL::timestamptz AS prev_close_ts, n.fresh
    FROM span n WHERE n.single
    UNION ALL
    SELECT b.symbol, b.ts, {", ".join(f"b.{c}" for c in BAR_COLUMNS)}, b.fetched_at, b.written_at,
           {", ".join(f"i.{c}" for c in INDICATOR_COLUMNS)}, {_NY_DATE.format(ts="b.ts")} AS session_date,
           p.close AS prev_close, p.ts AS prev_close_ts, b.fresh
    FROM span n
    CROSS JOIN LATERAL (SELECT b.symbol, b.ts, {", ".join(f"b.{c}" for c in BAR_COLUMNS)}, b.fetched_at,
                               b.written_at, b.xmin = pg_current_xact_id()::xid AS fresh
                        FROM market.bars_1m b WHERE b.symbol = n.symbol AND b.ts = n.last LIMIT 1) b
    LEFT JOIN LATERAL (SELECT {_IND_LIST} FROM market.indicators_1m i
                       WHERE i.symbol = n.symbol AND i.ts = n.last LIMIT 1) i ON true
    LEFT JOIN prev ON prev.symbol = n.symbol
    LEFT JOIN LATERAL (SELECT p.close, p.ts FROM market.bars_1m p
                       WHERE prev.ts IS NOT NULL AND p.symbol = prev.symbol AND p.ts = prev.ts LIMIT 1) p ON true
    WHERE NOT n.single
)"""
_LATEST_CONFLICT = f"""
ON CONFLICT (symbol) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in LATEST_COLUMNS[1:-2])},
    prev_close = CASE WHEN excluded.prev_close_ts >= coalesce({_PREV_TS}, '-infinity') THEN excluded.prev_close
                      WHEN excluded.session_date > l.session_date THEN l.close ELSE l.prev_close END,
    prev_close_ts = CASE WHEN excluded.prev_close_ts >= coalesce({_PREV_TS}, '-infinity') THEN excluded.prev_close_ts
                         WHEN excluded.session_date > l.session_date THEN l.ts ELSE l.prev_close_ts END
WHERE excluded.ts >= l.ts"""
_UPSERT_LATEST = f"""{_LATEST_SPAN}
INSERT INTO market.latest_1m AS l ({", ".join(LATEST_COLUMNS)})
SELECT {", ".join(LATEST_COLUMNS)} FROM src{_LATEST_CONFLICT}
RETURNING {", ".join(f"l.{c}" for c in LATEST_COLUMNS[:-3])}
"""
# The same upsert for a caller that encoded the batch's rows for Redis while PostgreSQL worked (the
# stream's sink, see PostgresSink.write's ``staged``): per row it wrote only the symbol, written_at and
# whether the bar is the one this transaction wrote into bars_1m (its xmin is this transaction's:
# then it is the batch's only bar_changed row of that (symbol, ts), value for value, and its
# indicators are the staged 'bar' row's, which the indicators upsert just made them).
_UPSERT_LATEST_STAGED = f"""{_LATEST_SPAN}, up AS (
    INSERT INTO market.latest_1m AS l ({", ".join(LATEST_COLUMNS)})
    SELECT {", ".join(LATEST_COLUMNS)} FROM src{_LATEST_CONFLICT}
    RETURNING l.symbol, l.written_at
)
SELECT up.symbol, up.written_at, src.fresh FROM up JOIN src USING (symbol)
"""

OffsetRanges = dict[tuple[str, int], tuple[int, int]]
"""(topic, partition) → (first, last) Kafka offset a micro-batch consumed."""


def _applied_offsets(cur: psycopg.Cursor, partitions: list[tuple[str, int]], lock: bool = False) -> dict:
    records = cur.execute(
        "SELECT o.topic, o.kpartition, o.next_offset FROM ops.stream_offsets o "
        "JOIN unnest(%s::text[], %s::int[]) AS p(topic, kpartition) USING (topic, kpartition)"
        + (" FOR UPDATE OF o" if lock else ""),
        ([t for t, _ in partitions], [p for _, p in partitions]),
    ).fetchall()
    return {(topic, part): next_offset for topic, part, next_offset in records}


def is_replay(offsets: OffsetRanges, applied: dict[tuple[str, int], int]) -> bool:
    """Whether every record of ``offsets`` lies below its partition's applied ``next_offset``."""
    return bool(offsets) and all(last < applied.get(key, 0) for key, (_, last) in offsets.items())


def offsets_json(offsets: OffsetRanges) -> dict[str, dict[str, list[int]]]:
    """``{topic: {partition: [first, last]}}`` (ops.stream_batches.offsets)."""
    out: dict[str, dict[str, list[int]]] = {}
    for (topic, part), (first, last) in sorted(offsets.items()):
        out.setdefault(topic, {})[str(part)] = [int(first), int(last)]
    return out


def stream_offsets(conn: psycopg.Connection, topic: str) -> dict[int, int]:
    """partition → the first offset the stream's sink has not applied yet (ops.stream_offsets)."""
    records = conn.execute(
        "SELECT kpartition, next_offset FROM ops.stream_offsets WHERE topic = %s", (topic,)
    ).fetchall()
    return {int(part): int(next_offset) for part, next_offset in records}


@dataclass
class BatchResult:
    """What one committed write did."""

    rows: int = 0
    bars_upserted: int = 0
    max_event_ts: Any = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    latest: list[dict[str, Any]] = field(default_factory=list)
    #: With ``staged`` (see :meth:`PostgresSink.write`): symbol → written_at of the rows latest_1m now
    #: holds that are the staged ones (not in ``latest``).
    latest_staged: dict[str, Any] = field(default_factory=dict)
    alerts: AlertCounts = field(default_factory=AlertCounts)
    epoch_repairs: int = 0


def _months(ts_ms: np.ndarray) -> list[pd.Timestamp]:
    stamps = pd.to_datetime(np.unique(ts_ms), unit="ms", utc=True)
    return sorted({pd.Timestamp(year=t.year, month=t.month, day=1, tz="UTC") for t in stamps})


def _nullable(values: np.ndarray, missing: np.ndarray) -> list[Any]:
    """``values`` as Python objects with ``None`` where ``missing`` (what COPY writes as NULL)."""
    out = values.astype(object)
    out[missing] = None
    return out.tolist()


def _timestamps(stamps: pd.DatetimeIndex) -> list[Any]:
    return _nullable(stamps.to_pydatetime(), np.asarray(stamps.isna()))


def stage_columns(rows: pd.DataFrame) -> list[list[Any]]:
    """Operator rows → the staging table's columns (:data:`STAGE_COLUMNS`) as Python values for a
    binary COPY: floats travel as their exact bits, NaN and NA become NULL."""
    columns: dict[str, list[Any]] = {
        "kind": rows["kind"].to_numpy(dtype=object, na_value=None).tolist(),
        "symbol": rows["symbol"].to_numpy(dtype=object, na_value=None).tolist(),
        "ts": _timestamps(pd.to_datetime(rows["ts_ms"].to_numpy(dtype=np.int64), unit="ms", utc=True)),
        "source": rows["source"].to_numpy(dtype=object, na_value=None).tolist(),
        "trades": pd.array(pd.to_numeric(rows["trades"]), dtype="Int64").to_numpy(dtype=object, na_value=None).tolist(),
        "bar_changed": rows["bar_changed"].fillna(False).astype(bool).tolist(),
    }
    epoch = pd.array(pd.to_numeric(rows["epoch"]) if "epoch" in rows.columns else [None] * len(rows), dtype="Int64")
    columns["epoch"] = epoch.to_numpy(dtype=object, na_value=None).tolist()
    fetched = pd.array(pd.to_numeric(rows["fetched_us"]).to_numpy(dtype=np.float64), dtype="Int64")
    columns["fetched_at"] = _timestamps(pd.to_datetime(fetched, unit="us", utc=True))
    for name in ("open", "high", "low", "close", "volume", "vwap", *INDICATOR_COLUMNS):
        values = pd.to_numeric(rows[name]).to_numpy(dtype=np.float64, na_value=np.nan)
        columns[name] = _nullable(values, np.isnan(values))
    return [columns[name] for name in STAGE_COLUMNS]


def stage_copy(rows: pd.DataFrame) -> bytearray:
    """Operator rows → the staging table's ``COPY … (FORMAT binary)`` stream: the values of
    :func:`stage_columns`, encoded a column at a time by :mod:`stockpipe.storage.copy_binary`
    (with the Python values it replaces: ~2.5 → ~0.9 µs of the driver's CPU per row, offline on
    50,000 operator rows); the rows' order is not kept."""
    columns = []
    for name, pg_type in zip(STAGE_COLUMNS, STAGE_TYPES, strict=True):
        if pg_type == "text":
            values = rows[name].to_numpy(dtype=object, na_value=None)
            columns.append(copy_binary.Column("text", values, pd.isna(values)))
        elif pg_type == "timestamptz":
            micros = pd.to_numeric(rows["ts_ms" if name == "ts" else "fetched_us"]).astype("Int64")
            if name == "ts":
                micros = micros * 1000
            null = micros.isna().to_numpy()
            columns.append(copy_binary.Column(pg_type, micros.to_numpy(dtype=np.int64, na_value=0), null))
        elif pg_type == "int8":  # epoch: absent from the backfill's rows (NULL: not checked)
            if name in rows.columns:
                values = pd.array(pd.to_numeric(rows[name]), dtype="Int64")
                columns.append(copy_binary.Column(pg_type, values.to_numpy(dtype=np.int64, na_value=0), values.isna()))
            else:
                none = np.zeros(len(rows), dtype=np.int64)
                columns.append(copy_binary.Column(pg_type, none, np.ones(len(rows), dtype=bool)))
        elif pg_type == "int4":
            values = pd.array(pd.to_numeric(rows[name]), dtype="Int64")
            columns.append(copy_binary.Column(pg_type, values.to_numpy(dtype=np.int64, na_value=0), values.isna()))
        elif pg_type == "bool":
            columns.append(copy_binary.Column(pg_type, rows[name].fillna(False).to_numpy(dtype=bool)))
        else:
            values = pd.to_numeric(rows[name]).to_numpy(dtype=np.float64, na_value=np.nan)
            columns.append(copy_binary.Column(pg_type, values, np.isnan(values)))
    return copy_binary.encode(columns)


def latest_candidates(rows: pd.DataFrame) -> pd.DataFrame:
    """Each symbol's newest ``bar`` row of ``rows`` (the operator's rows of one batch) that is what
    market.latest_1m holds when the bars upsert wrote its bar (``fresh`` in
    :data:`_UPSERT_LATEST_STAGED`): ``bar_changed``, the only row of its (symbol, ts) in the batch,
    and no indicator equal to zero (the indicators upsert keeps a stored 0.0 for a staged -0.0:
    ``IS DISTINCT FROM`` finds them equal). Every other symbol goes the RETURNING way."""
    rows = rows[rows["kind"].isin(["bar", "late"])]
    if not len(rows):
        return rows
    alone = ~rows.duplicated(["symbol", "ts_ms"], keep=False).to_numpy()
    bar = (rows["kind"] == "bar").to_numpy()
    newest = np.zeros(len(rows), dtype=bool)
    if bar.any():
        bars = rows[bar]
        newest[bar] = (bars["ts_ms"] == bars.groupby("symbol", sort=False)["ts_ms"].transform("max")).to_numpy()
    indicators = rows[list(INDICATOR_COLUMNS)].apply(pd.to_numeric).to_numpy(dtype=np.float64, na_value=np.nan)
    return rows[
        newest
        & alone
        & rows["bar_changed"].fillna(False).astype(bool).to_numpy()
        & pd.to_numeric(rows["fetched_us"]).notna().to_numpy()
        & rows["symbol"].map(lambda s: type(s) is str).to_numpy(dtype=bool)
        & ~(indicators == 0.0).any(axis=1)
    ]


def staged_latest(chosen: pd.DataFrame, tz: tzinfo) -> Staged:
    """The rows of :func:`latest_candidates` encoded for Redis as :data:`LATEST_COLUMNS` would read
    them back (timestamps in the connection's time zone ``tz``, as psycopg gives them) except
    ``written_at``, which the bars upsert stamps."""
    if not len(chosen):
        return Staged.empty()
    values = dict(zip(STAGE_COLUMNS, stage_columns(chosen), strict=True))
    for name in ("ts", "fetched_at"):
        values[name] = [v.astimezone(tz) for v in values[name]]
    values["written_at"] = [None] * len(chosen)
    names = LATEST_COLUMNS[:-3]
    return Staged(names, [values[name] for name in names])


class PostgresSink:
    """One writer connection, reused across batches (reopened after an error)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection | None = None
        self._months_ready: set[pd.Timestamp] = set()

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = pg_connect(self.settings, "writer", connect_timeout=10)
            except psycopg.OperationalError as error:
                raise RuntimeError(
                    f"PostgreSQL at {self.settings.pg_host}:{self.settings.pg_port} "
                    f"(database {self.settings.pg_database}) is unreachable: {error}; start it with `make up`."
                ) from error
            self._conn.execute(_CREATE_STAGE)
            self._conn.commit()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def applied_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """(topic, partition) → the first offset not applied yet, for those of ``partitions`` with a record."""
        if not partitions:
            return {}
        conn = self.connection()
        with conn.transaction():
            return _applied_offsets(conn.cursor(), partitions)

    @staticmethod
    def _latest(cur: psycopg.Cursor, symbols: list[str]) -> list[dict[str, Any]]:
        if not symbols:
            return []
        records = cur.execute(
            f"SELECT {', '.join(LATEST_COLUMNS[:-3])} FROM market.latest_1m WHERE symbol = ANY(%s)", (symbols,)
        ).fetchall()
        names = [d.name for d in cur.description]
        return [dict(zip(names, record, strict=True)) for record in records]

    def stored_symbols(self) -> list[str]:
        """Every symbol with a stored bar (market.latest_1m, kept in step with bars_1m)."""
        conn = self.connection()
        with conn.transaction():
            return [row[0] for row in conn.execute("SELECT symbol FROM market.latest_1m ORDER BY symbol").fetchall()]

    def latest_rows(self, symbols: list[str]) -> list[dict[str, Any]]:
        """The latest stored bar + indicators of each symbol (what Redis mirrors)."""
        conn = self.connection()
        with conn.transaction():
            return self._latest(conn.cursor(), symbols)

    def ensure_partitions(self, ts_ms: np.ndarray) -> None:
        missing = [m for m in _months(ts_ms) if m not in self._months_ready]
        if not missing:
            return
        conn = self.connection()
        with conn.transaction():
            for month in missing:
                conn.execute("SELECT market.ensure_month_partitions(%s, %s)", (month, month))
        self._months_ready.update(missing)

    def write(
        self,
        rows: pd.DataFrame,
        *,
        query_name: str | None = None,
        batch_id: int | None = None,
        offsets: OffsetRanges | None = None,
        rows_in: int | None = None,
        dead_letters: int = 0,
        started: float | None = None,
        since_previous_s: float | None = None,
        staged: Callable[[], Container[str]] | None = None,
    ) -> BatchResult | None:
        """Apply ``rows`` in one transaction; ``None`` when every record of ``offsets`` was applied before.

        ``offsets`` ((topic, partition) → (first, last) offset consumed) makes the write idempotent
        per consumed record range (the stream; ``batch_id`` only names its bookkeeping row); the
        backfill passes neither and relies on the upserts alone, which are idempotent too.

        ``staged`` (the stream's sink): called after the latest_1m upsert, returns the symbols whose
        newest row the caller encodes itself (:func:`latest_candidates`, :func:`staged_latest`). Those of
        them whose row latest_1m now holds is that staged row come back in ``result.latest_staged``
        (symbol → written_at) instead of ``result.latest``, which holds the other rows latest_1m
        changed, read in this transaction (what RETURNING gives without ``staged``).
        """
        started = time.monotonic() if started is None else started
        rows = rows[rows["kind"].isin(["bar", "late"])]
        if len(rows):
            self.ensure_partitions(rows["ts_ms"].to_numpy(dtype=np.int64))
        conn = self.connection()
        try:
            with conn.transaction():
                cur = conn.cursor()
                if offsets:
                    applied = _applied_offsets(cur, sorted(offsets), lock=True)
                    if is_replay(offsets, applied):
                        log.info("batch %s of %s: every record was applied before: skipped", batch_id, query_name)
                        return None
                    cur.executemany(
                        "INSERT INTO ops.stream_offsets AS o (topic, kpartition, next_offset, query_name) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (topic, kpartition) DO UPDATE SET "
                        "next_offset = greatest(o.next_offset, excluded.next_offset), "
                        "query_name = excluded.query_name, updated_at = clock_timestamp()",
                        [(topic, part, last + 1, query_name or "") for (topic, part), (_, last) in offsets.items()],
                    )
                result = BatchResult(rows=len(rows))
                if len(rows):
                    with cur.copy(f"COPY stage_rows ({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT binary)") as copy:
                        copy.write(stage_copy(rows))
                    bars, p50, p95, max_ms, max_ts = cur.execute(
                        _UPSERT_BARS, {"late": REASON_LATE, "stale": REASON_STALE}
                    ).fetchone()
                    cur.execute(_UPSERT_INDICATORS)
                    # User alerts of these bars, from their stored values, in this transaction (exactly once).
                    result.alerts = evaluate_for_sink(cur, self.settings, backfill=not offsets)
                    result.bars_upserted, result.max_event_ts = bars, max_ts
                    result.latency_p50_ms, result.latency_p95_ms, result.latency_max_ms = p50, p95, max_ms
                    if staged is None:
                        records = cur.execute(_UPSERT_LATEST).fetchall()
                        names = [d.name for d in cur.description]
                        result.latest = [dict(zip(names, record, strict=True)) for record in records]
                    else:
                        records = cur.execute(_UPSERT_LATEST_STAGED).fetchall()
                        encoded, others = staged(), []
                        for symbol, written_at, fresh in records:
                            if fresh and symbol in encoded:
                                result.latest_staged[symbol] = written_at
                            else:
                                others.append(symbol)
                        # rows this transaction wrote (and holds locked): as RETURNING gave them
                        result.latest = self._latest(cur, others)
                    if "epoch" in rows.columns and rows["epoch"].notna().any():
                        cur.execute(_LOCK_EPOCHS)
                        moved = cur.execute(_QUEUE_MOVED_EPOCHS, {"reason": REASON_EPOCH}).fetchall()
                        result.epoch_repairs = len(moved)
                        if moved:
                            log.warning(
                                "batch %s: %s symbol(s) computed before a backfill moved their epoch (%s): "
                                "queued for repair",
                                batch_id,
                                len(moved),
                                ", ".join(sorted({m[0] for m in moved})[:10]),
                            )
                if batch_id is not None:
                    elapsed_s = time.monotonic() - started
                    n_in = len(rows) if rows_in is None else rows_in
                    per_s = n_in / since_previous_s if since_previous_s else (n_in / elapsed_s if elapsed_s else None)
                    # A batch id seen before (a new checkpoint restarts them) overwrites its row.
                    cur.execute(
                        "INSERT INTO ops.stream_batches AS s (query_name, batch_id, rows_in, bars_upserted, "
                        "dead_letters, input_rows_per_s, processing_ms, max_event_ts, latency_p50_ms, "
                        "latency_p95_ms, latency_max_ms, offsets, committed_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp()) "
                        "ON CONFLICT (query_name, batch_id) DO UPDATE SET rows_in = excluded.rows_in, "
                        "bars_upserted = excluded.bars_upserted, dead_letters = excluded.dead_letters, "
                        "input_rows_per_s = excluded.input_rows_per_s, processing_ms = excluded.processing_ms, "
                        "max_event_ts = excluded.max_event_ts, latency_p50_ms = excluded.latency_p50_ms, "
                        "latency_p95_ms = excluded.latency_p95_ms, latency_max_ms = excluded.latency_max_ms, "
                        "offsets = excluded.offsets, committed_at = excluded.committed_at",
                        (
                            query_name,
                            batch_id,
                            n_in,
                            result.bars_upserted,
                            dead_letters,
                            per_s,
                            elapsed_s * 1000,
                            result.max_event_ts,
                            result.latency_p50_ms,
                            result.latency_p95_ms,
                            result.latency_max_ms,
                            None if offsets is None else Jsonb(offsets_json(offsets)),
                        ),
                    )
            return result
        except psycopg.OperationalError:
            self.close()
            raise


STORED_COLUMNS = ["ts_ms", "fetched_us", "open", "high", "low", "close", "volume", "vwap", "trades", "source"]
"""The columns of :func:`stored_bars` (the operator's names: epoch ms and µs, not timestamps)."""
_STORED_DTYPES = {"ts_ms": "int64", "fetched_us": "int64", **dict.fromkeys(STORED_COLUMNS[2:8], "float64")}


def stored_bars_frame(conn: psycopg.Connection, symbols: list[str], until: Any = None) -> pd.DataFrame:
    """The stored bars of ``symbols`` (up to ``until`` inclusive) in one frame ordered by symbol, ts:
    ``symbol`` + :data:`STORED_COLUMNS`. One query, binary transfer, no per-symbol pandas."""
    query = (
        "SELECT symbol, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, "
        "(extract(epoch FROM fetched_at) * 1000000)::bigint AS fetched_us, "
        "open, high, low, close, volume, vwap, trades, source "
        "FROM market.bars_1m WHERE symbol = ANY(%s)"
        + (" AND ts <= %s" if until is not None else "")
        + " ORDER BY symbol, ts"
    )
    params = (list(symbols),) if until is None else (list(symbols), until)
    with conn.cursor(binary=True) as cur:
        records = cur.execute(query, params).fetchall()
    names = ["symbol", *STORED_COLUMNS]
    if not records:
        return pd.DataFrame({name: pd.Series(dtype=_STORED_DTYPES.get(name, object)) for name in names})
    # One object matrix, then a cast per column: far cheaper than transposing the tuples in Python.
    # trades and the texts are inferred as from_records would (int64, or float64 with NaN; str).
    matrix = np.array(records, dtype=object)
    return pd.DataFrame(
        {
            name: matrix[:, j].astype(_STORED_DTYPES[name])
            if name in _STORED_DTYPES
            else pd.Series(matrix[:, j]).infer_objects()
            for j, name in enumerate(names)
        }
    )


def symbol_bounds(symbols: pd.Series | np.ndarray) -> dict[str, tuple[int, int]]:
    """symbol → its [first, last + 1) row range in a column sorted by symbol."""
    values = np.asarray(symbols, dtype=object)
    if not len(values):
        return {}
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    stops = np.r_[starts[1:], len(values)]
    return {values[a]: (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}


def stored_bars_many(conn: psycopg.Connection, symbols: list[str], until: Any = None) -> dict[str, pd.DataFrame]:
    """:func:`stored_bars` of several symbols in one query (symbols without bars get an empty frame)."""
    frame = stored_bars_frame(conn, symbols, until)
    bars = frame[STORED_COLUMNS]
    bounds = symbol_bounds(frame["symbol"])
    empty = bars.iloc[0:0]
    return {
        symbol: bars.iloc[bounds[symbol][0] : bounds[symbol][1]].reset_index(drop=True) if symbol in bounds else empty
        for symbol in symbols
    }


def stored_bars(conn: psycopg.Connection, symbol: str, until: Any = None) -> pd.DataFrame:
    """One symbol's stored bars (ts ascending, up to ``until`` inclusive), in :data:`STORED_COLUMNS`."""
    return stored_bars_many(conn, [symbol], until)[symbol]
