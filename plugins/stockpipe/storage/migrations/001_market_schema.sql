-- market.* per the PostgreSQL contract in DESIGN.md; ops.* for the pipeline's own bookkeeping.
-- Runs as the writer role (it owns these objects, so the pipeline can add partitions itself).

CREATE SCHEMA IF NOT EXISTS market;
CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE market.bars_1m (
    symbol      text             NOT NULL,
    ts          timestamptz      NOT NULL,
    open        double precision NOT NULL,
    high        double precision NOT NULL,
    low         double precision NOT NULL,
    close       double precision NOT NULL,
    volume      double precision NOT NULL,
    vwap        double precision,
    trades      integer,
    source      text             NOT NULL,
    fetched_at  timestamptz      NOT NULL,
    written_at  timestamptz      NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (symbol, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE market.indicators_1m (
    symbol        text        NOT NULL,
    ts            timestamptz NOT NULL,
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
    PRIMARY KEY (symbol, ts)
) PARTITION BY RANGE (ts);

-- Rows outside every monthly partition land here instead of failing; maintenance moves them.
CREATE TABLE market.bars_1m_default PARTITION OF market.bars_1m DEFAULT;
CREATE TABLE market.indicators_1m_default PARTITION OF market.indicators_1m DEFAULT;

-- Create the monthly partitions of bars_1m and indicators_1m covering [from_ts, to_ts].
-- Idempotent; rows already parked in the default partition for a new month are moved into it.
CREATE FUNCTION market.ensure_month_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', from_ts AT TIME ZONE 'UTC')::date;
    created integer := 0;
    parent text;
    part text;
BEGIN
    WHILE month_start <= (to_ts AT TIME ZONE 'UTC')::date LOOP
        FOREACH parent IN ARRAY ARRAY['bars_1m', 'indicators_1m'] LOOP
            part := format('%s_%s', parent, to_char(month_start, 'YYYYMM'));
            IF to_regclass(format('market.%I', part)) IS NULL THEN
                EXECUTE format('CREATE TEMP TABLE parked (LIKE market.%I)', parent);
                EXECUTE format('WITH gone AS (DELETE FROM market.%I '
                               'WHERE ts >= (%L::timestamp AT TIME ZONE ''UTC'') '
                               'AND ts < (%L::timestamp AT TIME ZONE ''UTC'') RETURNING *) '
                               'INSERT INTO parked SELECT * FROM gone',
                               parent || '_default', month_start, (month_start + interval '1 month'));
                EXECUTE format('CREATE TABLE market.%I PARTITION OF market.%I FOR VALUES FROM '
                               '(%L::timestamp AT TIME ZONE ''UTC'') TO (%L::timestamp AT TIME ZONE ''UTC'')',
                               part, parent, month_start, (month_start + interval '1 month'));
                EXECUTE format('INSERT INTO market.%I SELECT * FROM parked', parent);
                DROP TABLE parked;
                created := created + 1;
            END IF;
        END LOOP;
        month_start := (month_start + interval '1 month')::date;
    END LOOP;
    RETURN created;
END $$;

SELECT market.ensure_month_partitions(now() - interval '13 months', now() + interval '2 months');

CREATE TABLE market.symbols (
    symbol        text PRIMARY KEY,
    name          text,
    exchange      text,
    currency      text,
    market        text,
    type          text,
    active        boolean,
    market_cap    double precision,
    description   text,
    homepage_url  text,
    list_date     date,
    source        text,
    refreshed_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per streaming micro-batch applied; the batch id makes a replayed batch a no-op.
CREATE TABLE ops.stream_batches (
    query_name        text        NOT NULL,
    batch_id          bigint      NOT NULL,
    rows_in           integer     NOT NULL,
    bars_upserted     integer     NOT NULL,
    dead_letters      integer     NOT NULL DEFAULT 0,
    input_rows_per_s  double precision,
    processing_ms     double precision,
    max_event_ts      timestamptz,
    latency_p50_ms    double precision,
    latency_p95_ms    double precision,
    latency_max_ms    double precision,
    committed_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (query_name, batch_id)
);
CREATE INDEX stream_batches_committed_at ON ops.stream_batches (committed_at);

-- Bars that arrived later than the stream's recompute horizon: stored, then repaired by backfill.
CREATE TABLE ops.repair_queue (
    symbol      text        NOT NULL,
    ts          timestamptz NOT NULL,
    reason      text        NOT NULL,
    flagged_at  timestamptz NOT NULL DEFAULT now(),
    repaired_at timestamptz,
    PRIMARY KEY (symbol, ts)
);

CREATE TABLE ops.backfill_runs (
    run_id         text        NOT NULL,
    session_date   date        NOT NULL,
    symbols        text[]      NOT NULL,
    bars           integer     NOT NULL DEFAULT 0,
    expected_bars  integer,
    gaps           integer,
    ohlc_errors    integer,
    status         text        NOT NULL,
    detail         text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    PRIMARY KEY (run_id, session_date)
);

CREATE TABLE ops.data_quality (
    checked_at    timestamptz NOT NULL DEFAULT now(),
    check_name    text        NOT NULL,
    symbol        text,
    session_date  date,
    value         double precision,
    ok            boolean     NOT NULL,
    detail        text
);
CREATE INDEX data_quality_checked_at ON ops.data_quality (checked_at);
