"""The simulator's price model, clock and market view, without HTTP."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime

import numpy as np
import pytest

from stockpipe.sources.polygon import Bar, redact
from stockpipe.sources.simulator.clock import make_clock, new_york_midnight_s
from stockpipe.sources.simulator.market import SimulatedMarket
from stockpipe.sources.simulator.model import aggregate_buckets, day_bars, is_known_symbol

NORMAL_DAY = date(2026, 11, 24)  # a Tuesday
THANKSGIVING = date(2026, 11, 26)
BLACK_FRIDAY = date(2026, 11, 27)  # NYSE closes at 13:00 ET
DST_ENDS = date(2026, 11, 1)  # New York day of 25 hours


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def session_bars(seed: int, symbol: str, day: date, clock: str = "nyse"):
    grid = make_clock(clock).trading_day(day)
    return day_bars(seed, symbol, day, grid.first_minute_s, grid.minutes)


def as_tuple(bars) -> tuple:
    return tuple(tuple(getattr(bars, name).tolist()) for name in ("start_s", "open", "high", "low", "close", "volume"))


# --- determinism ----------------------------------------------------------------------------------
def test_same_seed_gives_the_same_bars_and_other_seeds_or_symbols_do_not():
    day_bars.cache_clear()
    first = as_tuple(session_bars(42, "AAPL", NORMAL_DAY))
    day_bars.cache_clear()
    assert as_tuple(session_bars(42, "AAPL", NORMAL_DAY)) == first
    assert as_tuple(session_bars(43, "AAPL", NORMAL_DAY)) != first
    assert as_tuple(session_bars(42, "MSFT", NORMAL_DAY)) != first


def test_bars_are_identical_across_processes_with_different_hash_seeds():
    """Python's hash() is salted per process; the model must not depend on it."""
    script = (
        "from datetime import date;"
        "from stockpipe.sources.simulator.model import day_bars;"
        "b = day_bars(7, 'TSLA', date(2026, 11, 24), 1795789800, 390);"
        "print(repr((b.close.tolist()[::37], b.volume.tolist()[::41], b.vwap.tolist()[-1])))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hash_seed, "PYTHONPATH": ":".join(sys.path)},
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop() == repr(
        (
            (bars := day_bars(7, "TSLA", date(2026, 11, 24), 1795789800, 390)).close.tolist()[::37],
            bars.volume.tolist()[::41],
            bars.vwap.tolist()[-1],
        )
    )


# --- consistency ----------------------------------------------------------------------------------
@pytest.mark.parametrize("symbol", ["AAPL", "GOOGL", "BRK.B", "X"])
@pytest.mark.parametrize("day", [date(2003, 3, 10), NORMAL_DAY, BLACK_FRIDAY, date(2027, 6, 1)])
def test_every_bar_is_internally_consistent(symbol: str, day: date):
    bars = session_bars(42, symbol, day, clock="demo")
    assert len(bars) == 1440
    assert (bars.open > 0).all() and (bars.low > 0).all()
    assert (bars.high >= np.maximum(bars.open, bars.close)).all()
    assert (bars.low <= np.minimum(bars.open, bars.close)).all()
    assert ((bars.low <= bars.vwap) & (bars.vwap <= bars.high)).all()
    assert bars.volume.dtype.kind == "i" and (bars.volume > 0).all()
    assert bars.trades.dtype.kind == "i" and ((bars.trades >= 1) & (bars.trades <= bars.volume)).all()
    assert (np.diff(bars.start_s) == 60).all()
    assert (bars.open[1:] == bars.close[:-1]).all(), "each minute opens at the previous close"


def test_a_day_opens_at_the_previous_days_close():
    """Days chain without computing history: in demo mode the series is continuous."""
    for first, second in [(date(2026, 11, 23), NORMAL_DAY), (date(2011, 2, 28), date(2011, 3, 1))]:
        assert session_bars(5, "MSFT", first, "demo").close[-1] == session_bars(5, "MSFT", second, "demo").open[0]


def test_prices_move_like_a_stock_not_like_noise():
    days = [date.fromordinal(NORMAL_DAY.toordinal() - n) for n in range(60)]
    closes = np.array([session_bars(42, "AAPL", day, "demo").close[-1] for day in days])
    day_moves = np.abs(np.diff(np.log(closes)))
    assert 0.001 < np.median(day_moves) < 0.05
    assert closes.max() / closes.min() < 2


def test_volume_is_u_shaped_over_the_session():
    opening, midday, closing = [], [], []
    for offset in range(10):
        bars = session_bars(42, "AAPL", date.fromordinal(date(2026, 11, 2).toordinal() + offset))
        if len(bars) != 390:
            continue
        opening.append(bars.volume[:30].mean())
        midday.append(bars.volume[180:210].mean())
        closing.append(bars.volume[-30:].mean())
    assert np.mean(opening) > 1.5 * np.mean(midday)
    assert np.mean(closing) > 1.5 * np.mean(midday)


def test_aggregating_merges_windows_like_polygon():
    bars = session_bars(42, "AAPL", NORMAL_DAY)
    windows = aggregate_buckets(bars, bars.start_s - bars.start_s % 300)
    assert len(windows) == 78  # 390 minutes from 09:30, in 5-minute windows
    first = windows[0]
    assert first.open == bars.open[0] and first.close == bars.close[4]
    assert first.high == bars.high[:5].max() and first.low == bars.low[:5].min()
    assert first.volume == bars.volume[:5].sum() and first.trades == bars.trades[:5].sum()
    assert first.vwap == pytest.approx((bars.vwap[:5] * bars.volume[:5]).sum() / bars.volume[:5].sum(), abs=1e-4)
    assert first.bars == 5


# --- symbols --------------------------------------------------------------------------------------
@pytest.mark.parametrize("symbol", ["AAPL", "A", "GOOGL", "BRK.B"])
def test_known_symbols(symbol: str):
    assert is_known_symbol(symbol)


@pytest.mark.parametrize("symbol", ["ZZZ", "ZZZT", "aapl", "TOOLONG", "BRK.BB", "", "A1"])
def test_unknown_symbols(symbol: str):
    assert not is_known_symbol(symbol)


# --- clocks ---------------------------------------------------------------------------------------
def test_nyse_clock_knows_holidays_early_closes_and_normal_days():
    nyse = make_clock("nyse")
    assert nyse.trading_day(THANKSGIVING).minutes == 0
    assert nyse.trading_day(date(2026, 11, 28)).minutes == 0  # Saturday
    early = nyse.trading_day(BLACK_FRIDAY)
    assert early.minutes == 210
    assert early.first_minute_s == utc(2026, 11, 27, 14, 30) and early.end_s == utc(2026, 11, 27, 18, 0)
    assert nyse.trading_day(NORMAL_DAY).minutes == 390


def test_demo_clock_trades_every_minute_of_every_day():
    demo = make_clock("demo")
    assert demo.trading_day(THANKSGIVING).minutes == 1440
    assert demo.trading_day(date(2026, 11, 28)).first_minute_s == new_york_midnight_s(date(2026, 11, 28))
    assert demo.trading_day(DST_ENDS).minutes == 1500
    assert demo.market_status(utc(2026, 11, 29, 8, 0))["market"] == "open"  # a Sunday, 03:00 ET


def test_nyse_market_status_follows_the_session():
    nyse = make_clock("nyse")
    assert nyse.market_status(utc(2026, 11, 24, 15, 0))["market"] == "open"
    pre = nyse.market_status(utc(2026, 11, 24, 12, 0))  # 07:00 ET
    assert pre["market"] == "extended-hours" and pre["earlyHours"] and not pre["afterHours"]
    assert nyse.market_status(utc(2026, 11, 27, 19, 0))["afterHours"]  # 14:00 ET after the early close
    assert nyse.market_status(utc(2026, 11, 26, 16, 0))["market"] == "closed"  # Thanksgiving
    assert nyse.market_status(utc(2026, 11, 24, 15, 0))["serverTime"] == "2026-11-24T10:00:00-05:00"


def test_nyse_upcoming_holidays_name_closures_and_early_closes():
    upcoming = make_clock("nyse").upcoming_holidays(utc(2026, 11, 20, 15, 0))
    by_day = {(entry["date"], entry["exchange"]): entry for entry in upcoming}
    assert by_day[("2026-11-26", "NYSE")] == {
        "date": "2026-11-26",
        "exchange": "NYSE",
        "name": "Thanksgiving",
        "status": "closed",
    }
    friday = by_day[("2026-11-27", "NASDAQ")]
    assert friday["status"] == "early-close" and friday["close"] == "2026-11-27T18:00:00.000Z"
    assert ("2026-12-25", "NYSE") in by_day
    assert make_clock("demo").upcoming_holidays(utc(2026, 11, 20, 15, 0)) == []


# --- the market as of a moment --------------------------------------------------------------------
@pytest.fixture
def market() -> SimulatedMarket:
    return SimulatedMarket(42, make_clock("nyse"))


def test_a_bar_exists_only_once_its_minute_has_closed(market: SimulatedMarket):
    bar_start = utc(2026, 11, 24, 15, 0)
    almost = market.visible_bars("AAPL", NORMAL_DAY, now_s=bar_start + 59.999)
    assert almost.start_s[-1] == bar_start - 60
    closed = market.visible_bars("AAPL", NORMAL_DAY, now_s=bar_start + 60)
    assert closed.start_s[-1] == bar_start
    assert len(closed) == 31  # 09:30 .. 10:00 ET
    assert len(market.visible_bars("AAPL", NORMAL_DAY, now_s=utc(2026, 11, 24, 14, 30, 59))) == 0


def test_late_bar_is_withheld_until_its_delay_has_passed(market: SimulatedMarket):
    late_start = int(utc(2026, 11, 24, 14, 40))
    market.add_late_bar("AAPL", late_start, delay_s=300)
    before = market.visible_bars("AAPL", NORMAL_DAY, now_s=late_start + 60 + 299)
    assert late_start not in before.start_s and late_start + 60 in before.start_s
    assert late_start in market.visible_bars("AAPL", NORMAL_DAY, now_s=late_start + 60 + 300).start_s
    assert late_start in market.visible_bars("MSFT", NORMAL_DAY, now_s=late_start + 60).start_s


def test_correction_changes_one_bar_from_now_on_and_keeps_it_consistent(market: SimulatedMarket):
    now = utc(2026, 11, 24, 21, 0)
    fixed_start = int(utc(2026, 11, 24, 15, 0))
    original = market.visible_bars("AAPL", NORMAL_DAY, now)
    market.add_correction("AAPL", fixed_start)
    corrected = market.visible_bars("AAPL", NORMAL_DAY, now)
    i = int(np.flatnonzero(original.start_s == fixed_start)[0])
    assert corrected.close[i] != original.close[i] and corrected.volume[i] > original.volume[i]
    assert corrected.high[i] >= max(corrected.open[i], corrected.close[i])
    others = np.arange(len(original)) != i
    assert (corrected.close[others] == original.close[others]).all()

    market.add_correction("AAPL", fixed_start, {"close": 1.5, "low": 1.0})
    explicit = market.visible_bars("AAPL", NORMAL_DAY, now)
    assert (explicit.close[i], explicit.low[i]) == (1.5, 1.0)
    market.clear_adjustments()
    assert market.visible_bars("AAPL", NORMAL_DAY, now).close[i] == original.close[i]


def test_aggregate_pages_cover_everything_once_in_both_orders(market: SimulatedMarket):
    now = utc(2026, 11, 28, 0, 0)
    start, end = utc(2026, 11, 24, 0, 0), utc(2026, 11, 27, 23, 59)
    everything = market.aggregates("AAPL", 7, "minute", start, end, now, limit=50000).results

    def walk(descending: bool) -> list:
        collected, lo, hi = [], start, end
        while True:
            page = market.aggregates("AAPL", 7, "minute", lo, hi, now, descending=descending, limit=40)
            collected += page.results
            if not page.has_more:
                return collected
            if descending:
                hi = page.resume_ms / 1000
            else:
                lo = page.resume_ms / 1000

    assert walk(False) == everything
    assert walk(True) == everything[::-1]
    assert sum(window.bars for window in everything) == 390 + 390 + 210  # Tue, Wed, Fri


def test_unknown_symbols_have_no_aggregates(market: SimulatedMarket):
    page = market.aggregates("ZZZQ", 1, "minute", utc(2026, 11, 24), utc(2026, 11, 25), utc(2026, 11, 26))
    assert page.results == [] and not page.has_more


# --- the Kafka message ----------------------------------------------------------------------------
def test_bar_becomes_the_contract_message():
    start_ms = int(utc(2026, 11, 24, 14, 31) * 1000)
    bar = Bar.from_polygon("AAPL", {"o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 100, "vw": 1.2, "n": 7, "t": start_ms})
    message = bar.to_message("simulator", datetime(2026, 11, 24, 14, 32, 5, 123456, tzinfo=UTC))
    assert message == {
        "v": 1,
        "symbol": "AAPL",
        "ts": "2026-11-24T14:31:00Z",
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume": 100,
        "vwap": 1.2,
        "trades": 7,
        "source": "simulator",
        "fetched_at": "2026-11-24T14:32:05.123456Z",
    }
    with pytest.raises(ValueError):
        Bar.from_polygon("AAPL", {"o": 1.0, "t": "yesterday"})


def test_api_keys_are_redacted_from_text():
    text = "GET /v2/aggs?limit=5&apiKey=s3cr3t-KEY&sort=asc failed; retry ?apiKey=other"
    assert redact(text) == "GET /v2/aggs?limit=5&apiKey=REDACTED&sort=asc failed; retry ?apiKey=REDACTED"


def test_day_and_hour_windows_merge_the_right_minutes(market: SimulatedMarket):
    now = utc(2026, 12, 1, 0, 0)
    start, end = utc(2026, 11, 23, 5, 0), utc(2026, 11, 28, 4, 59)  # New York Mon 00:00 .. Fri 23:59
    days = market.aggregates("AAPL", 1, "day", start, end, now).results
    assert [d.start_s for d in days] == [new_york_midnight_s(date(2026, 11, n)) for n in (23, 24, 25, 27)]
    assert days[1] == market.day_aggregate("AAPL", NORMAL_DAY, now)
    pairs = market.aggregates("AAPL", 2, "day", start, end, now).results
    by_day = {datetime.fromtimestamp(d.start_s, UTC).date(): d for d in days}
    assert sum(p.volume for p in pairs) == sum(d.volume for d in days)
    assert len(pairs) == len({d.toordinal() // 2 for d in by_day})
    hours = market.aggregates("AAPL", 1, "hour", utc(2026, 11, 24, 14, 0), utc(2026, 11, 24, 21, 0), now).results
    assert [h.bars for h in hours] == [30, 60, 60, 60, 60, 60, 60]  # 09:30-10:00 ET, then full hours
