"""Alert rules and alerts in PostgreSQL (market.alert_rules, market.alerts): every query of them.

Three kinds of callers, each with its own role:

* rules — the CLI (``python -m stockpipe.alerts``) and the dashboard's Alerts page, as the rules
  role (``pg_connect(settings, "rules")``: it may change market.alert_rules and nothing else):
  :func:`add_rule`, :func:`list_rules`, :func:`set_rule_enabled`, :func:`delete_rule`;
* the sink — :func:`evaluate_batch`, called by ``PostgresSink.write`` inside the transaction that
  upserts the bars: the alerts of the batch's bars are written (or retracted) with them, so a batch
  applied once fires once, and a replay (skipped by the sink) fires nothing;
* readers — the dashboard (reader role): :func:`alert_history`, :func:`latest_alert_per_symbol`,
  :func:`chart_alerts`; the delivery worker (writer role): :func:`claim_pending`,
  :func:`mark_published`, :func:`finish_delivery`, :func:`release_unfinished`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import psycopg

from stockpipe.alerts.evaluate import CANDIDATE_COLUMNS, apply_cooldown, crossings, ref_column
from stockpipe.alerts.rules import (
    LINES,
    Condition,
    Rule,
    RuleError,
    check_cooldown,
    check_symbol,
    check_webhook,
    parse_condition,
)
from stockpipe.config import Settings

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "stockpipe_alerts"
"""PostgreSQL NOTIFY channel: the sink's transaction signals new work for the delivery worker."""

_RULE_COLUMNS = "id, symbol, kind, line, level, minutes, cooldown_minutes, webhook_url, enabled, created_at"


def _rule(record: tuple) -> Rule:
    return Rule(*record)


# --- rules (rules role) -------------------------------------------------------------------------


def validate_rule(
    symbol: str, condition: str | Condition, cooldown_minutes: Any = 0, webhook_url: str | None = None
) -> tuple[str, Condition, int, str | None]:
    """The rule's stored values, or :class:`RuleError` (one sentence) when it is not valid."""
    # a Condition goes through its text too: the same checks as the CLI's
    parsed = parse_condition(condition.text if isinstance(condition, Condition) else condition)
    return check_symbol(symbol), parsed, check_cooldown(cooldown_minutes), check_webhook(webhook_url)


def add_rule(
    conn: psycopg.Connection,
    symbol: str,
    condition: str | Condition,
    cooldown_minutes: Any = 0,
    webhook_url: str | None = None,
) -> Rule:
    """Store a new enabled rule (validated first: a bad rule raises :class:`RuleError`, nothing stored)."""
    symbol, parsed, cooldown, url = validate_rule(symbol, condition, cooldown_minutes, webhook_url)
    with conn.transaction():
        record = conn.execute(
            "INSERT INTO market.alert_rules (symbol, kind, line, level, minutes, cooldown_minutes, webhook_url) "
            f"VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_RULE_COLUMNS}",
            (symbol, parsed.kind, parsed.line, parsed.level, parsed.minutes, cooldown, url),
        ).fetchone()
    return _rule(record)


def list_rules(conn: psycopg.Connection, *, enabled_only: bool = False) -> list[Rule]:
    query = f"SELECT {_RULE_COLUMNS} FROM market.alert_rules" + (" WHERE enabled" if enabled_only else "")
    with conn.transaction():
        return [_rule(r) for r in conn.execute(query + " ORDER BY id").fetchall()]


