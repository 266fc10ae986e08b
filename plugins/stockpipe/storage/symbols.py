"""market.symbols: ticker metadata from the market-data API."""

from __future__ import annotations

from typing import Any

from stockpipe.clients import pg_connect
from stockpipe.config import Settings

_COLUMNS = (
    "name",
    "exchange",
    "currency",
    "market",
    "type",
    "active",
    "market_cap",
    "description",
    "homepage_url",
    "list_date",
)


def symbol_row(symbol: str, details: dict[str, Any], source: str) -> dict[str, Any]:
    """Map Polygon's ticker-details result onto market.symbols' columns."""
    return {
        "symbol": symbol,
        "name": details.get("name"),
        "exchange": details.get("primary_exchange") or details.get("exchange"),
        "currency": (details.get("currency_name") or "").upper() or None,
        "market": details.get("market"),
        "type": details.get("type"),
        "active": details.get("active"),
        "market_cap": details.get("market_cap"),
        "description": details.get("description"),
        "homepage_url": details.get("homepage_url"),
        "list_date": details.get("list_date") or None,
        "source": source,
    }


def upsert_symbol(settings: Settings, symbol: str, details: dict[str, Any], source: str) -> None:
    row = symbol_row(symbol, details, source)
    names = ("symbol", *_COLUMNS, "source")
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*_COLUMNS, "source"))
    with pg_connect(settings, "writer", connect_timeout=5) as conn:
        conn.execute(
            f"INSERT INTO market.symbols ({', '.join(names)}, refreshed_at) "
            f"VALUES ({', '.join('%(' + n + ')s' for n in names)}, now()) "
            f"ON CONFLICT (symbol) DO UPDATE SET {updates}, refreshed_at = now()",
            row,
        )
