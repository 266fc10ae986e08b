#!/usr/bin/env bash
# `make test`: install what is missing, start the services the suite needs (if not already up),
# run pytest, then stop what this script started. Exit code: pytest's, with 5 (no tests) as failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export STOCKPIPE_HOME="$PWD" STOCKPIPE_LOCAL="$PWD/.local"
was_up=0
if [ -x .venv/bin/supervisorctl ] && .venv/bin/supervisorctl -c infra/supervisord.conf pid >/dev/null 2>&1; then
  was_up=1
fi
stop_started_services() { if [ $was_up = 0 ]; then infra/stack.sh down; fi; }
trap stop_started_services EXIT
infra/stack.sh up postgres redis kafka || exit 1
# The browser test drives Debian's Chromium (no browser downloads here).
if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Debian's chromium for the browser test (log: .local/logs/install-chromium.log)"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
    >> .local/logs/install-chromium.log 2>&1 || { echo "chromium install failed: see .local/logs/install-chromium.log" >&2; exit 1; }
fi
# tests/test_compose.py validates docker-compose.yaml against the Compose specification's JSON
# schema, shipped in the docker-compose 1.29.2 wheel (compose/config/compose_spec.json): fetched once.
if [ ! -s .local/cache/compose_spec.json ]; then
  mkdir -p .local/cache
  { .venv/bin/pip download -q docker-compose==1.29.2 --no-deps -d .local/cache \
    && .venv/bin/python -c 'import glob, zipfile; z = zipfile.ZipFile(glob.glob(".local/cache/docker_compose-1.29.2-*.whl")[0]); open(".local/cache/compose_spec.json", "wb").write(z.read("compose/config/compose_spec.json"))'; } \
    >> .local/logs/install-compose-spec.log 2>&1 || { echo "fetching the Compose schema failed: see .local/logs/install-compose-spec.log" >&2; exit 1; }
fi
mkdir -p test-artifacts
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc = 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; exit 1; fi
exit $rc
