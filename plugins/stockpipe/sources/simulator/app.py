"""The simulator's HTTP API: Polygon's REST protocol for the stock endpoints, plus ``/_admin``.

Polygon endpoints (responses follow ../shared/reference/polygon-rest-openapi-stocks.json):

    GET /v2/aggs/ticker/{T}/range/{multiplier}/{minute|hour|day}/{from}/{to}  (limit, sort, adjusted)
    GET /v2/aggs/ticker/{T}/prev
    GET /v2/aggs/grouped/locale/us/market/stocks/{date}
    GET /v1/open-close/{T}/{date}
    GET /v3/reference/tickers (the universe, paged),  GET /v3/reference/tickers/{T}
    GET /v2/snapshot/locale/us/markets/stocks/tickers/{T}
    GET /v2/last/trade/{T}
    GET /v1/marketstatus/now,  GET /v1/marketstatus/upcoming
    WebSocket /stocks, /delayed/stocks  (Massive's real-time and delayed clusters: see .stream)

Behaviour worth knowing:

* **Auth.** The key comes from ``Authorization: Bearer K`` or ``?apiKey=K``; any well-formed key
  (1–128 of ``A-Z a-z 0-9 . _ ~ -``) is accepted, none or a malformed one gets Polygon's 401.
* **Time.** A minute bar exists once its minute has closed. The clock is ``options.now`` (unix
  seconds, injectable) or, at run time, ``POST /_admin/clock {"frozen_at": ..., "offset_s": ...}``.
* **Dates** in paths are New York calendar days; ``from``/``to`` also take unix milliseconds, and
  both ends are inclusive.
* **Pagination.** ``limit`` (default 5000, at most 50000) caps the windows per page; when more
  exist, ``next_url`` is an absolute URL back to this server, with the next ``from`` (or ``to``
  when sorting desc) and a ``cursor`` carrying limit/sort/adjusted. Like Polygon, it carries no
  API key: clients send theirs again (the official client does, in its header).
* **Bounded work.** An aggregates request that would make the simulator generate more than
  :data:`MAX_BASE_BARS` minute bars (a range of days with a huge multiplier, years of day bars) is
  refused with 400 before any is generated; so are multipliers above :data:`MAX_MULTIPLIER` and
  dates or timestamps past :data:`LATEST_DAY` (year 9999, a huge epoch), in Polygon's error shape.
* **Free tier** (``free_tier``): more than 5 calls in a rolling 60 s for one key get 429 with
  ``Retry-After``. Faults: see :mod:`.faults`.
* **Plans** (``plan``, ``STOCKPIPE_SIMULATOR_PLAN``), like Massive's tiers: ``advanced`` (default)
  real time; ``starter`` 15-minute delayed data — aggregates, snapshot and last trade show the
  market as of 15 minutes ago and answer ``"status": "DELAYED"``, no call limit; ``basic``
  end-of-day data only and the free tier's 5 calls/min — aggregates reaching into the current New
  York day, the snapshot and the last trade answer 403 ``NOT_AUTHORIZED`` ("Your plan doesn't
  include this data timeframe"), earlier days are served.
* **Admin** (header ``X-Admin-Token: T``, ``options.admin_token`` / ``STOCKPIPE_SIMULATOR_ADMIN_TOKEN``;
  without it, or when no token is configured, 401): ``GET /_admin/health``,
  ``GET /_admin/requests?api_key=K``, ``GET /_admin/stats``, ``POST /_admin/reset``,
  ``GET|POST|DELETE /_admin/faults``, ``POST /_admin/clock``, ``/_admin/docs``. Request-log
  timestamps are wall-clock time (real calls), not the simulated market time. Answers never carry
  an API key: keys are shown as :func:`key_id` (``key-`` + 12 hex digits of their SHA-256).

The server never logs an API key: uvicorn's access log (which prints query strings, apiKey=
included) is off, and the simulator logs method, path and status only.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from .clock import ClockMode, make_clock, new_york_day, new_york_midnight_s
from .faults import FaultPlan, FaultRequest, break_bar
from .market import SUPPORTED_TIMESPANS, SimulatedMarket
from .model import (
    DEFAULT_UNIVERSE_SIZE,
    MARKET_UNIVERSE,
    Aggregate,
    anchor_price,
    company_name,
    is_known_symbol,
    market_universe,
    seeded_rng,
    symbol_profile,
)

logger = logging.getLogger("stockpipe.simulator")

DEFAULT_LIMIT = 5000
MAX_LIMIT = 50000
#: Most minute bars one aggregates request may make the simulator generate (~0.4 s of work): a day
#: range with a huge multiplier (or a year of day bars) is refused before generating any.
MAX_BASE_BARS = 1_000_000
MAX_MULTIPLIER = 100_000
#: The latest day a path may name (Python's dates end at 9999-12-31; the market is far from it).
LATEST_DAY = date(2999, 12, 31)
LATEST_MS = new_york_midnight_s(LATEST_DAY + timedelta(days=1)) * 1000
FREE_TIER_CALLS_PER_MINUTE = 5
REQUEST_LOG_PER_KEY = 100_000
API_KEY_FORMAT = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
MARKET_DATA_PATHS = ("/v2/", "/v1/open-close/")
Plan = Literal["basic", "starter", "advanced"]
PLANS: tuple[str, ...] = ("basic", "starter", "advanced")
#: How far behind real time a starter plan's data is.
DELAYED_PLAN_DELAY_S = 15 * 60
NOT_IN_PLAN_MESSAGE = (
    "Your plan doesn't include this data timeframe. Please upgrade your plan at https://massive.com/pricing"
)
RATE_LIMIT_MESSAGE = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your subscription to "
    "continue. https://polygon.io/pricing"
)


@dataclass
class SimulatorOptions:
    """Everything a simulator server is built from. Defaults match :class:`stockpipe.config.Settings`."""

    seed: int = 42
    clock: ClockMode = "demo"
    free_tier: bool = False
    free_tier_calls_per_minute: int = FREE_TIER_CALLS_PER_MINUTE
    plan: Plan = "advanced"  # basic: end-of-day data, 5 calls/min; starter: 15 min delayed; advanced: real time
    now: Callable[[], float] = time.time  # market time, unix seconds; tests freeze it
    faults: dict[str, Any] | None = None  # initial faults, same JSON as POST /_admin/faults
    admin_token: str = ""  # X-Admin-Token of /_admin/*; empty: /_admin answers 401 to everyone
    universe_size: int = DEFAULT_UNIVERSE_SIZE  # symbols of /v3/reference/tickers and the WebSocket's AM.*


ADMIN_TOKEN_HEADER = "X-Admin-Token"


def key_id(api_key: str) -> str:
    """How /_admin answers name an API key: a stable fingerprint, never the key itself."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


