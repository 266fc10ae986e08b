"""stockpipe's Prometheus exporter: ``python -m stockpipe.monitoring.exporter`` (127.0.0.1:9109).

Every scrape reads the live state (no value is cached between scrapes, only connections: a
PostgreSQL pool and a Kafka admin client); each source has a short timeout, and a source that
can't be reached sets ``stockpipe_service_up{service=...} 0`` while the rest is still exported:

==================================================  ===================================================
``stockpipe_service_up{service}``                   1/0 for postgres, redis, kafka, airflow
``stockpipe_stream_last_batch_timestamp_seconds``   commit time of the stream's newest micro-batch
``stockpipe_stream_last_batch_age_seconds``         seconds since then (+Inf: no batch yet)
``stockpipe_stream_last_batch_id``                  its batch id (``rate()`` = batches per second)
``stockpipe_stream_last_batch_*``                   input rows/s, processing and latency of that batch
``stockpipe_stream_progress_age_seconds``           stream_health's judgement of the job's progress
``stockpipe_stream_progress_limit_seconds``         (health.stream_progress_check: heartbeat, first-batch
                                                    grace, last batch) and the limit it applies now
``stockpipe_stream_lag_messages``                   bars-topic messages the stream has not processed
                                                    (end offsets vs its checkpoint's last commit)
``stockpipe_kafka_topic_messages_total{topic}``     sum of the topic's end offsets
``stockpipe_kafka_dlq_messages_total``              the same for the dead-letter topic
``stockpipe_bar_newest_timestamp_seconds{symbol}``  start of the symbol's newest stored bar
``stockpipe_bar_age_seconds{symbol}``               seconds since that bar ended (+Inf: no bar at all)
``stockpipe_market_session_open``                   1 while the market trades (NYSE, or the simulator's clock)
``stockpipe_market_session_elapsed_seconds``        seconds since the session opened (0 when closed)
``stockpipe_ingest_symbol_error_ratio_15m``         failed share of market_ingest's symbol fetches (15 min)
``stockpipe_airflow_dag_runs_failed_total{dag_id}`` failed runs per DAG (Airflow REST API, if reachable)
``stockpipe_health_max_*``                          the ``STOCKPIPE_HEALTH_*`` thresholds, so the alert
                                                    rules and the stream_health DAG share one source
==================================================  ===================================================
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stockpipe.clients import end_offsets, kafka_admin, pg_pool
from stockpipe.config import Settings, get_settings
from stockpipe.logs import setup_logging
from stockpipe.monitoring.health import checkpoint_offsets, stream_liveness, stream_progress_check
from stockpipe.storage import queries

log = logging.getLogger("stockpipe.monitoring.exporter")

TIMEOUT_S = 3.0
SERVICES = ("postgres", "redis", "kafka", "airflow")


def _ts(value: datetime) -> float:
    return value.timestamp()


class StockpipeCollector(Collector):
    """Collects the pipeline's state on every scrape (see the module docstring)."""

    def __init__(self, settings: Settings, *, now: Any = None, airflow: bool = True) -> None:
        self.settings = settings
        self._now = now or (lambda: datetime.now(UTC))
        self.airflow = airflow
        self._admin: Any = None
        self._pool: Any = None
        self._lock = threading.Lock()

    # -- sources --------------------------------------------------------------------------------
    def end_offsets(self, topic: str) -> dict[int, int] | None:
        """High watermark per partition; None when the topic does not exist."""
        if self._admin is None:  # one client for the exporter's life (it reconnects by itself)
            self._admin = kafka_admin(self.settings, "exporter")
        return end_offsets(self.settings, topic, admin=self._admin, timeout_s=TIMEOUT_S)

    def _pg_pool(self) -> Any:
        if self._pool is None:  # one pool for the exporter's life; the first use checks the server
            self._pool = pg_pool(
                self.settings, "reader", name="exporter", timeout_s=TIMEOUT_S, connect_timeout=int(TIMEOUT_S)
            )
        return self._pool

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.close(timeout=1.0)  # its idle workers stop at once
            self._pool = None

    def _postgres(self, now: datetime, metrics: dict[str, Metric]) -> None:
        import psycopg

        s = self.settings
        try:
            with self._pg_pool().connection() as conn:
                conn.execute("SET statement_timeout = 5000")
                # market_ingest (STOCKPIPE_PRODUCER_MODE=airflow) has no metrics endpoint: its cycles are in ops
                state = queries.pipeline_state(conn, s.stream_query_name, s.watchlist, now=now)
                heartbeat, restarted_at = stream_liveness(conn, s.stream_query_name)
        except psycopg.OperationalError:
            self._drop_pool()  # the server is gone: the next scrape asks it again (fast), not the pool
            raise
        query, batch, newest = [s.stream_query_name], state.last_batch, state.newest_bars
        # the same judgement as stream_health's (as if input waited: the alert rule adds the lag)
        progress = stream_progress_check(
            s, now, None if batch is None else batch["committed_at"], heartbeat, restarted_at, lag=None
        )
        metrics["progress_age"].add_metric(query, math.inf if progress.value is None else float(progress.value))
        metrics["progress_limit"].add_metric(query, float(progress.threshold))
        if batch is None:
            metrics["batch_age"].add_metric(query, math.inf)
        else:
            committed_at = batch["committed_at"]
            metrics["batch_ts"].add_metric(query, _ts(committed_at))
            metrics["batch_age"].add_metric(query, max((now - committed_at).total_seconds(), 0.0))
            metrics["batch_id"].add_metric(query, float(batch["batch_id"]))
            metrics["batch_rows"].add_metric(query, float(batch["rows_in"]))
            for key, column, scale in (
                ("batch_rows_per_s", "input_rows_per_s", 1.0),
                ("batch_processing", "processing_ms", 1e-3),
                ("batch_latency_p50", "latency_p50_ms", 1e-3),
                ("batch_latency_p95", "latency_p95_ms", 1e-3),
                ("batch_latency_max", "latency_max_ms", 1e-3),
            ):
                if batch[column] is not None:
                    metrics[key].add_metric(query, float(batch[column]) * scale)
        if state.ingest_attempted:
            metrics["ingest_error_ratio"].add_metric([], state.ingest_failed / state.ingest_attempted)
        for symbol in s.watchlist:
            ts = newest.get(symbol)
            if ts is None:
                metrics["bar_age"].add_metric([symbol], math.inf)
                continue
            metrics["bar_ts"].add_metric([symbol], _ts(ts))
            metrics["bar_age"].add_metric([symbol], max((now - (ts + timedelta(minutes=1))).total_seconds(), 0.0))

    def _kafka(self, metrics: dict[str, Metric]) -> None:
        s = self.settings
        bars = self.end_offsets(s.kafka_topic)
        if bars is not None:
            total = sum(bars.values())
            metrics["topic_messages"].add_metric([s.kafka_topic], float(total))
            done = checkpoint_offsets(s.stream_checkpoint, s.kafka_topic)
            lag = total if done is None else sum(max(end - done.get(p, 0), 0) for p, end in bars.items())
            metrics["lag"].add_metric([s.kafka_topic], float(lag))
        dlq = self.end_offsets(s.kafka_dlq_topic)
        if dlq is not None:
            total = float(sum(dlq.values()))
            metrics["topic_messages"].add_metric([s.kafka_dlq_topic], total)
            metrics["dlq"].add_metric([s.kafka_dlq_topic], total)

    def _redis(self) -> None:

        client = self.settings.redis_client(socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()

    def _airflow(self, metrics: dict[str, Metric]) -> None:
        from stockpipe.clients import airflow_client

        with airflow_client(self.settings, "viewer", timeout_s=TIMEOUT_S) as client:
            dags = client.get("/api/v2/dags", params={"limit": 100})
            dags.raise_for_status()
            for dag in dags.json().get("dags", []):
                dag_id = dag["dag_id"]
                runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"state": "failed", "limit": 1})
                runs.raise_for_status()
                metrics["dag_failed"].add_metric([dag_id], float(runs.json().get("total_entries", 0)))

    # -- the scrape -----------------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected live; nothing to register ahead

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        s = self.settings
        now = self._now()
        started = time.monotonic()
        query, symbol, topic = ["query"], ["symbol"], ["topic"]
        g, c = GaugeMetricFamily, CounterMetricFamily
        metrics: dict[str, Metric] = {
            "up": g("stockpipe_service_up", "1 if the service answered this scrape", labels=["service"]),
            "batch_ts": g(
                "stockpipe_stream_last_batch_timestamp_seconds", "Commit time of the newest micro-batch", labels=query
            ),
            "batch_age": g(
                "stockpipe_stream_last_batch_age_seconds",
                "Seconds since the newest micro-batch (+Inf: none)",
                labels=query,
            ),
            "progress_age": g(
                "stockpipe_stream_progress_age_seconds",
                "Seconds the streaming job has made no progress, as stream_health judges it (+Inf: never)",
                labels=query,
            ),
            "progress_limit": g(
                "stockpipe_stream_progress_limit_seconds",
                "The limit stream_health applies to that age now (batch age, first-batch grace or heartbeat)",
                labels=query,
            ),
            "batch_id": g("stockpipe_stream_last_batch_id", "Batch id of the newest micro-batch", labels=query),
            "batch_rows": g("stockpipe_stream_last_batch_rows", "Input rows of the newest micro-batch", labels=query),
            "batch_rows_per_s": g(
                "stockpipe_stream_last_batch_input_rows_per_second",
                "Input rate of the newest micro-batch",
                labels=query,
            ),
            "batch_processing": g(
                "stockpipe_stream_last_batch_processing_seconds",
                "Processing time of the newest micro-batch",
                labels=query,
            ),
            "batch_latency_p50": g(
                "stockpipe_stream_last_batch_latency_p50_seconds",
                "Bar fetch-to-commit latency p50, newest batch",
                labels=query,
            ),
            "batch_latency_p95": g(
                "stockpipe_stream_last_batch_latency_p95_seconds",
                "Bar fetch-to-commit latency p95, newest batch",
                labels=query,
            ),
            "batch_latency_max": g(
                "stockpipe_stream_last_batch_latency_max_seconds",
                "Bar fetch-to-commit latency max, newest batch",
                labels=query,
            ),
            "lag": g(
                "stockpipe_stream_lag_messages", "Messages of the bars topic the stream has not processed", labels=topic
            ),
            "topic_messages": c("stockpipe_kafka_topic_messages", "Sum of the topic's end offsets", labels=topic),
            "dlq": c("stockpipe_kafka_dlq_messages", "Dead letters written to the DLQ topic", labels=topic),
            "bar_ts": g("stockpipe_bar_newest_timestamp_seconds", "Start of the newest stored bar", labels=symbol),
            "bar_age": g(
                "stockpipe_bar_age_seconds", "Seconds since the newest stored bar ended (+Inf: none)", labels=symbol
            ),
            "ingest_error_ratio": g(
                "stockpipe_ingest_symbol_error_ratio_15m",
                "Failed share of market_ingest's symbol fetches over 15 minutes (ops.ingest_cycles)",
            ),
            "dag_failed": c(
                "stockpipe_airflow_dag_runs_failed", "Failed DAG runs (Airflow REST API)", labels=["dag_id"]
            ),
        }
        up: dict[str, float] = {}
        sources: list[tuple[str, Any]] = [
            ("postgres", lambda: self._postgres(now, metrics)),
            ("kafka", lambda: self._kafka(metrics)),
            ("redis", self._redis),
        ]
        if self.airflow:
            sources.append(("airflow", lambda: self._airflow(metrics)))
        for name, read in sources:
            try:
                read()
                up[name] = 1.0
            except Exception as error:  # one source down must not hide the others
                log.warning(
                    "%s not reachable: %s", name, str(error).splitlines()[0] if str(error) else type(error).__name__
                )
                up[name] = 0.0
        for name, value in up.items():
            metrics["up"].add_metric([name], value)
        yield from metrics.values()

        from stockpipe.calendar import trading_calendar
        from stockpipe.producer.plan import freshness_allowance_s

        session = trading_calendar(s.calendar_mode).session_at(now)
        yield g("stockpipe_market_session_open", "1 while the market trades", value=0.0 if session is None else 1.0)
        yield g(
            "stockpipe_market_session_elapsed_seconds",
            "Seconds since the current session opened (0 when closed)",
            value=0.0 if session is None else (now - session.open).total_seconds(),
        )
        for name, value, help_text in (
            ("stockpipe_health_max_batch_age_seconds", s.health_max_batch_age_s, "STOCKPIPE_HEALTH_MAX_BATCH_AGE_S"),
            ("stockpipe_health_max_lag_messages", s.health_max_lag_messages, "STOCKPIPE_HEALTH_MAX_LAG_MESSAGES"),
            (
                "stockpipe_health_max_bar_age_seconds",
                s.health_max_bar_age_s + freshness_allowance_s(s),  # + a delayed plan's 15 minutes
                "STOCKPIPE_HEALTH_MAX_BAR_AGE_S",
            ),
            ("stockpipe_health_max_dlq_growth", s.health_max_dlq_growth, "STOCKPIPE_HEALTH_MAX_DLQ_GROWTH"),
            ("stockpipe_health_max_api_error_rate", s.health_max_api_error_rate, "STOCKPIPE_HEALTH_MAX_API_ERROR_RATE"),
        ):
            yield g(name, f"Alert threshold from {help_text}", value=float(value))
        yield g("stockpipe_exporter_scrape_duration_seconds", "Time this scrape took", value=time.monotonic() - started)

    def close(self) -> None:
        self._admin = None  # an AdminClient has no close(): dropping it ends its threads and connections
        self._drop_pool()


def build_registry(settings: Settings, **kwargs: Any) -> tuple[CollectorRegistry, StockpipeCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = StockpipeCollector(settings, **kwargs)
    registry.register(collector)
    return registry, collector


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    from prometheus_client import start_http_server

    registry, collector = build_registry(settings)
    host = host or settings.metrics_host
    port = settings.exporter_port if port is None else port
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("stockpipe exporter on http://%s:%s/metrics", host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    collector.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stockpipe.monitoring.exporter", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", help="bind address (default STOCKPIPE_METRICS_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default STOCKPIPE_EXPORTER_PORT, 9109)")
    parser.add_argument("--once", action="store_true", help="print one scrape and exit")
    args = parser.parse_args(argv)
    settings = get_settings()
    # --once prints the scrape on stdout: the log goes to stderr
    setup_logging(settings.log_level, settings.log_json, stream=sys.stderr)
    if args.once:
        from prometheus_client import generate_latest

        registry, collector = build_registry(settings)
        print(generate_latest(registry).decode(), end="")
        collector.close()
        return
    serve(settings, args.host, args.port)


if __name__ == "__main__":
    main()
