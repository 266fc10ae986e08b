"""The simulator's WebSocket API: Massive's stocks clusters with per-minute aggregates (``AM``).

Paths, like Massive's two stocks clusters (one server, so the cluster is a path prefix):

=================  ==============================================  ==========================
path               Massive                                         plans (``plan``)
=================  ==============================================  ==========================
``/stocks``        ``wss://socket.massive.com/stocks`` (real time)  advanced
``/delayed/stocks`` ``wss://delayed.massive.com/stocks`` (15 min)   starter, advanced
=================  ==============================================  ==========================

The official client connects unchanged, only told where and without TLS (loopback)::

    WebSocketClient(key, feed="127.0.0.1:8090", market="stocks", secure=False)          # real time
    WebSocketClient(key, feed="127.0.0.1:8090/delayed", market="stocks", secure=False)  # delayed

Protocol (text frames, each a JSON array of events), in Massive's wording:

* on connect: ``{"ev":"status","status":"connected","message":"Connected Successfully"}``;
* ``{"action":"auth","params":KEY}``: ``auth_success`` / ``authenticated``; a malformed key gets
  ``auth_failed`` / ``authentication failed``, a plan without this cluster ``auth_failed`` with the
  plan's sentence; both are then closed (1008). One connection per key and cluster, as Massive
  allows: a second one gets ``max_connections`` and is closed;
* ``{"action":"subscribe","params":"AM.AAPL,AM.MSFT"}`` (or ``AM.*``: every symbol of the
  universe, ``universe_size``): one ``success`` / ``subscribed to: AM.AAPL`` per channel;
  ``unsubscribe`` likewise (``unsubscribed to: ...``); other channels get ``error``;
* at each minute close (market time, ``state.now()``; on the delayed cluster 15 minutes later) one
  ``AM`` event per subscribed symbol that traded in that minute, at most :data:`FRAME_EVENTS` per
  frame: ``ev sym v av op vw o c h l a z s e`` — ``o h l c v vw`` equal the REST minute aggregate
  of the same minute (corrections included; a late bar is never pushed, REST serves it later),
  ``av``/``a`` the day's accumulated volume and VWAP, ``op`` the day's opening price, ``z`` the
  average trade size, ``s``/``e`` the minute's start/end in ms. No event for a minute without a bar.

Faults (:mod:`.faults`, ``POST /_admin/faults``): ``ws_drop`` (closes every connection with 1011
at a minute close instead of sending), ``ws_stall_s`` (silence), ``ws_malformed`` (a broken event
or a cut frame). ``/_admin/stats`` counts connections and events under ``websocket``.

A burst stays cheap: the bars come from the price model in 30-minute blocks per symbol (one
day's computation each); with ``AM.*`` subscribed the next block of the whole universe is computed
in a background thread well before it is needed, and each minute's frames are built once for all
connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from .clock import TradingDay, new_york_day
from .faults import MalformedKind, break_bar
from .model import PRICE_DECIMALS, day_bars, is_known_symbol, market_universe

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .app import SimulatorState

logger = logging.getLogger("stockpipe.simulator")

FRAME_EVENTS = 1000  # AM events per frame (~170 kB; the client's default limit is 1 MiB a frame)
BLOCK_MINUTES = 30
POLL_S = 0.02  # how often the broadcaster looks at the (possibly injected) market clock
MAX_CATCH_UP_MINUTES = 60  # a clock jumped forward: at most this many missed minutes are pushed
DELAYED_CLUSTER_DELAY_S = 15 * 60
WEBSOCKET_PLAN_MESSAGE = "Your plan doesn't include websocket access. Visit https://massive.com/pricing to upgrade."
REAL_TIME_PLAN_MESSAGE = (
    "Your plan doesn't include real-time data: connect to the delayed cluster (wss://delayed.massive.com/stocks). "
    "Visit https://massive.com/pricing to upgrade."
)
MAX_CONNECTIONS_MESSAGE = (
    "Maximum number of websocket connections exceeded. You have reached the connection limit for your account. "
    "Please contact support at https://massive.com/contact to increase your limit."
)
# rows of a block: o h l c v vw n av a (the day's accumulated volume and VWAP up to the minute)
_O, _H, _L, _C, _V, _VW, _N, _AV, _A = range(9)


def status(kind: str, message: str) -> dict:
    return {"ev": "status", "status": kind, "message": message}


def _frame(events: list[dict]) -> str:
    return json.dumps(events, separators=(",", ":"))


@dataclass(eq=False)
class Session:
    """One WebSocket connection."""

    ws: WebSocket
    delayed: bool
    key: str | None = None
    all_symbols: bool = False
    symbols: set[str] = field(default_factory=set)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await self.ws.send_text(text)

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            async with self.send_lock:
                await self.ws.close(code, reason)
        except Exception:  # already gone
            pass


class MinuteFeed:
    """The minute-close broadcaster and its bar blocks; one per server (``state.stream``)."""

    def __init__(self, state: SimulatorState, universe_size: int) -> None:
        self.state = state
        self.universe = market_universe(universe_size)
        self.sessions: list[Session] = []
        self.stats = {"connections": 0, "auth_failed": 0, "dropped": 0, "frames": 0, "events": 0, "bursts": 0}
        self.last_burst_s: float | None = None  # wall seconds the last minute's sending took
        self._blocks: OrderedDict[tuple[date, int], dict[str, np.ndarray]] = OrderedDict()
        self._blocks_lock = threading.Lock()
        self._universe_frames: OrderedDict[int, list[str]] = OrderedDict()
        self._precomputing: set[tuple[date, int]] = set()
        self._task: asyncio.Task | None = None
        self._stalled_until = 0.0

    # --- sessions ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="simulator-minute-feed")

    def connected(self, key: str, delayed: bool) -> bool:
        return any(s.key == key and s.delayed == delayed and not s.closed for s in self.sessions)

    def describe(self) -> dict:
        return {
            **self.stats,
            "open": sum(1 for s in self.sessions if not s.closed),
            "last_burst_s": self.last_burst_s,
            "universe_size": len(self.universe),
        }

    # --- bars ---------------------------------------------------------------------------------
    def _locate(self, minute_s: int) -> tuple[TradingDay, int, int] | None:
        """(trading day, block, index in block) of a minute, or None outside the sessions."""
        session = self.state.market.trading_day(new_york_day(minute_s))
        if not session.minutes or not session.first_minute_s <= minute_s < session.end_s:
            return None
        offset = (minute_s - session.first_minute_s) // 60
        return session, offset // BLOCK_MINUTES, offset % BLOCK_MINUTES

    def _block(self, symbol: str, session: TradingDay, block: int) -> np.ndarray:
        key = (session.day, block)
        with self._blocks_lock:
            cached = self._blocks.get(key, {}).get(symbol)
        if cached is not None:
            return cached
        rows = _block_rows(self.state.seed, symbol, session, block)
        with self._blocks_lock:
            self._blocks.setdefault(key, {})[symbol] = rows
            self._blocks.move_to_end(key)
            while len(self._blocks) > 3:  # the block being served, the next one, one spare
                self._blocks.popitem(last=False)
        return rows

    def events(self, minute_s: int, symbols: Iterable[str]) -> list[dict]:
        """The AM events of the minute starting at ``minute_s`` for ``symbols`` (known ones with a bar)."""
        where = self._locate(minute_s)
        if where is None:
            return []
        session, block, index = where
        late, corrected = self.state.market.adjustments_at(minute_s)
        chosen = [symbol for symbol in symbols if symbol not in late and is_known_symbol(symbol)]
        if not chosen:
            return []  # a late bar: REST serves it once it arrives, the stream never pushes it
        columns = np.array([self._block(symbol, session, block)[:, index] for symbol in chosen])
        op = np.array([self._block(symbol, session, block)[0, -1] for symbol in chosen])
        for row, symbol in enumerate(chosen):
            if symbol in corrected:
                columns[row] = _corrected(columns[row], corrected[symbol])
        o, h, l, c, v, vw, n, av, a = columns.T  # noqa: E741
        volume = v.astype(np.int64)
        # the REST minute aggregate's vwap: notional / volume, rounded, inside [low, high] (aggregate_buckets)
        rest_vwap = np.minimum(np.maximum(np.round(vw * volume / volume, PRICE_DECIMALS), l), h)
        size = np.maximum(1, np.round(volume / np.maximum(1.0, n))).astype(np.int64)
        start_ms, end_ms = minute_s * 1000, (minute_s + 60) * 1000
        return [
            {"ev": "AM", "sym": sym, "v": v_, "av": av_, "op": op_, "vw": vw_, "o": o_, "c": c_, "h": h_, "l": l_,
             "a": a_, "z": z_, "s": start_ms, "e": end_ms}
            for sym, v_, av_, op_, vw_, o_, c_, h_, l_, a_, z_ in zip(
                chosen, volume.tolist(), av.astype(np.int64).tolist(), op.tolist(), rest_vwap.tolist(), o.tolist(),
                c.tolist(), h.tolist(), l.tolist(), a.tolist(), size.tolist(), strict=True,
            )
        ]  # fmt: skip

    def universe_frames(self, minute_s: int) -> list[str]:
        """The ``AM.*`` frames of one minute, built once for every connection."""
        with self._blocks_lock:
            frames = self._universe_frames.get(minute_s)
        if frames is None:
            events = self.events(minute_s, self.universe)
            frames = [_frame(events[i : i + FRAME_EVENTS]) for i in range(0, len(events), FRAME_EVENTS)]
            with self._blocks_lock:
                self._universe_frames[minute_s] = frames
                while len(self._universe_frames) > 4:
                    self._universe_frames.popitem(last=False)
        self._precompute_after(minute_s)
        return frames

    def _precompute_after(self, minute_s: int) -> None:
        """Compute the universe's next block in the background once a third of this one is served."""
        where = self._locate(minute_s)
        if where is None or where[2] < BLOCK_MINUTES // 3:
            return
        following = self._locate(minute_s + 60 * (BLOCK_MINUTES - where[2]))
        if following is None:
            return
        self.prepare_universe(following[0], following[1])

    def prepare_universe(self, session: TradingDay, block: int) -> None:
        key = (session.day, block)
        with self._blocks_lock:
            ready = len(self._blocks.get(key, {})) >= len(self.universe)
            if ready or key in self._precomputing:
                return
            self._precomputing.add(key)

        def work() -> None:
            started = time.monotonic()
            try:
                for symbol in self.universe:
                    self._block(symbol, session, block)
            finally:
                with self._blocks_lock:
                    self._precomputing.discard(key)
            logger.info("AM.* block %s/%d of %d symbols ready in %.1fs", key[0], block, len(self.universe),
                        time.monotonic() - started)  # fmt: skip

        threading.Thread(target=work, name="simulator-am-block", daemon=True).start()

    def prepare_current(self, delayed: bool) -> None:
        """On an ``AM.*`` subscription: compute the universe's current block in the background."""
        where = self._locate(int(self._data_now(delayed) // 60 * 60))
        if where is not None:
            self.prepare_universe(where[0], where[1])

    # --- the minute closes --------------------------------------------------------------------
    def _data_now(self, delayed: bool) -> float:
        return self.state.now() - (DELAYED_CLUSTER_DELAY_S if delayed else 0)

    async def _run(self) -> None:
        last: dict[bool, int | None] = {False: None, True: None}
        while True:
            await asyncio.sleep(POLL_S)
            self.sessions = [s for s in self.sessions if not s.closed]
            for delayed in (False, True):
                audience = [s for s in self.sessions if s.delayed == delayed and s.key]
                if not audience:
                    last[delayed] = None
                    continue
                boundary = int(self._data_now(delayed) // 60 * 60)  # minutes starting before it have closed
                previous = last[delayed]
                last[delayed] = boundary
                if previous is None or boundary <= previous:
                    continue
                first = max(previous, boundary - 60 * MAX_CATCH_UP_MINUTES)
                for closed_at in range(first + 60, boundary + 60, 60):
                    try:
                        await self._minute_close(closed_at - 60, audience)
                    except Exception:  # one bad minute must not end the feed
                        logger.exception("AM push of minute %d failed", closed_at - 60)

    async def _minute_close(self, minute_s: int, audience: list[Session]) -> None:
        faults = self.state.faults
        if faults.take_ws_drop():
            self.stats["dropped"] += len(audience)
            await asyncio.gather(*(s.close(1011, "injected fault: connection dropped") for s in audience))
            return
        loop = asyncio.get_running_loop()
        stall = faults.take_ws_stall()
        if stall:
            self._stalled_until = loop.time() + stall
        if loop.time() < self._stalled_until:
            return  # silent: these minutes are never sent
        started = time.monotonic()
        plans: list[tuple[Session, list[str]]] = []
        for session in audience:
            if session.all_symbols:
                frames = await asyncio.to_thread(self.universe_frames, minute_s)
            elif session.symbols:
                events = self.events(minute_s, sorted(session.symbols))
                frames = [_frame(events[i : i + FRAME_EVENTS]) for i in range(0, len(events), FRAME_EVENTS)]
            else:
                continue
            if frames:
                plans.append((session, frames))
        if not plans:
            return
        kind = faults.take_ws_malformed()
        if kind:
            session, frames = plans[0]
            plans[0] = (session, [_break_frame(frames[0], kind), *frames[1:]])
        await asyncio.gather(*(self._send(session, frames) for session, frames in plans))
        self.stats["bursts"] += 1
        self.last_burst_s = time.monotonic() - started

    async def _send(self, session: Session, frames: list[str]) -> None:
        try:
            for frame in frames:
                await session.send(frame)
                self.stats["frames"] += 1
            self.stats["events"] += sum(frame.count('"ev":"AM"') for frame in frames)
        except Exception:  # the client went away meanwhile
            session.closed = True


def _block_rows(seed: int, symbol: str, session: TradingDay, block: int) -> np.ndarray:
    """o h l c v vw n av a of one symbol's minutes [block × 30, block × 30 + 30) of the day."""
    # uncached: 10,000 symbols would flush the day cache the REST endpoints live on
    bars = day_bars.__wrapped__(seed, symbol, session.day, session.first_minute_s, session.minutes)
    volume = bars.volume.astype(float)
    accumulated = np.cumsum(volume)
    day_vwap = np.round(np.cumsum(bars.vwap * bars.volume) / accumulated, PRICE_DECIMALS)
    piece = slice(block * BLOCK_MINUTES, (block + 1) * BLOCK_MINUTES)
    rows = np.vstack(
        [
            bars.open[piece],
            bars.high[piece],
            bars.low[piece],
            bars.close[piece],
            volume[piece],
            bars.vwap[piece],
            bars.trades[piece].astype(float),
            accumulated[piece],
            day_vwap[piece],
        ]
    )
    # the day's official open rides along in an extra column
    return np.hstack([rows, np.full((9, 1), float(bars.open[0]))])


def _corrected(column: np.ndarray, correction: dict) -> np.ndarray:
    """A minute's o h l c v vw n av a as REST serves the corrected bar (market._apply_correction)."""
    fixed = column.copy()
    if not correction:
        fixed_close = round(float(column[_C]) * 1.005, PRICE_DECIMALS)
        volume = float(column[_V])
        correction = {"close": fixed_close, "high": max(float(column[_H]), fixed_close)}
        correction["volume"] = volume + max(1, int(volume) // 100)
    for name, row in (("open", _O), ("high", _H), ("low", _L), ("close", _C), ("vwap", _VW), ("trades", _N)):
        if name in correction:
            fixed[row] = correction[name]
    if "volume" in correction:
        fixed[_AV] += correction["volume"] - column[_V]
        fixed[_V] = correction["volume"]
    return fixed


def _break_frame(frame: str, kind: MalformedKind) -> str:
    if kind == "not_json":
        return frame[: len(frame) // 2]
    events = json.loads(frame)
    events[0] = break_bar(events[0], kind)
    return _frame(events)


# --- the endpoint -----------------------------------------------------------------------------------
def register_websocket(app: FastAPI, state: SimulatorState, universe_size: int) -> MinuteFeed:
    """Serve ``/stocks`` and ``/delayed/stocks`` on ``app``; returns the feed (also ``state.stream``)."""
    from .app import API_KEY_FORMAT

    feed = MinuteFeed(state, universe_size)

    async def serve(ws: WebSocket, delayed: bool) -> None:
        await ws.accept()
        feed.start()
        feed.stats["connections"] += 1
        session = Session(ws, delayed)
        await session.send(_frame([status("connected", "Connected Successfully")]))
        try:
            while not session.closed:
                text = await ws.receive_text()
                try:
                    message = json.loads(text)
                    action, params = message["action"], str(message.get("params", ""))
                except (ValueError, KeyError, TypeError):
                    await session.send(_frame([status("error", "invalid message")]))
                    continue
                if action == "auth":
                    await _auth(session, params)
                elif action in ("subscribe", "unsubscribe"):
                    await _subscription(session, action, params)
                else:
                    await session.send(_frame([status("error", f"unknown action: {action}")]))
        except WebSocketDisconnect:
            pass
        finally:
            session.closed = True

    async def _auth(session: Session, key: str) -> None:
        if session.key:
            await session.send(_frame([status("auth_success", "authenticated")]))
            return
        refusal = None
        if not API_KEY_FORMAT.match(key):
            refusal = "authentication failed"
        elif state.plan == "basic":
            refusal = WEBSOCKET_PLAN_MESSAGE
        elif state.plan == "starter" and not session.delayed:
            refusal = REAL_TIME_PLAN_MESSAGE
        if refusal:
            feed.stats["auth_failed"] += 1
            await session.send(_frame([status("auth_failed", refusal)]))
            await session.close(1008, "authentication failed")
            return
        if feed.connected(key, session.delayed):
            await session.send(_frame([status("max_connections", MAX_CONNECTIONS_MESSAGE)]))
            await session.close(1008, "max connections")
            return
        session.key = key
        feed.sessions.append(session)
        await session.send(_frame([status("auth_success", "authenticated")]))

    async def _subscription(session: Session, action: str, params: str) -> None:
        if not session.key:
            await session.send(_frame([status("error", "not authorized")]))
            return
        answers = []
        for channel in (part.strip() for part in params.split(",")):
            if not channel:
                continue
            prefix, _, symbol = channel.partition(".")
            if prefix != "AM" or not symbol:
                answers.append(status("error", f"the simulator streams AM channels only: {channel}"))
                continue
            subscribe = action == "subscribe"
            if symbol == "*":
                session.all_symbols = subscribe
                if subscribe:
                    feed.prepare_current(session.delayed)
            elif subscribe:
                session.symbols.add(symbol)
            else:
                session.symbols.discard(symbol)
            answers.append(status("success", f"{action}d to: {channel}"))
        if answers:
            await session.send(_frame(answers))

    @app.websocket("/stocks")
    async def real_time(ws: WebSocket) -> None:
        await serve(ws, delayed=False)

    @app.websocket("/delayed/stocks")
    async def delayed(ws: WebSocket) -> None:
        await serve(ws, delayed=True)

    return feed
