"""Minute bars and ticker details from Massive (formerly Polygon.io), or the simulator, via the
official ``massive`` client (the maintained successor of ``polygon-api-client``: same REST paths and
models, default base ``https://api.massive.com``; ``https://api.polygon.io`` is still served).

:class:`PolygonSource` wraps ``massive.RESTClient`` and adds what a rate-limited, retrying
producer needs from it:

* **One HTTP request = one counted call.** The client's own urllib3 retries are off, so every
  retry is the caller's and passes its rate limiter; ``before_call()`` runs before *every* HTTP
  request, pagination pages included (that is where the caller takes a rate-limit token).
* **A timeout.** The client accepts connect/read timeouts but never passes them to urllib3, so
  without this wrapper a stalled server hangs the producer forever.
* **Exceptions that say what to do.** The client raises one ``BadResponse`` for every non-200
  status; we look at the status. :class:`RetryableSourceError` (try again later):
  :class:`RateLimited` (with Retry-After), :class:`ServerError`, :class:`SourceTimeout`,
  :class:`SourceUnavailable`, :class:`BadPayload` (body is not JSON). Other
  :class:`SourceError`: :class:`AuthenticationFailed` (its :class:`NotEntitled`: the plan does not
  include the data), :class:`RequestRejected`.
* **The plan shows.** :attr:`PolygonSource.last_status` is the ``status`` of the last answer of
  this thread (``OK``, or ``DELAYED`` on a delayed plan), see :mod:`stockpipe.producer.plan`.
* **Bad bars reach the caller.** A bar is passed on with whatever values the source sent (a
  string price, a missing close, high < low); the producer checks it with
  :func:`stockpipe.contract.invalid_reason` and dead-letters it. Only a record without a usable
  timestamp cannot be a :class:`Bar`; it goes to ``on_bad_record`` (or is logged and dropped).
* **No secrets in messages.** The key travels in the Authorization header; any ``apiKey=...``
  that still shows up in an error text (e.g. a URL) is redacted, and exceptions are raised
  ``from None`` so an unredacted cause never reaches a log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import urllib3
from massive import RESTClient
from massive.exceptions import BadResponse
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

from stockpipe import contract
from stockpipe.config import MASSIVE_URL

log = logging.getLogger("stockpipe.sources.polygon")

MAX_PAGE_LIMIT = 50_000
_API_KEY_IN_TEXT = re.compile(r"(apiKey=)[^&\s'\"]+", re.IGNORECASE)
_NO_RETRIES = Retry(total=0, redirect=False, raise_on_status=False)


def redact(text: str) -> str:
    """``text`` with any ``apiKey=<value>`` replaced by ``apiKey=REDACTED``."""
    return _API_KEY_IN_TEXT.sub(r"\1REDACTED", text)


# --- errors -------------------------------------------------------------------------------------
class SourceError(Exception):
    """A market-data call failed. Messages never contain the API key."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class RetryableSourceError(SourceError):
    """A failure that trying again later may fix (each retry is a new, rate-limited call)."""


class RateLimited(RetryableSourceError):
    """HTTP 429. Wait ``retry_after`` seconds (when the server said) before the next call."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(RetryableSourceError):
    """HTTP 5xx from the market-data API."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class SourceTimeout(RetryableSourceError):
    """The API did not connect or answer within the timeout."""


class SourceUnavailable(RetryableSourceError):
    """The API could not be reached (connection refused or dropped)."""


class BadPayload(RetryableSourceError):
    """The response body is not JSON (cut short, usually transient)."""


class AuthenticationFailed(SourceError):
    """HTTP 401/403: the API key is missing, wrong, or not entitled to this data."""


class NotEntitled(AuthenticationFailed):
    """HTTP 403 ``NOT_AUTHORIZED``: the key is valid but its plan does not include this data
    (Basic's "Your plan doesn't include this data timeframe" for today's minute bars)."""


