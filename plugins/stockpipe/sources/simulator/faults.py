"""Fault injection: make the simulator misbehave on purpose, the ways Polygon can.

Send a JSON object to ``POST /_admin/faults`` (or ``--faults JSON`` / ``STOCKPIPE_SIMULATOR_FAULTS``
at start-up). Every field is optional; the fields present replace the current values, and
``late_bars``/``corrections`` entries are added to the ones already registered.
``DELETE /_admin/faults`` (or ``POST /_admin/reset``) clears everything.

=================  ===========================================================================
field              effect
=================  ===========================================================================
status_429         the next n market-data requests answer 429 with ``Retry-After: retry_after``
retry_after        seconds sent in Retry-After (default 1; may be fractional)
status_5xx         the next n market-data requests answer ``status_5xx_code`` (default 503)
status_5xx_code    500, 502, 503 or 504
delay_s            market-data responses are delayed this many seconds (for timeouts) ...
slow               ... for the next n requests only (omit it: every request until cleared)
malformed          the next n aggregates responses that have results carry one broken bar
malformed_kind     how the first bar of the page is broken: high_below_low (default),
                   negative_volume, missing_field (no close), string_price ("c": "NaN"),
                   or not_json (the whole body is cut short)
late_bars          [{"symbol", "ts", "delay_s"}]: that minute appears only delay_s after it
                   closes (ts: ISO-8601 or unix seconds of the bar's start)
corrections        [{"symbol", "ts", optional open/high/low/close/volume/vwap/trades}]: from now
                   on that minute is served with these values (none given: close +0.5 %, high
                   follows, volume +1 %)
ws_drop            WebSocket: the next n minute closes drop every connection (close code 1011)
                   instead of sending that minute's AM events
ws_stall_s         WebSocket: at the next minute close every connection goes silent this many
                   seconds (kept open; the AM events of the minutes closing meanwhile are never sent)
ws_malformed       WebSocket: the next n AM frames carry one broken event (ws_malformed_kind,
                   the kinds of malformed_kind; not_json cuts the whole frame short)
=================  ===========================================================================

"Market-data requests" are ``/v2/*`` (aggregates, snapshot, last trade) and ``/v1/open-close/*``;
reference data (``/v3/reference/*``), market status and ``/_admin/*`` are never faulted, so a
metadata lookup never eats a fault meant for the bars call. Counters are per server, shared by
all API keys. Faults are checked after authentication and the free-tier limit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MalformedKind = Literal["high_below_low", "negative_volume", "missing_field", "string_price", "not_json"]


class LateBarSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: str
    ts: datetime
    delay_s: float = Field(ge=0)


class CorrectionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: str
    ts: datetime
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    volume: float | None = None
    vwap: float | None = None
    trades: int | None = None

    def values(self) -> dict[str, float]:
        return self.model_dump(exclude={"symbol", "ts"}, exclude_none=True)


class FaultRequest(BaseModel):
    """The JSON body of ``POST /_admin/faults``."""

    model_config = ConfigDict(extra="forbid")
    status_429: int | None = Field(None, ge=0)
    retry_after: float | None = Field(None, ge=0)
    status_5xx: int | None = Field(None, ge=0)
    status_5xx_code: Literal[500, 502, 503, 504] | None = None
    delay_s: float | None = Field(None, ge=0)
    slow: int | None = Field(None, ge=0)
    malformed: int | None = Field(None, ge=0)
    malformed_kind: MalformedKind | None = None
    late_bars: list[LateBarSpec] = Field(default_factory=list)
    corrections: list[CorrectionSpec] = Field(default_factory=list)
    ws_drop: int | None = Field(None, ge=0)
    ws_stall_s: float | None = Field(None, ge=0)
    ws_malformed: int | None = Field(None, ge=0)
    ws_malformed_kind: MalformedKind | None = None


@dataclass(frozen=True)
class Verdict:
    """What the fault plan decided for one request."""

    status: int | None = None  # answer with this error status instead of the real response
    retry_after: float | None = None
    delay_s: float = 0.0


class FaultPlan:
    """The request-level fault counters (thread-safe). Data faults live in the market."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.status_429 = 0
            self.retry_after = 1.0
            self.status_5xx = 0
            self.status_5xx_code = 503
            self.delay_s = 0.0
            self.slow: int | None = None
            self.malformed = 0
            self.malformed_kind: MalformedKind = "high_below_low"
            self.ws_drop = 0
            self.ws_stall_s = 0.0
            self.ws_malformed = 0
            self.ws_malformed_kind: MalformedKind = "high_below_low"

    def update(self, request: FaultRequest) -> None:
        given = request.model_fields_set - {"late_bars", "corrections"}
        with self._lock:
            for name in given:
                setattr(self, name, getattr(request, name))
            if "delay_s" in given and "slow" not in given:
                self.slow = None

    def next_request(self) -> Verdict:
        """Consume the counters for one market-data request."""
        with self._lock:
            if self.status_429 > 0:
                self.status_429 -= 1
                return Verdict(status=429, retry_after=self.retry_after)
            if self.status_5xx > 0:
                self.status_5xx -= 1
                return Verdict(status=self.status_5xx_code)
            if self.delay_s > 0 and (self.slow is None or self.slow > 0):
                if self.slow is not None:
                    self.slow -= 1
                return Verdict(delay_s=self.delay_s)
            return Verdict()

    def take_malformed(self) -> MalformedKind | None:
        """Consume one malformed-response fault, if any is pending."""
        with self._lock:
            if self.malformed <= 0:
                return None
            self.malformed -= 1
            return self.malformed_kind

    def take_ws_drop(self) -> bool:
        """Consume one WebSocket drop (at a minute close), if any is pending."""
        with self._lock:
            if self.ws_drop <= 0:
                return False
            self.ws_drop -= 1
            return True

    def take_ws_stall(self) -> float:
        """The pending WebSocket stall in seconds (consumed), or 0."""
        with self._lock:
            stall, self.ws_stall_s = self.ws_stall_s, 0.0
            return stall

    def take_ws_malformed(self) -> MalformedKind | None:
        """Consume one malformed-frame fault, if any is pending."""
        with self._lock:
            if self.ws_malformed <= 0:
                return None
            self.ws_malformed -= 1
            return self.ws_malformed_kind

    def describe(self) -> dict:
        with self._lock:
            return {
                "status_429": self.status_429,
                "retry_after": self.retry_after,
                "status_5xx": self.status_5xx,
                "status_5xx_code": self.status_5xx_code,
                "delay_s": self.delay_s,
                "slow": self.slow,
                "malformed": self.malformed,
                "malformed_kind": self.malformed_kind,
                "ws_drop": self.ws_drop,
                "ws_stall_s": self.ws_stall_s,
                "ws_malformed": self.ws_malformed,
                "ws_malformed_kind": self.ws_malformed_kind,
            }


def break_bar(bar: dict, kind: MalformedKind) -> dict:
    """A copy of one aggregates result, broken the way ``kind`` says (not for ``not_json``)."""
    broken = dict(bar)
    if kind == "high_below_low":
        broken["h"], broken["l"] = bar["l"], bar["h"] + 1.0
    elif kind == "negative_volume":
        broken["v"] = -abs(bar["v"]) - 1
    elif kind == "missing_field":
        del broken["c"]
    elif kind == "string_price":
        broken["c"] = "NaN"
    return broken