def _without_key(row: dict) -> dict:
    return {"key_id": key_id(row["api_key"]), **{k: v for k, v in row.items() if k != "api_key"}}


def _admin_allowed(request: Request, token: str) -> bool:
    given = request.headers.get(ADMIN_TOKEN_HEADER, "")
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


class RequestLog:
    """Every Polygon-endpoint call with a well-formed key, per key: (arrival time, path, status).

    Times are wall-clock unix seconds when the request arrived (what a rate limit counts), not the
    simulated market time. Paths never include the query string (it may hold the key).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, deque[tuple[float, str, int]]] = defaultdict(lambda: deque(maxlen=REQUEST_LOG_PER_KEY))

    def record(self, api_key: str, arrived_at: float, path: str, status: int) -> None:
        with self._lock:
            self._entries[api_key].append((arrived_at, path, status))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def requests(self, api_key: str | None = None, since: float | None = None) -> list[dict]:
        with self._lock:
            keys = [api_key] if api_key is not None else list(self._entries)
            rows = [
                {"api_key": key, "ts": ts, "path": path, "status": status}
                for key in keys
                for ts, path, status in self._entries.get(key, ())
                if since is None or ts >= since
            ]
        return sorted(rows, key=lambda row: row["ts"])

    def stats(self) -> dict[str, dict]:
        now = time.time()
        with self._lock:
            snapshot = {key: list(entries) for key, entries in self._entries.items()}
        stats = {}
        for key, entries in snapshot.items():
            times = sorted(ts for ts, _, _ in entries)  # concurrent calls finish out of order
            by_status: dict[str, int] = defaultdict(int)
            for _, _, status in entries:
                by_status[str(status)] += 1
            stats[key] = {
                "requests": len(entries),
                "by_status": dict(by_status),
                "last_60s": len(times) - bisect.bisect_left(times, now - 60),
                "max_in_any_60s": _max_in_window(times, 60.0),
                "first_ts": times[0] if times else None,
                "last_ts": times[-1] if times else None,
            }
        return stats


def _max_in_window(sorted_times: list[float], window_s: float) -> int:
    """Most calls inside any rolling window of ``window_s`` (half-open: [t, t + window))."""
    best, start = 0, 0
    for end, ts in enumerate(sorted_times):
        while ts - sorted_times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


class ClockRequest(BaseModel):
    """Body of ``POST /_admin/clock``: freeze market time, or shift it; ``{}`` restores real time."""

    model_config = ConfigDict(extra="forbid")
    frozen_at: datetime | None = None
    offset_s: float = 0.0


class SimulatorState:
    """One server's mutable world: market, faults, request log, rate limiter, clock override."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.clock = make_clock(options.clock)
        self.market = SimulatedMarket(options.seed, self.clock)
        self.stream: Any = None  # the WebSocket API's MinuteFeed (stream.py), set by create_app
        self.faults = FaultPlan()
        self.log = RequestLog()
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._free_tier_limit = RateLimitItemPerMinute(options.free_tier_calls_per_minute)
        self._frozen_at: float | None = None
        self._offset_s = 0.0
        if options.faults:
            self.apply_faults(FaultRequest.model_validate(options.faults))

    @property
    def seed(self) -> int:
        return self.options.seed

    def now(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        return self.options.now() + self._offset_s

    @property
    def plan(self) -> Plan:
        return self.options.plan

    def data_now(self) -> float:
        """The moment the plan's market data reaches: now, or 15 minutes ago on a delayed plan."""
        return self.now() - (DELAYED_PLAN_DELAY_S if self.plan == "starter" else 0)

    @property
    def data_status(self) -> str:
        """``status`` of a market-data answer: ``DELAYED`` on a delayed plan, like Massive's."""
        return "DELAYED" if self.plan == "starter" else "OK"

    def set_clock(self, request: ClockRequest) -> None:
        self._frozen_at = request.frozen_at.timestamp() if request.frozen_at else None
        self._offset_s = request.offset_s

    def apply_faults(self, request: FaultRequest) -> None:
        self.faults.update(request)
        for late in request.late_bars:
            self.market.add_late_bar(late.symbol, int(late.ts.timestamp()), late.delay_s)
        for correction in request.corrections:
            self.market.add_correction(correction.symbol, int(correction.ts.timestamp()), correction.values())

    def clear_faults(self) -> None:
        self.faults.clear()
        self.market.clear_adjustments()

    def reset(self) -> None:
        self.clear_faults()
        self.log.clear()
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def free_tier_retry_after(self, api_key: str) -> float | None:
        """None if the call may proceed (and counts it), else seconds until it may."""
        if not (self.options.free_tier or self.plan == "basic"):
            return None
        if self._limiter.hit(self._free_tier_limit, api_key):
            return None
        reset_at = self._limiter.get_window_stats(self._free_tier_limit, api_key).reset_time
        return max(1.0, math.ceil(reset_at - time.time()))


# --- response helpers ---------------------------------------------------------------------------
def _error(status: int, request_id: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "ERROR", "request_id": request_id, "error": message}, status, headers=headers)


