-- The streaming job's own liveness signal, so stream_health can tell "alive and working on a batch"
-- from "stuck or gone" (ops.stream_batches only says when a batch last *committed*: a job whose first
-- micro-batch seeds 10,000 symbols' state from PostgreSQL commits nothing for minutes while busy).
--
-- One row per query name, upserted by the job's driver (streaming/heartbeat.py) every
-- STOCKPIPE_STREAM_HEARTBEAT_S: when this job started, its last beat (the beat asks Spark for the
-- query's status, so a hung driver JVM stops beating), the micro-batch in progress and since when,
-- and Spark's status flags. A job stopped cleanly sets stopped_at.
CREATE TABLE ops.stream_heartbeats (
    query_name        text        PRIMARY KEY,
    job_id            text        NOT NULL,  -- host:pid:start of the driver that beats
    started_at        timestamptz NOT NULL,  -- when that job (its sink) started
    beat_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    batch_id          bigint,                -- the micro-batch in progress (NULL: between batches)
    batch_started_at  timestamptz,           -- when it started
    batches_done      integer     NOT NULL DEFAULT 0,  -- micro-batches this job has finished
    last_done_at      timestamptz,           -- when this job last finished one
    trigger_active    boolean,               -- Spark's StreamingQuery.status (NULL: unknown)
    data_available    boolean,
    status_message    text,
    stopped_at        timestamptz            -- set by a clean stop
);
COMMENT ON TABLE ops.stream_heartbeats IS
    'The streaming job''s heartbeat, one row per query (stream_health''s liveness signal).';
