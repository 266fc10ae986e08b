"""Benchmark summary (not a benchmark): one table of every figure in bench/results/, with ratios and targets.

    .venv/bin/python bench/report.py [--results bench/results] [--markdown [docs/benchmarks.md]] [--since EPOCH]

Reads what the four benchmarks wrote — ``stream_throughput.json``, ``backfill.json``, the newest
``dashboard-*.json`` per calendar and ``stack_memory.json`` — and prints one table (figure | value |
baseline | ratio | target | met?) judged against the issue's targets, after a list of the runs it
comes from: when each ran, how old it is, the machine, the load average and the parameters (a
missing file or field is named, never skipped silently). Writes ``summary.json`` next to the
results. ``--markdown`` also rewrites the block between ``<!-- bench-summary:start -->`` and
``<!-- bench-summary:end -->`` of docs/benchmarks.md with the same table, so the doc matches the
results by construction; nothing outside the markers changes. ``--since`` (``make bench`` passes
its start time) flags results older than that: their benchmark failed or was not run this time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
START_MARKER = "<!-- bench-summary:start -->"
END_MARKER = "<!-- bench-summary:end -->"

GIB = 1024**3
# The acceptance targets.
THROUGHPUT_RATIO_TARGET = 0.5  # stream ≥ 50 % of the raw Kafka→COPY baseline
P95_TARGET_S = 2.0  # bar→sink p95 at 1,000 bars/s
P95_TARGET_RATE = 1000.0
BACKFILL_TARGET_S = 60.0
BACKFILL_RATIO_TARGET = 5.0  # × the naive baseline
PAGE_TARGET_S = 1.0
IDLE_TARGET_BYTES = 5 * GIB
SPARK_DRIVER = "spark driver JVM (market_stream)"
GOALS = {
    "throughput": "stream throughput ≥ 50 % of the raw Kafka→PostgreSQL COPY baseline",
    "latency": "bar→PostgreSQL and bar→Redis p95 ≤ 2 s at 1,000 bars/s",
    "backfill": "backfill of 1 day × 500 symbols ≤ 60 s and ≥ 5× the naive baseline",
    "pages": "each dashboard page < 1 s",
    "memory": "idle stack ≤ 5 GiB",
}

# Every result the summary expects, in the order -> the command that produces it.
EXPECTED = {
    "stream_throughput": "bench/stream_throughput.py",
    "backfill": "bench/backfill.py",
    "dashboard nyse": "bench/dashboard.py",
    "dashboard demo": "bench/dashboard.py --calendar demo",
    "stack_memory": "bench/stack_memory.py",
}
GOALS_OF = {  # which of the targets each result is judged on
    "stream_throughput": ("throughput", "latency"),
    "backfill": ("backfill",),
    "dashboard nyse": ("pages",),
    "dashboard demo": ("pages",),
    "stack_memory": ("memory",),
}


@dataclass
class Run:
    """One benchmark's stored result and what the report knows about it."""

    key: str
    path: Path
    data: dict
    at: datetime | None
    notes: list[str] = field(default_factory=list)

    def get(self, dotted: str, default: Any = None) -> Any:
        """``data["a"]["b"]`` for ``"a.b"``; a missing field is noted (once) and gives ``default``."""
        value: Any = self.data
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                note = f"field `{dotted}` missing"
                if note not in self.notes:
                    self.notes.append(note)
                return default
            value = value[part]
        return value


@dataclass
class Row:
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    source: str = ""
    numbers: dict[str, float | None] = field(default_factory=dict)
    goal: str = ""  # the target this row is judged on (GOALS), "" for context


# --- formatting --------------------------------------------------------------------------------


def num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def times(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.3f}×" if ratio < 1 else f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.1f}×"


def gib(n: float | None) -> str:
    return "—" if n is None else f"{n / GIB:.2f} GiB ({n / 1024**2:,.0f} MiB)"


