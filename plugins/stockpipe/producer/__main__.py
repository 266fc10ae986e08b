"""``python -m stockpipe.producer [--once] [--symbols A,B]``

Without ``--once`` it runs until stopped and serves Prometheus metrics on 127.0.0.1: by default
(``STOCKPIPE_PRODUCER_POLICY=planned``) one cycle a minute, each symbol fetched at its planned
offset after the minute closes (:mod:`stockpipe.producer.schedule`); with ``cycle`` the whole
watchlist back to back every ``STOCKPIPE_PRODUCER_INTERVAL_S`` seconds. ``--once`` runs one cycle
of the same policy and exits, non-zero when a symbol was skipped: with ``planned``, the calls the
plan makes after the minute that closed last, each at its planned time (those already due at
once), a call without a rate-limit slot deferred rather than waited for, and (with fewer calls than
symbols) only the symbols whose turn it is; it leaves the published plan to the long-running loop
(it may run beside it: the two share the checkpoints and the limiter). With ``cycle``, the whole
watchlist back to back (what Airflow's market_ingest task runs, in-process).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import start_http_server

from stockpipe.config import Settings, load_settings
from stockpipe.logs import setup_logging
from stockpipe.producer.core import CycleSummary, MarketProducer, Stopping
from stockpipe.producer.cycles import record_loop_cycle

log = logging.getLogger("stockpipe.producer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stockpipe.producer", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument("--symbols", help="comma-separated symbols (default: STOCKPIPE_WATCHLIST)")
    args = parser.parse_args(argv)

    overrides = {"watchlist": args.symbols} if args.symbols else {}
    settings = load_settings(**overrides)
    secrets = tuple(s for s in (settings.market_data_key,) if s)
    setup_logging(settings.log_level, settings.log_json, secrets)
    if settings.uses_simulator:
        log.info(
            "No MASSIVE_API_KEY (or POLYGON_API_KEY) set: using the market simulator at %s", settings.simulator_url
        )
    else:
        log.info("Using Massive (formerly Polygon.io) at %s", settings.polygon_base_url)
    log.info(
        "watchlist: %d symbols, %d API calls/min shared, %s",
        len(settings.watchlist),
        settings.rate_limit_per_minute,
        "each symbol at its planned offset after the minute closes"
        if settings.producer_policy == "planned"
        else f"the whole watchlist every {settings.producer_interval_s:.0f}s",
    )

    stop = threading.Event()

    def interruptible_sleep(seconds: float) -> None:
        # A rate-limit or retry wait must not hold up SIGTERM (supervisord would SIGKILL us).
        if stop.wait(seconds):
            raise Stopping()

    producer = MarketProducer(settings, sleep=interruptible_sleep)
    if args.once:
        if settings.producer_policy == "planned":  # the loop's first cycle: the minute that closed last
            summary = producer.run_planned_minute(int(producer.clock().timestamp() // 60), publish=False)
        else:
            summary = producer.run_cycle()
        producer.close()
        return 1 if summary.failed else 0

    if settings.producer_metrics_port:
        start_http_server(settings.producer_metrics_port, addr=settings.metrics_host)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cycles = planned_cycles if settings.producer_policy == "planned" else interval_cycles
    if settings.feed == "websocket":  # Massive pushes the bars; REST refills the gaps (stockpipe.producer.websocket)
        from stockpipe.producer.websocket import websocket_cycles as cycles
    for summary, started in cycles(producer, settings, stop):
        record_loop_cycle(settings, summary, started)  # one ops.ingest_cycles row; never raises
    producer.close()
    log.info("producer stopped")
    return 0


def interval_cycles(
    producer: MarketProducer, settings: Settings, stop: threading.Event
) -> Iterator[tuple[CycleSummary, datetime]]:
    """STOCKPIPE_PRODUCER_POLICY=cycle: the whole watchlist back to back every
    STOCKPIPE_PRODUCER_INTERVAL_S, a few seconds past the interval grid (the former policy)."""
    while not stop.is_set():
        started = datetime.now(UTC)
        try:
            summary = producer.run_cycle()
        except Stopping:
            return
        yield summary, started
        interval = settings.producer_interval_s
        # next tick on the interval grid, a few seconds past the minute so the last bar has closed
        wait = interval - (time.time() % interval) + min(2.0, interval / 10)
        stop.wait(wait)


def planned_cycles(
    producer: MarketProducer, settings: Settings, stop: threading.Event
) -> Iterator[tuple[CycleSummary, datetime]]:
    """STOCKPIPE_PRODUCER_POLICY=planned: one cycle per minute, each symbol fetched at its planned
    offset after the minute closed (stockpipe.producer.schedule). The first cycle is the minute
    that closed last (its late calls run at once: a catch-up); a cycle that ran past the next
    minute's calls (limiter waits, retries) goes on with the current minute, whose fetches bring
    whatever closed since each checkpoint."""
    minute = int(producer.clock().timestamp() // 60)
    while not stop.is_set():
        started = datetime.now(UTC)
        try:
            summary = producer.run_planned_minute(minute)
        except Stopping:
            return
        yield summary, started
        minute = max(minute + 1, int(producer.clock().timestamp() // 60))


if __name__ == "__main__":
    raise SystemExit(main())