def set_rule_enabled(conn: psycopg.Connection, rule_id: int, enabled: bool) -> bool:
    """Enable or disable a rule; False when there is no such rule."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE market.alert_rules SET enabled = %s, updated_at = now() WHERE id = %s", (enabled, rule_id)
        )
        return cur.rowcount == 1


def delete_rule(conn: psycopg.Connection, rule_id: int) -> bool:
    """Delete a rule; its alerts stay (rule_id becomes NULL, their description remains)."""
    with conn.transaction():
        return conn.execute("DELETE FROM market.alert_rules WHERE id = %s", (rule_id,)).rowcount == 1


# --- evaluation (the sink's transaction) -------------------------------------------------------


@dataclass
class AlertCounts:
    fired: int = 0
    retracted: int = 0
    rules: int = 0  # enabled rules evaluated
    bars: int = 0  # bars judged
    ms: float = 0.0  # time the evaluation took


def enabled_rules(cur: psycopg.Cursor) -> list[Rule]:
    return [_rule(r) for r in cur.execute(f"SELECT {_RULE_COLUMNS} FROM market.alert_rules WHERE enabled ORDER BY id")]


# Every enabled rule's whole row, as text, hashed: equal fingerprints, equal rule lists (any
# change of a rule — an edit, enabling, a new or deleted rule — changes its text or the set).
_FINGERPRINT = "SELECT md5(string_agg(r::text, ',' ORDER BY r.id)) FROM market.alert_rules r WHERE r.enabled"
_RULES_CACHE: dict[str, list[Rule]] = {}  # fingerprint → rules (the last one or two)


def enabled_rules_cached(cur: psycopg.Cursor) -> list[Rule]:
    """:func:`enabled_rules`, read again only when their fingerprint changed: one row per batch
    instead of 1,000 (fetching and building the rules cost a few ms a batch). On a change the
    rules and their fingerprint come from one statement (one snapshot), so the cache never pairs
    a fingerprint with other rules."""
    (key,) = cur.execute(_FINGERPRINT).fetchone()
    if key is None:
        return []
    rules = _RULES_CACHE.get(key)
    if rules is None:
        records = cur.execute(
            f"SELECT ({_FINGERPRINT}), {_RULE_COLUMNS} FROM market.alert_rules WHERE enabled ORDER BY id"
        ).fetchall()
        if not records:
            return []
        key, rules = records[0][0], [_rule(r[1:]) for r in records]
        if len(_RULES_CACHE) >= 2:
            _RULES_CACHE.clear()
        _RULES_CACHE[key] = rules
    return rules


def _lock_rules(cur: psycopg.Cursor, ids: list[int]) -> set[int]:
    """Of ``ids``, the rules that still exist, locked against deletion until the transaction ends
    (their new alerts reference them: a rule deleted meanwhile must not fail the batch)."""
    return {r[0] for r in cur.execute("SELECT id FROM market.alert_rules WHERE id = ANY(%s) FOR KEY SHARE", (ids,))}


_EPOCH_2000_US = 946_684_800_000_000  # timestamptz_send: µs since 2000-01-01 UTC


def _packed_dtype(*fields: tuple[str, str]) -> np.dtype:
    """numpy dtype of one row packed by the query as ``xsend(a) || ysend(b) || …`` (big-endian)."""
    return np.dtype([(name, kind if kind == "?" else ">" + kind) for name, kind in fields])


def _packed_rows(cur: psycopg.Cursor, query: str, params: dict[str, Any], dtype: np.dtype) -> np.ndarray:
    """The rows of ``query`` — one bytea, every row's values packed with the types' binary send
    functions and concatenated by ``string_agg`` — as a numpy record array, with no Python object
    per value (fetched as ~11,000 tuples, or as COPY messages, they cost ~10 ms a batch)."""
    with cur.connection.cursor(binary=True) as binary:  # same transaction
        (data,) = binary.execute(query, params).fetchone()
    return np.frombuffer(bytes(data or b""), dtype=dtype)


_IND = ", ".join(f"i.{c}" for c in (*LINES, "rsi_14", "macd", "macd_signal"))
_SERIES_COLUMNS = [
    "symbol",
    "ts",
    "evaluate",
    "close",
    "volume",
    "volume_avg_20",
    *LINES,
    "rsi_14",
    "macd",
    "macd_signal",
]
# Per staged symbol (numbered k): its stored bars from the first staged one (t0) to the last (t1)
# and the older ones the kept rows' 20-bar volume average and the move rules' reference closes
# need — from the 20th bar before t0 (lo_v) or, with move rules (``%(moves)s``), from the last bar
# ``%(back)s`` minutes before prev (lo_m), whichever is older — as (k, ts, evaluate = ts >= t0,
# keep = ts >= prev, close, volume), packed. ``p`` and ``r`` are MATERIALIZED and the bars are
# read per symbol through LATERAL range scans bounded by their columns: flattened, the planner
# scanned every stored bar of each symbol up to t1 (the lower bound became a join filter).
_SERIES = """
WITH s AS (
    SELECT t.symbol, n.k, min(t.ts) AS t0, max(t.ts) AS t1
    FROM stage_rows t JOIN unnest(%(names)s::text[], %(k)s::int4[]) AS n(symbol, k) ON n.symbol = t.symbol
    WHERE t.kind = 'bar' GROUP BY t.symbol, n.k
), p AS MATERIALIZED (
    -- the 20 bars before t0 within a week (a bounded scan: run-time partition pruning), newest
    -- first: prev = the newest, lo_v = the 20th; NULL lo_v: fewer than 20 there
    SELECT s.symbol, s.k, s.t0, s.t1, p.prev, p.lo_v FROM s
    LEFT JOIN LATERAL (SELECT max(b.ts) AS prev, CASE WHEN count(*) = 20 THEN min(b.ts) END AS lo_v FROM (
        SELECT b.ts FROM market.bars_1m b
        WHERE b.symbol = s.symbol AND b.ts < s.t0 AND b.ts >= s.t0 - interval '7 days' ORDER BY b.ts DESC LIMIT 20) b
    ) p ON true
), r AS MATERIALIZED (
    SELECT p.symbol, p.k, p.t0, p.t1, coalesce(q.prev, p.t0) AS prev, coalesce(q.lo_v, '-infinity') AS lo_v,
           CASE WHEN %(moves)s THEN coalesce(
               (SELECT b.ts FROM market.bars_1m b WHERE b.symbol = p.symbol
                AND b.ts <= q.prev - %(back)s * interval '1 minute'
                AND b.ts >= q.prev - %(back)s * interval '1 minute' - interval '7 days' ORDER BY b.ts DESC LIMIT 1),
               (SELECT b.ts FROM market.bars_1m b WHERE b.symbol = p.symbol
                AND b.ts <= q.prev - %(back)s * interval '1 minute' ORDER BY b.ts DESC LIMIT 1),
               '-infinity') ELSE 'infinity' END AS lo_m
    FROM p
    -- the same over the whole history, only where the week had fewer than 20 (an unbounded
    -- backward scan opens every partition's index: ~60 %% of the query's time when run for all)
    CROSS JOIN LATERAL (
        SELECT coalesce(p.lo_v, u.lo_v) AS lo_v, CASE WHEN p.lo_v IS NULL THEN u.prev ELSE p.prev END AS prev FROM (
            SELECT max(b.ts) AS prev, CASE WHEN count(*) = 20 THEN min(b.ts) END AS lo_v FROM (
                SELECT b.ts FROM market.bars_1m b WHERE p.lo_v IS NULL AND b.symbol = p.symbol AND b.ts < p.t0
                ORDER BY b.ts DESC LIMIT 20) b
        ) u
    ) q
), b AS (
    SELECT r.k, b.ts, b.close, b.volume, b.ts >= r.t0 AS evaluate, b.ts >= r.prev AS judged_or_prev
    FROM r CROSS JOIN LATERAL (
        SELECT b.ts, b.close, b.volume FROM market.bars_1m b
        WHERE b.symbol = r.symbol AND b.ts >= least(r.lo_v, r.lo_m) AND b.ts <= r.t1
    ) b
)
SELECT string_agg(
    int4send(k) || timestamptz_send(ts) || boolsend(evaluate) || boolsend(judged_or_prev) || float8send(close)
    || float8send(volume), '')