def _not_in_plan(request_id: str) -> JSONResponse:
    return JSONResponse({"status": "NOT_AUTHORIZED", "request_id": request_id, "message": NOT_IN_PLAN_MESSAGE}, 403)


def _not_found(request_id: str, message: str) -> JSONResponse:
    return JSONResponse({"status": "NOT_FOUND", "request_id": request_id, "message": message}, 404)


def _api_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query_params.get("apiKey")


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


def _bar_json(aggregate: Aggregate, t_ms: int | None = None) -> dict:
    return {
        "v": aggregate.volume,
        "vw": aggregate.vwap,
        "o": aggregate.open,
        "c": aggregate.close,
        "h": aggregate.high,
        "l": aggregate.low,
        "t": aggregate.start_s * 1000 if t_ms is None else t_ms,
        "n": aggregate.trades,
    }


def _ohlcv(aggregate: Aggregate) -> dict:
    return {
        "o": aggregate.open,
        "h": aggregate.high,
        "l": aggregate.low,
        "c": aggregate.close,
        "v": aggregate.volume,
        "vw": aggregate.vwap,
    }


def _in_range(day: date, what: str) -> date:
    if day > LATEST_DAY:
        raise BadRequest(f"The {what} {day} is out of range: days up to {LATEST_DAY} are served.")
    return day


