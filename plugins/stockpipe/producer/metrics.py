"""Prometheus metrics of the producer (served on 127.0.0.1 by the long-running loop)."""

from prometheus_client import Counter, Gauge, Histogram

API_CALLS = Counter("stockpipe_api_calls_total", "Market-data HTTP calls made (pages and retries included)")
API_RETRIES = Counter("stockpipe_api_retries_total", "Market-data calls retried")
RATE_LIMIT_WAIT = Counter("stockpipe_rate_limit_wait_seconds_total", "Seconds spent waiting for a rate-limit slot")
BARS_PRODUCED = Counter("stockpipe_bars_produced_total", "Bars delivered to Kafka", ["symbol"])
DEAD_LETTERS = Counter("stockpipe_producer_dead_letters_total", "Invalid bars sent to the dead-letter topic")
DEFERRED_FETCHES = Counter(
    "stockpipe_deferred_fetches_total", "Planned fetches deferred to the next turn: no rate-limit slot at their time"
)
SYMBOL_FAILURES = Counter("stockpipe_symbol_failures_total", "Symbols skipped in a cycle", ["reason"])
METADATA_CACHE_HITS = Counter("stockpipe_metadata_cache_hits_total", "Ticker details served from Redis")
CYCLE_SECONDS = Histogram(
    "stockpipe_producer_cycle_seconds", "Duration of one producer cycle", buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300)
)
LAST_SUCCESS = Gauge("stockpipe_last_success_timestamp_seconds", "Last successful produce per symbol", ["symbol"])
