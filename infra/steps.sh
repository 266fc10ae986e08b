# Output helpers of the stack's scripts (sourced by infra/stack.sh and infra/tools.sh): every step
# prints its name and duration; a failing command's log tail is shown with the log's path.
step_started=0
step() { step_started=$(date +%s.%N); printf '==> %-46s' "$1"; }
step_done() {
  local elapsed; elapsed=$(awk -v a="$step_started" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  printf '%s (%ss)\n' "${1:-ok}" "$elapsed"
}
fail() { printf 'FAILED\n    %s\n' "$1" >&2; exit 1; }
run_logged() {  # run_logged LOGFILE CMD... : quiet unless it fails
  local log="$1"; shift
  if ! "$@" >>"$log" 2>&1; then
    tail -n 20 "$log" | sed 's/^/    | /' >&2
    fail "see $log"
  fi
}
