#!/usr/bin/env bash
# `make test`: install what is missing, start the services the suite needs (if not already up),
# run pytest, then stop what this script started. Exit code: pytest's, with 5 (no tests) as failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
was_up=0
if [ -x .venv/bin/supervisorctl ] && .venv/bin/supervisorctl -c infra/supervisord.conf pid >/dev/null 2>&1; then
  was_up=1
fi
export STOCKPIPE_HOME="$PWD" STOCKPIPE_LOCAL="$PWD/.local"
infra/stack.sh up postgres redis kafka || exit 1
mkdir -p test-artifacts
.venv/bin/python -m pytest "$@"
rc=$?
if [ $was_up = 0 ]; then infra/stack.sh down; fi
if [ $rc = 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; exit 1; fi
exit $rc
