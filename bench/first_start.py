"""Benchmark (not a test): first start — today's bars from the open are in PostgreSQL within 5 minutes
of `make up` finishing (issue 13's target), on a stack started by `make up`.

    make up && .venv/bin/python bench/first_start.py [--since ISO|EPOCH] [--symbols A,B] [--timeout-s 600]

Run it right after `make up` on a fresh clone (no checkpoints: the producer starts each symbol at the
open of the current session). It takes the moment `make up` finished from ``.local/up-finished``
(infra/stack.sh writes it last) or from ``--since``.

"Today's session" is the producer's (``MarketProducer.window_start``): the session of the configured
calendar (``calendar_mode``: NYSE with a Massive key, else the simulator's clock) trading in the
minute that had closed when `make up` finished, else — outside sessions — the last one before it.
On the simulator's ``demo`` clock every New York calendar day is a session from midnight to
midnight (New York time), so at any hour today's session began at the last New York midnight.

The backlog is the bars of that session from its open up to the last minute closed when `make up`
finished (every minute trades on the simulator; a real symbol may skip a quiet minute, so against
Massive a symbol can stay short of "expected"). The benchmark polls ``market.bars_1m`` every
``--poll-s`` seconds until every watchlist symbol has its whole backlog (or ``--timeout-s``). A
symbol's time is the latest ``written_at`` of its backlog bars − the moment `make up` finished (a
bar written again later — a correction, a re-sent interval — only makes it later: an upper bound),
so a run started after the fact still measures it; "seen" is when this benchmark saw it complete.
It also shows the newest bar of each symbol and its age (live ingest going on).

Prints a table (per symbol: first bar, bars expected/present, time since make up, met?) and writes
bench/results/first_start.json (``--out``). Target: every symbol's backlog ≤ 300 s after make up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from stockpipe.calendar import MINUTE, Session, trading_calendar  # noqa: E402
from stockpipe.clients import pg_connect  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "first_start.json"
UP_FINISHED = ROOT / ".local" / "up-finished"
TARGET_S = 300.0


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; naive = UTC) or unix seconds."""
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def up_finished(since: str | None) -> tuple[datetime, str]:
    if since:
        return parse_moment(since), "--since"
    if not UP_FINISHED.exists():
        raise SystemExit(
            f"{UP_FINISHED} is missing (make up writes it when it finishes): run make up, or pass --since "
            "with the moment it finished."
        )
    return parse_moment(UP_FINISHED.read_text()), str(UP_FINISHED.relative_to(ROOT))


def todays_session(calendar_mode: str, at: datetime) -> Session:
    """The session the producer starts a symbol without a checkpoint at, when the minute before ``at``
    closed (``MarketProducer.window_start``)."""
    calendar = trading_calendar(calendar_mode)  # type: ignore[arg-type]
    end = at.replace(second=0, microsecond=0)
    session = calendar.session_at(end - MINUTE) or calendar.previous_session(end)
    if session is None:
        raise SystemExit(f"no {calendar_mode} session at or before {end:%Y-%m-%d %H:%M} UTC")
    return session


