"""Benchmark (not a test): kill -9 of the producer on the running stack — relaunched ≤ 30 s, 0 bars
lost, the rate limit never exceeded.

    .venv/bin/python bench/producer_relaunch.py [--kills 5] [--every-s 75] [--baseline-kills 3] [--settle-s 150]

Needs the stack (`make up`) and runs on it, as root or its user (it reads the processes'
environments and the simulator's request log with the admin token). In the same run:

* **service** (the target, ``STOCKPIPE_PRODUCER_MODE=service``): ``market_producer`` unpaused and
  ``market_ingest`` paused for the run (so nothing but the service produces: a loss would show), then
  ``--kills`` times, ``--every-s`` apart: ``kill -9`` of the producer process market_producer's task
  started; timed until a new one runs (the next ``@continuous`` run's task started it) and until its
  first cycle is in ``ops.ingest_cycles``.
* **baseline** — the same kill -9 of supervisord's ``producer`` program (``autorestart``), the
  pre-Airflow way of keeping the loop alive, ``--baseline-kills`` times.
* After the last kill and ``--settle-s`` of catch-up: ``python -m stockpipe.verify --json`` over the
  messages written since the run began (gaps = bars lost; duplicates — the same bar sent again after
  a kill between Kafka's ack and the checkpoint — are harmless: the stream keeps one row), and the
  simulator's request log (``GET /_admin/requests``): most calls per API key in any 60 s window vs
  ``STOCKPIPE_RATE_LIMIT_PER_MINUTE``.

The DAGs' pause states and the supervisord program are restored at the end (also on failure).
Prints a table and writes bench/results/producer_relaunch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import httpx  # noqa: E402
import psutil  # noqa: E402

from stockpipe.airflow.restart import dag_is_paused, set_dag_paused  # noqa: E402
from stockpipe.clients import pg_connect  # noqa: E402
from stockpipe.config import load_settings  # noqa: E402
from stockpipe.sources.simulator.app import ADMIN_TOKEN_HEADER  # noqa: E402

TARGET_RELAUNCH_S = 30.0
SERVICE_DAG, INGEST_DAG = "market_producer", "market_ingest"
LOCAL = Path(os.environ.get("STOCKPIPE_LOCAL", ROOT / ".local"))


def log(text: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {text}", flush=True)


# --- processes -----------------------------------------------------------------------------------
def _is_producer(proc: psutil.Process) -> bool:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return len(cmd) >= 3 and cmd[-2:] == ["-m", "stockpipe.producer"] and "python" in Path(cmd[0]).name


def service_producer() -> tuple[int, str] | None:
    """(pid, Airflow run id) of the producer market_producer's task runs, if one does."""
    for proc in psutil.process_iter():
        if not _is_producer(proc):
            continue
        try:
            env = proc.environ()
            if env.get("AIRFLOW_CTX_DAG_ID") == SERVICE_DAG and proc.status() != psutil.STATUS_ZOMBIE:
                return proc.pid, env.get("AIRFLOW_CTX_DAG_RUN_ID", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def supervisorctl(*args: str) -> str:
    env = {**os.environ, "STOCKPIPE_HOME": str(ROOT), "STOCKPIPE_LOCAL": str(LOCAL)}
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "supervisorctl"), "-c", str(ROOT / "infra" / "supervisord.conf"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return out.stdout.strip()


def supervised_run(pid: int) -> str:
    """The run id the supervisord producer's cycles carry (stockpipe.producer.cycles.service_run_id)."""
    return f"producer@{socket.gethostname()}:{pid}"


def supervised_producer() -> int | None:
    text = supervisorctl("pid", "producer")
    return int(text) if text.isdigit() and text != "0" else None


# --- what the pipeline recorded ------------------------------------------------------------------
def first_cycle_after(settings, run_prefix: str, after: datetime) -> datetime | None:
    with pg_connect(settings, "writer", connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(
            "SELECT min(finished_at) FROM ops.ingest_cycles WHERE run_id LIKE %s AND finished_at > %s",
            (run_prefix + "%", after),
        ).fetchone()
    return row[0]


def other_producers(settings, since: datetime, mine: set[str]) -> dict[str, int]:
    """Cycles recorded since ``since`` by producers the benchmark did not run (by hand, tests): while
    one runs, it could refill what a killed producer missed, so the loss figure is said with them."""
    with pg_connect(settings, "writer", connect_timeout=5, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT run_id, count(*) FROM ops.ingest_cycles WHERE finished_at > %s AND symbols > 0 GROUP BY 1",
            (since,),
        ).fetchall()
    return {run: n for run, n in rows if not run.startswith(f"{SERVICE_DAG}/") and run not in mine}


def wait_for(what: str, probe, timeout_s: float, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(step_s)
    raise SystemExit(f"{what} did not happen within {timeout_s:.0f} s")


def kill_and_time(settings, find, run_prefix_of, kills: int, every_s: float, label: str) -> list[dict[str, Any]]:
    """kill -9 the producer ``find()`` names, ``kills`` times; per kill: seconds to a new process and
    to its first recorded cycle."""
    results = []
    for n in range(1, kills + 1):
        time.sleep(every_s)
        old = find()
        if old is None:
            raise SystemExit(f"{label}: no producer running before kill {n}")
        old_pid = old if isinstance(old, int) else old[0]
        killed_at = datetime.now(UTC)
        t0 = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)

        def relaunched(old_pid=old_pid):
            now = find()
            pid = now if isinstance(now, int) or now is None else now[0]
            return now if pid not in (None, old_pid) else None

        new = wait_for(f"{label}: a new producer after kill {n}", relaunched, 120)
        relaunch_s = time.monotonic() - t0
        prefix = run_prefix_of(new)

        def recorded(prefix=prefix, killed_at=killed_at):
            return first_cycle_after(settings, prefix, killed_at)

        first = wait_for(f"{label}: the relaunched producer's first cycle", recorded, 180, 1)
        cycle_s = (first - killed_at).total_seconds()
        new_pid = new if isinstance(new, int) else new[0]
        log(f"{label} kill {n}: pid {old_pid} → {new_pid} in {relaunch_s:.1f} s, first cycle after {cycle_s:.1f} s")
        results.append(
            {"kill": n, "old_pid": old_pid, "new_pid": new_pid, "relaunch_s": relaunch_s, "first_cycle_s": cycle_s}
        )
    return results


# --- rate limit and loss -------------------------------------------------------------------------
def max_in_window(times: list[float], window: float = 60.0) -> int:
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def request_log(settings, since: float) -> dict[str, Any]:
    token = settings.simulator_admin_token.get_secret_value()
    response = httpx.get(
        f"{settings.simulator_url}/_admin/requests",
        params={"since": since},
        headers={ADMIN_TOKEN_HEADER: token},
        timeout=30,
    )
    response.raise_for_status()
    by_key: dict[str, list[float]] = {}
    for row in response.json()["requests"]:
        by_key.setdefault(row["key_id"], []).append(row["ts"])
    return {key: {"calls": len(ts), "max_in_any_60s": max_in_window(ts)} for key, ts in by_key.items()}


def verify(since_s: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "stockpipe.verify", "--since", f"{int(since_s)}s", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise SystemExit(f"verify failed: {out.stderr[-2000:]}") from None


def summary(values: list[float]) -> tuple[float, float]:
    return (statistics.median(values), max(values)) if values else (float("nan"), float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5, help="kill -9 of the service's producer (default 5)")
    parser.add_argument("--every-s", type=float, default=75, help="seconds between kills (default 75)")
    parser.add_argument("--baseline-kills", type=int, default=3, help="kill -9 of supervisord's producer (default 3)")
    parser.add_argument("--settle-s", type=float, default=150, help="catch-up time before verify (default 150)")
    args = parser.parse_args()

    settings = load_settings()
    started_at, started = datetime.now(UTC), time.time()
    load_before = os.getloadavg()
    paused_before = {dag: dag_is_paused(settings, dag) for dag in (SERVICE_DAG, INGEST_DAG)}
    supervised_before = supervised_producer() is not None
    log(f"pause states before: {paused_before}; supervisord producer running: {supervised_before}")
    service: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    try:
        # --- service: nothing but market_producer produces
        if supervised_before:
            supervisorctl("stop", "producer")
        set_dag_paused(settings, INGEST_DAG, True)
        set_dag_paused(settings, SERVICE_DAG, False)
        first = wait_for(
            "market_producer's producer to start (is the stack in STOCKPIPE_PRODUCER_MODE=service? make status)",
            service_producer,
            180,
            0.5,
        )
        run = f"{SERVICE_DAG}/{first[1]}"
        wait_for("its first cycle", lambda: first_cycle_after(settings, run, started_at), 180, 1)
        log(f"service up: pid {first[0]} ({first[1]})")
        service = kill_and_time(
            settings, service_producer, lambda new: f"{SERVICE_DAG}/{new[1]}", args.kills, args.every_s, "service"
        )
        # --- baseline: supervisord's program, market_producer paused
        if args.baseline_kills:
            set_dag_paused(settings, SERVICE_DAG, True)
            wait_for("market_producer's producer to stop", lambda: service_producer() is None, 90, 0.5)
            supervisorctl("start", "producer")
            pid = wait_for("supervisord's producer", supervised_producer, 60, 0.5)
            wait_for("its first cycle", lambda: first_cycle_after(settings, supervised_run(pid), started_at), 180, 1)
            log(f"baseline up: supervisord producer pid {pid}")
            baseline = kill_and_time(
                settings, supervised_producer, supervised_run, args.baseline_kills, args.every_s, "baseline"
            )
        log(f"catch-up: {args.settle_s:.0f} s")
        time.sleep(args.settle_s)
    finally:
        if supervised_producer() is not None and not supervised_before:
            supervisorctl("stop", "producer")
        for dag, paused in paused_before.items():
            try:
                set_dag_paused(settings, dag, paused)
            except Exception as error:  # say it, the operator must restore it by hand
                log(f"could not restore {dag} to {'paused' if paused else 'unpaused'}: {error}")
        if supervised_before:
            supervisorctl("start", "producer")
        log(f"restored: {paused_before}")

    duration_s = time.time() - started
    others = other_producers(
        settings,
        started_at,
        {supervised_run(r["new_pid"]) for r in baseline} | {supervised_run(r["old_pid"]) for r in baseline},
    )
    checked = verify(duration_s)
    gaps = sum(s["gaps"] for s in checked["symbols"])
    duplicates = sum(s["duplicates"] for s in checked["symbols"])
    watch = [s for s in checked["symbols"] if s["symbol"] in settings.watchlist]
    limit = settings.rate_limit_per_minute
    keys = request_log(settings, started)
    worst = max((k["max_in_any_60s"] for k in keys.values()), default=0)
    load_after = os.getloadavg()

    rel_p50, rel_max = summary([r["relaunch_s"] for r in service])
    cyc_p50, cyc_max = summary([r["first_cycle_s"] for r in service])
    base_p50, base_max = summary([r["relaunch_s"] for r in baseline])
    bcyc_p50, bcyc_max = summary([r["first_cycle_s"] for r in baseline])
    rows = [
        (
            "kill -9 → new producer process (s), p50 / max",
            f"{rel_p50:.1f} / {rel_max:.1f}",
            f"{base_p50:.1f} / {base_max:.1f}",
            f"≤ {TARGET_RELAUNCH_S:.0f}",
            "yes" if rel_max <= TARGET_RELAUNCH_S else "NO",
        ),
        (
            "kill -9 → its first cycle recorded (s), p50 / max",
            f"{cyc_p50:.1f} / {cyc_max:.1f}",
            f"{bcyc_p50:.1f} / {bcyc_max:.1f}",
            "",
            "",
        ),
        ("bars lost (verify: gaps, whole run)", f"{gaps}", "", "0", "yes" if gaps == 0 else "NO"),
        ("bars sent twice (verify: duplicates, harmless)", f"{duplicates}", "", "", ""),
        (
            "most API calls in any 60 s (request log)",
            f"{worst} ({len(keys)} key{'s' if len(keys) != 1 else ''})",
            "",
            f"≤ {limit}",
            "yes" if worst <= limit else "NO",
        ),
    ]
    print(
        f"\nproducer kill -9 on the stack: {len(service)} kills of market_producer's producer, {len(baseline)} of "
        f"supervisord's, {args.every_s:.0f} s apart; run {duration_s / 60:.1f} min; load {load_before[0]:.2f} → "
        f"{load_after[0]:.2f}"
    )
    header = ("figure", "service (Airflow)", "baseline (supervisord)", "target", "met?")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print("verify: " + ", ".join(f"{s['symbol']} {s['bars']} bars {s['gaps']} gaps" for s in watch))
    if others:
        print(
            "other producers recorded cycles meanwhile (they share the checkpoints and could refill a loss): "
            + ", ".join(f"{run} ({n})" for run, n in sorted(others.items()))
        )

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "producer_relaunch",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(duration_s, 1),
        "params": vars(args),
        "watchlist": settings.watchlist,
        "rate_limit_per_minute": limit,
        "service": {"kills": service, "relaunch_p50_s": rel_p50, "relaunch_max_s": rel_max,
                    "first_cycle_p50_s": cyc_p50, "first_cycle_max_s": cyc_max},
        "baseline_supervisord": {"kills": baseline, "relaunch_p50_s": base_p50, "relaunch_max_s": base_max,
                                 "first_cycle_p50_s": bcyc_p50, "first_cycle_max_s": bcyc_max},
        "verify": {"gaps": gaps, "duplicates": duplicates, "symbols": checked["symbols"],
                   "calendar": checked["calendar"]},
        "request_log": {"keys": keys, "max_in_any_60s": worst},
        "other_producers": others,
        "targets": {"relaunch_s": TARGET_RELAUNCH_S, "bars_lost": 0, "calls_per_60s": limit},
        "met": {"relaunch": rel_max <= TARGET_RELAUNCH_S, "no_loss": gaps == 0, "rate_limit": worst <= limit},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "table": [dict(zip(header, r, strict=True)) for r in rows],
    }  # fmt: skip
    path = out / "producer_relaunch.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
