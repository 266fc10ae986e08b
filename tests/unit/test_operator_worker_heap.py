"""The operator freezes a reused PySpark worker's heap once (PySpark's daemon runs a full
``gc.collect()`` after every task of a reused worker; see operator.freeze_worker_heap)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import gc, sys
sys.path.insert(0, {unit!r})
from test_operator_buckets import BucketState, records
from stockpipe.streaming.operator import make_update_function

update = make_update_function(60, None, None, buckets=16)
bucket = BucketState()
counts = []
for step in range(3):
    (out,) = update(("~b3",), iter([records(["AAPL", "MSFT"], range(step * 5, step * 5 + 5), seed=step)]), bucket)
    counts.append(gc.get_freeze_count())
print(*counts)
"""


def freeze_counts(reuse: str | None) -> list[int]:
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REUSE_WORKER"}
    if reuse is not None:
        env["SPARK_REUSE_WORKER"] = reuse
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(unit=str(ROOT / "tests" / "unit"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [int(n) for n in done.stdout.split()]


def test_a_reused_worker_freezes_its_heap_once():
    counts = freeze_counts("1")
    # the modules alive at the first call are frozen (pandas, pyarrow, ours: tens of thousands of objects) ...
    assert counts[0] > 10_000
    # ... once: later calls freeze nothing more (their objects stay collectable; a few frozen ones
    # may be freed by reference counting)
    assert max(counts[1:]) <= counts[0]


def test_outside_a_reused_worker_nothing_is_frozen():
    assert freeze_counts(None) == [0, 0, 0]
