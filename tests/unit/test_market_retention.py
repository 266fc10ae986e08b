"""The market-wide mode keeps a bounded number of days unless the retention is set (issue 14)."""

from __future__ import annotations

from stockpipe.config import load_settings

MARKET_WIDE = {"feed": "websocket", "websocket_symbols": "all", "producer_mode": "service"}


def test_watchlist_mode_keeps_everything_by_default():
    settings = load_settings()
    assert not settings.market_wide and settings.retention_days == 0


def test_market_wide_mode_defaults_to_a_bounded_retention():
    settings = load_settings(**MARKET_WIDE)
    assert settings.market_wide and settings.retention_days == settings.market_retention_days == 2
    assert load_settings(**MARKET_WIDE, market_retention_days=3).retention_days == 3


def test_an_explicit_retention_wins_even_keep_all():
    assert load_settings(**MARKET_WIDE, retention_days=0).retention_days == 0
    assert load_settings(**MARKET_WIDE, retention_days=30).retention_days == 30
