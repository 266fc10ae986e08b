"""The stream's PostgreSQL readers in the Python workers (stored bars for seeding, symbol epochs)
keep one connection and one epoch cache per worker process, across the tasks of every micro-batch.

Spark ships the operator's closures to each task with cloudpickle, which copies the globals a
shipped closure names: readers that named the module's caches directly got new, empty ones in each
task — a new connection and an epoch query per task and micro-batch (the session-7 operator
profile: two connects in every 10,000-row batch)."""

from __future__ import annotations

from pyspark import cloudpickle

from stockpipe.streaming import query


def shipped(function):
    """What a task gets: the closure as Spark ships it (cloudpickle round trip)."""
    return cloudpickle.loads(cloudpickle.dumps(function))


def test_every_task_copy_of_the_readers_shares_the_worker_connection_and_epoch_cache(base_settings, pg_conn):
    dsn = base_settings.pg_dsn("writer", pg_conn.info.dbname)
    pg_conn.execute("INSERT INTO ops.symbol_epochs (symbol, epoch) VALUES ('AAA', 3)")
    query._seed_connections.pop(dsn, None)
    query._epoch_cache.pop(dsn, None)
    try:
        first_task = shipped(query.make_epoch_reader(dsn, max_age_s=600))
        assert first_task("AAA") == 3
        assert first_task("ZZZ") == 0
        # the worker module's cache and connection were used (not the task copy's own); no DSN in
        # the assertions (it holds the password)
        cached = dsn in query._epoch_cache
        assert cached, "the task used its own epoch cache, not the worker module's"
        connection = query._seed_connections.get(dsn)
        assert connection is not None, "the task made its own connection, not the worker module's"
        assert not connection.closed
        # the next task: same cache (no new query within max_age), same connection
        pg_conn.execute("UPDATE ops.symbol_epochs SET epoch = 4 WHERE symbol = 'AAA'")
        second_task = shipped(query.make_epoch_reader(dsn, max_age_s=600))
        assert second_task("AAA") == 3
        seeder = shipped(query.make_seeder(dsn))
        assert len(seeder(["AAA"])["AAA"]) == 0
        same = query._seed_connections[dsn] is connection
        assert same, "a second task made a new connection"
        # an expired cache is re-read over the same connection
        fresh = shipped(query.make_epoch_reader(dsn, max_age_s=0))
        assert fresh("AAA") == 4
        same = query._seed_connections[dsn] is connection
        assert same, "the refresh made a new connection"
    finally:
        conn = query._seed_connections.pop(dsn, None)
        if conn is not None:
            conn.close()
        query._epoch_cache.pop(dsn, None)
