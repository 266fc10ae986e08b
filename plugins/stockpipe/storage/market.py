"""The dashboard's market-wide reads (issue 14): the whole streamed universe at once.

Every query here reads ``market.latest_1m`` (one row per symbol, kept by the sink in the same
transaction as the history: migration 014) or the last minutes of ``market.indicators_1m`` through
its BRIN index on ``ts`` — never "the latest bar of each symbol" over a month's partition — so a
10,000-symbol universe answers in milliseconds. The session is the newest New York session date in
``latest_1m`` (the market's "today", also on a replayed or demo day).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from stockpipe.storage import queries
from stockpipe.storage.queries import frame

#: What a mover row carries.
MOVER_COLUMNS = "symbol, ts, close, prev_close, close / prev_close - 1 AS change, volume, rsi_14"


def market_session(conn: psycopg.Connection) -> tuple[date | None, datetime | None, int]:
    """(newest session date, newest bar time, symbols with a bar in that session)."""
    row = conn.execute(
        "SELECT session_date, max_ts, (SELECT count(*) FROM market.latest_1m l WHERE l.session_date = d.session_date) "
        "FROM (SELECT max(session_date) AS session_date, max(ts) AS max_ts FROM market.latest_1m) d"
    ).fetchone()
    return (row[0], row[1], int(row[2] or 0)) if row else (None, None, 0)


def movers(conn: psycopg.Connection, session: date, limit: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top gainers (up) and losers (down) of ``session``: change of the latest close vs the previous
    session's close; an unchanged symbol is neither."""
    where = "session_date = %(d)s AND prev_close > 0"
    gainers = frame(
        conn,
        f"SELECT {MOVER_COLUMNS} FROM market.latest_1m WHERE {where} AND close > prev_close "
        "ORDER BY change DESC, symbol LIMIT %(n)s",
        {"d": session, "n": limit},
    )
    losers = frame(
        conn,
        f"SELECT {MOVER_COLUMNS} FROM market.latest_1m WHERE {where} AND close < prev_close "
        "ORDER BY change ASC, symbol LIMIT %(n)s",
        {"d": session, "n": limit},
    )
    return gainers, losers


def rsi_extremes(
    conn: psycopg.Connection, session: date, low: float = 30.0, high: float = 70.0, limit: int = 50
) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """Symbols whose latest RSI(14) is ≤ ``low`` (most oversold first) and ≥ ``high`` (most
    overbought first), at most ``limit`` each, plus how many there are of each."""
    counts = conn.execute(
        "SELECT count(*) FILTER (WHERE rsi_14 <= %(lo)s), count(*) FILTER (WHERE rsi_14 >= %(hi)s) "
        "FROM market.latest_1m WHERE session_date = %(d)s",
        {"d": session, "lo": low, "hi": high},
    ).fetchone()
    select = "SELECT symbol, ts, close, rsi_14, close / nullif(prev_close, 0) - 1 AS change FROM market.latest_1m"
    oversold = frame(
        conn,
        f"{select} WHERE session_date = %(d)s AND rsi_14 <= %(lo)s ORDER BY rsi_14, symbol LIMIT %(n)s",
        {"d": session, "lo": low, "n": limit},
    )
    overbought = frame(
        conn,
        f"{select} WHERE session_date = %(d)s AND rsi_14 >= %(hi)s ORDER BY rsi_14 DESC, symbol LIMIT %(n)s",
        {"d": session, "hi": high, "n": limit},
    )
    return oversold, overbought, int(counts[0]), int(counts[1])


