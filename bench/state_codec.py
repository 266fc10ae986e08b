"""Benchmark (not a test): restoring and writing one symbol's indicator state, the stream's per-symbol
cost besides stepping the indicators — the former form (a pickled ``to_state()`` dict, restored by
``SymbolIndicators.from_state``) against the packed one (``stockpipe.indicators.packed``, what
``state.dump_indicators`` writes now), in the same run.

    .venv/bin/python bench/state_codec.py [--symbols 10000] [--repeat 5]

For each warm-up (bars already fed to the symbol: 20 — a symbol ~20 minutes into the stream, the
state ``bench/stream_burst.py`` runs on — and 390, a full trading day, every window full) it builds
``--symbols`` distinct states from random bars (NaN VWAPs, session changes) and times, per symbol:
``load`` (bytes → live ``SymbolIndicators``) and ``dump`` (live → bytes), best of ``--repeat`` passes
over all symbols; and the bytes per state. It checks that both forms restore the same state. Prints
a table; writes bench/results/state_codec.json.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from stockpipe.indicators import SymbolIndicators  # noqa: E402
from stockpipe.streaming import state as st  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "state_codec.json"


def old_dump(indicators: SymbolIndicators) -> bytes:
    """state.dump_indicators before the packed form."""
    return pickle.dumps(indicators.to_state(), protocol=pickle.HIGHEST_PROTOCOL)


def old_load(blob: bytes) -> SymbolIndicators:
    """state.load_indicators before the packed form (for bytes)."""
    return SymbolIndicators.from_state(pickle.loads(blob))


def make_states(symbols: int, bars: int, seed: int) -> list[SymbolIndicators]:
    rng = np.random.default_rng(seed)
    t0 = 1_795_962_600.0  # 2026-11-30 14:30 UTC
    states = []
    for k in range(symbols):
        closes = (10.0 + k % 500 + np.cumsum(rng.normal(0.0, 0.05, bars))).tolist()
        vwaps = (np.array(closes) + rng.normal(0.0, 0.01, bars)).tolist()
        volumes = rng.integers(1, 10_000, bars).astype(float).tolist()
        indicators = SymbolIndicators()
        for i in range(bars):
            vwap = None if i % 37 == 5 else vwaps[i]
            indicators.step(t0 + 60.0 * (i - bars), closes[i], vwap, volumes[i])
        states.append(indicators)
    return states


def each(function, items) -> None:
    """``function`` over ``items``, each result dropped at once (as the operator does with a restored
    state once it is stepped and written back: kept results would time the garbage collector)."""
    for item in items:
        function(item)


def best_per_item(run, items, repeat: int) -> float:
    """µs per item, best of ``repeat`` passes over ``items``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(items)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rows = []
    for warm_up in (20, 390):
        states = make_states(args.symbols, warm_up, seed=warm_up)
        old_blobs = [old_dump(s) for s in states]
        new_blobs = [st.dump_indicators(s) for s in states]
        for old, new, live in zip(old_blobs[:200], new_blobs[:200], states[:200], strict=True):
            assert old_load(old) == st.load_indicators(new) == live
            assert st.load_indicators(old) == live  # the former form still loads
        timings = {
            "old_load_us": best_per_item(lambda blobs: each(old_load, blobs), old_blobs, args.repeat),
            "new_load_us": best_per_item(lambda blobs: each(st.load_indicators, blobs), new_blobs, args.repeat),
            "old_dump_us": best_per_item(lambda live: each(old_dump, live), states, args.repeat),
            "new_dump_us": best_per_item(lambda live: each(st.dump_indicators, live), states, args.repeat),
        }
        rows.append(
            {
                "warm_up_bars": warm_up,
                "symbols": args.symbols,
                **{k: round(v, 2) for k, v in timings.items()},
                "old_bytes": round(float(np.mean([len(b) for b in old_blobs])), 1),
                "new_bytes": round(float(np.mean([len(b) for b in new_blobs])), 1),
                "load_speedup": round(timings["old_load_us"] / timings["new_load_us"], 2),
                "dump_speedup": round(timings["old_dump_us"] / timings["new_dump_us"], 2),
            }
        )

    print(f"indicator state per symbol, {args.symbols:,} symbols, best of {args.repeat} (µs; bytes)")
    header = f"{'warm-up':>8} {'load old':>9} {'load new':>9} {'×':>6} {'dump old':>9} {'dump new':>9} {'×':>6}"
    print(header + f" {'bytes old':>10} {'bytes new':>10}")
    for r in rows:
        print(
            f"{r['warm_up_bars']:>8} {r['old_load_us']:>9.2f} {r['new_load_us']:>9.2f} {r['load_speedup']:>6.2f}"
            f" {r['old_dump_us']:>9.2f} {r['new_dump_us']:>9.2f} {r['dump_speedup']:>6.2f}"
            f" {r['old_bytes']:>10.0f} {r['new_bytes']:>10.0f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "bench": "state_codec",
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
