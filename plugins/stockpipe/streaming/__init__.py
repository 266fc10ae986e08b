"""The Spark plans shared by the stream and the backfill: parse and validate Kafka records, the
stateful per-symbol indicator operator, and the foreachBatch sink wiring.

Entry points: :func:`stockpipe.streaming.query.run` (``spark_jobs/stream_indicators.py``) and
:func:`stockpipe.streaming.backfill.backfill` (``spark_jobs/backfill_indicators.py``).
"""