# The latest crossover of each symbol without sorting the window's rows: one hash aggregate finds
# the symbol's last bar whose histogram was on the other side of zero from its latest one (above
# zero vs not), and one index probe the bar after it — the crossing bar.
_CROSSOVERS = """
WITH w AS (
    SELECT i.symbol, max(i.ts) FILTER (WHERE (i.macd_hist > 0) <> (l.macd_hist > 0)) AS before_cross
    FROM market.indicators_1m i JOIN market.latest_1m l USING (symbol)
    WHERE i.ts > %(since)s - %(lookback)s AND i.ts <= %(until)s
      AND i.macd_hist IS NOT NULL AND l.macd_hist IS NOT NULL
    GROUP BY i.symbol
)
SELECT w.symbol, c.ts, c.macd, c.macd_signal, c.macd_hist,
       CASE WHEN c.macd_hist > 0 THEN 'bullish' ELSE 'bearish' END AS direction
FROM w
CROSS JOIN LATERAL (
    SELECT x.ts, x.macd, x.macd_signal, x.macd_hist FROM market.indicators_1m x
    WHERE x.symbol = w.symbol AND x.ts > w.before_cross AND x.ts <= %(until)s AND x.macd_hist IS NOT NULL
    ORDER BY x.ts LIMIT 1
) c
WHERE w.before_cross IS NOT NULL AND c.ts > %(since)s
"""
#: How far before the window a bar still counts as the one before the window's first bar.
PREVIOUS_BAR_LOOKBACK = timedelta(minutes=2)


def macd_crossovers(conn: psycopg.Connection, until: datetime, minutes: int = 15) -> pd.DataFrame:
    """Each symbol's latest MACD crossover in the ``minutes`` up to ``until``: the MACD line crossed
    its signal line — the histogram went from ≤ 0 to > 0 (``bullish``) or back (``bearish``) between
    two consecutive stored bars. Newest first."""
    found = frame(
        conn,
        _CROSSOVERS,
        {"since": until - timedelta(minutes=minutes), "until": until, "lookback": PREVIOUS_BAR_LOOKBACK},
    )
    return found.sort_values(["ts", "symbol"], ascending=[False, True], ignore_index=True) if len(found) else found


def has_symbol(conn: psycopg.Connection, symbol: str) -> bool:
    """Whether the stream has stored a bar of ``symbol`` (it is in ``market.latest_1m``)."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM market.latest_1m WHERE symbol = %s)", (symbol,)).fetchone()[0]


def oldest_bar(conn: psycopg.Connection) -> datetime | None:
    """The oldest stored bar's ts without scanning history (bars_1m has no index on ts alone): the
    oldest monthly partition that has a row, then one primary-key probe per symbol in it."""
    parts = sorted((month, child) for child, parent, month in queries.month_partitions(conn) if parent == "bars_1m")
    (parked,) = conn.execute("SELECT min(ts) FROM market.bars_1m_default").fetchone()  # normally empty
    for _month, child in parts:
        table = sql.Identifier("market", child)
        if not conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(table)).fetchone()[0]:
            continue
        (first,) = conn.execute(
            sql.SQL(
                "SELECT min(f.ts) FROM market.latest_1m l CROSS JOIN LATERAL "
                "(SELECT b.ts FROM {} b WHERE b.symbol = l.symbol ORDER BY b.ts LIMIT 1) f"
            ).format(table)
        ).fetchone()
        if first is not None:
            return first if parked is None else min(first, parked)
    return parked


def storage_summary(conn: psycopg.Connection) -> dict:
    """Database size, the market tables' size (partitions, indexes included) and the days they hold."""
    (database_bytes,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    tables = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
        "WHERE i.inhparent IN ('market.bars_1m'::regclass, 'market.indicators_1m'::regclass)"
    ).fetchone()[0]
    oldest = oldest_bar(conn)
    newest = conn.execute("SELECT max(ts) FROM market.latest_1m").fetchone()[0]
    return {
        "database_bytes": int(database_bytes),
        "market_bytes": int(tables),
        "oldest_bar": oldest,
        "newest_bar": newest,
        "days_kept": None if oldest is None or newest is None else (newest.date() - oldest.date()).days + 1,
    }


def delete_rows_before(conn: psycopg.Connection, cut: datetime) -> dict[str, int]:
    """Delete the indicators and bars older than ``cut`` (retention inside a month's partition);
    table → rows deleted. The BRIN indexes on ``ts`` (migration 014) keep it to the old blocks."""
    return {
        table: conn.execute(f"DELETE FROM {table} WHERE ts < %s", (cut,)).rowcount
        for table in ("market.indicators_1m", "market.bars_1m")
    }
