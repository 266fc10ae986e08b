"""One producer cycle: for each watchlist symbol, fetch the closed minute bars since its checkpoint,
validate them, send them to Kafka, and advance the checkpoint only once Kafka confirmed delivery.

Guarantees:
- no gap: the checkpoint (last delivered bar per symbol, in Redis) moves only after delivery, so a
  restart, a skipped cycle or an outage is refilled by the next cycle;
- corrections and late bars are caught: each fetch re-reads an overlap of recent minutes and re-sends
  a bar only if it is new or its values changed (digest of what was sent, kept in Redis);
- every market-data HTTP call (pagination pages and retries included) first takes a slot from the
  shared Redis rate limiter, and a fetch's window ends at the last minute closed when its slot was
  granted (a wait for the limit never leaves the newest closed bar out);
- a symbol without a checkpoint starts at the open of the current (or last) session: one call covers
  the day, so a first start leaves no hole before it;
- with the polling plan (:mod:`stockpipe.producer.schedule`, the long-running loop's default) each
  symbol is fetched at its planned offset after the minute closes, within the rate limit, instead
  of the whole watchlist back to back;
- one failing symbol never stops the others;
- the market-data plan is learned from the answers and said once (:mod:`stockpipe.producer.plan`);
  on an end-of-day plan live ingest idles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from confluent_kafka import KafkaError, Producer

from stockpipe import clients, contract
from stockpipe.calendar import trading_calendar
from stockpipe.config import REDIS_META_KEY as META_KEY
from stockpipe.config import Settings
from stockpipe.producer import metrics, plan, schedule
from stockpipe.producer.limiter import NoSlot
from stockpipe.sources.polygon import Bar, NotEntitled, RetryableSourceError

log = logging.getLogger("stockpipe.producer")

CHECKPOINT_KEY = "stockpipe:producer:checkpoint"
#: Per symbol, the bars a push feed sent that Kafka never confirmed: ``"<oldest ts>|<newest ts>"``
#: (:mod:`stockpipe.producer.websocket`). While a symbol has a hole its checkpoint does not move to
#: or past it, and a fetch starts at the hole at the latest; a delivered fetch that covered it clears it.
HOLE_KEY = "stockpipe:producer:hole"
# The hole of KEYS[1] field ARGV[1] after the delivered fetch of [ARGV[2], ARGV[3]) (ARGV[3]: as far
# as the fetch delivered, see MarketProducer._covered): cleared when the fetch covered it, else it
# starts at ARGV[3] (the rest is still unconfirmed).
_CLEAR_HOLE_LUA = """
local hole = redis.call('HGET', KEYS[1], ARGV[1])
if not hole then return 0 end
local bar = string.find(hole, '|', 1, true)
local oldest, newest = string.sub(hole, 1, bar - 1), string.sub(hole, bar + 1)
if oldest < ARGV[2] then return 0 end
if newest < ARGV[3] then redis.call('HDEL', KEYS[1], ARGV[1]) return 1 end
if oldest < ARGV[3] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. '|' .. newest) end
return 0
"""
SENT_KEY = "stockpipe:producer:sent:{symbol}"


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
    deferred: bool = False  # no rate-limit slot at its planned time: its bars come with its next turn


@dataclass
class CycleSummary:
    results: list[SymbolResult] = field(default_factory=list)
    duration_s: float = 0.0
    idle: str | None = None  # why live ingest idled (the plan serves no recent minute bars)

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
        deferred = [r.symbol for r in self.results if r.deferred]
        if deferred:
            text += f", deferred {', '.join(deferred)} (no rate-limit slot at the planned time)"
        if self.failed:
            text += f", skipped {', '.join(self.failed)}"
        if self.idle:
            text += f"; idle: {self.idle}"
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
        market: clients.MarketSource | None = None,
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
        self.redis = redis_client or settings.redis_client(decode_responses=True)
        # the market-data API behind the shared rate limit and the one retry policy (stockpipe.clients)
        self.market = market or clients.market_source(settings, priority="live", sleep=sleep)
        self.calendar = trading_calendar(settings.calendar_mode)
        self.kafka = kafka_producer or clients.kafka_producer(
            settings, "producer", **{"message.timeout.ms": int(delivery_timeout_s * 1000)}
        )
        self._plan_key: tuple | None = None  # what the cached polling plan was made for
        self._plan: schedule.PollingPlan | None = None
        self._stale: dict[str, dict[str, float]] = {}
        self._stale_of: dict[tuple, dict[str, dict[str, float]]] = {}  # a backfill comes and goes: keep both
        self._turn_at: dict[str, float] = {}  # unix time of each symbol's last turn (fetched or failed)
        self._clear_hole = self.redis.register_script(_CLEAR_HOLE_LUA)

    # -- the plan ------------------------------------------------------------------------------
    def _learn_plan(self, which: plan.Plan) -> None:
        try:
            plan.record(self.redis, which, self.settings.source_name, self.clock())
        except redis.RedisError as error:  # knowing the plan is nice to have; prices must keep flowing
            log.warning("could not record the market-data plan in Redis: %s", error)

    # -- metadata ------------------------------------------------------------------------------
    def symbol_metadata(self, symbol: str) -> dict[str, Any] | None:
        """Ticker details, from Redis within the TTL, else from the API (then cached)."""
        key = META_KEY.format(symbol=symbol)
        cached = self._cached_metadata(symbol)
        if cached is not False:
            return cached
        details = self.market.ticker_details(symbol)
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

    def hole(self, symbol: str) -> datetime | None:
        """The oldest bar of ``symbol`` a push feed sent and Kafka never confirmed (:data:`HOLE_KEY`)."""
        value = self.redis.hget(HOLE_KEY, symbol)
        return contract.parse_ts(value.split("|", 1)[0]) if value else None

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
    def window_start(self, symbol: str, end: datetime) -> datetime:
        """Where the fetch of ``symbol``'s closed bars before ``end`` starts: an overlap before the bar
        after its checkpoint; without a checkpoint, the open of the session trading at ``end`` (or of
        the last one before it), or ``STOCKPIPE_BACKFILL_START_MINUTES`` back when that is set; at
        the latest at the symbol's hole (a bar Kafka never confirmed: :data:`HOLE_KEY`)."""
        start = self._checkpoint_start(symbol, end)
        hole = self.hole(symbol)
        return start if hole is None else min(start, hole)

    def _checkpoint_start(self, symbol: str, end: datetime) -> datetime:
        last = self.checkpoint(symbol)
        if last is not None:
            return min(last + timedelta(minutes=1) - self.overlap, end)
        if self.settings.backfill_start_minutes:
            return end - timedelta(minutes=self.settings.backfill_start_minutes)
        session = self.calendar.session_at(end - timedelta(minutes=1)) or self.calendar.previous_session(end)
        return min(session.open, end) if session is not None else end

    def _covered(self, symbol: str, start: datetime, end: datetime, newest: datetime | None) -> None:
        """The fetch of [start, end) is delivered, ``newest`` its newest bar (None: it returned
        none): a hole it covered is cleared (atomically: a hole recorded meanwhile outside the
        window stays) — only up to ``newest``'s minute: a minute after it may not be published over
        REST yet (a refill right after the push), and its bar would never be sent again. A minute
        older than the overlap before ``end`` counts as covered anyway (REST has no bar for it)."""
        settled = end - self.overlap
        upto = min(end, settled if newest is None else max(settled, newest + timedelta(minutes=1)))
        self._clear_hole(keys=[HOLE_KEY], args=[symbol, contract.format_ts(start), contract.format_ts(upto)])

    def _fetch(
        self, symbol: str, max_wait_s: float | None = None
    ) -> tuple[datetime, datetime, list[Bar], list[tuple[dict, str]]]:
        """One retried fetch of the closed bars since the checkpoint. The window's end is the last
        minute closed once the rate limiter granted the call (a long wait must not leave the bars
        that closed meanwhile out), taken again on every retry."""

        def attempt() -> tuple[datetime, datetime, list[Bar], list[tuple[dict, str]]]:
            if self.window_start(symbol, _floor_minute(self.clock())) >= _floor_minute(self.clock()):
                return self.clock(), self.clock(), [], []  # nothing closed since the checkpoint
            self.market.take_slot(max_wait_s)
            end = _floor_minute(self.clock())  # bars starting before `end` have closed
            start = self.window_start(symbol, end)
            unusable: list[tuple[dict, str]] = []
            bars = self.market.api.minute_bars(
                symbol, start, end - timedelta(minutes=1), on_bad_record=lambda r, why: unusable.append((r, why))
            )
            return start, end, [b for b in bars if start <= b.ts < end], unusable

        start, end, bars, unusable = self.market.call(attempt, f"bars of {symbol}")
        if start < end:
            self._learn_plan("delayed" if self.market.api.last_status == "DELAYED" else "real-time")
        return start, end, bars, unusable

    def produce_symbol(self, symbol: str, max_wait_s: float | None = None) -> SymbolResult:
        """Fetch and deliver ``symbol``'s closed bars since its checkpoint. ``max_wait_s``: the
        longest wait for the rate limit (:class:`~stockpipe.producer.limiter.NoSlot` beyond)."""
        result = SymbolResult(symbol)
        start, end, bars, unusable = self._fetch(symbol, max_wait_s)
        if start >= end:
            return result
        result.fetched = len(bars)
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for record, why in unusable:  # records without a timestamp can't be keyed: DLQ only
            origin = {"source": self.settings.source_name, "symbol": symbol}
            self.kafka.produce(
                self.settings.kafka_dlq_topic,
                key=symbol.encode(),
                value=contract.dead_letter(json.dumps(record), why, origin),
                on_delivery=on_delivery,
            )
            result.dead_letters += 1
        if not bars:
            self._flush_or_raise(symbol, errors)
            self._covered(symbol, start, end, None)
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
                    self.settings.kafka_dlq_topic,
                    key=symbol.encode(),
                    value=contract.dead_letter(contract.encode(message), reason, origin),
                    on_delivery=on_delivery,
                )
                result.dead_letters += 1
                log.warning("bar %s %s sent to the dead-letter topic: %s", symbol, ts_text, reason)
            else:
                self.kafka.produce(
                    self.settings.kafka_topic,
                    key=symbol.encode(),
                    value=contract.encode(message),
                    on_delivery=on_delivery,
                )
                result.sent += 1
            digests[ts_text] = digest
            self.kafka.poll(0)
        self._flush_or_raise(symbol, errors)
        newest = max(b.ts for b in bars)
        self._advance(symbol, newest, digests)
        self._covered(symbol, start, end, newest)
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

    def run_cycle(
        self,
        symbols: list[str] | None = None,
        *,
        calls: Sequence[schedule.Call] | None = None,
        metadata_calls: int | None = None,
        max_wait_s: float | None = None,
        rotate: bool = False,
    ) -> CycleSummary:
        """Bars first, metadata after: under a tight rate limit the first cycle's ticker-details
        calls must not hold up the prices. A symbol whose fetch returns nothing and whose details
        say it does not exist is reported as unknown. With ``calls`` (one minute of the polling
        plan, :meth:`run_planned_minute`) each symbol is fetched at its planned time; without, the
        symbols are fetched back to back. At most ``metadata_calls`` ticker details are refreshed
        (all when None); the others wait for a later cycle. With ``max_wait_s`` a symbol whose
        rate-limit slot is further away is deferred to its next turn (a planned call does not wait
        out another caller's slots: waiting would push every later call of the plan as well). With
        ``rotate`` (a plan with fewer calls than symbols) each call fetches the symbol whose last
        turn is the oldest (:meth:`_rotated`)."""
        started = time.monotonic()
        summary = CycleSummary()
        uncached: list[str] = []
        if calls is None:
            calls = [schedule.Call(0.0, symbol, 0.0) for symbol in symbols or self.settings.watchlist]
        for call in calls:
            self.wait_until(call.at)
            symbol = self._rotated(call, calls) if rotate else call.symbol
            taken = len(summary.results)
            try:
                cached = self._cached_metadata(symbol)
                if cached is None:
                    log.warning("unknown symbol %s: the market-data API has no ticker details; skipped", symbol)
                    summary.results.append(SymbolResult(symbol, error="unknown symbol"))
                    continue
                try:
                    result = self.produce_symbol(symbol, max_wait_s)
                except NoSlot:
                    summary.results.append(SymbolResult(symbol, deferred=True))
                    metrics.DEFERRED_FETCHES.inc()
                    continue
                if cached is False and result.fetched == 0 and self.symbol_metadata(symbol) is None:
                    log.warning("unknown symbol %s: the market-data API has no ticker details; skipped", symbol)
                    result.error = "unknown symbol"
                elif cached is False:
                    uncached.append(symbol)
                summary.results.append(result)
            except NotEntitled:
                # The plan serves no recent minute bars: the other symbols would be refused alike.
                self._learn_plan("end-of-day")
                summary.idle = plan.SENTENCES["end-of-day"]
                break
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
            finally:
                if len(summary.results) > taken and not summary.results[-1].deferred:
                    self._turn_at[symbol] = time.time()
        for symbol in uncached[:metadata_calls]:
            try:
                self.symbol_metadata(symbol)
            except (RetryableSourceError, NotEntitled) as error:  # prices are in; the details wait for the next cycle
                log.warning("ticker details of %s not refreshed this cycle: %s", symbol, error)
        summary.duration_s = time.monotonic() - started
        metrics.CYCLE_SECONDS.observe(summary.duration_s)
        log.info("%s", summary.line())
        return summary

    # -- the polling plan (STOCKPIPE_PRODUCER_POLICY=planned) -------------------------------------
    def wait_until(self, at: float) -> None:
        """Sleep (through ``sleep``, which may raise :class:`Stopping`) until unix time ``at`` on the clock."""
        delay = at - self.clock().timestamp()
        if delay > 0:
            self.sleep(delay)

    def polling_plan(self, *, publish: bool = True) -> schedule.PollingPlan:
        """The plan for the watchlist under the live budget: the whole rate limit, less the
        backfill's share while a backfill waits for the limiter. Published (Redis
        :data:`~stockpipe.producer.schedule.SCHEDULE_KEY`) for the dashboard and the backfill's
        priority unless ``publish`` is False (a one-off cycle: the long-running loop's plan is the
        one to give way to); logged when it changes."""
        limit = self.settings.rate_limit_per_minute
        try:
            waiting = bool(getattr(self.market.limiter, "backfill_waiting", lambda: False)())
        except redis.RedisError:
            waiting = False
        budget = schedule.live_budget(limit, backfill_waiting=waiting, share=self.settings.backfill_share)
        window = self.settings.rate_limit_window_s + self.settings.rate_limit_guard_s
        key = (tuple(self.settings.watchlist), budget, window)
        if self._plan_key != key:
            self._plan = schedule.PollingPlan(key[0], budget, window_s=window)
            self._plan_key = key
            if key not in self._stale_of:
                self._stale_of[key] = self._plan.stale_by_design()
            self._stale = self._stale_of[key]
            worst = max(v["max_s"] for v in self._stale.values())
            log.info(
                "polling plan: %d symbols, %d of %d calls/window live%s: %d calls a minute, %.1fs after the close "
                "then %.2fs apart%s; newest bar fetched at most %.0fs after its close",
                len(key[0]),
                budget,
                limit,
                " (a backfill waits)" if waiting else "",
                self._plan.per_minute,
                self._plan.lead_s,
                self._plan.spacing_s,
                f", drifting {self._plan.step_s:.2f}s a minute over {self._plan.cycle_minutes} minutes"
                if self._plan.drifting
                else "",
                worst,
            )
        if not publish:
            return self._plan
        try:
            schedule.publish(self.redis, self._plan, self._stale, policy="planned", limit=limit, now=self.clock())
        except redis.RedisError as error:  # the dashboard's hint is nice to have; prices must keep flowing
            log.warning("could not publish the polling plan in Redis: %s", error)
        return self._plan

    def _rotated(self, call: schedule.Call, calls: Sequence[schedule.Call]) -> str:
        """The symbol a rotating plan's ``call`` fetches: the one whose last turn is the oldest (a
        deferred call keeps its symbol first in line), ties in the plan's order. Under one budget
        this is the plan's own rotation; across a change of budget (a backfill starts or stops
        waiting) the plan's rotation starts elsewhere, and this keeps it fair."""
        ahead = [c.symbol for c in calls if c.at >= call.at]
        symbols = self._plan.symbols if self._plan else tuple(c.symbol for c in calls)
        order = {symbol: i for i, symbol in enumerate(dict.fromkeys([*ahead, *symbols]))}
        return min(order, key=lambda symbol: (self._turn_at.get(symbol, float("-inf")), order[symbol]))

    def run_planned_minute(self, minute: int, *, publish: bool = True) -> CycleSummary:
        """One cycle of the polling plan: the calls planned after minute ``minute`` (unix time // 60)
        closed, each at its time (``publish``: :meth:`polling_plan`). The plan is decided at that
        close, not when the cycle before ended: a backfill that began waiting meanwhile gets its
        share from this minute on, not from the next one."""
        self.wait_until(minute * schedule.MINUTE_S)
        plan = self.polling_plan(publish=publish)
        # ticker details (every STOCKPIPE_METADATA_TTL_S) take slots the plan did not count: one a
        # cycle unless the budget has spare calls, so a refresh of the watchlist delays no minute long
        return self.run_cycle(
            calls=plan.calls(minute),
            metadata_calls=max(1, plan.spare_per_minute),
            max_wait_s=plan.spacing_s,
            rotate=plan.per_minute < len(plan.symbols),
        )

    def close(self) -> None:
        self.kafka.flush(5)
