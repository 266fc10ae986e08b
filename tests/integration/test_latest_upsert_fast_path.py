"""market.latest_1m's upsert (issue 14) takes each symbol's newest staged bar from the stage when the
bars upsert just wrote it (stage_written) instead of probing bars_1m/indicators_1m: against a real
PostgreSQL, for a mixed batch (fast symbols, re-emitted, stale, late, a -0.0 the indicators upsert
keeps as 0.0, several rows of a symbol, a new symbol, session changes for prev_close), the statement
leaves latest_1m — every column, float bits included — and returns (symbol, written_at, fresh)
exactly as the previous statement (the join over the stored rows, frozen below) does."""

from __future__ import annotations

import math

import pandas as pd
import psycopg
import pytest

from stockpipe.indicators import INDICATOR_COLUMNS
from stockpipe.storage import postgres as pg
from stockpipe.storage.postgres import BAR_COLUMNS, LATEST_COLUMNS, PostgresSink
from stockpipe.streaming.operator import _PANDAS_TYPES

pytestmark = pytest.mark.integration

# The statements before the fast path (commit 1955195), verbatim.
_NY_DATE = "(({ts}) AT TIME ZONE 'America/New_York')::date"
_OLD_SPAN = f"""
WITH span AS (
    SELECT symbol, min(ts) AS first, max(ts) AS last FROM stage_rows WHERE kind = 'bar' GROUP BY symbol
), prev AS (
    SELECT s.symbol, max(s.ts) AS ts FROM stage_rows s JOIN span USING (symbol)
    WHERE {_NY_DATE.format(ts="span.first")} < {_NY_DATE.format(ts="span.last")}
      AND s.ts < ({_NY_DATE.format(ts="span.last")}::timestamp AT TIME ZONE 'America/New_York')
    GROUP BY s.symbol
)"""
_OLD_SOURCE = """
FROM span
JOIN market.bars_1m b ON b.symbol = span.symbol AND b.ts = span.last
LEFT JOIN market.indicators_1m i ON i.symbol = span.symbol AND i.ts = span.last
LEFT JOIN prev ON prev.symbol = span.symbol
LEFT JOIN market.bars_1m p ON p.symbol = prev.symbol AND p.ts = prev.ts"""
_OLD_VALUES = f"""b.symbol, b.ts, {", ".join(f"b.{c}" for c in BAR_COLUMNS)}, b.fetched_at, b.written_at,
       {", ".join(f"i.{c}" for c in INDICATOR_COLUMNS)}, {_NY_DATE.format(ts="b.ts")} AS session_date,
       p.close AS prev_close, p.ts AS prev_close_ts"""
OLD_UPSERT_LATEST = f"""{_OLD_SPAN}
INSERT INTO market.latest_1m AS l ({", ".join(LATEST_COLUMNS)})
SELECT {_OLD_VALUES}{_OLD_SOURCE}{pg._LATEST_CONFLICT}
RETURNING {", ".join(f"l.{c}" for c in LATEST_COLUMNS[:-3])}
"""
OLD_UPSERT_LATEST_STAGED = f"""{_OLD_SPAN}, src AS (
    SELECT {_OLD_VALUES}, b.xmin = pg_current_xact_id()::xid AS fresh{_OLD_SOURCE}
), up AS (
    INSERT INTO market.latest_1m AS l ({", ".join(LATEST_COLUMNS)})
    SELECT {", ".join(LATEST_COLUMNS)} FROM src{pg._LATEST_CONFLICT}
    RETURNING l.symbol, l.written_at
)
SELECT up.symbol, up.written_at, src.fresh FROM up JOIN src USING (symbol)
"""