FROM b
"""
_SERIES_DTYPE = _packed_dtype(
    ("k", "i4"), ("ts", "i8"), ("evaluate", "?"), ("keep", "?"), ("close", "f8"), ("volume", "f8")
)
# the staged symbols (numbered k = their place here, as in the series queries)
_SERIES_SYMBOLS = "SELECT symbol FROM stage_rows WHERE kind = 'bar' {symbols} GROUP BY symbol ORDER BY symbol"
# The fast path of _SERIES: per symbol, its stored bars from ``%(minutes)s`` minutes before t0 to t1
# (one bounded range scan each). It gives the same frame as _SERIES for a symbol when at least 20
# of them precede t0 and, with move rules, the oldest is at or before prev − back (then the rows
# _SERIES would read are among them, and the older ones change neither the 20-bar average of a
# kept row nor its reference closes); the other symbols (a session's first bars, gaps, new
# symbols) go through _SERIES.
_RECENT = """
WITH s AS (
    SELECT t.symbol, n.k, min(t.ts) AS t0, max(t.ts) AS t1
    FROM stage_rows t JOIN unnest(%(names)s::text[], %(k)s::int4[]) AS n(symbol, k) ON n.symbol = t.symbol
    WHERE t.kind = 'bar' GROUP BY t.symbol, n.k
), b AS (
    SELECT s.k, b.ts, b.close, b.volume, b.ts >= s.t0 AS evaluate
    FROM s CROSS JOIN LATERAL (
        SELECT b.ts, b.close, b.volume FROM market.bars_1m b
        WHERE b.symbol = s.symbol AND b.ts >= s.t0 - %(minutes)s * interval '1 minute' AND b.ts <= s.t1
    ) b
)
SELECT string_agg(int4send(k) || timestamptz_send(ts) || boolsend(evaluate) || boolsend(false) || float8send(close)
    || float8send(volume), '')
