-- The whole market at a glance, without scanning history (issue 14).
--
-- market.latest_1m: one row per symbol, its newest stored bar and that bar's indicators, kept by
-- the sink (storage.postgres.PostgresSink.write) in the same transaction as bars_1m and
-- indicators_1m, so it never disagrees with them. Redis' latest state is written from it, and the
-- dashboard's Market page ranks 10,000 symbols from it (a 10,000-row table instead of a
-- "latest bar per symbol" over the month's partition).
--
-- session_date is the bar's New York date; prev_close is the close of the symbol's last stored bar
-- of an earlier session, taken when the first bar of a new session is written (what "today's
-- change" is measured against). A correction of that earlier bar written later does not move it.
CREATE TABLE market.latest_1m (
    symbol        text             PRIMARY KEY,
    ts            timestamptz      NOT NULL,
    open          double precision,
    high          double precision,
    low           double precision,
    close         double precision NOT NULL,
    volume        double precision,
    vwap          double precision,
    trades        integer,
    source        text,
    fetched_at    timestamptz,
    written_at    timestamptz,
    sma_5         double precision,
    sma_20        double precision,
    sma_50        double precision,
    ema_12        double precision,
    ema_26        double precision,
    rsi_14        double precision,
    macd          double precision,
    macd_signal   double precision,
    macd_hist     double precision,
    bb_upper      double precision,
    bb_middle     double precision,
    bb_lower      double precision,
    vwap_session  double precision,
    session_date  date             NOT NULL,
    prev_close    double precision,
    prev_close_ts timestamptz
);

-- Rebuild it from what is stored (this migration, and loaders that bypass the sink): each symbol's
-- newest bar (one index probe per symbol) and its last bar of an earlier session. Returns the rows.
CREATE FUNCTION market.refresh_latest() RETURNS bigint LANGUAGE sql AS $$
WITH RECURSIVE s(symbol) AS (
    (SELECT symbol FROM market.bars_1m ORDER BY symbol LIMIT 1)
    UNION ALL
    SELECT (SELECT b.symbol FROM market.bars_1m b WHERE b.symbol > s.symbol ORDER BY b.symbol LIMIT 1)
    FROM s WHERE s.symbol IS NOT NULL
), fresh AS (
    SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, b.source, b.fetched_at,
           b.written_at, i.sma_5, i.sma_20, i.sma_50, i.ema_12, i.ema_26, i.rsi_14, i.macd, i.macd_signal,
           i.macd_hist, i.bb_upper, i.bb_middle, i.bb_lower, i.vwap_session,
           (b.ts AT TIME ZONE 'America/New_York')::date AS session_date, p.close AS prev_close, p.ts AS prev_close_ts
    FROM s
    CROSS JOIN LATERAL (
        SELECT * FROM market.bars_1m x WHERE x.symbol = s.symbol ORDER BY x.ts DESC LIMIT 1
    ) b
    LEFT JOIN market.indicators_1m i ON i.symbol = b.symbol AND i.ts = b.ts
    LEFT JOIN LATERAL (
        SELECT y.close, y.ts FROM market.bars_1m y
        WHERE y.symbol = b.symbol
          AND y.ts < ((b.ts AT TIME ZONE 'America/New_York')::date::timestamp AT TIME ZONE 'America/New_York')
        ORDER BY y.ts DESC LIMIT 1
    ) p ON true
    WHERE s.symbol IS NOT NULL
), written AS (
    INSERT INTO market.latest_1m SELECT * FROM fresh
    ON CONFLICT (symbol) DO UPDATE SET
        ts = excluded.ts, open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
        volume = excluded.volume, vwap = excluded.vwap, trades = excluded.trades, source = excluded.source,
        fetched_at = excluded.fetched_at, written_at = excluded.written_at, sma_5 = excluded.sma_5,
        sma_20 = excluded.sma_20, sma_50 = excluded.sma_50, ema_12 = excluded.ema_12, ema_26 = excluded.ema_26,
        rsi_14 = excluded.rsi_14, macd = excluded.macd, macd_signal = excluded.macd_signal,
        macd_hist = excluded.macd_hist, bb_upper = excluded.bb_upper, bb_middle = excluded.bb_middle,
        bb_lower = excluded.bb_lower, vwap_session = excluded.vwap_session, session_date = excluded.session_date,
        prev_close = excluded.prev_close, prev_close_ts = excluded.prev_close_ts
    RETURNING 1
)
SELECT count(*) FROM written
$$;

SELECT market.refresh_latest();

-- MACD crossovers of the last minutes across the market (dashboard): the recent rows of the
-- current partition without a full scan. Rows arrive in ts order, so a BRIN index stays tiny.
CREATE INDEX indicators_1m_ts_brin ON market.indicators_1m USING brin (ts) WITH (pages_per_range = 16);

-- Emptying the history empties the summary of it (a TRUNCATE of bars_1m by an operator or a test).
CREATE FUNCTION market.latest_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM market.latest_1m;
    RETURN NULL;
END
$$;
CREATE TRIGGER bars_1m_truncate_latest AFTER TRUNCATE ON market.bars_1m
    FOR EACH STATEMENT EXECUTE FUNCTION market.latest_forget();

-- Retention inside a month's partition (maintenance deletes the rows older than the retention of
-- the market-wide mode) finds the old blocks of bars_1m the same way.
CREATE INDEX bars_1m_ts_brin ON market.bars_1m USING brin (ts) WITH (pages_per_range = 16);