class RequestRejected(SourceError):
    """Another 4xx: the request itself is wrong; repeating it will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# --- the bar ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bar:
    """One minute bar as the source sent it. ``ts`` is the bar's start (aware, UTC), Polygon's
    ``t``. Values are not checked here (a broken source may send a string or nothing): validate
    with ``contract.invalid_reason(bar.to_message(...))``."""

    symbol: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trades: int | None

    @classmethod
    def from_polygon(cls, symbol: str, record: dict) -> Bar:
        """A bar from a Polygon aggregate record (``o h l c v vw n t``).

        Raises ValueError only if ``t`` is not a millisecond timestamp: without it the bar has no
        identity (no Kafka key position, no primary key).
        """
        start_ms = record.get("t")
        if isinstance(start_ms, bool) or not isinstance(start_ms, int):
            raise ValueError(f"{symbol}: aggregate without an integer 't' timestamp: {record!r}")
        return cls(
            symbol=symbol,
            ts=datetime.fromtimestamp(start_ms / 1000, UTC),
            open=record.get("o"),
            high=record.get("h"),
            low=record.get("l"),
            close=record.get("c"),
            volume=record.get("v"),
            vwap=record.get("vw"),
            trades=record.get("n"),
        )

    def to_message(self, source: str, fetched_at: datetime) -> dict[str, Any]:
        """The Kafka ``stock-prices`` value (contract v1, :mod:`stockpipe.contract`)."""
        return {
            "v": contract.VERSION,
            "symbol": self.symbol,
            "ts": contract.format_ts(self.ts),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "vwap": self.vwap,
            "trades": self.trades,
            "source": source,
            "fetched_at": contract.format_fetched_at(fetched_at),
        }


# --- plumbing around the official client --------------------------------------------------------
class _UnparseableBody(Exception):
    """Raised from inside the client's JSON decoding. Deliberately not a ValueError: the client
    swallows ValueError while paginating and would silently return no bars."""


class _StrictJson:
    """The ``custom_json`` hook of RESTClient: json, but a broken body raises; remembers the
    answer's top-level ``status`` (per thread)."""

    def __init__(self) -> None:
        self.seen = threading.local()

    def loads(self, text: str | bytes) -> Any:
        try:
            body = json.loads(text)
        except ValueError as error:
            raise _UnparseableBody(f"response body is not JSON ({error})") from None
        if isinstance(body, dict) and isinstance(body.get("status"), str):
            self.seen.status = body["status"]
        return body