FROM b
"""
# The stored indicators of each judged symbol's rows from prev to t1 (µs since the epoch; NULL as NaN).
_IND_NAN = " || ".join(f"float8send(coalesce(i.{c}, 'NaN'))" for c in _SERIES_COLUMNS[6:])
_INDICATORS = f"""
SELECT string_agg(int4send(s.k) || timestamptz_send(i.ts) || {_IND_NAN}, '')
FROM unnest(%(k)s::int4[], %(symbol)s::text[], %(lo)s::int8[], %(hi)s::int8[]) AS s(k, symbol, lo, hi)
CROSS JOIN LATERAL (
    SELECT i.* FROM market.indicators_1m i
    WHERE i.symbol = s.symbol AND i.ts >= 'epoch'::timestamptz + s.lo * interval '1 microsecond'
      AND i.ts <= 'epoch'::timestamptz + s.hi * interval '1 microsecond'
) i
"""
_INDICATORS_DTYPE = _packed_dtype(("k", "i4"), ("ts", "i8"), *((name, "f8") for name in _SERIES_COLUMNS[6:]))


def _by_symbol_and_ts(rows: np.ndarray) -> np.ndarray:
    """``rows`` ordered by (k, ts) (sorted here: cheaper than the query's sort of ~13,000 rows)."""
    return rows[np.lexsort((rows["ts"], rows["k"]))]


def _blocks(symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) of each run of equal values of ``symbols`` (grouped)."""
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]]) if len(symbols) else np.zeros(0, np.int64)
    return starts, np.r_[starts[1:], len(symbols)].astype(np.int64)


def series_around_batch(cur: psycopg.Cursor, rules: list[Rule]) -> pd.DataFrame:
    """The stored series the batch's alerts are judged on: per symbol of the staged ``bar`` rows,
    its stored bars from the first staged one to the last (``evaluate``) and the previous bar,
    with their stored indicators, the 20-bar volume average and, for each move rule's window, its
    reference close (:func:`stockpipe.alerts.evaluate.ref_column`).

    The queries return the bars the average and the reference closes need (per symbol from the
    20th bar before the batch, or from the move windows' start: :data:`_RECENT` for most symbols,
    :data:`_SERIES` for the rest) and numpy computes both — the average as PostgreSQL's ``avg``
    over 20 rows does (a sum in row order, then / 20: the same bits) — instead of window functions
    in the query (~half its time); the indicators of the rows kept (prev and the judged ones) come
    from a second query. Rows are packed (:func:`_packed_rows`)."""
    symbols = sorted({r.symbol for r in rules})
    only = "" if "*" in symbols else "AND symbol = ANY(%(symbols)s)"
    minutes = sorted({int(r.minutes) for r in rules if r.kind == "close_move"})
    back = max(minutes, default=0)
    names = np.array(
        [r[0] for r in cur.execute(_SERIES_SYMBOLS.replace("{symbols}", only), {"symbols": symbols})], dtype=object
    )
    numbers = list(range(len(names)))
    recent = _by_symbol_and_ts(
        _packed_rows(
            cur, _RECENT, {"names": names.tolist(), "k": numbers, "minutes": max(20, back + 1) + 5}, _SERIES_DTYPE
        )
    )
    # per symbol of the fast path: enough rows before t0 (see _RECENT), else the full query
    k = recent["k"].astype(np.int64)
    ts = recent["ts"].astype(np.int64) + _EPOCH_2000_US
    evaluate = recent["evaluate"].astype(bool)
    starts, stops = _blocks(k)
    # rows before t0 come first in each block
    first_judged = starts + np.add.reduceat((~evaluate).astype(np.int64), starts) if len(k) else starts
    good = (first_judged - starts >= 20) & (first_judged < stops)
    if back:
        prev_ts = ts[np.maximum(first_judged - 1, 0)]
        good &= ts[starts] <= prev_ts - back * 60_000_000
    fast = np.repeat(good, stops - starts)  # the rows of the symbols the fast path serves
    keep = np.arange(len(k)) >= np.repeat(first_judged - 1, stops - starts)  # from prev on
    parts = [(k[fast], ts[fast], evaluate[fast], keep[fast], recent[fast])]
    slow = sorted(set(numbers) - set(k[starts][good].tolist()))
    if slow:
        rest = _by_symbol_and_ts(
            _packed_rows(
                cur,
                _SERIES,
                {"names": names[slow].tolist(), "k": slow, "back": back, "moves": bool(minutes)},
                _SERIES_DTYPE,
            )
        )
        parts.append(
            (
                rest["k"].astype(np.int64),
                rest["ts"].astype(np.int64) + _EPOCH_2000_US,
                rest["evaluate"].astype(bool),
                rest["keep"].astype(bool),
                rest,
            )
        )
    k = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    evaluate = np.concatenate([p[2] for p in parts])
    keep = np.concatenate([p[3] for p in parts])
    close = np.concatenate([p[4]["close"] for p in parts]).astype(np.float64)
    volume = np.concatenate([p[4]["volume"] for p in parts]).astype(np.float64)
    if len(parts) > 1:
        order = np.lexsort((ts, k))
        k, ts, evaluate, keep, close, volume = (
            k[order],
            ts[order],
            evaluate[order],
            keep[order],
            close[order],
            volume[order],
        )
    starts, stops = _blocks(k)
    block = np.repeat(np.arange(len(starts)), stops - starts)
    position = np.arange(len(k)) - np.repeat(starts, stops - starts)  # row number within its symbol
    kept = np.flatnonzero(keep)
    data: dict[str, Any] = {
        "symbol": names[k[kept]] if len(names) else np.array([], dtype=object),
        "ts": pd.to_datetime(ts[kept], unit="us", utc=True),
        "evaluate": evaluate[kept],
        "close": close[kept],
        "volume": volume[kept],
        "volume_avg_20": _avg_20(volume, position)[kept],
    }
    seconds = block * 10**13 + ts // 1_000_000  # ordered like the rows (symbol, ts)
    refs = {}
    for n in minutes:  # the close of the last row at or before ts − N minutes, same symbol
        at = np.searchsorted(seconds, seconds - 60 * n, side="right") - 1
        ok = (at >= 0) & (block[np.maximum(at, 0)] == block)
        refs[ref_column(n)] = np.where(ok, close[np.maximum(at, 0)], np.nan)[kept]
    indicators = {name: np.full(len(kept), np.nan) for name in _SERIES_COLUMNS[6:]}
    if len(kept):
        k, ts = k[kept], ts[kept]
        first, last = _blocks(k)
        rows = _packed_rows(
            cur,
            _INDICATORS,
            {
                "k": k[first].tolist(),
                "symbol": names[k[first]].tolist(),
                "lo": ts[first].tolist(),
                "hi": ts[last - 1].tolist(),
            },
            _INDICATORS_DTYPE,
        )
        # each indicator row's place among the kept rows (ordered by k, ts): by (k, ts) lookup
        place = {key: i for i, key in enumerate(zip(k.tolist(), ts.tolist(), strict=True))}
        index = np.array(
            [
                place.get(key, -1)
                for key in zip(rows["k"].tolist(), (rows["ts"].astype(np.int64) + _EPOCH_2000_US).tolist(), strict=True)
            ],
            dtype=np.int64,
        )
        found = index >= 0
        for name in _SERIES_COLUMNS[6:]:
            indicators[name][index[found]] = rows[name][found].astype(np.float64)
    return pd.DataFrame({**data, **indicators, **refs})


def _avg_20(volume: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Per row: the mean of the 20 volumes ending with it within its symbol (``position`` = row
    number within the symbol), NaN with fewer than 20 — summed one row at a time from the oldest
    and divided by 20, as PostgreSQL's float8 ``avg`` over a ``ROWS 19 PRECEDING`` frame does
    (float8_accum adds each value to the running sum; float8_avg divides by the count)."""
    n = len(volume)
    total = np.full(n, np.nan)
    ok = position >= 19
    rows = np.flatnonzero(ok)
    if len(rows):
        acc = volume[rows - 19].copy()
        for lag in range(18, -1, -1):
            acc = acc + volume[rows - lag]
        total[rows] = acc / 20.0
    return total


# The active stored alerts of the enabled rules (c) on each judged symbol's range [t0, t1] (s),
# and per rule and symbol the last active one before t0 if within the rule's cool-down (older
# ones cannot suppress a firing at t0 or later: apply_cooldown only looks at the last one).
# Per-symbol range scans of alerts_symbol_ts; the arrays as unnest()ed parameters (``= ANY`` of
# 1,000 ids and 500 symbols cost ~10 ms of planning a batch).
_EXISTING = """
WITH s AS (
    SELECT symbol, 'epoch'::timestamptz + t0 * interval '1 microsecond' AS t0,
           'epoch'::timestamptz + t1 * interval '1 microsecond' AS t1
    FROM unnest(%(symbol)s::text[], %(t0)s::int8[], %(t1)s::int8[]) AS s(symbol, t0, t1)
),
c AS (SELECT * FROM unnest(%(rule)s::bigint[], %(cooldown)s::int[]) AS c(rule_id, cooldown)),
a AS (
    SELECT a.rule_id, a.symbol, a.ts, a.status, a.ts >= s.t0 AS inside
    FROM s CROSS JOIN LATERAL (
        SELECT a.rule_id, a.symbol, a.ts, a.status FROM market.alerts a
        WHERE a.symbol = s.symbol AND a.ts >= s.t0 - %(longest)s * interval '1 minute' AND a.ts <= s.t1
    ) a
    JOIN c ON c.rule_id = a.rule_id
    WHERE a.ts >= s.t0 OR (a.status <> 'retracted' AND a.ts >= s.t0 - c.cooldown * interval '1 minute')
)
SELECT rule_id, symbol, ts, NULL::int8 FROM a WHERE inside AND status <> 'retracted'
UNION ALL
SELECT rule_id, symbol, NULL, (extract(epoch FROM max(ts)) * 1000000)::int8 FROM a WHERE NOT inside
GROUP BY rule_id, symbol
"""

_UPSERT_ALERTS = """
WITH new AS (
    SELECT * FROM unnest(%(rule)s::bigint[], %(symbol)s::text[], %(ts)s::timestamptz[], %(description)s::text[],
                         %(close)s::float8[], %(value)s::float8[]) AS n(rule_id, symbol, ts, description, close, value)
)
INSERT INTO market.alerts AS a (rule_id, symbol, ts, status, description, close, value, delivery)
SELECT rule_id, symbol, ts, %(status)s, description, close, value, %(delivery)s FROM new
ON CONFLICT (rule_id, symbol, ts) DO UPDATE SET
    status = excluded.status, description = excluded.description, close = excluded.close, value = excluded.value,
    fired_at = clock_timestamp(), retracted_at = NULL, delivery = excluded.delivery, published_at = NULL,
    webhook_status = NULL, webhook_attempts = 0, webhook_error = NULL, delivered_at = NULL
WHERE a.status = 'retracted'
"""

# A retracted alert not delivered yet is never delivered; one delivered (or on its way) is
# delivered again, as a retraction.
_RETRACT = """
UPDATE market.alerts AS a SET status = 'retracted', retracted_at = clock_timestamp(),
    delivery = CASE WHEN a.status = 'historical' OR a.delivery IN ('pending', 'none') THEN 'none' ELSE 'pending' END
FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[]) AS r(rule_id, symbol, ts)
WHERE a.rule_id = r.rule_id AND a.symbol = r.symbol AND a.ts = r.ts AND a.status <> 'retracted'
RETURNING a.delivery
"""


def evaluate_batch(
    cur: psycopg.Cursor, *, status: Literal["fired", "historical"] = "fired", rules: list[Rule] | None = None
) -> AlertCounts:
    """Fire (or retract) the alerts of the bars staged in ``stage_rows`` (kind ``bar``), from their
    stored values; call it inside the sink's transaction, after the upserts.

    Per symbol, the staged bars are a contiguous run up to its newest bar (the operator re-emits
    every bar from a late or corrected one on), so the stored alerts of each enabled rule in that
    run are made equal to what the stored series gives: new crossings inserted (keyed on rule,
    symbol, bar: a repeat changes nothing), alerts whose crossing is gone marked ``retracted``, a
    retracted one that crosses again fired again.
    """
    counts = AlertCounts()
    rules = enabled_rules_cached(cur) if rules is None else rules
    if not rules:
        return counts
    counts.rules = len(rules)
    frame = series_around_batch(cur, rules)
    counts.bars = int(frame["evaluate"].sum())
    if not counts.bars:
        return counts
    # per judged symbol (the frame is ordered by symbol, ts): its first and last judged bar
    judged = frame["evaluate"].to_numpy(dtype=bool)
    judged_symbols = frame["symbol"].to_numpy(dtype=object)[judged]
    judged_us = pd.DatetimeIndex(frame["ts"]).as_unit("us").asi8[judged]  # µs since the epoch
    starts = np.flatnonzero(np.r_[True, judged_symbols[1:] != judged_symbols[:-1]])
    stops = np.r_[starts[1:], len(judged_symbols)] - 1
    candidates = crossings(frame, rules)

    cooldowns = {r.id: r.cooldown_minutes for r in rules}
    records = cur.execute(
        _EXISTING,
        {
            "symbol": judged_symbols[starts].tolist(),
            "t0": judged_us[starts].tolist(),
            "t1": judged_us[stops].tolist(),
            "rule": list(cooldowns),
            "cooldown": list(cooldowns.values()),
            "longest": max(cooldowns.values()),
        },
    ).fetchall()
    last_before: dict[tuple[int, str], int] = {}  # the last active alert before t0 within the cool-down (ns)
    in_range = []  # (rule, symbol, ts) of the active alerts of the judged range
    for rule_id, symbol, ts, before_us in records:
        if before_us is None:
            in_range.append((rule_id, symbol, pd.Timestamp(ts)))
        else:
            last_before[rule_id, symbol] = before_us * 1000
    wanted = apply_cooldown(candidates, cooldowns, last_before)

    # stored alerts of the judged range the series no longer gives: retracted
    wanted_keys = set(zip(wanted["rule_id"], wanted["symbol"], pd.to_datetime(wanted["ts"], utc=True), strict=True))
    stale = [(int(r), s, t) for r, s, t in in_range if (r, s, t) not in wanted_keys]
    pending = False
    if len(wanted):  # a rule deleted since enabled_rules read it fires nothing
        wanted = wanted[wanted["rule_id"].isin(_lock_rules(cur, sorted({int(r) for r in wanted["rule_id"]})))]
    if len(wanted):
        firing = {int(r) for r in wanted["rule_id"]}
        descriptions = {r.id: r.description for r in rules if r.id in firing}  # formatted: not for all 1,000
        cur.execute(
            _UPSERT_ALERTS,
            {
                "rule": wanted["rule_id"].astype("int64").tolist(),
                "symbol": wanted["symbol"].tolist(),
                "ts": pd.to_datetime(wanted["ts"], utc=True).dt.to_pydatetime().tolist(),
                "description": [descriptions[int(r)] for r in wanted["rule_id"]],
                "close": wanted["close"].astype("float64").tolist(),
                "value": [None if np.isnan(v) else float(v) for v in wanted["value"]],
                "status": status,
                "delivery": "pending" if status == "fired" else "none",
            },
        )
        counts.fired = cur.rowcount
        pending = status == "fired" and counts.fired > 0
    if stale:
        deliveries = cur.execute(
            _RETRACT, ([r for r, _, _ in stale], [s for _, s, _ in stale], [t for _, _, t in stale])
        ).fetchall()
        counts.retracted = len(deliveries)
        pending = pending or any(d[0] == "pending" for d in deliveries)
    if pending:
        cur.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
    return counts


_warned_missing: list[bool] = []  # once per process


def evaluate_for_sink(cur: psycopg.Cursor, settings: Settings, *, backfill: bool) -> AlertCounts:
    """:func:`evaluate_batch` as the sink runs it: stream bars fire; backfilled ones are skipped or
    stored as ``historical`` (never delivered), by STOCKPIPE_USER_ALERTS_BACKFILL."""
    if backfill and settings.user_alerts_backfill == "skip":
        return AlertCounts()
    started = time.perf_counter()
    try:
        # A savepoint: a failure of the alerts (a bug, not the connection) must not stop the market
        # data; the batch's bars commit without its alerts, and the log says so.
        with cur.connection.transaction():
            counts = evaluate_batch(cur, status="historical" if backfill else "fired")
    except psycopg.OperationalError:
        raise  # the connection: the whole batch is retried
    except psycopg.errors.UndefinedTable:
        if not _warned_missing:
            _warned_missing.append(True)
            log.warning("market.alert_rules does not exist: no alerts until the migrations are applied (make up)")
        return AlertCounts()
    except Exception:
        log.exception("alerts of this micro-batch were not evaluated (its bars are stored): a defect to report")
        return AlertCounts()
    counts.ms = (time.perf_counter() - started) * 1000
    if counts.rules:
        log.info(
            "alerts: %s rule(s) over %s bar(s): %s fired, %s retracted, %.0f ms",
            counts.rules, counts.bars, counts.fired, counts.retracted, counts.ms,
        )  # fmt: skip
    return counts


# --- readers (dashboard) -----------------------------------------------------------------------

ALERT_COLUMNS = [
    "id", "rule_id", "symbol", "ts", "status", "description", "close", "value", "fired_at", "retracted_at",
    "delivery", "published_at", "webhook_status", "webhook_attempts", "webhook_error", "delivered_at",
]  # fmt: skip


def alert_history(
    conn: psycopg.Connection,
    *,
    symbol: str | None = None,
    rule_id: int | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 500,
) -> pd.DataFrame:
    """Alerts, newest bar first, filtered by any of symbol, rule, status and bar time."""
    where, params = [], []
    for column, value in (("symbol", symbol), ("rule_id", rule_id), ("status", status)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if since is not None:
        where.append("ts >= %s")
        params.append(since)
    query = f"SELECT {', '.join(ALERT_COLUMNS)} FROM market.alerts"
    if where:
        query += " WHERE " + " AND ".join(where)
    records = conn.execute(query + " ORDER BY ts DESC, id DESC LIMIT %s", (*params, limit)).fetchall()
    return pd.DataFrame(records, columns=ALERT_COLUMNS)


def latest_alert_per_symbol(conn: psycopg.Connection, symbols: list[str]) -> dict[str, dict[str, Any]]:
    """symbol → its newest fired alert (by bar time), for the symbols that have one."""
    records = conn.execute(
        f"SELECT DISTINCT ON (symbol) {', '.join(ALERT_COLUMNS)} FROM market.alerts "
        "WHERE symbol = ANY(%s) AND status = 'fired' ORDER BY symbol, ts DESC, id DESC",
        (list(symbols),),
    ).fetchall()
    return {r[2]: dict(zip(ALERT_COLUMNS, r, strict=True)) for r in records}


def chart_alerts(conn: psycopg.Connection, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The fired alerts of ``symbol`` with bars in [start, end] (chart markers)."""
    records = conn.execute(
        f"SELECT {', '.join(ALERT_COLUMNS)} FROM market.alerts WHERE symbol = %s AND ts BETWEEN %s AND %s "
        "AND status = 'fired' ORDER BY ts",
        (symbol, start, end),
    ).fetchall()
    return pd.DataFrame(records, columns=ALERT_COLUMNS)


# --- delivery (the alerts worker) --------------------------------------------------------------

_CLAIM = """
UPDATE market.alerts a SET delivery = 'sending'
FROM (SELECT id FROM market.alerts WHERE delivery = 'pending' ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) p
WHERE a.id = p.id
RETURNING a.id, a.rule_id, a.symbol, a.ts, a.status, a.description, a.close, a.value, a.fired_at,
    (SELECT r.webhook_url FROM market.alert_rules r WHERE r.id = a.rule_id)
"""
CLAIM_COLUMNS = ["id", "rule_id", "symbol", "ts", "status", "description", "close", "value", "fired_at", "webhook_url"]


def claim_pending(conn: psycopg.Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Take up to ``limit`` alerts waiting for delivery (marked ``sending``), oldest first."""
    with conn.transaction():
        records = conn.execute(_CLAIM, (limit,)).fetchall()
    return sorted((dict(zip(CLAIM_COLUMNS, r, strict=True)) for r in records), key=lambda a: a["id"])


def mark_published(conn: psycopg.Connection, ids: list[int]) -> None:
    """Stamp ``published_at``, one row per statement (autocommit ``conn``): the worker never holds
    one alert's lock while it waits for another's, so it cannot deadlock with the sink's
    transaction (which may be retracting some of them) — a deadlock would fail a stream batch."""
    for alert_id in ids:
        conn.execute(
            "UPDATE market.alerts SET published_at = clock_timestamp() WHERE id = %s AND delivery = 'sending'",
            (alert_id,),
        )


def finish_delivery(
    conn: psycopg.Connection, alert_id: int, webhook_status: str, attempts: int, error: str | None
) -> None:
    """Record the outcome; an alert the sink changed meanwhile (retracted: pending again) is left to it."""
    with conn.transaction():
        conn.execute(
            "UPDATE market.alerts SET delivery = CASE WHEN %s = 'failed' THEN 'failed' ELSE 'delivered' END, "
            "webhook_status = %s, webhook_attempts = %s, webhook_error = %s, delivered_at = clock_timestamp() "
            "WHERE id = %s AND delivery = 'sending'",
            (webhook_status, webhook_status, attempts, error, alert_id),
        )


def release_unfinished(conn: psycopg.Connection, ids: list[int] | None = None) -> int:
    """Alerts taken but not finished are pending again: ``ids``, or (at the worker's start) every
    one a previous worker left (row by row, autocommit ``conn``: see :func:`mark_published`)."""
    if ids is None:
        ids = [r[0] for r in conn.execute("SELECT id FROM market.alerts WHERE delivery = 'sending'").fetchall()]
    released = 0
    for alert_id in ids:
        released += conn.execute(
            "UPDATE market.alerts SET delivery = 'pending' WHERE id = %s AND delivery = 'sending'", (alert_id,)
        ).rowcount
    return released


__all__ = [
    "AlertCounts",
    "RuleError",
    "add_rule",
    "alert_history",
    "chart_alerts",
    "claim_pending",
    "delete_rule",
    "evaluate_batch",
    "finish_delivery",
    "latest_alert_per_symbol",
    "list_rules",
    "mark_published",
    "release_unfinished",
    "set_rule_enabled",
    "validate_rule",
    "CANDIDATE_COLUMNS",
]
