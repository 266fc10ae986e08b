"""bench/report.py on small synthetic results: ratios, met flags, the issue's targets, missing and
stale results, and the splice of docs/benchmarks.md's summary block."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import report

GIB = 1024**3
NOW = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)


def latency(rate: float, pg_p95: float, redis_p95: float) -> dict:
    def stats(p95: float) -> dict:
        return {"n": 100, "p50": p95 / 2, "p95": p95, "p99": p95 * 1.1, "max": p95 * 1.2}

    return {
        "rate": rate,
        "sent": 100,
        "stored": 100,
        "complete": True,
        "postgres_s": stats(pg_p95),
        "redis_s": stats(redis_p95),
    }


def stream(stream_bps: float = 30_000.0, raw_bps: float = 50_000.0, p95_1000: tuple = (1.5, 2.5)) -> dict:
    return {
        "benchmark": "stream_throughput",
        "when": "2026-11-25T15:00:00+00:00",
        "machine": {"host": "box", "nproc": 2, "cpu": "Test CPU", "free_m": "total\nMem: 24105 1 2", "python": "3.11"},
        "loadavg_start": [1.0, 1.0, 1.0],
        "loadavg_end": [2.0, 1.0, 1.0],
        "params": {
            "symbols": 500,
            "bars_per_symbol": 200,
            "batch": 20000,
            "rates": [100.0, 1000.0],
            "duration_s": 45.0,
            "spark_master": "local[2]",
        },
        "raw_baseline": {"sustained_bars_per_s": raw_bps, "overall_bars_per_s": raw_bps / 2},
        "stream": {"sustained_bars_per_s": stream_bps, "overall_bars_per_s": stream_bps / 2},
        "throughput_ratio": stream_bps / raw_bps,
        "latency": [latency(100.0, 9.0, 9.0), latency(1000.0, *p95_1000)],
    }


def backfill(total_s: float = 40.0, call_s: float = 30.0, naive_s: float = 400.0, symbols: int = 500) -> dict:
    return {
        "benchmark": "backfill",
        "at": "2026-11-25T14:00:00Z",
        "day": "2026-11-24",
        "symbols": symbols,
        "bars": symbols * 390,
        "backfill": {"total_s": total_s, "backfill_call_s": call_s, "indicator_rows_stored": symbols * 390},
        "baseline": {"total_s": naive_s, "extrapolated": False, "symbols_measured": symbols},
        "comparison": {"rows_compared": symbols * 390, "null_mismatches": 0, "max_abs_diff": {"sma_5": 0.0}},
        "machine": {"nproc": 2, "arch": "x86_64", "loadavg_before": [3.0, 0, 0], "loadavg_after": [4.0, 0, 0]},
    }


def dashboard(calendar: str, at: str, kafka_cold_s: float = 0.5) -> dict:
    return {
        "benchmark": "dashboard",
        "at": at,
        "calendar": calendar,
        "symbols": ["AAPL"],
        "bars": 1000,
        "repeat": 3,
        "machine": "x86_64 2 cpu",
        "results": [
            {"page": "overview", "cold_s": 0.4, "warm_s": 0.1},
            {"page": "kafka", "cold_s": kafka_cold_s, "warm_s": 0.05},
        ],
    }


def memory(idle_pss: float = 4 * GIB, idle_rss: float = 6 * GIB) -> dict:
    return {
        "benchmark": "stack_memory",
        "at": "2026-11-25T14:30:00Z",
        "idle": {"seconds": 20, "total_rss_max": idle_rss, "total_pss_max": idle_pss, "loadavg": [5.0, 0, 0]},
        "load": {
            "burst": {"sent": 60000, "seconds": 60, "rate": 1000.0},
            "total_rss_max": idle_rss * 1.1,
            "total_pss_max": idle_pss * 1.2,
            "loadavg_end_of_burst": [6.0, 0, 0],
        },
        "components": [{"component": report.SPARK_DRIVER, "idle": {"rss": 1, "pss": 1, "processes": 1}}],
        "machine": {"nproc": 2, "arch": "x86_64"},
    }


def write(results: Path, **files: dict) -> Path:
    results.mkdir(exist_ok=True)
    for name, data in files.items():
        (results / f"{name}.json").write_text(json.dumps(data))
    return results


def full(tmp_path: Path, **overrides: dict) -> Path:
    files = {
        "stream_throughput": stream(),
        "backfill": backfill(),
        "dashboard-20261125T130000Z": dashboard("nyse", "20261125T130000Z"),
        "dashboard-20261125T130100Z": dashboard("demo", "20261125T130100Z"),
        "stack_memory": memory(),
    }
    return write(tmp_path / "results", **{**files, **overrides})


def row(summary: dict, starts: str) -> dict:
    (found,) = [r for r in summary["rows"] if r["figure"].startswith(starts)]
    return found


def test_every_figure_with_its_ratio_and_met_flag(tmp_path):
    summary = report.build(full(tmp_path), now=NOW)

    throughput = row(summary, "stream throughput, 500 symbols, sustained")
    assert throughput["numbers"]["ratio"] == pytest.approx(0.6)
    assert (throughput["value"], throughput["ratio"], throughput["met"]) == ("30,000", "0.600×", True)
    assert row(summary, "bar→PostgreSQL latency p50 / p95 / p99 at 1,000")["met"] is True  # p95 1.5 s
    assert row(summary, "bar→Redis latency p50 / p95 / p99 at 1,000")["met"] is False  # p95 2.5 s
    assert row(summary, "bar→Redis latency p50 / p95 / p99 at 100 ")["met"] is None  # no target at 100 bars/s

    wall = row(summary, "backfill of 2026-11-24, 500 symbols: wall time")
    assert (wall["value"], wall["baseline"], wall["ratio"], wall["met"]) == ("40.0", "400", "10.0×", True)
    assert row(summary, "backfill() call only")["numbers"]["ratio"] == pytest.approx(400 / 30)

    assert [r["met"] for r in summary["rows"] if r["figure"].startswith("dashboard page")] == [True] * 4
    assert row(summary, "whole local stack idle, PSS")["met"] is True
    loaded = row(summary, "whole local stack under load (1,000 bars/s burst), PSS")
    assert loaded["numbers"]["ratio"] == pytest.approx(1.2) and loaded["met"] is None

    status = {goal: g["status"] for goal, g in summary["goals"].items() if g["issue"] == 7}
    assert status == {"throughput": "met", "latency": "not met", "backfill": "met", "pages": "met", "memory": "met"}
    assert summary["missing"] == [] and not any(info["notes"] for info in summary["runs"].values())


@pytest.mark.parametrize(
    ("files", "goal", "status"),
    [
        ({"stream_throughput": stream(24_000.0, 50_000.0)}, "throughput", "not met"),  # 0.48 of the baseline
        ({"stream_throughput": stream(25_000.0, 50_000.0)}, "throughput", "met"),  # exactly half
        ({"backfill": backfill(total_s=50.0, naive_s=200.0)}, "backfill", "not met"),  # fast, but only 4×
        ({"backfill": backfill(total_s=70.0, naive_s=700.0)}, "backfill", "not met"),  # 10×, but over 60 s
        ({"backfill": backfill(total_s=10.0, naive_s=100.0, symbols=50)}, "backfill", "not measured"),  # --quick
        ({"dashboard-20261125T130100Z": dashboard("demo", "20261125T130100Z", 1.2)}, "pages", "not met"),
        ({"stack_memory": memory(idle_pss=5.5 * GIB)}, "memory", "not met"),
    ],
)
def test_targets_judged_against_the_issue(tmp_path, files, goal, status):
    assert report.build(full(tmp_path, **files), now=NOW)["goals"][goal]["status"] == status


def test_missing_results_and_fields_are_named(tmp_path):
    data = stream()
    del data["raw_baseline"]["sustained_bars_per_s"]
    summary = report.build(write(tmp_path / "results", stream_throughput=data), now=NOW)

    assert summary["missing"] == ["backfill", "dashboard nyse", "dashboard demo", "stack_memory"]
    assert row(summary, "stream throughput, 500 symbols")["met"] is None
    assert "field `raw_baseline.sustained_bars_per_s` missing" in summary["runs"]["stream_throughput"]["notes"]
    assert summary["goals"]["throughput"]["status"] == "not measured"
    assert summary["goals"]["memory"]["status"] == "not measured"
    text = report.render(summary)
    assert "MISSING" in text and "run `.venv/bin/python bench/backfill.py`" in text


def test_newest_dashboard_per_calendar_and_stale_runs(tmp_path):
    results = full(tmp_path, **{"dashboard-20261125T150000Z": dashboard("nyse", "20261125T150000Z", 0.9)})
    summary = report.build(results, now=NOW, since=datetime(2026, 11, 25, 14, 45, tzinfo=UTC))

    assert summary["runs"]["dashboard nyse"]["file"] == "dashboard-20261125T150000Z.json"
    assert row(summary, "dashboard page kafka [nyse]")["value"] == "0.90 / 0.05"
    stale = {key for key, info in summary["runs"].items() if info["stale"]}
    assert stale == {"backfill", "dashboard demo", "stack_memory"}  # run before 14:45
    assert summary["runs"]["stream_throughput"]["age"] == "1 h 00 min ago"


DOC = "# Benchmarks\n\nIntro.\n\n{start}\nold summary | 1\n{end}\n\n## Dashboard\n\nHand-written | figures.\n"


def rewrite_doc(tmp_path: Path, results: Path) -> tuple[str, str]:
    """``--markdown`` on a small doc: nothing outside the markers changes; the new text and its block."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC.format(start=report.START_MARKER, end=report.END_MARKER))
    before, after = DOC.split("{start}")[0], DOC.split("{end}")[1]

    assert report.main(["--results", str(results), "--markdown", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(before + report.START_MARKER + "\n") and text.endswith(report.END_MARKER + after)
    return text, text[len(before) : -len(after)]


def test_markdown_splice_replaces_only_the_block(tmp_path, capsys):
    results = full(tmp_path)
    text, block = rewrite_doc(tmp_path, results)
    assert "old summary" not in block
    assert "| stream throughput, 500 symbols, sustained (bars/s) | 30,000 | 50,000 (raw Kafka→COPY) | 0.600× |" in block
    assert "max \\|backfill − naive TA-Lib\\|" in block  # pipes in a cell are escaped
    assert "**Targets not met**:\n- issue 7: bar→PostgreSQL and bar→Redis p95 ≤ 2 s at 1,000 bars/s.\n" in block
    assert json.loads((results / "summary.json").read_text())["goals"]["latency"]["status"] == "not met"
    assert "figure" in capsys.readouterr().out

    assert report.splice(text, report.markdown_block(report.build(results))) == text  # idempotent


def test_markdown_without_markers_leaves_the_doc_alone(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nNo markers here.\n")
    assert report.main(["--results", str(full(tmp_path)), "--markdown", str(doc)]) == 1
    assert doc.read_text() == "# Benchmarks\n\nNo markers here.\n"
    with pytest.raises(ValueError, match="bench-summary:start"):
        report.splice(f"{report.END_MARKER}\n{report.START_MARKER}\n", "block")


# --- issues 13-15's benchmarks: hand-written results in the schema each script writes -------------

T0 = 1_796_160_000  # 2026-11-25 ~, epoch seconds of the phases' windows


def stats(p50: float, p95: float, n: int = 75, mx: float | None = None) -> dict:
    return {"n": n, "p50_s": p50, "p95_s": p95, "max_s": mx if mx is not None else p95 * 1.5, "mean_s": p50}


def live_phase(name: str, limit: int, start: float, minutes: float, p50: float, p95: float, **extra) -> dict:
    expected = 5 * int(minutes)
    phase = {
        "name": name,
        "env": {
            "STOCKPIPE_PRODUCER_POLICY": "cycle" if name.startswith("baseline") else "planned",
            "STOCKPIPE_RATE_LIMIT_PER_MINUTE": str(limit),
        },
        "started_at": start - 120,
        "window_start": start,
        "window_end": start + minutes * 60,
        "ended_at": start + minutes * 60 + 90,
        "backfill_waiting_s": 0,
        "other_producers": [],
        "expected_bars": expected,
        "redis": stats(p50, p95, expected),
        "postgres": stats(p50, p95, expected),
        "redis_missing": 0,
        "postgres_missing": 0,
        "simulator_calls": 5 * int(minutes),
        "most_calls_in_any_60s": limit,
    }
    return {**phase, **extra}


def live_freshness(default: tuple = (8.8, 14.6), double_p95: float = 6.8, minutes: float = 15, **extra) -> dict:
    return {
        "started_at": "2026-11-25T14:00:00+00:00",
        "phases": [
            live_phase("baseline-cycle", 5, T0, 5, 44.0, 47.8),
            live_phase("planned-default", 5, T0 + 600, minutes, *default, **extra),
            live_phase("planned-2x", 10, T0 + 2000, 6, 5.0, double_p95),
        ],
        "grant_to_arrival": {"calls": 300, "min_ms": 0.5, "p50_ms": 0.6, "p99_ms": 6.4, "max_ms": 7.5},
        "finished_at": "2026-11-25T14:50:00+00:00",
        "machine": "2 cpu, Linux-x86_64, Python 3.11.2",
        "loadavg": [1.5, 2.0, 3.0],
        "params": {
            "symbols": 5,
            "warmup_s": 120,
            "minutes": {"baseline": 5, "default": minutes, "double": 6},
            "own_api_key": True,
        },
    }


def history_case(
    case: str,
    sessions: int,
    wall_s: float,
    live_p95: float | None,
    ok: int | None = None,
    equal: bool = True,
    calls: int = 10,
) -> dict:
    live = (
        {"bars": 0}
        if live_p95 is None
        else {
            "bars": 55,
            "expected_bars": 55,
            "p50_s": 10.0,
            "p95_s": live_p95,
            "max_s": live_p95 + 5,
            "longest_gap_s": 90.0,
        }
    )
    return {
        "case": case,
        "sessions": sessions,
        "first": "2026-09-18",
        "last": "2026-11-16",
        "symbols": 5,
        "done": True,
        "wall_s": wall_s,
        "api_calls": calls,
        "fewest_calls": calls,
        "calls_per_session": round(calls / sessions, 2),
        "checks": {"recorded": sessions, "ok": sessions if ok is None else ok, "failed": [], "last_finished": "x"},
        "max_calls_in_60s": 4,
        "rate_limit_per_minute": 5,
        "live": live,
        "talib": {"bars_compared": 1000, "max_rel_diff": 3e-15, "equal": equal, "problems": []},
    }


RANGE = "range (60 sessions)"


def history(first: dict | None = None, range_: dict | None = None) -> dict:
    return {
        "benchmark": "history",
        "when": "2026-11-25T14:10:00+00:00",
        "machine": {"cpus": 2, "python": "3.11.2"},
        "settings": {
            "watchlist": ["AAPL", "GOOGL", "MSFT", "AMZN", "TSLA"],
            "rate_limit_per_minute": 5,
            "calendar": "demo",
        },
        "results": [
            first or history_case("first start (5 sessions, 1 active run)", 5, 686.0, 67.0, calls=5),
            range_ or history_case(RANGE, 60, 540.0, 90.0),
            history_case("baseline (per session)", 1, 99.0, 47.7, calls=5),
        ],
    }


def kills(*relaunch_s: float) -> dict:
    runs = [{"kill": i, "relaunch_s": s, "first_cycle_s": s + 1} for i, s in enumerate(relaunch_s, 1)]
    worst = max(relaunch_s)
    return {
        "kills": runs,
        "relaunch_p50_s": sorted(relaunch_s)[len(relaunch_s) // 2],
        "relaunch_max_s": worst,
        "first_cycle_p50_s": 8.0,
        "first_cycle_max_s": worst + 1,
    }


def producer_relaunch(relaunch_max: float = 7.9, gaps: int = 0, calls: int = 5) -> dict:
    return {
        "benchmark": "producer_relaunch",
        "at": "2026-11-25T14:20:00Z",
        "params": {
            "kills": 4,
            "every_s": 40.0,
            "baseline_kills": 2,
            "settle_s": 60.0,
            "on_stack": False,
            "redis_db": 7,
        },
        "setup": "own Airflow (api-server, scheduler, dag-processor)",
        "watchlist": ["AAPL", "GOOGL", "MSFT", "AMZN", "TSLA"],
        "rate_limit_per_minute": 5,
        "service": kills(7.2, 3.0, 7.1, relaunch_max),
        "baseline_supervisord": kills(0.3, 0.25),
        "verify": {"gaps": gaps, "duplicates": 3, "symbols": [], "calendar": "demo"},
        "request_log": {"keys": {"key-1": {"calls": 39, "max_in_any_60s": calls}}, "max_in_any_60s": calls},
        "machine": {"cpus": 2, "platform": "Linux-x86_64", "loadavg_before": [0.8, 1, 1], "loadavg_after": [1.6, 1, 1]},
    }


def ws_phase(name: str, start: float, minutes: float, redis: dict | None, **extra) -> dict:
    phase = {
        "name": name,
        "env": {"STOCKPIPE_FEED": "rest" if name == "rest" else "websocket"},
        "storm_drops": 0,
        "started_at": start - 240,
        "window_start": start,
        "window_end": start + minutes * 60,
        "ended_at": start + minutes * 60 + 60,
        "expected_bars": 5 * int(minutes),
        "lost": [],
        "most_calls_in_any_60s": 5,
        "connections": 1,
        "sources": {"simulator": 5 * int(minutes)},
    }
    if redis is not None:
        phase.update(redis=redis, postgres=redis, kafka=stats(0.01, 0.02, redis["n"]))
    return {**phase, **extra}


def websocket_feed(
    ws_p95: float = 1.8,
    ws_n: int = 30,
    lost: list | None = None,
    storm_calls: int = 5,
    drops: int = 10,
    same_run: bool = True,
) -> dict:
    rest = ws_phase("rest", T0, 4, stats(11.8, 73.6, 20))
    ws_start = rest["ended_at"] + 240 + 5 if same_run else T0 - 3600  # the next phase, or an earlier run's
    return {
        "started_at": "2026-11-25T13:00:00+00:00",
        "phases": [
            rest,
            ws_phase("websocket", ws_start, 6, stats(1.6, ws_p95, ws_n)),
            ws_phase(
                "storm",
                T0 + 3000,
                10,
                None,
                storm_drops=drops,
                lost=lost or [],
                most_calls_in_any_60s=storm_calls,
                fetched=stats(19.0, 20.2, 50),
            ),
        ],
        "finished_at": "2026-11-25T15:00:00+00:00",
        "machine": "2 cpu, Linux-x86_64, Python 3.11.2",
        "loadavg": [3.9, 3.1, 2.7],
        "params": {
            "symbols": 5,
            "rate_limit_per_minute": 5,
            "warmup_s": 240.0,
            "minutes": {"rest": 4, "websocket": 6, "storm": 10},
        },
    }


def market_scale(
    stream_bps: float = 30_000.0, raw_bps: float = 75_000.0, symbols: int = 10_000, page_cold_s: float = 0.53
) -> dict:
    bars = symbols * 150
    return {
        "benchmark": "market_scale",
        "when": "2026-11-25T14:30:00+00:00",
        "note": "after",
        "commit": "3a2471c",
        "machine": {"host": "vm", "nproc": 2, "cpu": "Test CPU", "free_m": "total\nMem: 24105 1 2", "python": "3.11"},
        "loadavg_start": [3.8, 5.7, 7.3],
        "params": {
            "symbols": symbols,
            "minutes": 150,
            "batch": 200000,
            "trigger_s": 0.5,
            "spark_master": "local[2]",
            "shuffle_partitions": 2,
            "kafka_partitions": 6,
            "state_buckets": 16,
        },
        "backlog": {"bars": bars, "produce_s": 25.1},
        "raw_baseline": {"bars": bars, "stored": bars, "sustained_bars_per_s": raw_bps, "overall_bars_per_s": raw_bps},
        "stream": {
            "bars": bars,
            "sustained_bars_per_s": stream_bps,
            "overall_bars_per_s": stream_bps * 0.9,
            "stored_bars": bars,
            "stored_indicator_rows": bars,
        },
        "throughput_ratio": stream_bps / raw_bps,
        "storage": {"gb_per_day": 1.48},
        "dashboard": {"symbols": symbols, "cold_s": page_cold_s, "warm_s": 0.03, "target_s": 1.0},
        "loadavg_end": [3.2, 4.9, 6.7],
        "targets": {"sustained_bars_per_s": 25000, "ratio_aim": 0.5},
    }


def percentiles(p50: float, p95: float, n: int = 100) -> dict:
    return {"n": n, "p50": p50, "p95": p95, "p99": p95 * 1.1, "max": p95 * 1.2}


def alerts_latency(alert_p95: float = 1.6, rate: int = 1000, rules: int = 1000) -> dict:
    return {
        "benchmark": "alerts_latency",
        "when": "2026-11-25T14:40:00+00:00",
        "machine": {"host": "vm", "nproc": 2, "cpu": "Test CPU", "free_m": "total\nMem: 24105 1 2", "python": "3.11"},
        "loadavg_start": [1.9, 1.4, 3.5],
        "params": {
            "symbols": 500,
            "rules": rules,
            "rate": rate,
            "duration_s": 40,
            "warmup_s": 5,
            "warm_bars": 60,
            "trigger_s": 0.5,
        },
        "baseline": {
            "sent": 40000,
            "achieved_rate": rate,
            "postgres_s": percentiles(1.0, 1.4),
            "batch_processing_ms": percentiles(900.0, 1200.0),
        },
        "with_rules": {
            "sent": 40000,
            "achieved_rate": rate,
            "postgres_s": percentiles(1.1, 1.5),
            "batch_processing_ms": percentiles(1000.0, 1300.0),
            "evaluation_ms": percentiles(120.0, 200.0),
            "evaluation_bars_mean": 1000.0,
            "fired_to_published_s": percentiles(0.05, 0.08),
            "alert_s": percentiles(1.2, alert_p95),
            "alerts_fired": 5788,
            "alerts_per_s": 144.7,
            "alerts_undelivered_at_end": 0,
        },
        "loadavg_end": [3.7, 2.3, 3.6],
    }


def market_live(
    symbols: int = 10_000,
    minutes: int = 30,
    pg_p95: float = 1.9,
    redis_n: int | None = None,
    gaps: int = 0,
    pss_gib: float = 5.2,
) -> dict:
    expected = symbols * minutes
    return {
        "finished_at": "2026-11-25T15:10:00+00:00",
        "commit": "abc1234",
        "machine": "2 cpu Linux-x86_64",
        "params": {"symbols": symbols, "universe": "simulator universe", "minutes": minutes, "calendar": "demo",
                   "feed": "websocket", "websocket_symbols": "all", "sample_s": 30, "talib_symbols": "all"},
        "window_start": 1764083400,
        "loadavg_start": [1.5, 1.2, 1.0],
        "loadavg_end": [2.5, 2.2, 2.0],
        "bars": {"expected": expected, "missing": 0},
        "postgres": {"n": expected, "p50_s": 1.1, "p95_s": pg_p95, "max_s": 2.8},
        "redis": {"n": expected if redis_n is None else redis_n, "p50_s": 1.2, "p95_s": 2.0, "max_s": 2.9},
        "verify": {"gaps": gaps, "duplicates": 0},
        "talib": {"equal": True, "bars_compared": expected, "sample": "all"},
        "memory": {"pss_max_bytes": pss_gib * 1024**3, "pss_p95_bytes": 5.0 * 1024**3},
        "stream_batches": {"processing_p50_s": 0.8, "processing_p95_s": 1.6, "processing_max_s": 2.2},
    }  # fmt: skip


def websocket_burst(lost: int = 0) -> dict:
    def feed(push: float, cpu: float) -> dict:
        return {
            "cpu_us_per_event": cpu,
            "events_per_s": 10_000 / push,
            "push_to_last_in_kafka_s": push,
            "close_to_last_fetched_s": push + 0.05,
            "bursts": 12,
            "lost": lost,
        }

    return {
        "benchmark": "websocket_burst",
        "when": "2026-11-25T15:20:00+00:00",
        "host": {"cpus": 2, "python": "3.11.2"},
        "load_1m_at_phase_starts": [2.0, 2.5, 3.0],
        "args": {"universe": 10_000, "bursts": 4, "rounds": 3, "speed": 6.0, "impls": "baseline,new",
                 "baseline_rev": "abc1234"},
        "summary": {"baseline": feed(0.75, 60.0), "new": feed(0.25, 15.0)},
    }  # fmt: skip


def later(tmp_path: Path, **overrides: dict) -> Path:
    """issue 7's five and issues 13-15's six, all met unless ``overrides`` say otherwise."""
    files = {
        "live_freshness": live_freshness(),
        "history": history(),
        "producer_relaunch": producer_relaunch(),
        "websocket_feed": websocket_feed(),
        "market_scale": market_scale(),
        "market_live": market_live(),
        "websocket_burst": websocket_burst(),
        "alerts_latency": alerts_latency(),
    }
    return full(tmp_path, **{**files, **overrides})


def statuses(summary: dict, issue: int) -> dict[str, str]:
    return {goal: g["status"] for goal, g in summary["goals"].items() if g["issue"] == issue}


def test_later_benchmarks_rows_baselines_and_targets(tmp_path):
    summary = report.build(later(tmp_path), now=NOW)

    live = row(summary, "live, planned polling, 5 symbols, 5 calls/min, 15 min: bar close → Redis latest")
    assert (live["value"], live["met"], live["goal"]) == ("8.80 / 14.60 / 21.90", True, "live_default")
    assert live["baseline"] == "44.00 / 47.80 (former cycle policy)"
    assert live["numbers"]["baseline_p95"] == 47.8 and live["ratio"] == "0.305×"
    assert row(summary, "live, planned polling, 5 symbols, 10 calls/min, 6 min")["met"] is True  # p95 6.8 ≤ 15 s

    first = row(summary, "history: first start (5 sessions, 1 active run), 5 sessions")
    assert (first["value"], first["baseline"], first["met"]) == (
        "686",
        "495 (per-session path × 5, extrapolated)",
        True,
    )
    ranged = row(summary, "history: range (60 sessions), 60 sessions × 5 symbols at 5 calls/min")
    assert (ranged["value"], ranged["numbers"]["baseline"], ranged["met"]) == ("540", 99.0 * 60, True)
    assert row(summary, "history: range (60 sessions): live")["value"] == "10.0 / 90.0 / 95.0"
    assert row(summary, "history: range (60 sessions): sessions checked ok")["value"].startswith("60/60; equal")

    relaunch = row(summary, "kill -9 of the producer (Airflow service, 4 kills)")
    assert (relaunch["value"], relaunch["baseline"], relaunch["met"]) == ("7.2 / 7.9", "0.3 / 0.3 (supervisord)", True)
    assert row(summary, "kill -9 of the producer: bars lost")["met"] is True
    assert row(summary, "kill -9 of the producer: bars sent twice")["met"] is None  # harmless: no target

    ws = row(summary, "live, WebSocket, 5 symbols: minute close → Redis")
    assert (ws["value"], ws["baseline"], ws["met"]) == ("1.60 / 1.80 / 2.70", "11.80 / 73.60 (REST polling)", True)
    assert row(summary, "disconnect storm, 10 drops, one a minute: bars lost (of 50)")["met"] is True

    backlog = row(summary, "market scale, backlog of 10,000 symbols × 150 min")
    assert (backlog["value"], backlog["baseline"], backlog["ratio"], backlog["met"]) == (
        "30,000",
        "75,000 (raw Kafka→COPY)",
        "0.400×",
        True,
    )
    assert row(summary, "dashboard Market page over 10,000 symbols")["met"] is True
    burst = row(summary, "WebSocket burst of 10,000 AM events (median of bursts): push start → whole burst in Kafka")
    assert (burst["value"], burst["baseline"], burst["ratio"]) == ("0.25", "0.75 (feed at abc1234)", "0.333×")
    assert row(summary, "WebSocket burst: events lost (baseline / new)")["met"] is True
    assert summary["runs"]["websocket_burst"]["loadavg_1m"] == [2.0, 3.0]

    alert = row(summary, "alerts, 1,000 bars/s, 1,000 rules: bar → alert on pub/sub")
    assert (alert["value"], alert["baseline"], alert["met"]) == (
        "1.20 / 1.60 / 1.76",
        "1.00 / 1.40 bar → PostgreSQL, no rule",
        True,
    )

    assert statuses(summary, 13) == {
        "live_default": "met",
        "live_2x": "met",
        "first_start_backfill": "met",
        "first_start_today": "not measured",  # first_start.json: not run
        "relaunch": "met",
        "history": "met",
    }
    assert statuses(summary, 14) == {
        "market_live": "met",
        "market_backlog": "met",
        "websocket_5": "met",
        "market_memory": "met",
        "storm": "met",
        "market_page": "met",
    }
    assert statuses(summary, 15) == {"alerts": "met"}
    assert summary["not_run"] == ["first_start"] and summary["missing"] == []
    runs = summary["runs"]
    assert runs["live_freshness"]["loadavg_1m"] == [None, 1.5] and runs["market_scale"]["loadavg_1m"] == [3.8, 3.2]
    assert runs["producer_relaunch"]["machine"] == "2 cpu Linux-x86_64"
    assert not any(runs[key]["notes"] for key in ("live_freshness", "producer_relaunch", "market_scale"))


@pytest.mark.parametrize(
    ("files", "goal", "status"),
    [
        ({"live_freshness": live_freshness(default=(31.0, 40.0))}, "live_default", "not met"),  # p50 over 30 s
        ({"live_freshness": live_freshness(default=(20.0, 61.0))}, "live_default", "not met"),  # p95 over 60 s
        ({"live_freshness": live_freshness(redis_missing=1)}, "live_default", "not met"),  # a bar never reached Redis
        ({"live_freshness": live_freshness(minutes=10)}, "live_default", "not measured"),  # < 15 min of steady state
        ({"live_freshness": live_freshness(double_p95=15.5)}, "live_2x", "not met"),
        ({"history": history(range_=history_case(RANGE, 60, 601.0, 90.0))}, "history", "not met"),
        ({"history": history(range_=history_case(RANGE, 60, 500.0, 121.0))}, "history", "not met"),
        (
            {"history": history(range_=history_case(RANGE, 60, 500.0, 90.0, ok=59))},
            "history",
            "not met",
        ),
        (
            {"history": history(range_=history_case(RANGE, 60, 500, 90, equal=False))},
            "history",
            "not met",
        ),
        ({"history": history(range_=history_case(RANGE, 60, 500.0, None))}, "history", "not measured"),
        ({"history": history(range_=history_case("range (20 sessions)", 20, 200.0, 90.0))}, "history", "not measured"),
        ({"history": history(first=history_case("first start", 5, 901.0, 60.0))}, "first_start_backfill", "not met"),
        ({"history": history(first=history_case("first start", 5, 600.0, 130.0))}, "first_start_backfill", "not met"),
        ({"producer_relaunch": producer_relaunch(relaunch_max=30.5)}, "relaunch", "not met"),
        ({"producer_relaunch": producer_relaunch(gaps=1)}, "relaunch", "not met"),
        ({"producer_relaunch": producer_relaunch(calls=6)}, "relaunch", "not met"),
        ({"websocket_feed": websocket_feed(ws_p95=2.21)}, "websocket_5", "not met"),
        ({"websocket_feed": websocket_feed(ws_n=29)}, "websocket_5", "not met"),  # one bar short
        ({"websocket_feed": websocket_feed(lost=["AAPL 14:03"])}, "storm", "not met"),
        ({"websocket_feed": websocket_feed(storm_calls=6)}, "storm", "not met"),
        ({"websocket_feed": websocket_feed(drops=3)}, "storm", "not measured"),  # --quick: not 10 minutes
        ({"market_scale": market_scale(stream_bps=24_999.0)}, "market_backlog", "not met"),
        ({"market_scale": market_scale(symbols=1_000)}, "market_backlog", "not measured"),
        ({"market_scale": market_scale(page_cold_s=1.0)}, "market_page", "not met"),
        ({"market_live": market_live(pg_p95=3.01)}, "market_live", "not met"),
        ({"market_live": market_live(redis_n=299_999)}, "market_live", "not met"),  # a bar never reached Redis
        ({"market_live": market_live(gaps=1)}, "market_live", "not met"),
        ({"market_live": market_live(symbols=500, minutes=3)}, "market_live", "not measured"),  # a dry run
        ({"market_live": market_live(symbols=500, minutes=3)}, "market_memory", "not measured"),
        ({"market_live": market_live(pss_gib=6.1)}, "market_memory", "not met"),
        ({"alerts_latency": alerts_latency(alert_p95=2.01)}, "alerts", "not met"),
        ({"alerts_latency": alerts_latency(rate=250)}, "alerts", "not measured"),  # alerts_latency_250's size
    ],
)
def test_later_targets_judged_against_the_issues(tmp_path, files, goal, status):
    assert report.build(later(tmp_path, **files), now=NOW)["goals"][goal]["status"] == status


def test_a_missing_field_of_a_later_benchmark_is_named(tmp_path):
    data = live_freshness()
    del data["phases"][1]["redis"]["p95_s"]
    relaunch = producer_relaunch()
    del relaunch["verify"]
    summary = report.build(later(tmp_path, live_freshness=data, producer_relaunch=relaunch), now=NOW)

    assert row(summary, "live, planned polling, 5 symbols, 5 calls/min, 15 min")["met"] is None
    assert "field `phases[planned-default].redis.p95_s` missing" in summary["runs"]["live_freshness"]["notes"]
    assert summary["goals"]["live_default"]["status"] == "not measured"
    assert row(summary, "kill -9 of the producer: bars lost")["value"] == "—"
    assert "field `verify.gaps` missing" in summary["runs"]["producer_relaunch"]["notes"]
    assert summary["goals"]["relaunch"]["status"] == "not measured"


def test_later_benchmarks_not_run_are_listed_and_do_not_fail(tmp_path, capsys):
    results = full(tmp_path)  # issue 7's five only, as after a default `make bench`
    summary = report.build(results, now=NOW)

    assert summary["missing"] == []
    assert summary["not_run"] == list(report.OPTIONAL)
    assert row(summary, "history: not run")["value"] == "not run"
    assert summary["goals"]["alerts"] == {
        "issue": 15,
        "target": report.GOALS["alerts"][1],
        "status": "not measured",
        "why": "alerts_latency: no result",
    }
    text = report.render(summary)
    assert "`.venv/bin/python bench/market_scale.py` (not part of `make bench`)" in text
    assert "Not run (not part of `make bench`): live_freshness, history, producer_relaunch" in text
    assert report.main(["--results", str(results)]) == 0
    assert "Targets not measured:\n- issue 13: " in capsys.readouterr().out


def test_since_flags_only_issue_7s_results(tmp_path):
    since = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)  # after every stored run
    summary = report.build(later(tmp_path), now=NOW, since=since)

    assert summary["runs"]["backfill"]["stale"] is True
    assert summary["runs"]["history"]["stale"] is False
    assert summary["runs"]["history"]["notes"] == ["from before this `make bench` (not one of its steps)"]


def test_websocket_phases_of_different_runs_are_said(tmp_path):
    summary = report.build(later(tmp_path, websocket_feed=websocket_feed(same_run=False)), now=NOW)
    (note,) = summary["runs"]["websocket_feed"]["notes"]
    assert note.startswith("phases from different runs (rest ")


def test_every_target_grouped_by_issue_in_the_markdown_block(tmp_path):
    _, block = rewrite_doc(tmp_path, later(tmp_path, alerts_latency=alerts_latency(alert_p95=4.7)))
    assert (
        "| kill -9 of the producer (Airflow service, 4 kills) → new producer process, p50 / max (s) | 7.2 / 7.9 |"
        in block
    )
    assert "| first_start | not run |" in block
    assert "**Targets not met**:\n- issue 7: bar→PostgreSQL and bar→Redis p95 ≤ 2 s at 1,000 bars/s.\n" in block
    assert f"- issue 15: {report.GOALS['alerts'][1]}.\n" in block
    listed = block[block.index("Targets met:") :]
    for _issue, target in report.GOALS.values():  # every target, under its issue
        assert target in listed
    assert [line.split(":")[0] for line in listed.splitlines() if line.startswith("- issue")] == [
        "- issue 7",  # met
        "- issue 13",
        "- issue 14",
        "- issue 7",  # not met
        "- issue 15",
        "- issue 13",  # not measured (issue 14's all measured: market_live.json is there)
    ]


def first_start(*since_s: float | None) -> dict:
    """bench/first_start.py's JSON: one row per symbol, ``None`` for a symbol not complete."""
    rows = [
        {"symbol": f"S{i}", "since_make_up_s": s, "met": s is not None and s <= 300.0} for i, s in enumerate(since_s)
    ]
    times = [s for s in since_s if s is not None]
    return {
        "benchmark": "first_start",
        "when": "2026-12-02T02:30:00+00:00",
        "machine": {"cpus": 2, "python": "3.11.7", "node": "vm"},
        "load_avg_start": [1.2, 1.0, 0.9],
        "load_avg_end": [1.8, 1.1, 0.9],
        "make_up_finished": "2026-12-02T02:25:00+00:00",
        "make_up_finished_from": ".local/up-finished",
        "settings": {
            "calendar": "demo",
            "source": "simulator",
            "rate_limit_per_minute": 5,
            "backfill_share": 0.4,
            "symbols": [r["symbol"] for r in rows],
        },  # fmt: skip
        "session": {"day": "2026-12-02"},
        "target_s": 300.0,
        "slowest_s": max(times) if len(times) == len(rows) else None,
        "met": all(r["met"] for r in rows),
        "symbols": rows,
    }


@pytest.mark.parametrize(
    ("since", "status", "value"),
    [
        ((40.0, 95.5, 61.0), "met", "95.5"),
        ((40.0, 301.0), "not met", "301"),
        ((40.0, None), "not met", "not all complete"),
    ],
)
def test_first_start_is_judged_on_its_slowest_symbol(tmp_path, since, status, value):
    summary = report.build(later(tmp_path, first_start=first_start(*since)), now=NOW)
    figure = row(summary, "first start: today's bars from the open (2026-12-02)")
    assert figure["value"] == value and figure["baseline"].endswith(f"/{len(since)} symbols complete")
    assert summary["goals"]["first_start_today"]["status"] == status
    assert summary["runs"]["first_start"]["loadavg_1m"] == [1.2, 1.8]
    assert "first_start" not in summary["not_run"]
