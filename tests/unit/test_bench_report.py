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


def test_markdown_splice_replaces_only_the_block(tmp_path, capsys):
    results = full(tmp_path)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC.format(start=report.START_MARKER, end=report.END_MARKER))
    before, after = DOC.split("{start}")[0], DOC.split("{end}")[1]

    assert report.main(["--results", str(results), "--markdown", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(before + report.START_MARKER + "\n") and text.endswith(report.END_MARKER + after)
    block = text[len(before) : -len(after)]
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
