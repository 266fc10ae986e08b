"""The WebSocket feed (``STOCKPIPE_FEED=websocket``): Massive pushes every minute bar as an ``AM``
event at the minute close; the producer validates it and sends it to ``stock-prices``.

One connection (Massive allows one per cluster) through the official ``massive.WebSocketClient``
(:func:`stockpipe.clients.market_websocket`), on the real-time or the delayed cluster
(``STOCKPIPE_WEBSOCKET_CLUSTER``), subscribed to ``AM.<symbol>`` for the watchlist or ``AM.*``
(``STOCKPIPE_WEBSOCKET_SYMBOLS``).

Guarantees, as the REST feed's (:mod:`stockpipe.producer.core`):

- the same contract, validation and dead letters (:mod:`stockpipe.contract`; a frame that is not
  JSON, an event that is no object or has no start time is a dead letter with its reason), and the
  same idempotent Kafka producer (:func:`stockpipe.clients.kafka_producer`);
- the per-symbol checkpoint (Redis :data:`~stockpipe.producer.core.CHECKPOINT_KEY`, the REST
  feed's) moves only once Kafka confirmed the frame, and only forward; a bar Kafka never confirmed
  is its symbol's hole (:data:`~stockpipe.producer.core.HOLE_KEY`): the checkpoint stays before it
  and the refill starts at it, until a refill delivered it (newer frames confirmed meanwhile must not
  carry the checkpoint past it, or the refill, reading from the checkpoint, would never resend it);
- no gap: after every (re)connection, once the server acknowledged the subscription, each symbol
  is refilled over REST from its checkpoint with :meth:`MarketProducer.produce_symbol` (through
  the shared rate limiter); a frame Kafka did not confirm is refilled the same way. Duplicates
  are harmless: the stream keeps the bar with the latest ``fetched_at``;
- a lost connection is noticed: closed by the server or the network (reconnect after 1, 2, 4 …
  :data:`BACKOFF_MAX_S` s), or silent for ``STOCKPIPE_WEBSOCKET_STALL_S`` during a session (closed
  by us, then the same).

Messages say where they came from: ``source`` is ``<source>-websocket`` (``simulator-websocket``,
``polygon-websocket``); a refilled bar carries the REST feed's. ``AM`` events carry no trade count
(``trades`` stays empty; a REST refill of the minute brings it). Each minute yields one summary
(bars sent, dead letters) for ``ops.ingest_cycles``, like a REST cycle.

A whole-market burst (``AM.*``: ~10,000 events at each minute close, in frames of many events)
goes to Kafka at tens of thousands of events a second: frames are parsed with ``msgspec`` (the
standard ``json`` module when ``msgspec`` refuses one, e.g. ``NaN``), each event becomes its
contract message without intermediate objects (:func:`am_message`'s result, ``ts`` and
``fetched_at`` formatted once per minute and frame), is checked by the contract's compiled Python
engine (:mod:`stockpipe.contract_compiled`, the same rules and reasons) and sent at once; Kafka's
confirmation of a frame is awaited by a separate thread (:meth:`WebSocketFeed._confirm_loop`), so
the next frame is read while the previous ones are still in flight. The producer reports only
failed deliveries (``delivery.report.only.error``): a frame is confirmed once a flush after it left
nothing unsent and none of its messages failed; otherwise its symbols are refilled.
The service freezes its start-up heap (:func:`settle_heap`) so that a burst's allocations do not
set off full garbage collections.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from confluent_kafka import KafkaError
from massive.exceptions import AuthError

from stockpipe import clients, contract
from stockpipe.config import Settings
from stockpipe.contract import SYMBOL_RE
from stockpipe.contract_compiled import compiled_check
from stockpipe.producer import metrics, plan
from stockpipe.producer.core import (
    CHECKPOINT_KEY,
    HOLE_KEY,
    CycleSummary,
    KafkaUnavailable,
    MarketProducer,
    Stopping,
    SymbolResult,
)
from stockpipe.sources.polygon import NotEntitled

log = logging.getLogger("stockpipe.producer.websocket")

BACKOFF_MAX_S = 30.0
#: A connection that lived this long was healthy: the next reconnect starts the backoff anew.
HEALTHY_AFTER_S = 30.0
#: Without the subscription's acknowledgement this long after connecting, refill anyway.
ACK_TIMEOUT_S = 10.0
#: Largest frame accepted (AM.* bursts are batched by the server; the client's default is 1 MiB).
MAX_FRAME_BYTES = 64 * 2**20
DELAYED_S = 15 * 60
#: Messages awaiting Kafka's confirmation beyond which the next frame waits (librdkafka's queue
#: holds 100,000 by default: a longer Kafka outage must slow the reading, not fail the produce).
MAX_UNCONFIRMED = 50_000
#: The range of an AM event's ``s`` (ms) taken for a time, 1970 to 9999 (the contract refuses any
#: bar before 1970 anyway); beyond it the conversion raises (OSError, OverflowError, ValueError).
MIN_START_MS, MAX_START_MS = 0, 253402300740000
#: With ``AM.*``, input no symbol can be tied to (a frame that is not JSON or nested too deeply, an
#: ``AM`` event whose ``sym`` is no string) refills every symbol — ~10,000 rate-limited REST calls —
#: at most once in this long: a hostile frame each minute must not keep the REST budget busy.
UNKNOWN_REFILL_INTERVAL_S = 15 * 60
_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()

# First the holes (HOLE_KEY, KEYS[2]): ARGV[1] symbols, each with the oldest and the newest bar of
# it that Kafka did not confirm, merged into its hole; then the checkpoints (KEYS[1]): pairs of
# symbol and newest confirmed bar. A checkpoint only moves forward (a refill that finished after a
# newer pushed bar must not pull one back), and never to or past its symbol's hole: the refill
# reads from the checkpoint, and a bar behind it would never be sent again.
_ADVANCE_LUA = """
local n = tonumber(ARGV[1])
for i = 2, 3 * n + 1, 3 do
  local oldest, newest = ARGV[i + 1], ARGV[i + 2]
  local hole = redis.call('HGET', KEYS[2], ARGV[i])
  if hole then
    local bar = string.find(hole, '|', 1, true)
    local o, w = string.sub(hole, 1, bar - 1), string.sub(hole, bar + 1)
    if o < oldest then oldest = o end
    if w > newest then newest = w end
  end
  redis.call('HSET', KEYS[2], ARGV[i], oldest .. '|' .. newest)