T0 = int(pd.Timestamp("2026-11-25 15:00", tz="UTC").value // 1_000_000)
EVE = int(pd.Timestamp("2026-11-24 20:58", tz="UTC").value // 1_000_000)  # 15:58 New York, the day before
MINUTE = 60_000
ODD = [-0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 100.0, 1e-7, math.inf, -math.inf, 1 / 3]
FAST = [f"F{i:03d}" for i in range(40)]


def bar(symbol: str, ts_ms: int, i: int = 0, *, kind: str = "bar", changed: bool = True, fetched_s: float = 61.0):
    row = {
        "kind": kind, "symbol": symbol, "ts_ms": ts_ms, "open": 10.0 + i / 7, "high": 11.0 + i, "low": 9.5,
        "close": ODD[i % len(ODD)] if i % 3 else 10.25 + i / 3, "volume": float(1000 + i),
        "vwap": ODD[(i + 2) % len(ODD)], "trades": None if i % 5 == 0 else 7 + i,
        "source": "sim-é" if i % 2 else "massive", "fetched_us": ts_ms * 1000 + int(fetched_s * 1e6) + i,
        "bar_changed": changed, "epoch": None,
    }  # fmt: skip
    if not changed:
        row.update(open=math.nan, high=math.nan, low=math.nan)
    for n, name in enumerate(INDICATOR_COLUMNS):
        row[name] = math.nan if (n + i) % 4 == 0 else (ODD[(n + i) % len(ODD)] * (n + 1) or 1.5)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    return out.astype({name: _PANDAS_TYPES[name] for name in out.columns if _PANDAS_TYPES[name] is not object})


def seed_and_batch() -> tuple[list[dict], list[dict]]:
    t1, t2, t3 = T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE
    zero = bar("ZERO", t1, 3)
    zero["sma_5"] = 0.0
    seed = [bar(s, T0, i) for i, s in enumerate(FAST)] + [
        bar("MULTI", T0),
        bar("REEM", t1, 5),
        bar("STALE", t1, 6, fetched_s=100.0),
        zero,
        bar("OLDER", t2, 8),
        bar("DUPKEY", T0),
        bar("SESS", EVE, 9),  # latest_1m holds yesterday's bar: today's takes it as prev_close
        bar("SESSB", EVE - MINUTE, 10),
        bar("NULLS", T0, 11),
    ]
    negative_zero = bar("ZERO", t1, 13, fetched_s=120.0)
    negative_zero.update({name: zero[name] for name in INDICATOR_COLUMNS})
    negative_zero["sma_5"] = -0.0  # the indicators upsert finds the row equal to the stored one: keeps 0.0
    fresh_zero = bar("ZNEW", t1, 14)
    fresh_zero["rsi_14"] = -0.0  # a new row: written as -0.0 (but not taken from the stage)
    nulls = bar("NULLS", t1, 12)
    nulls.update(dict.fromkeys(INDICATOR_COLUMNS, math.nan))
    batch = [bar(s, t1, i + 1, fetched_s=61.5) for i, s in enumerate(FAST)] + [
        bar("MULTI", t1, 1),
        bar("MULTI", t2, 2),
        bar("MULTI", t3, 3),
        bar("REEM", t1, 15, changed=False),
        bar("STALE", t1, 16, fetched_s=70.0),  # older than the stored version: not upserted
        negative_zero,
        fresh_zero,
        bar("OLDER", t1, 18, fetched_s=90.0),  # older than latest_1m's row: latest_1m keeps it
        bar("DUPKEY", t1, 19, kind="late"),  # the late row writes the bar; the bar row not
        bar("DUPKEY", t1, 20, changed=False),
        bar("SESS", t1, 21),
        bar("SESSB", EVE, 22),  # prev_close from the batch's own bar of the day before
        bar("SESSB", t2, 23),
        bar("LATEONLY", T0 - 3600_000, 24, kind="late"),  # no 'bar' row: latest_1m not touched
        bar("NEW", t2, 25),  # no latest_1m row yet
        nulls,
    ]
    return seed, batch


def _snapshot(cur: psycopg.Cursor) -> list[str]:
    """latest_1m, every column as PostgreSQL prints it (float8: shortest exact text, -0 kept)."""
    return [r[0] for r in cur.execute("SELECT l::text FROM market.latest_1m l ORDER BY symbol").fetchall()]


def _returned(cur: psycopg.Cursor, sql: str) -> list[tuple]:
    cur.execute(sql)
    names = [d.name for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    # floats by their bits: -0.0 == 0.0 in Python
    return sorted(tuple(v.hex() if isinstance(v, float) else v for v in r.values()) for r in rows)


def test_latest_upsert_matches_the_join_over_stored_rows(base_settings, pg_conn):
    sink = PostgresSink(base_settings)
    seed, batch = seed_and_batch()
    try:
        sink.write(frame(seed))
        rows = frame(batch)
        conn = sink.connection()
        with conn.transaction():
            cur = conn.cursor()
            with cur.copy(f"COPY stage_rows ({', '.join(pg.STAGE_COLUMNS)}) FROM STDIN (FORMAT binary)") as copy:
                copy.write(pg.stage_copy(rows))
            cur.execute(pg._UPSERT_BARS, {"late": pg.REASON_LATE, "stale": pg.REASON_STALE})
            cur.execute(pg._UPSERT_INDICATORS)
            before = _snapshot(cur)
            outcomes = {}
            for name, sql in {
                "old staged": OLD_UPSERT_LATEST_STAGED,
                "new staged": pg._UPSERT_LATEST_STAGED,
                "old": OLD_UPSERT_LATEST,
                "new": pg._UPSERT_LATEST,
            }.items():
                cur.execute("SAVEPOINT latest")
                returned = _returned(cur, sql)
                outcomes[name] = (returned, _snapshot(cur))
                cur.execute("ROLLBACK TO SAVEPOINT latest")
    finally:
        sink.close()

    assert outcomes["new staged"] == outcomes["old staged"]
    assert outcomes["new"] == outcomes["old"]
    returned, latest = outcomes["new staged"]
    assert latest != before
    fresh = {symbol: is_fresh for symbol, _, is_fresh in returned}
    # every case took place: the staged bars written by this transaction, the others not
    assert all(fresh[s] for s in FAST) and fresh["MULTI"] and fresh["ZERO"] and fresh["ZNEW"] and fresh["NEW"]
    assert fresh["DUPKEY"] and fresh["NULLS"] and fresh["SESS"] and fresh["SESSB"]
    assert not fresh["REEM"] and not fresh["STALE"]
    assert "OLDER" not in fresh and "LATEONLY" not in fresh
    sess = next(line for line in latest if line.startswith("(SESS,"))
    sessb = next(line for line in latest if line.startswith("(SESSB,"))
    assert "2026-11-24 20:58:00+00" in sess  # prev_close_ts: the row the new session replaced
    assert "2026-11-24 20:58:00+00" in sessb  # the batch's own bar of the day before
    zero = next(line for line in latest if line.startswith("(ZERO,"))
    assert ",-0," not in zero and ",0," in zero  # the stored 0.0, not the staged -0.0