def ratio_of(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


def at_most(value: float | None, target: float) -> bool | None:
    return None if value is None else value <= target


def both(*flags: bool | None) -> bool | None:
    return None if any(f is None for f in flags) else all(flags)


def met_text(met: bool | None, markdown: bool = False) -> str:
    if met is None:
        return ""
    return "yes" if met else ("**no**" if markdown else "NO")


def age(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "unknown age"
    minutes = int((now - at).total_seconds() // 60)
    if minutes < 0:
        return "in the future"
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min ago"
    return f"{hours // 24} days ago"


# --- reading -----------------------------------------------------------------------------------


def parse_at(value: Any) -> datetime | None:
    """The scripts stamp their runs differently: ISO with Z or +00:00, or basic (20261125T133308Z)."""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def read_run(key: str, path: Path, problems: list[str]) -> Run | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        problems.append(f"{path.name}: unreadable ({error})")
        return None
    at = parse_at(data.get("at", data.get("when")))
    run = Run(key, path, data, at)
    if at is None:
        run.at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        run.notes.append("no run time in the JSON: file time used")
    return run


def load_runs(results: Path) -> tuple[dict[str, Run], list[str]]:
    """The stored results by key (``dashboard <calendar>``: that calendar's newest file) and problems."""
    runs: dict[str, Run] = {}
    problems: list[str] = []
    for key in ("stream_throughput", "backfill", "stack_memory"):
        path = results / f"{key}.json"
        if path.exists() and (run := read_run(key, path, problems)):
            runs[key] = run
    for path in sorted(results.glob("dashboard-*.json")):
        run = read_run("dashboard", path, problems)
        if run is None:
            continue
        run.key = f"dashboard {run.data.get('calendar', 'nyse')}"
        if run.key not in runs or run.at >= runs[run.key].at:
            runs[run.key] = run
    return runs, problems


# --- the figures of each benchmark ---------------------------------------------------------------


def stream_rows(run: Run) -> list[Row]:
    src = "bench/stream_throughput.py"
    symbols = run.get("params.symbols")
    stream, raw = run.get("stream.sustained_bars_per_s"), run.get("raw_baseline.sustained_bars_per_s")
    ratio = ratio_of(stream, raw)
    label = f"{symbols:,} symbols" if isinstance(symbols, int) else "? symbols"
    if symbols != 500:
        label += " (the issue asks for 500)"
    rows = [
        Row(
            f"stream throughput, {label}, sustained (bars/s)",
            num(stream),
            f"{num(raw)} (raw Kafka→COPY)",
            times(ratio),
            f"≥ {THROUGHPUT_RATIO_TARGET:.2f}× baseline",
            at_least(ratio, THROUGHPUT_RATIO_TARGET),
            src,
            {"value": stream, "baseline": raw, "ratio": ratio, "target_ratio": THROUGHPUT_RATIO_TARGET},
            goal="throughput",
        )
    ]
    overall, raw_overall = run.get("stream.overall_bars_per_s"), run.get("raw_baseline.overall_bars_per_s")
    rows.append(
        Row(
            "stream throughput incl. first batch (bars/s)",
            num(overall),
            num(raw_overall),
            times(ratio_of(overall, raw_overall)),
            source=src,
            numbers={"value": overall, "baseline": raw_overall, "ratio": ratio_of(overall, raw_overall)},
        )
    )
    phases = {float(p.get("rate", 0)): p for p in run.get("latency", []) or []}
    for rate in (100.0, P95_TARGET_RATE):
        if rate not in phases:
            run.notes.append(f"no latency phase at {rate:,.0f} bars/s")
    for rate, phase in sorted(phases.items()):
        partial = "" if phase.get("complete", True) else f", only {phase.get('stored')} of {phase.get('sent')} stored"
        for sink, name in (("postgres_s", "PostgreSQL"), ("redis_s", "Redis")):
            stats = phase.get(sink) or {}
            p50, p95, p99 = (stats.get(p) for p in ("p50", "p95", "p99"))
            judged = rate >= P95_TARGET_RATE
            rows.append(
                Row(
                    f"bar→{name} latency p50 / p95 / p99 at {rate:,.0f} bars/s (s{partial})",
                    " / ".join(num(v) for v in (p50, p95, p99)),
                    target=f"p95 ≤ {P95_TARGET_S:g} s" if judged else "",
                    met=at_most(p95, P95_TARGET_S) if judged else None,
                    source=src,
                    numbers={"rate": rate, "p50": p50, "p95": p95, "p99": p99, "n": stats.get("n")},
                    goal="latency" if judged else "",
                )
            )
    return rows


def backfill_rows(run: Run) -> list[Row]:
    src = "bench/backfill.py"
    symbols, bars, day = run.get("symbols"), run.get("bars"), run.get("day", "?")
    total, call = run.get("backfill.total_s"), run.get("backfill.backfill_call_s")
    naive = run.get("baseline.total_s")
    extrapolated = run.get("baseline.extrapolated", False)
    how = f"extrapolated from {run.get('baseline.symbols_measured')} symbols" if extrapolated else "measured"
    label = f"{symbols:,} symbols" if isinstance(symbols, int) else "? symbols"
    if symbols != 500:
        label += " (the issue asks for 500)"
    target = f"≤ {BACKFILL_TARGET_S:.0f} s and ≥ {BACKFILL_RATIO_TARGET:.0f}×"
    rows = []
    for figure, value, goal in (
        (f"backfill of {day}, {label}: wall time incl. SparkSession start (s)", total, "backfill"),
        ("backfill() call only, SparkSession start excluded (s)", call, ""),
    ):
        ratio = ratio_of(naive, value)
        rows.append(
            Row(
                figure,
                num(value, 1),
                num(naive, 1),
                times(ratio),
                target,
                both(at_most(value, BACKFILL_TARGET_S), at_least(ratio, BACKFILL_RATIO_TARGET)),
                src,
                {"value": value, "baseline": naive, "ratio": ratio},
                goal=goal if symbols == 500 else "",
            )
        )
    rows.append(
        Row(
            f"naive baseline: SELECT + pandas + TA-Lib + row-by-row INSERT ({how}) (s)",
            num(naive, 1),
            source=src,
            numbers={"value": naive},
        )
    )
    stored = run.get("backfill.indicator_rows_stored")
    rows.append(
        Row(
            "indicator rows written by the backfill",
            num(stored),
            target=f"= {num(bars)} bars",
            met=None if stored is None or bars is None else stored == bars,
            source=src,
            numbers={"value": stored, "bars": bars},
        )
    )
    diffs = [v for v in (run.get("comparison.max_abs_diff") or {}).values() if v is not None]
    worst = max(diffs) if diffs else None
    mismatches = run.get("comparison.null_mismatches")
    rows.append(
        Row(
            "max |backfill − naive TA-Lib| over all indicators",
            "—" if worst is None else f"{worst:.1e}",
            f"{num(run.get('comparison.rows_compared'))} rows",
            target="≤ 1e-6, no NULL mismatch",
            met=None if worst is None or mismatches is None else worst <= 1e-6 and mismatches == 0,
            source=src,
            numbers={"value": worst, "null_mismatches": mismatches},
        )
    )
    return rows


def dashboard_rows(run: Run) -> list[Row]:
    calendar = run.data.get("calendar", "nyse")
    rows = []
    for result in run.get("results", []) or []:
        cold, warm = result.get("cold_s"), result.get("warm_s")
        rows.append(
            Row(
                f"dashboard page {result.get('page')} [{calendar}]: cold / warm render (s)",
                f"{num(cold)} / {num(warm)}",
                target=f"< {PAGE_TARGET_S:g} s",
                met=None if cold is None or warm is None else max(cold, warm) < PAGE_TARGET_S,
                source=EXPECTED[run.key] if run.key in EXPECTED else "bench/dashboard.py",
                numbers={"cold_s": cold, "warm_s": warm},
                goal="pages",
            )
        )
    if not rows:
        run.notes.append("no page results")
    return rows


def memory_rows(run: Run) -> list[Row]:
    src = "bench/stack_memory.py"
    idle_pss, idle_rss = run.get("idle.total_pss_max"), run.get("idle.total_rss_max")
    rows = [
        Row(
            "whole local stack idle, PSS sum",
            gib(idle_pss),
            target=f"≤ {IDLE_TARGET_BYTES / GIB:g} GiB",
            met=at_most(idle_pss, IDLE_TARGET_BYTES),
            source=src,
            numbers={"value": idle_pss},
            goal="memory",
        ),
        Row(
            "whole local stack idle, RSS sum (upper bound: counts shared pages once per process)",
            gib(idle_rss),
            source=src,
            numbers={"value": idle_rss},
        ),
    ]
    load = run.data.get("load")
    if not load:
        run.notes.append("no under-load phase (--no-load)")
        return rows
    rate = run.get("load.burst.rate")
    for kind, idle in (("PSS", idle_pss), ("RSS", idle_rss)):
        value = run.get(f"load.total_{kind.lower()}_max")
        rows.append(
            Row(
                f"whole local stack under load ({num(rate)} bars/s burst), {kind} sum",
                gib(value),
                f"{gib(idle)} idle",
                times(ratio_of(value, idle)),
                source=src,
                numbers={"value": value, "baseline": idle, "ratio": ratio_of(value, idle)},
            )
        )
    components = {c.get("component"): c for c in run.data.get("components", [])}
    if not ((components.get(SPARK_DRIVER) or {}).get("idle") or {}).get("processes"):
        run.notes.append("market_stream's Spark driver was not running while idle: not the whole stack")
    return rows


# --- the runs ----------------------------------------------------------------------------------


def _mem_total(free: str | None, unit: str) -> str:
    for line in (free or "").splitlines():
        if line.startswith("Mem:"):
            total = float(line.split()[1])
            return f"{total / 1024:.1f} GiB RAM" if unit == "m" else f"{total:.0f} GiB RAM"
    return ""


def run_machine(run: Run) -> str:
    machine = run.data.get("machine")
    if isinstance(machine, str):
        return machine
    machine = machine or {}
    cpu = machine.get("cpu") or machine.get("arch") or "?"
    ram = _mem_total(machine.get("free_m"), "m") or _mem_total(machine.get("free_g"), "g")
    return ", ".join(part for part in (f"{machine.get('nproc', '?')} cpu {cpu}", ram) if part)


def run_loadavg(run: Run) -> tuple[float | None, float | None]:
    """1-minute load average at the start and at the end of the run (what it shared the box with)."""
    d = run.data
    if run.key == "stream_throughput":
        start, end = d.get("loadavg_start"), d.get("loadavg_end")
    elif run.key == "backfill":
        start, end = (d.get("machine") or {}).get("loadavg_before"), (d.get("machine") or {}).get("loadavg_after")
    elif run.key == "stack_memory":
        start, end = (d.get("idle") or {}).get("loadavg"), (d.get("load") or {}).get("loadavg_end_of_burst")
    else:
        start, end = d.get("loadavg_before"), d.get("loadavg_after")
    return (start[0] if start else None, end[0] if end else None)


def run_params(run: Run) -> str:
    d = run.data
    if run.key == "stream_throughput":
        p = d.get("params") or {}
        rates = "/".join(f"{r:,.0f}" for r in p.get("rates", []))
        return (
            f"{p.get('symbols')} symbols × {p.get('bars_per_symbol')} bars backlog, batch {p.get('batch')}, "
            f"latency at {rates} bars/s × {p.get('duration_s')} s each, {p.get('spark_master')}"
        )
    if run.key == "backfill":
        return f"{d.get('symbols')} symbols × 390 bars of {d.get('day')} = {num(d.get('bars'))} bars"
    if run.key == "stack_memory":
        burst = (d.get("load") or {}).get("burst") or {}
        idle = (d.get("idle") or {}).get("seconds")
        return f"idle {num(idle, 0)} s; burst {num(burst.get('sent'))} bars in {num(burst.get('seconds'), 0)} s"
    return (
        f"{d.get('calendar')} calendar, {len(d.get('symbols', []))} symbols, {num(d.get('bars'))} bars, "
        f"median of {d.get('repeat')}"
    )


# --- the summary -------------------------------------------------------------------------------


def host_machine() -> str:
    cpu, ram = "?", ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        ram = f", {kib / 1024**2:.1f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return (
        f"{platform.node()}: {os.cpu_count()} × {cpu}{ram}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def build(results: Path, now: datetime | None = None, since: datetime | None = None) -> dict:
    """Everything the table, summary.json and the doc show, from the JSON files in ``results``."""
    now = now or datetime.now(UTC)
    runs, problems = load_runs(results)
    makers = {"stream_throughput": stream_rows, "backfill": backfill_rows, "stack_memory": memory_rows}
    rows: list[Row] = []
    run_info: dict[str, dict] = {}
    missing: list[str] = []
    for key, command in EXPECTED.items():
        run = runs.get(key)
        if run is None:
            missing.append(key)
            name = "dashboard-*.json" if key.startswith("dashboard") else f"{key}.json"
            calendar = f' with "calendar": "{key.split()[1]}"' if key.startswith("dashboard") else ""
            rows.append(Row(f"{key}: no results", "missing", source=command))
            run_info[key] = {
                "missing": True,
                "detail": f"no {results.name}/{name}{calendar}: run `.venv/bin/python {command}`",
            }
            continue
        rows += makers.get(key, dashboard_rows)(run)
        start, end = run_loadavg(run)
        stale = since is not None and run.at is not None and run.at < since
        if stale:
            run.notes.insert(
                0, f"NOT refreshed by the `make bench` of {since:%Y-%m-%d %H:%M} UTC: it failed or did not run"
            )
        run_info[key] = {
            "missing": False,
            "file": run.path.name,
            "at": run.at.isoformat() if run.at else None,
            "age": age(run.at, now),
            "stale": stale,
            "machine": run_machine(run),
            "loadavg_1m": [start, end],
            "params": run_params(run),
            "notes": run.notes,
        }
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "since": since.isoformat(timespec="seconds") if since else None,
        "results": str(results),
        "host": host_machine(),
        "runs": run_info,
        "missing": missing,
        "problems": problems,
        "goals": goals(rows, missing),
        "rows": [asdict(r) for r in rows],
    }


def goals(rows: list[Row], missing: list[str]) -> dict[str, dict]:
    """Each target of the issue: "met" when every row judged on it is, "not met" when one is not,
    else "not measured" (its benchmark is missing, or ran at another size than the issue's)."""
    out = {}
    for goal, text in GOALS.items():
        flags = [r.met for r in rows if r.goal == goal]
        if any(f is False for f in flags):
            status = "not met"
        elif flags and all(flags) and not any(goal in GOALS_OF[key] for key in missing):
            status = "met"
        else:
            status = "not measured"
        out[goal] = {"target": text, "status": status}
    return out


def _load(info: dict) -> str:
    start, end = info["loadavg_1m"]
    return "not recorded" if start is None and end is None else f"{num(start)} → {num(end)}"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        cells = [[c.replace("|", "\\|") for c in r] for r in [header, *rows]]
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "| " + " | ".join("---" for _ in header) + " |")
        return lines
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines


def render(summary: dict, markdown: bool = False) -> str:
    """The runs, then the one table; ``markdown`` leaves out what only means something today (ages)."""
    out: list[str] = []
    run_rows = []
    for key, info in summary["runs"].items():
        if info["missing"]:
            run_rows.append([key, "MISSING", "", "", info["detail"]])
            continue
        when = info["at"][:16].replace("T", " ") if info["at"] else "?"
        if not markdown:
            when += f" ({info['age']})"
        notes = "; ".join(info["notes"])
        run_rows.append([key, when, _load(info), info["machine"], info["params"] + (f" — {notes}" if notes else "")])
    out += _table(["benchmark", "run at (UTC)", "load avg 1 min", "machine", "parameters / notes"], run_rows, markdown)
    out.append("")
    header = ["figure", "value", "baseline", "ratio", "target", "met?"]
    table = [
        [r["figure"], r["value"], r["baseline"], r["ratio"], r["target"], met_text(r["met"], markdown)]
        for r in summary["rows"]
    ]
    out += _table(header, table, markdown)
    out.append("")
    for status in ("met", "not met", "not measured"):
        names = [g["target"] for g in summary["goals"].values() if g["status"] == status]
        if names:
            label = (
                f"Targets {status}" if status != "not met" else "**Targets not met**" if markdown else "Targets NOT MET"
            )
            out.append(f"{label}: {'; '.join(names)}.")
    if summary["missing"]:
        out.append(f"Missing results: {', '.join(summary['missing'])}.")
    for problem in summary["problems"]:
        out.append(f"Problem: {problem}")
    return "\n".join(out)


def markdown_block(summary: dict) -> str:
    return "\n".join(
        [
            "<!-- Written by `bench/report.py --markdown` (`make bench`, `make bench-report`) from "
            "bench/results/: edits here are overwritten. -->",
            "## Latest figures",
            "",
            f"From the JSON in `bench/results/`; report run on {summary['host']}. Each run's own machine "
            "record and load average (1-minute, start → end; the box is shared) are in the first table.",
            "",
            render(summary, markdown=True),
            "",
            "Reproduce: `make bench` (all four, ~15–20 min on this 2-core box; JSON in `bench/results/`, "
            "this block rewritten), one of them: `make bench BENCH=bench/backfill.py`, this block from the "
            "stored JSON: `make bench-report`. The sections below explain each benchmark and what limits it.",
        ]
    )


def splice(document: str, block: str) -> str:
    """``document`` with everything between the summary markers replaced by ``block``."""
    start = document.find(START_MARKER)
    end = document.find(END_MARKER, start + len(START_MARKER)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise ValueError(f"no {START_MARKER} … {END_MARKER} block: add both markers where the summary goes")
    return document[: start + len(START_MARKER)] + "\n" + block.strip("\n") + "\n" + document[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory of the benchmarks' JSON")
    parser.add_argument("--markdown", nargs="?", type=Path, const=DOC, help=f"rewrite the summary block of {DOC.name}")
    parser.add_argument("--since", type=float, help="epoch seconds: results older than this are flagged")
    args = parser.parse_args(argv)

    since = datetime.fromtimestamp(args.since, UTC) if args.since else None
    summary = build(args.results, since=since)
    print(f"benchmark summary of {args.results}; this machine: {summary['host']}\n")
    print(render(summary))
    stale = [key for key, info in summary["runs"].items() if info.get("stale")]
    if stale:
        print(f"\nNOT from this run (older than its start): {', '.join(stale)}")
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "summary.json"
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {out}")
    if args.markdown:
        try:
            text = splice(args.markdown.read_text(), markdown_block(summary))
        except (OSError, ValueError) as error:
            print(f"could not update {args.markdown}: {error}", file=sys.stderr)
            return 1
        args.markdown.write_text(text)
        print(f"rewrote the summary block of {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
