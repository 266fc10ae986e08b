"""The WebSocket feed's settings and its AM → contract conversion (no services needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stockpipe import contract
from stockpipe.config import ConfigError, load_settings
from stockpipe.producer.websocket import am_message

AM = {"ev": "AM", "sym": "AAPL", "v": 1200, "av": 99000, "op": 190.0, "vw": 190.2, "o": 190.1, "c": 190.3,
      "h": 190.4, "l": 190.0, "a": 190.05, "z": 12, "s": 1795804740000, "e": 1795804800000}  # fmt: skip


def test_rest_is_the_default_feed():
    settings = load_settings()
    assert (settings.feed, settings.websocket_cluster, settings.websocket_symbols) == ("rest", "real-time", "watchlist")


def test_the_websocket_feed_needs_a_long_running_producer():
    with pytest.raises(
        ConfigError, match=r"^Invalid setting STOCKPIPE_PRODUCER_MODE \(got 'airflow'\).*STOCKPIPE_FEED"
    ):
        load_settings(feed="websocket", producer_mode="airflow")
    assert load_settings(feed="websocket", producer_mode="supervisor").feed == "websocket"


def test_am_star_accepts_every_symbol():
    assert load_settings(feed="websocket", websocket_symbols="all", accept_any_symbol=False).accept_any_symbol
    assert not load_settings(feed="websocket", websocket_symbols="watchlist").accept_any_symbol


def test_an_am_event_is_a_contract_message_without_a_trade_count():
    fetched_at = datetime(2026, 11, 27, 18, 40, 1, tzinfo=UTC)
    message = am_message(AM, "simulator-websocket", fetched_at)
    assert message == {
        "v": 1, "symbol": "AAPL", "ts": "2026-11-27T18:39:00Z", "open": 190.1, "high": 190.4, "low": 190.0,
        "close": 190.3, "volume": 1200, "vwap": 190.2, "trades": None, "source": "simulator-websocket",
        "fetched_at": "2026-11-27T18:40:01.000000Z",
    }  # fmt: skip
    assert contract.invalid_reason(message, load_settings(watchlist="AAPL"), now=fetched_at) is None


@pytest.mark.parametrize("start", [None, "1795804740000", 1.7958e12, True])
def test_an_am_event_without_an_integer_start_has_no_identity(start):
    with pytest.raises(ValueError, match="integer 's'"):
        am_message({**AM, "s": start}, "simulator-websocket", datetime.now(UTC))