end
local holes = redis.call('HLEN', KEYS[2]) > 0
for i = 3 * n + 2, #ARGV, 2 do
  local hole = holes and redis.call('HGET', KEYS[2], ARGV[i])
  if (not hole) or ARGV[i + 1] < string.sub(hole, 1, string.find(hole, '|', 1, true) - 1) then
    local current = redis.call('HGET', KEYS[1], ARGV[i])
    if (not current) or current < ARGV[i + 1] then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  end
end
return 0
"""
ALL = None  # a refill of every symbol


def am_message(
    event: dict[str, Any], source: str, fetched_at: datetime | str, ts_texts: dict[int, str] | None = None
) -> dict[str, Any]:
    """The contract message of one ``AM`` event (``sym o h l c v vw s``), as
    :meth:`~stockpipe.sources.polygon.Bar.to_message` makes it; ValueError when ``s`` (the minute's
    start, ms) is not an integer: without it the bar has no identity. ``fetched_at`` may be given
    already formatted and ``ts_texts`` caches the formatted starts (a burst shares one minute)."""
    start_ms = event.get("s")
    if start_ms.__class__ is not int:  # bool is not int here
        raise ValueError("AM event without an integer 's' (the minute's start in ms)")
    if not MIN_START_MS <= start_ms <= MAX_START_MS:
        raise ValueError("AM event's 's' (the minute's start in ms) is not a time from 1970 to 9999")
    ts = ts_texts.get(start_ms) if ts_texts is not None else None
    if ts is None:
        ts = contract.format_ts(datetime.fromtimestamp(start_ms / 1000, UTC))
        if ts_texts is not None:
            if len(ts_texts) > 1024:
                ts_texts.clear()
            ts_texts[start_ms] = ts
    return {
        "v": contract.VERSION,
        "symbol": event.get("sym"),
        "ts": ts,
        "open": event.get("o"),
        "high": event.get("h"),
        "low": event.get("l"),
        "close": event.get("c"),
        "volume": event.get("v"),
        "vwap": event.get("vw"),
        "trades": None,  # AM has the average trade size (z), not the count
        "source": source,
        "fetched_at": fetched_at if isinstance(fetched_at, str) else contract.format_fetched_at(fetched_at),
    }


def decode_frame(frame: str | bytes) -> Any:
    """A frame's JSON value: ``msgspec`` (fast), else the ``json`` module (``NaN``, ``1e400``, a lone
    surrogate: what msgspec refuses and ``json`` reads); ValueError when it is not JSON or nested
    too deeply to read (both readers raise RecursionError)."""
    try:
        try:
            return _DECODER.decode(frame)
        except msgspec.MsgspecError:
            return json.loads(frame)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


class _Frame:
    """One frame's messages on their way: (symbol, ts) to checkpoint, and whether any failed."""

    __slots__ = ("errors", "sent")

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def delivered(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:  # with delivery.report.only.error, only failures come here
            self.errors.append(str(error))


class WebSocketFeed:
    """The push feed: :meth:`run` until ``stop`` is set. ``rest`` is the REST producer the gaps are
    refilled with (its rate limiter, checkpoints and Kafka producer)."""

    def __init__(
        self,
        settings: Settings,
        *,
        rest: MarketProducer | None = None,
        kafka_producer: Any = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        delivery_timeout_s: float = 30.0,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.settings = settings
        self.rest = rest or MarketProducer(settings)
        self.redis = self.rest.redis
        self.clock = clock
        self.delivery_timeout_s = delivery_timeout_s
        self.backoff_max_s = backoff_max_s
        # only failed deliveries are reported: a frame is confirmed by a flush (see _confirm_loop)
        self.kafka = kafka_producer or clients.kafka_producer(
            settings,
            "producer",
            **{"message.timeout.ms": int(delivery_timeout_s * 1000), "delivery.report.only.error": True},
        )
        self.source = f"{settings.source_name}-websocket"
        self._policy = contract.Policy.from_settings(settings)
        self._check = compiled_check(self._policy)
        self._ts_texts: dict[int, str] = {}
        self._unconfirmed: queue.Queue[_Frame] = queue.Queue()
        self._produced_metric: dict[str, Any] = {}
        self._success_metric: dict[str, Any] = {}
        self.delay = timedelta(seconds=DELAYED_S if settings.websocket_cluster == "delayed" else 0)
        self._advance_script = self.redis.register_script(_ADVANCE_LUA)
        # holes not yet in Redis (the script call that was to record them failed): in the next call
        self._pending_holes: dict[str, list[str]] = {}
        self.stats = {"connections": 0, "frames": 0, "sent": 0, "dead_letters": 0, "refills": 0, "refilled_bars": 0}
        self.minutes: queue.Queue[tuple[CycleSummary, datetime]] = queue.Queue()
        self._minute_results: dict[str, SymbolResult] = {}
        self._minute_started = self.clock()
        self._lock = threading.Lock()
        self._refill_wanted = threading.Event()
        self._refill_symbols: set[str] | None = set()
        self._unknown_refill_at: float | None = None  # monotonic: the last _refill_unknown() that refilled all
        self._last_frame = time.monotonic()
        self._acknowledged = False
        self._stop = threading.Event()

    # -- what to subscribe -------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        if self.settings.websocket_symbols == "all":
            return ["AM.*"]
        return [f"AM.{symbol}" for symbol in self.settings.watchlist]

    # -- running ------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Connect, stream, reconnect and refill until ``stop`` is set."""
        self._stop = stop
        refiller = threading.Thread(target=self._refill_loop, name="websocket-refill", daemon=True)
        refiller.start()
        confirmer = threading.Thread(target=self._confirm_loop, name="websocket-confirm", daemon=True)
        confirmer.start()
        try:
            asyncio.run(self._connections())
        finally:
            stop.set()
            confirmer.join(self.delivery_timeout_s + 10)
            refiller.join(10)
            self._report_minute()
            self.kafka.flush(5)

    async def _connections(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            client = clients.market_websocket(self.settings, self.subscriptions())
            self._acknowledged = False
            self._last_frame = connected_at = time.monotonic()
            self.stats["connections"] += 1
            log.info("WebSocket: connecting to %s (%s)", client.url, ", ".join(self.subscriptions()[:5]))
            streaming = asyncio.create_task(client.connect(self._on_frame, max_size=MAX_FRAME_BYTES))
            watching = asyncio.create_task(self._watch(client, streaming, connected_at))
            try:
                await streaming
                log.warning("WebSocket: connection closed")
            except asyncio.CancelledError:
                pass
            except AuthError as error:
                log.error(
                    "WebSocket: Massive refused the key (%s): the plan must include this cluster "
                    "(STOCKPIPE_WEBSOCKET_CLUSTER=delayed for Starter) or use STOCKPIPE_FEED=rest",
                    error,
                )
                backoff = max(backoff, 60.0)
            except Exception as error:
                log.warning("WebSocket: connection lost: %s", error or type(error).__name__)
            finally:
                watching.cancel()
            if self._stop.is_set():
                break
            if time.monotonic() - connected_at > HEALTHY_AFTER_S:
                backoff = 1.0
            log.info("WebSocket: reconnecting in %.0fs", backoff)
            await self._sleep(backoff)
            backoff = min(backoff * 2, max(self.backoff_max_s, backoff))

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.2, deadline - time.monotonic()))

    async def _watch(self, client: Any, streaming: asyncio.Task, connected_at: float) -> None:
        """Stop, a stalled connection, a missing acknowledgement, the minute's summary."""
        while True:
            await asyncio.sleep(0.2)
            if self._stop.is_set():
                if client.websocket is not None:
                    await client.close()
                streaming.cancel()
                return
            now = time.monotonic()
            if self.clock() - self._minute_started >= timedelta(minutes=1):
                self._report_minute()
            if client.websocket is None:
                continue  # (re)connecting
            if not self._acknowledged and now - connected_at > ACK_TIMEOUT_S:
                log.warning("WebSocket: no subscription acknowledgement after %.0fs; refilling anyway", ACK_TIMEOUT_S)
                self._subscribed()
            if now - self._last_frame > self.settings.websocket_stall_s and self._in_session():
                log.warning(
                    "WebSocket: silent for %.0fs during a session (STOCKPIPE_WEBSOCKET_STALL_S): reconnecting",
                    now - self._last_frame,
                )
                await client.close()
                return

    def _in_session(self) -> bool:
        moment = self.clock() - self.delay - timedelta(minutes=1)
        return self.rest.calendar.session_at(moment) is not None

    def _subscribed(self) -> None:
        """The subscription is live: refill every symbol from its checkpoint (the gap before it)."""
        self._acknowledged = True
        self.request_refill(ALL)
        try:
            plan.record(self.redis, "delayed" if self.delay else "real-time", self.settings.source_name, self.clock())
        except Exception as error:  # knowing the plan is nice to have
            log.warning("could not record the market-data plan in Redis: %s", error)

    # -- frames -------------------------------------------------------------------------------
    async def _on_frame(self, frame: str | bytes) -> None:
        self._last_frame = time.monotonic()
        self.stats["frames"] += 1
        while len(self.kafka) > MAX_UNCONFIRMED and not self._stop.is_set():
            await asyncio.to_thread(self.kafka.poll, 0.1)  # Kafka is slow or away: read no further
        fetched_at = contract.format_fetched_at(self.clock())
        now_us = contract.to_micros(datetime.now(UTC))  # the contract's clock (invalid_reason's)
        pending = _Frame()
        produced_before = self.stats["sent"] + self.stats["dead_letters"]
        try:
            events = decode_frame(frame)
        except ValueError as error:
            self._dead_letter(frame, f"WebSocket frame is not JSON ({error})", {"source": self.source}, pending)
            self._refill_unknown()  # whose bars it carried is unknown
            events = []
        if not isinstance(events, list):
            events = [events]
        sent_symbols: list[str] = []
        produce, topic, check, source = self.kafka.produce, self.settings.kafka_topic, self._check, self.source
        for event in events:
            try:
                if not isinstance(event, dict):
                    self._dead_letter(
                        json.dumps(event), "WebSocket event is not a JSON object", {"source": self.source}, pending
                    )
                    continue
                kind = event.get("ev")
                if kind == "AM":
                    try:
                        message = am_message(event, source, fetched_at, self._ts_texts)
                    except ValueError as error:
                        symbol = event.get("sym")
                        origin = {"source": source, "symbol": symbol}
                        self._dead_letter(json.dumps(event), str(error), origin, pending)
                        self._refill_of(symbol)
                        continue
                    reason = check(message, now_us)
                    symbol = message["symbol"]
                    if reason is None:  # a valid message has a ticker as its symbol
                        value = _ENCODER.encode(message)
                        produce(topic, key=symbol.encode(), value=value, on_delivery=pending.delivered)
                        sent_symbols.append(symbol)
                        pending.sent.append((symbol, message["ts"]))
                    else:
                        self._invalid(message, reason, pending)
                elif kind == "status":
                    self._status(event)
            except Exception as error:  # a hostile event (e.g. too deep to encode): its dead letter, then the next
                self._unreadable(event, error, pending)
        self.kafka.poll(0)
        if sent_symbols:
            self.stats["sent"] += len(sent_symbols)
            self._count_sent(sent_symbols)
        if self.stats["sent"] + self.stats["dead_letters"] > produced_before:
            self._unconfirmed.put(pending)

    def _status(self, event: dict[str, Any]) -> None:
        status, message = event.get("status"), event.get("message")
        if status == "success":
            log.info("WebSocket: %s", message)
            if not self._acknowledged and str(message).startswith("subscribed to"):
                self._subscribed()
        else:
            log.warning("WebSocket: server says %s: %s", status, message)

    def _invalid(self, message: dict[str, Any], reason: str, pending: _Frame) -> None:
        """A bar the contract refuses: its dead letter with the reason; its minute refilled over REST."""
        symbol = message["symbol"]
        key = symbol.encode(errors="replace") if isinstance(symbol, str) else None  # a lone surrogate: '?'
        origin = {"source": self.source, "symbol": symbol, "ts": message["ts"]}
        self._dead_letter(contract.encode(message), reason, origin, pending, key=key)
        log.warning("bar %s %s sent to the dead-letter topic: %s", symbol, message["ts"], reason)
        # Not checkpointed: the refill from the checkpoint covers its minute (the REST aggregate
        # may be sound); a bar years ahead must not pin its checkpoint in the future.
        if self._refillable(symbol):
            self.request_refill({symbol})

    def _refill_of(self, symbol: Any) -> None:
        """The refill of a dead-lettered event's bar: its symbol's, if the symbol rules accept it;
        every symbol's when it has no symbol (whose bar it was is unknown: :meth:`_refill_unknown`);
        none for a symbol the contract refuses (it has no bar to refill)."""
        if self._refillable(symbol):
            self.request_refill({symbol})
        elif not isinstance(symbol, str):
            self._refill_unknown()

    def _refill_unknown(self) -> None:
        """The refill after input no symbol can be tied to: every symbol's. With ``AM.*`` at most
        one per :data:`UNKNOWN_REFILL_INTERVAL_S` (a refill of all is ~10,000 REST calls); within
        that time such input is only a dead letter (which holds it) and a warning: a refill put off
        beyond the checkpoints' overlap would not reach its minute anyway. With a watchlist every
        time (a refill of all is the watchlist, what one REST cycle fetches)."""
        if self.settings.websocket_symbols == "all":
            now = time.monotonic()
            if self._unknown_refill_at is not None and now - self._unknown_refill_at < UNKNOWN_REFILL_INTERVAL_S:
                log.warning(
                    "input no symbol can be tied to: not refilled (a refill of all was requested for such %.0fs ago)",
                    now - self._unknown_refill_at,
                )
                return
            self._unknown_refill_at = now
        self.request_refill(ALL)

    def _refillable(self, symbol: Any) -> bool:
        """A symbol the contract's symbol rules accept: only those are refilled (and so get a
        checkpoint); an invalid or unlisted one would cost REST calls at every refill of all."""
        if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
            return False
        return self._policy.symbols is None or symbol in self._policy.symbols

    def _unreadable(self, event: Any, error: Exception, pending: _Frame) -> None:
        """An event that broke its own handling: its dead letter with the reason (what of it can be
        written out), its bar refilled (:meth:`_refill_of`); the rest of the frame goes on."""
        try:
            raw = json.dumps(event)
        except Exception:  # too deep, or not encodable at all
            raw = ""
        reason = f"WebSocket event could not be handled ({type(error).__name__}: {error})"
        log.warning("%s", reason)
        symbol = event.get("sym") if isinstance(event, dict) else None
        self._dead_letter(raw, reason, {"source": self.source}, pending)
        self._refill_of(symbol)

    def _dead_letter(
        self, raw: str | bytes, reason: str, origin: dict, pending: _Frame, *, key: bytes | None = None
    ) -> None:
        value = contract.dead_letter(raw, reason, origin)
        self.kafka.produce(self.settings.kafka_dlq_topic, key=key, value=value, on_delivery=pending.delivered)
        self.stats["dead_letters"] += 1
        metrics.DEAD_LETTERS.inc()
        self._count(str(origin.get("symbol") or "?"), dead_letters=1)

    # -- Kafka's confirmation -----------------------------------------------------------------
    def _confirm_loop(self) -> None:
        """Confirm the frames in order, many at a time, until the feed stops and none is left."""
        while True:
            try:
                frames = [self._unconfirmed.get(timeout=0.05)]
            except queue.Empty:
                if self._stop.is_set() and self._unconfirmed.empty():
                    return
                continue
            while True:
                try:
                    frames.append(self._unconfirmed.get_nowait())
                except queue.Empty:
                    break
            try:
                self._confirm(frames)
            except Exception as error:  # e.g. Redis away: the checkpoints stay, the holes wait in memory
                log.exception("confirming %d frame(s) failed: %s", len(frames), error)
                self.request_refill({symbol for frame in frames for symbol, _ in frame.sent})

    def _confirm(self, frames: list[_Frame]) -> None:
        """Wait until Kafka confirmed ``frames`` (every message produced before them too), then move
        their checkpoints; a frame with a failed message, or all of them after a timeout, is
        refilled instead, its bars recorded as their symbols' holes (in the same script: no
        checkpoint moves to or past a hole) by :meth:`_record`."""
        remaining = self._drain()
        failed = frames if remaining else [frame for frame in frames if frame.errors]
        holes: dict[str, list[str]] = {}  # symbol: [oldest, newest] not confirmed
        for frame in failed:
            for symbol, ts in frame.sent:
                hole = holes.get(symbol)
                if hole is None:
                    holes[symbol] = [ts, ts]
                elif ts < hole[0]:
                    hole[0] = ts
                elif ts > hole[1]:
                    hole[1] = ts
        if failed:
            errors = [error for frame in failed for error in frame.errors]
            log.error(
                "Kafka at %s did not confirm %d message(s) (%s); checkpoints kept, the symbols are refilled over REST",
                self.settings.kafka_bootstrap,
                remaining or len(errors),
                errors[0] if errors else "timeout",
            )
        newest: dict[str, str] = {}
        for frame in frames:
            if remaining or frame.errors:
                continue
            for symbol, ts in frame.sent:
                current = newest.get(symbol)
                if current is None or ts > current:
                    newest[symbol] = ts
        self._record(holes, newest)
        if newest:
            stamp = time.time()
            gauges = self._success_metric
            for symbol in newest:
                gauge = gauges.get(symbol)
                if gauge is None:
                    gauge = gauges[symbol] = metrics.LAST_SUCCESS.labels(symbol)
                gauge.set(stamp)

    def _record(self, holes: dict[str, list[str]], newest: dict[str, str]) -> None:
        """One script call: ``holes`` (symbol: [oldest, newest] unconfirmed), with those a failed
        call left (:attr:`_pending_holes`, dropped only once a call succeeded), then the checkpoints
        ``newest``. A failed call moved no checkpoint (or, had Redis run it after all, recorded its
        holes too), so until one succeeds none can pass a hole it left; the first that does records
        it before moving any. The holes' symbols are refilled only then: a refill reading its window
        before the hole was written would leave it there."""
        pending = self._pending_holes
        for symbol, (oldest, latest) in holes.items():
            hole = pending.get(symbol)
            if hole is None:
                pending[symbol] = [oldest, latest]
            else:
                hole[0], hole[1] = min(hole[0], oldest), max(hole[1], latest)
        if not (newest or pending):
            return
        args: list[Any] = [len(pending)]
        for symbol, (oldest, latest) in pending.items():
            args += (symbol, oldest, latest)
        args += [x for pair in newest.items() for x in pair]
        self._advance_script(keys=[CHECKPOINT_KEY, HOLE_KEY], args=args)
        if pending:
            self._pending_holes = {}
            self.request_refill(set(pending))

    def _drain(self) -> int:
        """Flush until nothing is unsent; 0 then. The queue also holds the frames read since, so
        while Kafka is slower than the input it may never be empty: that is waited out as long as
        Kafka delivers (each message still fails on its own after ``message.timeout.ms``). Only
        when nothing was delivered for ``delivery_timeout_s`` (once stopping: for that long after
        the stop) is the queue purged — so nothing trickles out later — and what was left is returned."""
        progressed = time.monotonic()
        stopped: float | None = None
        stats = self.stats
        while True:
            queued, produced = len(self.kafka), stats["sent"] + stats["dead_letters"]
            remaining = self.kafka.flush(min(1.0, self.delivery_timeout_s))
            if not remaining:
                return 0
            now = time.monotonic()
            if remaining < queued + stats["sent"] + stats["dead_letters"] - produced:  # some delivered
                progressed = now
            if stopped is None and self._stop.is_set():
                stopped = now
            if now - progressed >= self.delivery_timeout_s or (
                stopped is not None and now - stopped >= self.delivery_timeout_s
            ):
                self.kafka.purge()
                self.kafka.flush(1)
                return remaining

    def _count_sent(self, symbols: list[str]) -> None:
        """Bars of ``symbols`` sent (one each): the minute's summary and the produced-bars metric."""
        with self._lock:
            results = self._minute_results
            for symbol in symbols:
                result = results.get(symbol)
                if result is None:
                    result = results[symbol] = SymbolResult(symbol)
                result.fetched += 1
                result.sent += 1
        counters = self._produced_metric
        for symbol in symbols:
            counter = counters.get(symbol)
            if counter is None:
                counter = counters[symbol] = metrics.BARS_PRODUCED.labels(symbol)
            counter.inc()

    def _count(self, symbol: str, *, sent: int = 0, dead_letters: int = 0, metric: bool = True) -> None:
        with self._lock:
            result = self._minute_results.setdefault(symbol, SymbolResult(symbol))
            result.fetched += sent + dead_letters
            result.sent += sent
            result.dead_letters += dead_letters
        if sent and metric:
            metrics.BARS_PRODUCED.labels(symbol).inc(sent)

    def _report_minute(self) -> None:
        with self._lock:
            results, self._minute_results = list(self._minute_results.values()), {}
            started, self._minute_started = self._minute_started, self.clock()
        summary = CycleSummary(results=results, duration_s=(self.clock() - started).total_seconds())
        log.info("WebSocket minute: %s", summary.line())
        self.minutes.put((summary, started))

    # -- refills over REST --------------------------------------------------------------------
    def request_refill(self, symbols: set[str] | None) -> None:
        """Refill ``symbols`` (``None``: every symbol) from their checkpoints over REST, soon."""
        with self._lock:
            if symbols is ALL or self._refill_symbols is ALL:
                self._refill_symbols = ALL
            else:
                self._refill_symbols |= symbols
        self._refill_wanted.set()

    def _refill_targets(self, wanted: set[str] | None) -> list[str]:
        if wanted is not ALL:
            return sorted(wanted)
        symbols = list(self.settings.watchlist)
        if self.settings.websocket_symbols == "all":  # every symbol streamed so far has a checkpoint or a hole
            seen = set(symbols)
            streamed = set(self.redis.hkeys(CHECKPOINT_KEY)) | set(self.redis.hkeys(HOLE_KEY))
            # keys the symbol rules refuse (e.g. 'lower' left by older code) would cost a REST call each time
            symbols += sorted(symbol for symbol in streamed - seen if self._refillable(symbol))
        return symbols

    def _refill_loop(self) -> None:
        while not self._stop.is_set():
            if not self._refill_wanted.wait(0.2):
                continue
            self._refill_wanted.clear()
            with self._lock:
                wanted, self._refill_symbols = self._refill_symbols, set()
            try:
                self._refill(self._refill_targets(wanted))
                if wanted is ALL:
                    self._ticker_details()
            except Stopping:
                return
            except Exception as error:  # a refill must never end the feed
                log.exception("refill failed: %s", error)
                self.request_refill(wanted)
                self._stop.wait(5)

    def _ticker_details(self) -> None:
        """The watchlist's ticker details (Redis, market.symbols), as a REST cycle keeps them: from
        the cache within its TTL, else one call each."""
        for symbol in self.settings.watchlist:
            try:
                self.rest.symbol_metadata(symbol)
            except Stopping:
                raise
            except Exception as error:  # prices are in; the details wait for the next refill
                log.warning("ticker details of %s not refreshed: %s", symbol, error)

    def _refill(self, symbols: list[str]) -> None:
        started, bars, failed = time.monotonic(), 0, []
        for index, symbol in enumerate(symbols):
            if self._stop.is_set():
                return
            try:
                result = self.rest.produce_symbol(symbol)
                held = self.rest.hole(symbol) is not None  # REST has not published its bar yet: again shortly
            except KafkaUnavailable as error:
                log.error("refill: %s", error)
                failed += symbols[index:]
                break
            except NotEntitled:
                log.error("refill: the plan serves no recent minute bars over REST; gaps stay until it does")
                return
            except Stopping:
                raise
            except Exception as error:  # retried later; the others go on
                log.warning("refill of %s failed: %s", symbol, error)
                failed.append(symbol)
                continue
            bars += result.sent
            if result.sent or result.dead_letters:  # produce_symbol counted its metrics
                self._count(symbol, sent=result.sent, dead_letters=result.dead_letters, metric=False)
            if held:
                failed.append(symbol)
        self.stats["refills"] += 1
        self.stats["refilled_bars"] += bars
        log.info(
            "refill over REST: %d symbols in %.1fs, %d bars sent%s",
            len(symbols),
            time.monotonic() - started,
            bars,
            f", {len(failed)} retried later" if failed else "",
        )
        if failed:
            self._stop.wait(5)
            self.request_refill(set(failed))


def settle_heap() -> None:
    """Put every object alive now (modules, clients, settings: ~140,000) out of the garbage
    collector's reach (``gc.freeze``): a burst allocates tens of thousands of objects, which set off
    a full collection that scanned them all every burst (60-170 ms on the 2-core box, in the middle
    of the burst). Objects are still freed by reference counting; only cycles among the frozen
    ones (start-up objects, alive for the process's life anyway) are never collected."""
    gc.collect()
    gc.freeze()


def websocket_cycles(
    producer: MarketProducer, settings: Settings, stop: threading.Event
) -> Iterator[tuple[CycleSummary, datetime]]:
    """The long-running loop with ``STOCKPIPE_FEED=websocket``: the feed runs in a thread; one
    (summary, start) per minute, for ``ops.ingest_cycles``."""
    feed = WebSocketFeed(settings, rest=producer)
    settle_heap()
    runner = threading.Thread(target=feed.run, args=(stop,), name="websocket-feed", daemon=True)
    runner.start()
    while runner.is_alive() or not feed.minutes.empty():
        try:
            yield feed.minutes.get(timeout=1)
        except queue.Empty:
            continue
