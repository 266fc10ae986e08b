"""One producer cycle: for each watchlist symbol, fetch the closed minute bars since its checkpoint,
validate them, send them to Kafka, and advance the checkpoint only once Kafka confirmed delivery.

Guarantees:
- no gap: the checkpoint (last delivered bar per symbol, in Redis) moves only after delivery, so a
  restart, a skipped cycle or an outage is refilled by the next cycle;
- corrections and late bars are caught: each fetch re-reads an overlap of recent minutes and re-sends
  a bar only if it is new or its values changed (digest of what was sent, kept in Redis);
- every market-data HTTP call (pagination pages and retries included) first takes a slot from the
  shared Redis rate limiter;
- one failing symbol never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from confluent_kafka import KafkaError, Producer
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from stockpipe import clients, contract
from stockpipe.config import Settings
from stockpipe.producer import metrics
from stockpipe.producer.limiter import SharedRateLimiter
from stockpipe.sources.polygon import PolygonSource, RateLimited, RetryableSourceError

log = logging.getLogger("stockpipe.producer")

CHECKPOINT_KEY = "stockpipe:producer:checkpoint"
SENT_KEY = "stockpipe:producer:sent:{symbol}"
META_KEY = "stockpipe:meta:{symbol}"


class Stopping(BaseException):
    """Raised from a wait when the process is asked to stop; not an error, so not an Exception."""


class KafkaUnavailable(RuntimeError):
    """Kafka did not confirm delivery in time; checkpoints were not advanced."""


@dataclass
class SymbolResult:
    symbol: str
    fetched: int = 0
    sent: int = 0
    dead_letters: int = 0
    error: str | None = None


@dataclass
class CycleSummary:
    results: list[SymbolResult] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def sent(self) -> int:
        return sum(r.sent for r in self.results)

    @property
    def dead_letters(self) -> int:
        return sum(r.dead_letters for r in self.results)

    @property
    def failed(self) -> list[str]:
        return [r.symbol for r in self.results if r.error]

    def line(self) -> str:
        text = (
            f"cycle done in {self.duration_s:.1f}s: {len(self.results)} symbols, "
            f"{sum(r.fetched for r in self.results)} bars fetched, {self.sent} sent, "
            f"{self.dead_letters} dead letters"
        )
        if self.failed:
            text += f", skipped {', '.join(self.failed)}"
        return text


def _floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def _digest(message: dict[str, Any]) -> str:
    values = {k: message.get(k) for k in (*contract.PRICE_FIELDS, "volume", "vwap", "trades")}
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class MarketProducer:
    def __init__(
        self,
        settings: Settings,
        *,
        source: PolygonSource | None = None,
        kafka_producer: Producer | None = None,
        redis_client: redis.Redis | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        overlap_minutes: int = 5,
        delivery_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.overlap = timedelta(minutes=overlap_minutes)
        self.delivery_timeout_s = delivery_timeout_s
        self.redis = redis_client or redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.limiter = SharedRateLimiter(
            settings.redis_url,
            settings.rate_limit_per_minute,
            settings.market_data_key,
            window_s=settings.rate_limit_window_s,
            on_wait=lambda s: metrics.RATE_LIMIT_WAIT.inc(s),
            sleep=sleep,
        )
        self.source = source or PolygonSource(
            settings.market_data_key,
            base_url=settings.market_data_url,
            timeout=settings.http_timeout_s,
            before_call=self._before_call,
        )
        self.kafka = kafka_producer or clients.kafka_producer(
            settings, "producer", **{"message.timeout.ms": int(delivery_timeout_s * 1000)}
        )

    # -- market-data calls -------------------------------------------------------------------
    def _before_call(self) -> None:
        self.limiter.acquire()
        metrics.API_CALLS.inc()

    def _wait_for_retry(self, state: RetryCallState) -> float:
        """1 s, 2 s, 4 s (× retry_base_s); a 429's Retry-After wins when longer."""
        delay = self.settings.retry_base_s * (2 ** (state.attempt_number - 1))
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimited) and error.retry_after:
            delay = max(delay, error.retry_after * self.settings.retry_base_s)
        return delay

    def _with_retries(self, call: Callable[[], Any], what: str) -> Any:
        def before_sleep(state: RetryCallState) -> None:
            metrics.API_RETRIES.inc()
            log.warning(
                "%s failed (%s); retry %d in %.1fs",
                what, state.outcome.exception() if state.outcome else "?", state.attempt_number,
                state.next_action.sleep if state.next_action else 0,
            )

        retrying = Retrying(
            retry=retry_if_exception_type(RetryableSourceError),
            stop=stop_after_attempt(self.settings.retry_attempts + 1),
            wait=self._wait_for_retry,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(call)

    # -- metadata ------------------------------------------------------------------------------
    def symbol_metadata(self, symbol: str) -> dict[str, Any] | None:
        """Ticker details, from Redis within the TTL, else from the API (then cached)."""
        key = META_KEY.format(symbol=symbol)
        cached = self._cached_metadata(symbol)
        if cached is not False:
            return cached
        details = self._with_retries(lambda: self.source.ticker_details(symbol), f"ticker details of {symbol}")
        # An unknown symbol is cached too (as {}), so it doesn't cost a call every cycle.
        self.redis.set(key, json.dumps(details or {}), ex=self.settings.metadata_ttl_s or None)
        if details:
            self._store_metadata(symbol, details)
        return details

    def _store_metadata(self, symbol: str, details: dict[str, Any]) -> None:
        from stockpipe.storage.symbols import upsert_symbol

        try:
            upsert_symbol(self.settings, symbol, details, self.settings.source_name)
        except Exception as error:  # metadata in Postgres is nice to have; prices must keep flowing
            log.warning("could not store metadata of %s in PostgreSQL: %s", symbol, error)

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self, symbol: str) -> datetime | None:
        value = self.redis.hget(CHECKPOINT_KEY, symbol)
        return contract.parse_ts(value) if value else None

    def _advance(self, symbol: str, last_ts: datetime, digests: dict[str, str]) -> None:
        sent_key = SENT_KEY.format(symbol=symbol)
        horizon = contract.format_ts(last_ts - self.overlap - timedelta(minutes=1))
        pipe = self.redis.pipeline()
        pipe.hset(CHECKPOINT_KEY, symbol, contract.format_ts(last_ts))
        if digests:
            pipe.hset(sent_key, mapping=digests)
        pipe.execute()
        stale = [ts for ts in self.redis.hkeys(sent_key) if ts < horizon]
        if stale:
            self.redis.hdel(sent_key, *stale)

    # -- one symbol ----------------------------------------------------------------------------
    def produce_symbol(self, symbol: str, now: datetime) -> SymbolResult:
        result = SymbolResult(symbol)
        end = _floor_minute(now)  # bars starting before `end` have closed
        last = self.checkpoint(symbol)
        if last is None:
            start = end - timedelta(minutes=self.settings.backfill_start_minutes)
        else:
            start = min(last + timedelta(minutes=1) - self.overlap, end)
        if start >= end:
            return result
        unusable: list[tuple[dict, str]] = []
        bars = self._with_retries(
            lambda: self.source.minute_bars(
                symbol, start, end - timedelta(minutes=1), on_bad_record=lambda r, why: unusable.append((r, why))
            ),
            f"bars of {symbol}",
        )
        bars = [b for b in bars if start <= b.ts < end]
        result.fetched = len(bars)
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for record, why in unusable:  # records without a timestamp can't be keyed: DLQ only
            origin = {"source": self.settings.source_name, "symbol": symbol}
            self.kafka.produce(self.settings.kafka_dlq_topic, key=symbol.encode(),
                               value=contract.dead_letter(json.dumps(record), why, origin), on_delivery=on_delivery)
            result.dead_letters += 1
        if not bars:
            self._flush_or_raise(symbol, errors)
            return result
        fetched_at = self.clock()
        sent = self.redis.hgetall(SENT_KEY.format(symbol=symbol))
        digests: dict[str, str] = {}
        for bar in bars:
            message = bar.to_message(self.settings.source_name, fetched_at)
            ts_text = message["ts"]
            digest = _digest(message)
            if sent.get(ts_text) == digest:
                continue  # already sent with these values
            reason = contract.invalid_reason(message, self.settings)
            if reason:
                origin = {"source": self.settings.source_name, "symbol": symbol, "ts": ts_text}
                self.kafka.produce(
                    self.settings.kafka_dlq_topic, key=symbol.encode(),
                    value=contract.dead_letter(contract.encode(message), reason, origin), on_delivery=on_delivery,
                )
                result.dead_letters += 1
                log.warning("bar %s %s sent to the dead-letter topic: %s", symbol, ts_text, reason)
            else:
                self.kafka.produce(
                    self.settings.kafka_topic, key=symbol.encode(), value=contract.encode(message),
                    on_delivery=on_delivery,
                )
                result.sent += 1
            digests[ts_text] = digest
            self.kafka.poll(0)
        self._flush_or_raise(symbol, errors)
        self._advance(symbol, max(b.ts for b in bars), digests)
        metrics.BARS_PRODUCED.labels(symbol).inc(result.sent)
        metrics.DEAD_LETTERS.inc(result.dead_letters)
        metrics.LAST_SUCCESS.labels(symbol).set(time.time())
        return result

    def _flush_or_raise(self, symbol: str, errors: list[str]) -> None:
        remaining = self.kafka.flush(self.delivery_timeout_s)
        if remaining or errors:
            # Undelivered messages must not trickle out later: the next cycle sends them again.
            self.kafka.purge()
            self.kafka.flush(1)
            raise KafkaUnavailable(
                f"Kafka at {self.settings.kafka_bootstrap} did not confirm {remaining or len(errors)} "
                f"message(s) of {symbol} ({errors[0] if errors else 'timeout'}); checkpoint kept"
            )

    # -- one cycle -----------------------------------------------------------------------------
    def _cached_metadata(self, symbol: str) -> dict[str, Any] | None | bool:
        """Ticker details from Redis: a dict, None (known to be unknown), or False (not cached)."""
        cached = self.redis.get(META_KEY.format(symbol=symbol))
        if cached is None:
            return False
        metrics.METADATA_CACHE_HITS.inc()
        return json.loads(cached) or None

    def run_cycle(self, symbols: list[str] | None = None) -> CycleSummary:
        """Bars first, metadata after: under a tight rate limit the first cycle's ticker-details
        calls must not hold up the prices. A symbol whose fetch returns nothing and whose details
        say it does not exist is reported as unknown."""
        started = time.monotonic()
        now = self.clock()
        summary = CycleSummary()
        uncached: list[str] = []
        for symbol in symbols or self.settings.watchlist:
            try:
                cached = self._cached_metadata(symbol)
                if cached is None:
                    log.warning("unknown symbol %s: the market-data API has no ticker details; skipped", symbol)
                    summary.results.append(SymbolResult(symbol, error="unknown symbol"))
                    continue
                result = self.produce_symbol(symbol, now)
                if cached is False and result.fetched == 0 and self.symbol_metadata(symbol) is None:
                    log.warning("unknown symbol %s: the market-data API has no ticker details; skipped", symbol)
                    result.error = "unknown symbol"
                elif cached is False:
                    uncached.append(symbol)
                summary.results.append(result)
            except KafkaUnavailable as error:
                log.error("%s", error)
                summary.results.append(SymbolResult(symbol, error="kafka unavailable"))
                metrics.SYMBOL_FAILURES.labels("kafka").inc()
                break  # the other symbols would fail the same way; the next cycle catches up
            except RetryableSourceError as error:
                log.warning("skipping %s this cycle after %d retries: %s", symbol, self.settings.retry_attempts, error)
                summary.results.append(SymbolResult(symbol, error=str(error)))
                metrics.SYMBOL_FAILURES.labels("api").inc()
            except Exception as error:  # one symbol's surprise must not stop the others
                log.exception("skipping %s this cycle: %s", symbol, error)
                summary.results.append(SymbolResult(symbol, error=str(error)))
                metrics.SYMBOL_FAILURES.labels("other").inc()
        for symbol in uncached:
            try:
                self.symbol_metadata(symbol)
            except RetryableSourceError as error:  # prices are in; the details wait for the next cycle
                log.warning("ticker details of %s not refreshed this cycle: %s", symbol, error)
        summary.duration_s = time.monotonic() - started
        metrics.CYCLE_SECONDS.observe(summary.duration_s)
        log.info("%s", summary.line())
        return summary

    def close(self) -> None:
        self.kafka.flush(5)