def _parse_day(text: str) -> date:
    """A ``YYYY-MM-DD`` path value, or :class:`BadRequest` (also for days after :data:`LATEST_DAY`)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadRequest("Could not parse date: use YYYY-MM-DD.") from None
    return _in_range(day, "date")


def _parse_bound(text: str, *, end: bool) -> float:
    """A ``from``/``to`` path value as unix seconds: ms timestamp, or a New York date (inclusive).
    Past :data:`LATEST_DAY` (a year 9999 date, a huge timestamp) it is a :class:`BadRequest`."""
    what = "to" if end else "from"
    if text.isascii() and text.isdigit():
        if len(text) > len(str(LATEST_MS)) or int(text) >= LATEST_MS:
            raise BadRequest(
                f"The {what} timestamp {text if len(text) <= 20 else text[:20] + '…'} is out of range: "
                f"use unix milliseconds before {LATEST_MS} "
                f"(the end of {LATEST_DAY})."
            )
        return int(text) / 1000
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"Could not parse {what}: use YYYY-MM-DD or a unix timestamp in ms.") from None
    _in_range(day, what)
    return new_york_midnight_s(day + timedelta(days=1)) - 0.001 if end else new_york_midnight_s(day)


def _encode_cursor(values: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict:
    padded = cursor + "=" * (-len(cursor) % 4)
    values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(values, dict):
        raise ValueError("cursor is not an object")
    return values


def _desc_after(symbols_desc: list[str], after: str) -> int:
    """Index of the first symbol after ``after`` in a descending list."""
    index = 0
    while index < len(symbols_desc) and symbols_desc[index] >= after:
        index += 1
    return index


class BadRequest(Exception):
    """A request Polygon would answer with 400."""


def create_app(options: SimulatorOptions | None = None, state: SimulatorState | None = None) -> FastAPI:
    """The ASGI app. Pass ``state`` to keep a handle on the server's world (tests do)."""
    state = state or SimulatorState(options or SimulatorOptions())
    app = FastAPI(
        title="stockpipe market simulator",
        description="Polygon-compatible REST API over a deterministic simulated market.",
        docs_url="/_admin/docs",
        redoc_url=None,
        openapi_url="/_admin/openapi.json",
    )
    app.state.simulator = state
    from .stream import register_websocket  # the WebSocket API (/stocks, /delayed/stocks): stream.py

    state.stream = register_websocket(app, state, state.options.universe_size)

    # --- the gate every Polygon request passes: auth, free tier, faults, request log ----------
    @app.middleware("http")
    async def polygon_gate(request: Request, call_next):
        arrived_at = time.time()
        path = request.url.path
        if path.startswith("/_admin"):
            if not _admin_allowed(request, state.options.admin_token):
                return JSONResponse({"status": "ERROR", "error": f"{ADMIN_TOKEN_HEADER} missing or wrong"}, 401)
            return await call_next(request)
        request_id = request.state.request_id = uuid.uuid4().hex
        api_key = _api_key(request)
        if not api_key:
            return _error(401, request_id, "API Key was not provided")
        if not API_KEY_FORMAT.match(api_key):
            return _error(401, request_id, "Unknown API Key")

        response = await _answer(request, call_next, api_key, request_id)
        state.log.record(api_key, arrived_at, path, response.status_code)
        logger.info("%s %s %d", request.method, path, response.status_code)
        return response

    async def _answer(request: Request, call_next, api_key: str, request_id: str):
        retry_after = state.free_tier_retry_after(api_key)
        if retry_after is not None:
            return _error(429, request_id, RATE_LIMIT_MESSAGE, {"Retry-After": f"{retry_after:g}"})
        if request.url.path.startswith(MARKET_DATA_PATHS):
            verdict = state.faults.next_request()
            if verdict.status == 429:
                headers = {"Retry-After": f"{verdict.retry_after:g}"}
                return _error(429, request_id, RATE_LIMIT_MESSAGE, headers)
            if verdict.status is not None:
                return _error(verdict.status, request_id, f"Injected fault: HTTP {verdict.status}")
            if verdict.delay_s:
                await asyncio.sleep(verdict.delay_s)
        return await call_next(request)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest):
        return _error(400, _request_id(request), str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in error.errors())
        return _error(400, _request_id(request), f"Could not parse the request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 404:
            return _not_found(_request_id(request), "The requested resource was not found")
        return _error(error.status_code, _request_id(request), str(error.detail))

    # --- aggregates ---------------------------------------------------------------------------
    @app.get("/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from_}/{to}")
    def aggregates(
        request: Request,
        ticker: str,
        multiplier: int,
        timespan: str,
        from_: str,
        to: str,
        adjusted: bool = True,
        sort: Literal["asc", "desc"] = "asc",
        limit: int = Query(DEFAULT_LIMIT, ge=1),
        cursor: str | None = None,
    ):
        request_id = _request_id(request)
        if cursor:
            try:
                paging = _decode_cursor(cursor)
                limit, sort, adjusted = int(paging["limit"]), paging["sort"], bool(paging["adjusted"])
                if sort not in ("asc", "desc") or limit < 1:
                    raise ValueError("bad sort or limit")
            except (ValueError, KeyError, TypeError) as error:
                raise BadRequest(f"Invalid cursor: {error}") from None
        limit = min(limit, MAX_LIMIT)
        if timespan not in SUPPORTED_TIMESPANS:
            raise BadRequest(f"Timespan {timespan!r} is not simulated; use {', '.join(SUPPORTED_TIMESPANS)}.")
        if not 1 <= multiplier <= MAX_MULTIPLIER:
            raise BadRequest(f"Multiplier must be an integer from 1 to {MAX_MULTIPLIER}.")
        from_s, to_s = _parse_bound(from_, end=False), _parse_bound(to, end=True)
        now = state.data_now()
        if state.plan == "basic" and to_s >= new_york_midnight_s(new_york_day(now)):
            return _not_in_plan(request_id)  # end-of-day data only: nothing of the current day
        work = state.market.base_bars_bound(multiplier, timespan, from_s, to_s, now, limit)
        if work > MAX_BASE_BARS:
            raise BadRequest(
                f"This request would aggregate up to {work:,} minute bars; the simulator aggregates at most "
                f"{MAX_BASE_BARS:,} per request: narrow from/to, or lower the multiplier or the limit."
            )

        page = state.market.aggregates(
            ticker, multiplier, timespan, from_s, to_s, now, descending=sort == "desc", limit=limit
        )
        body: dict[str, Any] = {
            "ticker": ticker,
            "queryCount": sum(window.bars for window in page.results),
            "resultsCount": len(page.results),
            "adjusted": adjusted,
            "status": state.data_status,
            "request_id": request_id,
        }
        if page.results:
            body["results"] = [_bar_json(window) for window in page.results]
        if page.has_more:
            next_from, next_to = (from_, str(page.resume_ms)) if sort == "desc" else (str(page.resume_ms), to)
            paging = _encode_cursor({"limit": limit, "sort": sort, "adjusted": adjusted})
            base = str(request.base_url).rstrip("/")
            body["next_url"] = (
                f"{base}/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{next_from}/{next_to}?cursor={paging}"
            )
        if page.results:
            kind = state.faults.take_malformed()
            if kind == "not_json":
                text = json.dumps(body)
                return Response(text[: len(text) // 2], media_type="application/json")
            if kind:
                body["results"][0] = break_bar(body["results"][0], kind)
        return JSONResponse(body)  # skips FastAPI's per-field encoding: pages reach 50000 bars

    @app.get("/v2/aggs/ticker/{ticker}/prev")
    def previous_close(request: Request, ticker: str, adjusted: bool = True):
        now = state.now()
        body: dict[str, Any] = {
            "ticker": ticker,
            "queryCount": 0,
            "resultsCount": 0,
            "adjusted": adjusted,
            "status": "OK",
            "request_id": _request_id(request),
        }
        if not is_known_symbol(ticker):
            return body
        day = state.market.latest_day_with_bars(ticker, now, before=new_york_day(now))
        aggregate = state.market.day_aggregate(ticker, day, now) if day else None
        if aggregate:
            body.update(queryCount=1, resultsCount=1, results=[{"T": ticker, **_bar_json(aggregate)}])
        return body

    @app.get("/v2/aggs/grouped/locale/us/market/stocks/{day}")
    def grouped_daily(request: Request, day: str, adjusted: bool = True, include_otc: bool = False):
        requested = _parse_day(day)
        now = state.now()
        session_end_ms = state.market.trading_day(requested).end_s * 1000
        results = []
        for symbol in MARKET_UNIVERSE:
            aggregate = state.market.day_aggregate(symbol, requested, now)
            if aggregate:
                results.append({"T": symbol, **_bar_json(aggregate, t_ms=session_end_ms)})
        body: dict[str, Any] = {
            "queryCount": len(results),
            "resultsCount": len(results),
            "adjusted": adjusted,
            "status": "OK",
            "request_id": _request_id(request),
        }
        if results:
            body["results"] = results
        return body

    @app.get("/v1/open-close/{ticker}/{day}")
    def open_close(request: Request, ticker: str, day: str, adjusted: bool = True):
        requested = _parse_day(day)
        aggregate = state.market.day_aggregate(ticker, requested, state.now()) if is_known_symbol(ticker) else None
        if aggregate is None:
            return _not_found(_request_id(request), "Data not found.")
        return {
            "status": "OK",
            "from": requested.isoformat(),
            "symbol": ticker,
            "open": aggregate.open,
            "high": aggregate.high,
            "low": aggregate.low,
            "close": aggregate.close,
            "volume": aggregate.volume,
        }

    # --- reference ----------------------------------------------------------------------------
    @app.get("/v3/reference/tickers")
    def list_tickers(
        request: Request,
        market: str | None = None,
        active: bool = True,
        search: str | None = None,
        order: Literal["asc", "desc"] = "asc",
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = None,
    ):
        """The universe (``universe_size`` symbols), by ticker, ``limit`` per page with ``next_url``."""
        after = None
        if cursor:
            try:
                paging = _decode_cursor(cursor)
                after, limit, order = str(paging["after"]), int(paging["limit"]), paging["order"]
                market, search, active = paging.get("market"), paging.get("search"), bool(paging.get("active", True))
            except (ValueError, KeyError, TypeError) as error:
                raise BadRequest(f"Invalid cursor: {error}") from None
        symbols: list[str] = []
        if active and market in (None, "stocks"):
            symbols = list(market_universe(state.options.universe_size))
            if search:
                needle = search.lower()
                symbols = [s for s in symbols if needle in s.lower() or needle in company_name(s).lower()]
            if order == "desc":
                symbols.reverse()
            if after is not None:
                index = bisect.bisect_right(symbols, after) if order == "asc" else _desc_after(symbols, after)
                symbols = symbols[index:]
        page = symbols[:limit]
        results = []
        for ticker in page:
            rng = seeded_rng(state.seed, ticker, "reference")  # the draws of ticker_details, in its order
            rng.integers(0, 40 * 365)
            results.append(
                {
                    "ticker": ticker,
                    "name": company_name(ticker),
                    "market": "stocks",
                    "locale": "us",
                    "primary_exchange": "XNAS" if rng.random() < 0.6 else "XNYS",
                    "type": "CS",
                    "active": True,
                    "currency_name": "usd",
                    "last_updated_utc": "2026-01-02T00:00:00Z",
                }
            )
        body: dict[str, Any] = {"results": results, "status": "OK", "request_id": _request_id(request)}
        body["count"] = len(results)
        if len(symbols) > limit:
            paging = {"after": page[-1], "limit": limit, "order": order, "market": market, "search": search}
            paging["active"] = active
            base = str(request.base_url).rstrip("/")
            body["next_url"] = f"{base}/v3/reference/tickers?cursor={_encode_cursor(paging)}"
        return JSONResponse(body)

    @app.get("/v3/reference/tickers/{ticker}")
    def ticker_details(request: Request, ticker: str, as_of: str | None = Query(None, alias="date")):
        # `date` (details as of a day) is accepted and ignored: simulated companies never change.
        request_id = _request_id(request)
        if not is_known_symbol(ticker):
            return _not_found(request_id, "Ticker not found.")
        profile = symbol_profile(state.seed, ticker)
        rng = seeded_rng(state.seed, ticker, "reference")
        root, _, suffix = ticker.partition(".")
        price = anchor_price(state.seed, ticker, new_york_day(state.now()))
        listed = datetime(1980, 1, 1) + timedelta(days=int(rng.integers(0, 40 * 365)))
        results: dict[str, Any] = {
            "ticker": ticker,
            "name": company_name(ticker),
            "market": "stocks",
            "locale": "us",
            "primary_exchange": "XNAS" if rng.random() < 0.6 else "XNYS",
            "type": "CS",
            "active": True,
            "currency_name": "usd",
            "market_cap": round(price * profile.shares_outstanding, 2),
            "share_class_shares_outstanding": profile.shares_outstanding,
            "weighted_shares_outstanding": profile.shares_outstanding,
            "round_lot": 100,
            "ticker_root": root,
            "list_date": listed.date().isoformat(),
            "total_employees": int(rng.integers(500, 300_000)),
            "description": f"{company_name(ticker)}: a company of the stockpipe market simulator.",
        }
        if suffix:
            results["ticker_suffix"] = suffix
        return {"request_id": request_id, "results": results, "status": "OK"}

    # --- snapshot and last trade --------------------------------------------------------------
    def _latest_bars(ticker: str, now: float):
        day = state.market.latest_day_with_bars(ticker, now)
        return (day, state.market.visible_bars(ticker, day, now)) if day else (None, None)

    def _last_trade(ticker: str, day_bars) -> dict:
        index = len(day_bars) - 1
        rng = seeded_rng(state.seed, ticker, int(day_bars.start_s[index]), "last-trade")
        sip_ns = (int(day_bars.start_s[index]) + 59) * 1_000_000_000 + int(rng.integers(0, 999_999_999))
        return {
            "conditions": [int(c) for c in rng.choice([0, 12, 14, 37, 41], size=2, replace=False)],
            "id": str(int(rng.integers(1, 10**9))),
            "price": float(day_bars.close[index]),
            "size": int(rng.integers(1, 500)),
            "sip_ns": sip_ns,
            "exchange": int(rng.choice([4, 10, 11, 12, 15])),
            "sequence": int(day_bars.start_s[index] // 60) * 100 + int(rng.integers(0, 100)),
        }

    @app.get("/v2/snapshot/locale/us/markets/stocks/tickers/{ticker}")
    def snapshot(request: Request, ticker: str):
        request_id = _request_id(request)
        if state.plan == "basic":
            return _not_in_plan(request_id)
        now = state.data_now()
        day, bars = _latest_bars(ticker, now) if is_known_symbol(ticker) else (None, None)
        if day is None:
            return _not_found(request_id, "Ticker not found.")
        today = state.market.day_aggregate(ticker, day, now)
        previous_day = state.market.latest_day_with_bars(ticker, now, before=day)
        previous = state.market.day_aggregate(ticker, previous_day, now) if previous_day else None
        last = len(bars) - 1
        trade = _last_trade(ticker, bars)
        spread = max(0.01, round(trade["price"] * 0.0002, 2))
        ticker_body: dict[str, Any] = {
            "ticker": ticker,
            "day": _ohlcv(today),
            "min": {
                "av": int(bars.volume.sum()),
                "t": int(bars.start_s[last]) * 1000,
                "n": int(bars.trades[last]),
                "o": float(bars.open[last]),
                "h": float(bars.high[last]),
                "l": float(bars.low[last]),
                "c": float(bars.close[last]),
                "v": int(bars.volume[last]),
                "vw": float(bars.vwap[last]),
            },
            "lastTrade": {
                "c": trade["conditions"],
                "i": trade["id"],
                "p": trade["price"],
                "s": trade["size"],
                "t": trade["sip_ns"],
                "x": trade["exchange"],
            },
            "lastQuote": {
                "p": round(trade["price"] - spread / 2, 4),
                "s": 3,
                "P": round(trade["price"] + spread / 2, 4),
                "S": 2,
                "t": trade["sip_ns"] + 1000,
            },
            "updated": trade["sip_ns"],
        }
        if previous:
            ticker_body["prevDay"] = _ohlcv(previous)
            change = trade["price"] - previous.close
            ticker_body["todaysChange"] = round(change, 4)
            ticker_body["todaysChangePerc"] = round(100 * change / previous.close, 4)
        return {"status": state.data_status, "request_id": request_id, "ticker": ticker_body}

    @app.get("/v2/last/trade/{ticker}")
    def last_trade(request: Request, ticker: str):
        request_id = _request_id(request)
        if state.plan == "basic":
            return _not_in_plan(request_id)
        day, bars = _latest_bars(ticker, state.data_now()) if is_known_symbol(ticker) else (None, None)
        if day is None:
            return _not_found(request_id, "Data not found.")
        trade = _last_trade(ticker, bars)
        return {
            "request_id": request_id,
            "status": state.data_status,
            "results": {
                "T": ticker,
                "c": trade["conditions"],
                "i": trade["id"],
                "p": trade["price"],
                "q": trade["sequence"],
                "s": trade["size"],
                "t": trade["sip_ns"],
                "x": trade["exchange"],
                "y": trade["sip_ns"] - 350_000,  # the exchange stamps it a little before the SIP
                "z": 3,
            },
        }

    # --- market status ------------------------------------------------------------------------
    @app.get("/v1/marketstatus/now")
    def market_status():
        return state.clock.market_status(state.now())

    @app.get("/v1/marketstatus/upcoming")
    def market_holidays():
        return state.clock.upcoming_holidays(state.now())

    # --- admin (X-Admin-Token; the gate above checks it) -----------------------------------------
    @app.get("/_admin/health")
    def health():
        now = state.now()
        return {
            "status": "ok",
            "seed": state.seed,
            "clock": state.clock.mode,
            "free_tier": state.options.free_tier,
            "plan": state.plan,
            "market_time": datetime.fromtimestamp(now, UTC).isoformat(),
            "market": state.clock.market_status(now)["market"],
        }

    @app.get("/_admin/requests")
    def request_log(api_key: str | None = None, since: float | None = None):
        rows = state.log.requests(api_key, since)
        return {"requests": [_without_key(row) for row in rows]}

    @app.get("/_admin/stats")
    def stats():
        keys = {key_id(key): entry for key, entry in state.log.stats().items()}
        return {"keys": keys, "faults": state.faults.describe(), "websocket": state.stream.describe()}

    @app.post("/_admin/reset")
    def reset():
        state.reset()
        return {"status": "reset"}

    @app.get("/_admin/faults")
    def show_faults():
        return {**state.faults.describe(), **state.market.describe_adjustments()}

    @app.post("/_admin/faults")
    def set_faults(faults: FaultRequest):
        state.apply_faults(faults)
        return {**state.faults.describe(), **state.market.describe_adjustments()}

    @app.delete("/_admin/faults")
    def clear_faults():
        state.clear_faults()
        return {**state.faults.describe(), **state.market.describe_adjustments()}

    @app.post("/_admin/clock")
    def set_clock(clock: ClockRequest):
        state.set_clock(clock)
        return {"market_time": datetime.fromtimestamp(state.now(), UTC).isoformat()}

    return app