def backlog_state(settings: Any, symbols: list[str], start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
    """Per symbol, the stored bars in [start, end): count, first and last ts, latest written_at; and
    the newest bar of the symbol overall."""
    with pg_connect(settings, "reader", connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT symbol, count(*), min(ts), max(ts), max(written_at) FROM market.bars_1m"
            " WHERE symbol = ANY(%s) AND ts >= %s AND ts < %s GROUP BY symbol",
            (symbols, start, end),
        ).fetchall()
        newest = dict(
            conn.execute(
                "SELECT symbol, max(ts) FROM market.bars_1m WHERE symbol = ANY(%s) AND ts >= %s GROUP BY symbol",
                (symbols, start),
            ).fetchall()
        )
    found = {r[0]: {"present": r[1], "first": r[2], "last": r[3], "written": r[4]} for r in rows}
    return {
        symbol: {
            **found.get(symbol, {"present": 0, "first": None, "last": None, "written": None}),
            "newest": newest.get(symbol),
        }  # fmt: skip
        for symbol in symbols
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--since", help="when make up finished (ISO 8601 or unix seconds; default: .local/up-finished)")
    parser.add_argument("--symbols", help="comma-separated symbols (default: STOCKPIPE_WATCHLIST)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="stop polling after this long (default 600)")
    parser.add_argument("--poll-s", type=float, default=5.0, help="seconds between two looks (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file (default: bench/results/first_start.json)")
    args = parser.parse_args(argv)

    settings = load_settings()
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else settings.watchlist
    finished, source = up_finished(args.since)
    session = todays_session(settings.calendar_mode, finished)
    backlog_end = min(finished.replace(second=0, microsecond=0), session.close)
    expected = max(0, int((backlog_end - session.open) / MINUTE))
    load_start = os.getloadavg()
    log(
        f"make up finished {finished:%Y-%m-%d %H:%M:%S} UTC ({source}); {settings.calendar_mode} session "
        f"{session.day} opened {session.open:%Y-%m-%d %H:%M} UTC; backlog {session.open:%H:%M}–{backlog_end:%H:%M} "
        f"UTC = {expected} bars per symbol, {len(symbols)} symbols"
    )

    seen: dict[str, float] = {}
    deadline = time.monotonic() + args.timeout_s
    first_look_s = (datetime.now(UTC) - finished).total_seconds()
    while True:
        state = backlog_state(settings, symbols, session.open, backlog_end)
        now = datetime.now(UTC)
        for symbol, s in state.items():
            if symbol not in seen and s["present"] >= expected:
                seen[symbol] = (now - finished).total_seconds()
        if len(seen) == len(symbols) or time.monotonic() >= deadline:
            break
        waiting = ", ".join(f"{sym} {state[sym]['present']}/{expected}" for sym in symbols if sym not in seen)
        log(f"{len(seen)}/{len(symbols)} complete; waiting for {waiting}")
        time.sleep(args.poll_s)

    rows: list[dict[str, Any]] = []
    for symbol in symbols:
        s = state[symbol]
        complete = s["present"] >= expected
        took = (s["written"] - finished).total_seconds() if complete and s["written"] and expected else None
        if complete and not expected:
            took = 0.0
        rows.append(
            {
                "symbol": symbol,
                "first_bar": s["first"].isoformat() if s["first"] else None,
                "first_bar_is_open": s["first"] == session.open,
                "expected": expected,
                "present": s["present"],
                "complete": complete,
                "since_make_up_s": None if took is None else round(max(took, 0.0), 1),
                "seen_complete_s": round(seen[symbol], 1) if symbol in seen else None,
                "newest_bar": s["newest"].isoformat() if s["newest"] else None,
                "newest_age_s": round((now - s["newest"] - MINUTE).total_seconds(), 1) if s["newest"] else None,
                "met": took is not None and took <= TARGET_S,
            }
        )
    times = [r["since_make_up_s"] for r in rows if r["since_make_up_s"] is not None]
    worst = max(times) if len(times) == len(rows) else None
    met = all(r["met"] for r in rows)

    header = ["symbol", "first bar (UTC)", "bars expected / present", "since make up", "seen complete",
              "newest bar age", "met?"]  # fmt: skip
    lines = [header]
    for r in rows:
        lines.append(
            [
                r["symbol"],
                f"{datetime.fromisoformat(r['first_bar']):%Y-%m-%d %H:%M}" if r["first_bar"] else "-",
                f"{r['expected']} / {r['present']}",
                f"{r['since_make_up_s']:.0f} s" if r["since_make_up_s"] is not None else "not complete",
                f"{r['seen_complete_s']:.0f} s" if r["seen_complete_s"] is not None else "-",
                f"{r['newest_age_s']:.0f} s" if r["newest_age_s"] is not None else "-",
                "yes" if r["met"] else "NO",
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    print()
    for row in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    load_end = os.getloadavg()
    verdict = "met" if met else "MISSED"
    slowest = f"{worst:.0f} s" if worst is not None else "not all complete"
    print(
        f"\ntarget: every symbol's bars {session.open:%H:%M}–{backlog_end:%H:%M} UTC in PostgreSQL ≤ "
        f"{TARGET_S:.0f} s after make up finished: {verdict} (slowest: {slowest})"
    )
    if worst is not None and first_look_s > worst + args.poll_s:
        print(
            f"note: started {first_look_s:.0f} s after make up, when the backlog was complete: the times come "
            "from written_at (an upper bound: a bar written again later counts at its last write)"
        )
    print(f"load average (1 min): {load_start[0]:.2f} → {load_end[0]:.2f} (the box may be shared)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "first_start",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "node": platform.node()},
                "load_avg_start": load_start,
                "load_avg_end": load_end,
                "first_look_after_make_up_s": round(first_look_s, 1),
                "make_up_finished": finished.isoformat(),
                "make_up_finished_from": source,
                "settings": {
                    "calendar": settings.calendar_mode,
                    "source": settings.source_name,
                    "rate_limit_per_minute": settings.rate_limit_per_minute,
                    "backfill_share": settings.backfill_share,
                    "symbols": symbols,
                },
                "session": {
                    "day": session.day.isoformat(),
                    "open": session.open.isoformat(),
                    "close": session.close.isoformat(),
                },  # fmt: skip
                "backlog_end": backlog_end.isoformat(),
                "target_s": TARGET_S,
                "slowest_s": worst,
                "met": met,
                "symbols": rows,
                "table": lines,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
