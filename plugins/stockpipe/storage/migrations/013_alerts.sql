-- Indicator alerts for users (issue 15): rules, and the alerts the stream fires from them.
-- Rules are edited by their own role (STOCKPIPE_PG_RULES_USER, granted in stockpipe.storage.migrate:
-- market.alert_rules only); alerts are written by the stream's sink in the transaction of the bars
-- they come from (one row per rule, symbol and bar) and delivered by the alerts worker.

CREATE TABLE market.alert_rules (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol           text        NOT NULL CHECK (symbol = '*' OR symbol ~ '^[A-Z][A-Z0-9.\-]{0,11}$'),
    kind             text        NOT NULL CHECK (kind IN (
                         'rsi_cross_below', 'rsi_cross_above', 'macd_cross_up', 'macd_cross_down',
                         'close_cross_above', 'close_cross_below', 'close_move', 'volume_spike')),
    line             text        CHECK (line IN (
                         'sma_5', 'sma_20', 'sma_50', 'ema_12', 'ema_26', 'bb_upper', 'bb_middle', 'bb_lower')),
    level            double precision,   -- RSI level, move in %, volume factor
    minutes          integer,            -- close_move's window
    cooldown_minutes integer     NOT NULL DEFAULT 0 CHECK (cooldown_minutes BETWEEN 0 AND 10080),
    webhook_url      text,               -- empty: STOCKPIPE_USER_ALERTS_WEBHOOK_URL
    enabled          boolean     NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind IN ('close_cross_above', 'close_cross_below')) = (line IS NOT NULL)),
    CHECK (kind NOT IN ('rsi_cross_below', 'rsi_cross_above') OR (level > 0 AND level < 100)),
    CHECK (kind NOT IN ('close_move', 'volume_spike') OR level > 0),
    CHECK ((kind = 'close_move') = (minutes IS NOT NULL)),
    CHECK (minutes IS NULL OR minutes BETWEEN 1 AND 1440),
    CHECK (webhook_url IS NULL OR webhook_url ~ '^https?://')
);

CREATE TABLE market.alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id         bigint      REFERENCES market.alert_rules (id) ON DELETE SET NULL,
    symbol          text        NOT NULL,
    ts              timestamptz NOT NULL,          -- the bar that fired
    -- fired: delivered; historical: fired by a backfill, never delivered; retracted: a corrected
    -- bar undid the condition (kept, not deleted)
    status          text        NOT NULL CHECK (status IN ('fired', 'historical', 'retracted')),
    description     text        NOT NULL,          -- the rule's condition as text when it fired
    close           double precision,
    value           double precision,              -- the indicator value the condition looked at
    fired_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    retracted_at    timestamptz,
    -- delivery (the alerts worker): pending → sending → delivered | failed; none: nothing to deliver
    delivery        text        NOT NULL DEFAULT 'pending'
                                CHECK (delivery IN ('pending', 'sending', 'delivered', 'failed', 'none')),
    published_at    timestamptz,                   -- on Redis pub/sub stockpipe:alerts
    webhook_status  text        CHECK (webhook_status IN ('sent', 'failed', 'no_url')),
    webhook_attempts integer    NOT NULL DEFAULT 0,
    webhook_error   text,
    delivered_at    timestamptz,
    UNIQUE (rule_id, symbol, ts)
);
CREATE INDEX alerts_symbol_ts ON market.alerts (symbol, ts DESC);
CREATE INDEX alerts_pending ON market.alerts (id) WHERE delivery IN ('pending', 'sending');
COMMENT ON TABLE market.alerts IS
    'One row per (rule, symbol, bar) that fired; written in the stream''s transaction, delivered by stockpipe.alerts.worker.';
