"""bench/market_live.py's pure parts: close → Redis per bar (a newer bar covers an older one), bars
expected vs stored per minute, and when a stored row with its indicators became visible (its commit)."""

from __future__ import annotations

from bench.market_live import close_delays, latency_by_minute, per_minute, visible_times

T = 1_800_000_000  # a minute start (multiple of 60)


def test_a_bar_is_covered_by_its_own_or_a_newer_arrival_whichever_came_first() -> None:
    expected = [("A", T), ("A", T + 60), ("A", T + 120), ("B", T), ("C", T)]
    arrivals = {
        ("A", T): T + 65.0,  # its own, 5 s after its close
        ("A", T + 120): T + 182.0,  # A's T+60 never arrived: covered by T+120 (2 s after T+120's close)
        ("B", T - 60): T + 1.0,  # an older bar does not cover B's T
        ("Z", T): T + 61.0,
    }
    delays = close_delays(expected, arrivals)
    assert delays == {("A", T): 5.0, ("A", T + 60): 62.0, ("A", T + 120): 2.0}


def test_an_earlier_arrival_of_a_newer_bar_wins() -> None:
    # a pub/sub message of T+60 seen before T's (out of order): T's latest state moved at the earlier time
    arrivals = {("A", T): T + 130.0, ("A", T + 60): T + 121.0}
    assert close_delays([("A", T)], arrivals) == {("A", T): 61.0}


def test_per_minute_counts_expected_stored_and_unexpected_minutes() -> None:
    expected = [(s, ts) for ts in (T, T + 60) for s in ("A", "B")]
    stored = {("A", T), ("B", T), ("A", T + 60), ("A", T + 120)}
    rows = per_minute(expected, stored)
    assert [(r["expected"], r["stored"]) for r in rows] == [(2, 2), (2, 1), (0, 1)]


def test_a_row_is_visible_at_the_later_commit_of_bar_and_indicators_else_at_written_at() -> None:
    # (symbol, ts, written_at, has indicators, bar's commit, indicators' commit, same transaction)
    rows = [
        ("A", T, T + 61.0, True, T + 61.3, T + 61.3, True),  # one transaction: its commit, 0.3 s after the write
        ("B", T, T + 61.0, True, T + 61.2, T + 64.0, False),  # indicators rewritten later: visible whole then
        ("C", T, T + 61.0, True, None, None, True),  # commits not tracked: written_at
        ("D", T, T + 61.0, False, T + 61.3, None, None),  # no indicators row: not stored
    ]
    visible, started, counts = visible_times(rows)
    assert visible == {("A", T): T + 61.3, ("B", T): T + 64.0, ("C", T): T + 61.0}
    assert started == {("A", T): T + 61.0, ("B", T): T + 61.0, ("C", T): T + 61.0}
    assert counts == {"commit_unknown": 1, "indicators_other_transaction": 1}


def test_latency_by_minute_splits_each_measure_by_bar_minute():
    by_minute = latency_by_minute(
        {"postgres": {("A", 60): 2.0, ("B", 60): 4.0, ("A", 120): 1.0}, "redis": {("A", 60): 2.5}}
    )
    assert [m["ts"] for m in by_minute] == ["00:01", "00:02"]
    assert by_minute[0]["postgres"]["n"] == 2 and by_minute[0]["postgres"]["max_s"] == 4.0
    assert by_minute[0]["redis"]["p50_s"] == 2.5
    assert by_minute[1]["postgres"]["p50_s"] == 1.0 and by_minute[1]["redis"] is None
