-- A symbol's epoch changes whenever its stored history is rewritten outside the stream (a backfill
-- adding older or missing bars). The streaming job keeps the epoch it built its state from and
-- rebuilds the state from the stored series when it differs, so later indicators stay TA-Lib-exact.
CREATE TABLE ops.symbol_epochs (
    symbol      text        PRIMARY KEY,
    epoch       bigint      NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
