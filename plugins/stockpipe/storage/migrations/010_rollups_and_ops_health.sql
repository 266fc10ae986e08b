-- Rollups of market.bars_1m for the dashboard (refreshed by the postgres_maintenance DAG), and the
-- ops tables of the Airflow layer (ingest cycles, health checks).

-- OHLCV of a bucket: first open, max high, min low, last close, summed volume and trades,
-- volume-weighted vwap, number of minute bars. Day buckets are New York calendar days.
CREATE MATERIALIZED VIEW market.bars_5m AS
SELECT symbol,
       date_bin('5 minutes', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS ts,
       (array_agg(open ORDER BY ts))[1]                AS open,
       max(high)                                        AS high,
       min(low)                                         AS low,
       (array_agg(close ORDER BY ts DESC))[1]           AS close,
       sum(volume)                                      AS volume,
       sum(vwap * volume) / nullif(sum(volume), 0)      AS vwap,
       sum(trades)::bigint                              AS trades,
       count(*)::integer                                AS bars
FROM market.bars_1m
GROUP BY 1, 2;
CREATE UNIQUE INDEX bars_5m_pk ON market.bars_5m (symbol, ts);

CREATE MATERIALIZED VIEW market.bars_1h AS
SELECT symbol,
       date_trunc('hour', ts)                           AS ts,
       (array_agg(open ORDER BY ts))[1]                AS open,
       max(high)                                        AS high,
       min(low)                                         AS low,
       (array_agg(close ORDER BY ts DESC))[1]           AS close,
       sum(volume)                                      AS volume,
       sum(vwap * volume) / nullif(sum(volume), 0)      AS vwap,
       sum(trades)::bigint                              AS trades,
       count(*)::integer                                AS bars
FROM market.bars_1m
GROUP BY 1, 2;
CREATE UNIQUE INDEX bars_1h_pk ON market.bars_1h (symbol, ts);

CREATE MATERIALIZED VIEW market.bars_1d AS
SELECT symbol,
       (ts AT TIME ZONE 'America/New_York')::date       AS session_date,
       (array_agg(open ORDER BY ts))[1]                AS open,
       max(high)                                        AS high,
       min(low)                                         AS low,
       (array_agg(close ORDER BY ts DESC))[1]           AS close,
       sum(volume)                                      AS volume,
       sum(vwap * volume) / nullif(sum(volume), 0)      AS vwap,
       sum(trades)::bigint                              AS trades,
       count(*)::integer                                AS bars
FROM market.bars_1m
GROUP BY 1, 2;
CREATE UNIQUE INDEX bars_1d_pk ON market.bars_1d (symbol, session_date);

-- One row per market_ingest producer cycle (stream_health derives the API error rate from it).
CREATE TABLE ops.ingest_cycles (
    run_id          text        NOT NULL,
    interval_start  timestamptz NOT NULL,
    symbols         integer     NOT NULL,
    failed_symbols  text[]      NOT NULL DEFAULT '{}',
    bars_fetched    integer     NOT NULL,
    bars_sent       integer     NOT NULL,
    dead_letters    integer     NOT NULL,
    duration_s      double precision,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, finished_at)
);
CREATE INDEX ingest_cycles_finished_at ON ops.ingest_cycles (finished_at);

-- One row per stream_health check and run; DLQ growth is measured against the previous run.
CREATE TABLE ops.health_checks (
    checked_at  timestamptz      NOT NULL DEFAULT now(),
    check_name  text             NOT NULL,
    value       double precision,
    threshold   double precision,
    ok          boolean          NOT NULL,
    detail      text,
    PRIMARY KEY (check_name, checked_at)
);
CREATE INDEX health_checks_checked_at ON ops.health_checks (checked_at);
