-- Exactly-once on what was consumed, not on Spark's batch ids. A new or moved checkpoint, or a
-- renamed query, restarts batch ids at 0; keyed on ids, the sink skipped batches it had never seen
-- (and lost their bars). Now every micro-batch records, in the same transaction as its rows, the
-- Kafka offsets it consumed: a batch whose offsets are all below ``next_offset`` is a replay, and a
-- query started on a new checkpoint begins where the sink left off (see streaming/query.py).
CREATE TABLE ops.stream_offsets (
    topic       text        NOT NULL,
    kpartition  integer     NOT NULL,
    next_offset bigint      NOT NULL,  -- the first offset of the partition not applied yet
    query_name  text        NOT NULL,  -- the query that applied the last batch (information only)
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, kpartition)
);

-- ops.stream_batches stays the per-batch bookkeeping (dashboard, exporter); its batch id is no
-- longer an idempotency key, so a restarted id overwrites its row. ``offsets`` says what it read.
ALTER TABLE ops.stream_batches ADD COLUMN offsets jsonb;
COMMENT ON TABLE ops.stream_batches IS
    'One row per streaming micro-batch (bookkeeping). Idempotency is keyed on ops.stream_offsets.';