class _MeteredPool:
    """Stands in for the client's urllib3 PoolManager: runs ``before_call`` before each request,
    forces our timeout and no retries, and remembers the status the client will hide from us."""

    def __init__(self, pool: urllib3.PoolManager, timeout_s: float, before_call: Callable[[], None] | None):
        self._pool = pool
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self.before_call = before_call
        self.last = threading.local()

    def request(self, method: str, url: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        if self.before_call is not None:
            self.before_call()
        self.last.status, self.last.retry_after = None, None
        kwargs.update(retries=_NO_RETRIES, timeout=self._timeout)
        response = self._pool.request(method, url, **kwargs)
        self.last.status = response.status
        self.last.retry_after = response.headers.get("Retry-After")
        return response


def _seconds(header: str | None) -> float | None:
    try:
        return max(0.0, float(header)) if header is not None else None
    except ValueError:
        return None  # an HTTP-date; rare enough to let the caller's backoff decide


class PolygonSource:
    """Massive's (formerly Polygon's) REST API, or the simulator, for the producer and the backfill.

    ``before_call()`` is called before every HTTP request, pagination pages included; block in it
    to rate-limit, raise from it to abort.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = MASSIVE_URL,
        timeout: float = 10.0,
        *,
        before_call: Callable[[], None] | None = None,
        page_limit: int = MAX_PAGE_LIMIT,
    ) -> None:
        if not api_key:
            raise AuthenticationFailed(
                "no API key: set MASSIVE_API_KEY (or POLYGON_API_KEY), or leave it unset to use the simulator"
            )
        self.base_url = base_url.rstrip("/")
        self.page_limit = page_limit  # bars per HTTP page; Polygon's maximum is the cheapest
        self._json = _StrictJson()
        self._client = RESTClient(
            api_key,
            connect_timeout=timeout,
            read_timeout=timeout,
            retries=0,  # every retry is the caller's, so it is rate-limited and counted
            base=self.base_url,
            pagination=True,
            custom_json=self._json,
        )
        self._pool = _MeteredPool(self._client.client, timeout, before_call)
        self._client.client = self._pool

    @property
    def last_status(self) -> str | None:
        """``status`` of this thread's last JSON answer: ``OK``, ``DELAYED`` (a delayed plan), ..."""
        return getattr(self._json.seen, "status", None)

    @property
    def before_call(self) -> Callable[[], None] | None:
        return self._pool.before_call

    @before_call.setter
    def before_call(self, hook: Callable[[], None] | None) -> None:
        self._pool.before_call = hook

    def minute_bars(
        self,
        symbol: str,
        start: datetime,
        end: datetime,
        *,
        on_bad_record: Callable[[dict, str], None] | None = None,
    ) -> list[Bar]:
        """Adjusted 1-minute bars of ``symbol`` whose start is in [start, end] (both inclusive, like
        Polygon's from/to), oldest first.

        Follows ``next_url`` until done; each page is one HTTP call (and one ``before_call``). A
        record without a usable timestamp goes to ``on_bad_record(record, reason)``, or is logged
        and dropped.
        """
        from_ms, to_ms = _epoch_ms(start), _epoch_ms(end)
        if to_ms < from_ms:
            return []
        bars: list[Bar] = []
        with _translated_errors(self._pool, f"minute bars of {symbol}"):
            pages = self._client.list_aggs(
                symbol, 1, "minute", from_ms, to_ms, adjusted=True, sort="asc", limit=self.page_limit
            )
            for agg in pages:
                record = {key: value for key, value in _agg_record(agg).items() if value is not None}
                try:
                    bars.append(Bar.from_polygon(symbol, record))
                except ValueError as error:
                    if on_bad_record is None:
                        log.warning("dropped an aggregate record: %s", error)
                    else:
                        on_bad_record(record, str(error))
        return bars

    def ticker_details(self, symbol: str) -> dict | None:
        """Polygon's ticker details (name, exchange, currency, ...), or None for an unknown ticker."""
        try:
            with _translated_errors(self._pool, f"ticker details of {symbol}"):
                details = self._client.get_ticker_details(symbol)
        except RequestRejected as error:
            if error.status == 404:
                return None
            raise
        if not details:  # an OK response without results
            return None
        return _without_nones(dataclasses.asdict(details))


@contextmanager
def _translated_errors(pool: _MeteredPool, what: str) -> Iterator[None]:
    """Turn the client's and urllib3's exceptions into :class:`SourceError` (causes dropped: their
    messages may hold URLs)."""
    try:
        yield
    except SourceError:
        raise
    except BadResponse as error:
        status = getattr(pool.last, "status", None) or 0
        body = str(error)[:300]
        if status == 429:
            raise RateLimited(f"{what}: rate limited (HTTP 429): {body}", _seconds(pool.last.retry_after)) from None
        if status == 403 and _body_status(str(error)) == "NOT_AUTHORIZED":
            raise NotEntitled(f"{what}: the plan does not include this data (HTTP 403): {body}") from None
        if status in (401, 403):
            raise AuthenticationFailed(f"{what}: HTTP {status}, check the API key: {body}") from None
        if status >= 500:
            raise ServerError(f"{what}: server error HTTP {status}: {body}", status) from None
        raise RequestRejected(f"{what}: HTTP {status}: {body}", status) from None
    except _UnparseableBody as error:
        raise BadPayload(f"{what}: {error}") from None
    except urllib3.exceptions.HTTPError as error:
        cause = error.reason if isinstance(error, MaxRetryError) and error.reason is not None else error
        # NewConnectionError subclasses ConnectTimeoutError: test for "unreachable" first.
        if isinstance(cause, NewConnectionError | ProtocolError):
            raise SourceUnavailable(f"{what}: cannot reach the API: {cause}") from None
        if isinstance(cause, Urllib3Timeout):
            raise SourceTimeout(f"{what}: no answer within the timeout: {cause}") from None
        raise SourceUnavailable(f"{what}: {type(cause).__name__}: {cause}") from None


def _body_status(body: str) -> str | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer.get("status") if isinstance(answer, dict) else None


def _agg_record(agg: Any) -> dict:
    """The client's Agg back in Polygon's wire names (the client keeps no raw dict)."""
    return {
        "o": agg.open,
        "h": agg.high,
        "l": agg.low,
        "c": agg.close,
        "v": agg.volume,
        "vw": agg.vwap,
        "t": agg.timestamp,
        "n": agg.transactions,
    }


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("start/end must be timezone-aware datetimes")
    return int(moment.timestamp() * 1000)


def _without_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nones(v) for k, v in value.items() if v is not None}
    return value
