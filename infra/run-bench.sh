#!/usr/bin/env bash
# `make bench`: every benchmark in bench/, one after the other, then one summary table
# (bench/report.py: prints it, writes bench/results/summary.json, rewrites the summary block of
# docs/benchmarks.md). A failing benchmark does not stop the others; the exit code is 1 when any
# benchmark or the report failed. `make bench BENCH=bench/x.py` (this script with arguments) runs
# only that script (options after it are its own), then the report.
#
# Order: the three that need only PostgreSQL, Redis and Kafka first, while the rest of the stack is
# whatever it was (they record the load average they ran under); stack_memory last, because it
# measures the whole stack with market_stream's Spark driver running, so it starts the whole stack.
# If this script started supervisord, it stops the stack again at the end (like `make test`).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export STOCKPIPE_HOME="$PWD" STOCKPIPE_LOCAL="$PWD/.local"
PY=.venv/bin/python

# Arguments: scripts, each followed by its own options (`bench/dashboard.py --calendar demo`).
steps=()
for arg in "$@"; do
  if [[ $arg == *.py || ${#steps[@]} -eq 0 ]]; then steps+=("$arg"); else steps[-1]+=" $arg"; fi
done
if [ ${#steps[@]} -eq 0 ]; then
  steps=(
    "bench/backfill.py"
    "bench/stream_throughput.py"
    "bench/dashboard.py"
    "bench/dashboard.py --calendar demo"
    "bench/stack_memory.py"
  )
fi

expected_duration() {  # what each step takes on the 2-core dev box (docs/benchmarks.md)
  case "$1" in
    bench/backfill.py*) echo "~3 min" ;;
    bench/stream_throughput.py*) echo "~4 min" ;;
    "bench/dashboard.py --calendar demo"*) echo "~1 min, +4 min the first time (loads a year of 24/7 bars)" ;;
    bench/dashboard.py*) echo "~1 min, +1 min the first time (loads a year of bars)" ;;
    bench/stack_memory.py*) echo "~2 min, + the stack's start and up to 5 min for market_stream" ;;
    bench/market_live.py*) echo "~40 min (30-min window + warm-up, drain, verify, TA-Lib); the stack in the market-wide mode" ;;
    *) echo "?" ;;
  esac
}

was_up=0
if [ -x .venv/bin/supervisorctl ] && .venv/bin/supervisorctl -c infra/supervisord.conf pid >/dev/null 2>&1; then
  was_up=1
fi
since=$(date +%s)
infra/stack.sh up postgres redis kafka || exit 1

failed=()
n=${#steps[@]}
for i in "${!steps[@]}"; do
  read -r -a argv <<<"${steps[$i]}"
  echo
  echo "==> [$((i + 1))/$n] ${steps[$i]} ($(expected_duration "${steps[$i]}")), started $(date +%H:%M:%S)"
  if [ "${argv[0]}" = "bench/stack_memory.py" ] || [ "${argv[0]}" = "bench/dashboard.py" ]; then
    # The dashboard's pipeline page reads Airflow's API; stack_memory measures the whole stack.
    if ! infra/stack.sh up; then failed+=("${steps[$i]} (the stack did not start)"); continue; fi
  fi
  t0=$(date +%s)
  if "$PY" "${argv[@]}"; then
    echo "<== ${steps[$i]}: done in $(($(date +%s) - t0)) s"
  else
    echo "<== ${steps[$i]}: FAILED after $(($(date +%s) - t0)) s" >&2
    failed+=("${steps[$i]}")
  fi
done

echo
echo "==> summary (bench/report.py)"
"$PY" bench/report.py --since "$since" --markdown || failed+=("bench/report.py")

if [ $was_up = 0 ]; then
  infra/stack.sh down
elif [[ " ${steps[*]} " == *" bench/stack_memory.py"* ]]; then
  echo "the whole stack is up (stack_memory needs it): 'make down' stops it"
fi
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "all $n benchmarks ran in $(($(date +%s) - since)) s"
