"""The Kafka message contract (DESIGN.md): one minute bar per message, key = symbol.

``{"v":1,"symbol":"AAPL","ts":"2026-11-24T14:31:00Z","open":..,"high":..,"low":..,"close":..,
"volume":..,"vwap":..,"trades":..,"source":"polygon|simulator","fetched_at":"…Z"}``
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

VERSION = 1
PRICE_FIELDS = ("open", "high", "low", "close")
SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9.\-]{0,11}$")


def format_ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_fetched_at(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# Sanity bounds: far beyond any listed stock (the dearest trades near 1e6 a share), yet small
# enough that every indicator (sums of squares over 50 bars included) stays finite.
MAX_PRICE = 1e9
MAX_VOLUME = 1e15


def invalid_reason(message: dict[str, Any]) -> str | None:
    """Why this bar must go to the dead-letter topic, or None when it is valid."""
    if message.get("v") != VERSION:
        return f"unsupported contract version {message.get('v')!r}"
    symbol = message.get("symbol")
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol):
        return f"invalid symbol {symbol!r}"
    try:
        ts = parse_ts(message["ts"])
    except (KeyError, TypeError, ValueError):
        return f"invalid ts {message.get('ts')!r}"
    if ts.second or ts.microsecond:
        return f"ts {message['ts']} is not on a minute boundary"
    numbers = {}
    for field in (*PRICE_FIELDS, "volume"):
        value = message.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"{field} is not a finite number: {value!r}"
        numbers[field] = float(value)
    vwap = message.get("vwap")
    if vwap is not None and (isinstance(vwap, bool) or not isinstance(vwap, int | float) or not math.isfinite(vwap)):
        return f"vwap is not a finite number: {vwap!r}"
    if any(numbers[f] <= 0 for f in PRICE_FIELDS):
        return "prices must be positive"
    if numbers["high"] < max(numbers["open"], numbers["close"]):
        return "high is below open or close"
    if numbers["low"] > min(numbers["open"], numbers["close"]):
        return "low is above open or close"
    if numbers["volume"] < 0:
        return "volume is negative"
    if max(numbers[f] for f in PRICE_FIELDS) > MAX_PRICE or (vwap is not None and vwap > MAX_PRICE):
        return f"a price is above {MAX_PRICE:g}"
    if numbers["volume"] > MAX_VOLUME:
        return f"volume is above {MAX_VOLUME:g}"
    return None


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=True).encode()


def dead_letter(raw: bytes | str, error: str, origin: dict[str, Any]) -> bytes:
    """A dead letter: the raw bytes (as text, or base64 when not UTF-8), the error and the origin."""
    if isinstance(raw, bytes):
        try:
            raw_text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            import base64

            raw_text, encoding = base64.b64encode(raw).decode(), "base64"
    else:
        raw_text, encoding = raw, "utf-8"
    return json.dumps(
        {"error": error, "raw": raw_text, "raw_encoding": encoding, "origin": origin,
         "failed_at": format_fetched_at(datetime.now(UTC))}
    ).encode()
