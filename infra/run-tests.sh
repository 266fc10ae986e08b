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
# pytest runs as root; the services run as the stack's user: what the tests left in .local/ goes back to it
stop_started_services() { infra/stack.sh fix-ownership || true; if [ $was_up = 0 ]; then infra/stack.sh down; fi; }
trap stop_started_services EXIT
infra/stack.sh up postgres redis kafka || exit 1
# The browser test drives a real headless Chromium (infra/platform.sh): one already installed (never
# Ubuntu's snap stub), else the distribution's package (Debian: chromium), else, on Ubuntu, Playwright's
# own build. Its path reaches the test as STOCKPIPE_CHROMIUM.
# shellcheck source=infra/platform.sh
. infra/platform.sh
STOCKPIPE_CHROMIUM="${STOCKPIPE_CHROMIUM:-$(platform_chromium)}"
if [ -z "$STOCKPIPE_CHROMIUM" ]; then
  chromium_pkg=$(platform_package chromium)
  if [ "$(platform_os)" = unsupported ]; then
    echo "no headless Chromium found: $(platform_unsupported_message)" >&2; exit 1
  elif [ -n "$chromium_pkg" ]; then
    echo "==> installing $chromium_pkg for the browser test (log: .local/logs/install-chromium.log)"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$chromium_pkg"; } \
      >> .local/logs/install-chromium.log 2>&1 || { echo "chromium install failed: see .local/logs/install-chromium.log" >&2; exit 1; }
    STOCKPIPE_CHROMIUM=$(platform_chromium)
  else
    echo "==> installing Playwright's Chromium for the browser test (log: .local/logs/install-chromium.log)"
    export PLAYWRIGHT_BROWSERS_PATH="$PWD/.local/ms-playwright"
    .venv/bin/python -m playwright install --with-deps chromium >> .local/logs/install-chromium.log 2>&1 \
      || { echo "chromium install failed: see .local/logs/install-chromium.log" >&2; exit 1; }
    STOCKPIPE_CHROMIUM=$(find "$PLAYWRIGHT_BROWSERS_PATH" -path '*chrome-linux*/chrome' -type f | head -n 1)
  fi
fi
export STOCKPIPE_CHROMIUM
# tests/test_compose.py validates docker-compose.yaml against the Compose specification's JSON
# schema, shipped in the docker-compose 1.29.2 wheel (compose/config/compose_spec.json): fetched once.
if [ ! -s .local/cache/compose_spec.json ]; then
  mkdir -p .local/cache
  { .venv/bin/pip download -q docker-compose==1.29.2 --no-deps -d .local/cache \
    && .venv/bin/python -c 'import glob, zipfile; z = zipfile.ZipFile(glob.glob(".local/cache/docker_compose-1.29.2-*.whl")[0]); open(".local/cache/compose_spec.json", "wb").write(z.read("compose/config/compose_spec.json"))'; } \
    >> .local/logs/install-compose-spec.log 2>&1 || { echo "fetching the Compose schema failed: see .local/logs/install-compose-spec.log" >&2; exit 1; }
fi
# Pinned linters of the repository itself: actionlint (the CI workflow), the CDK app's venv and CLI
# (tests/deploy: cdk synth, cfn-lint, the template's security assertions).
infra/tools.sh || exit 1
mkdir -p test-artifacts
# The tests read no setting of .env but where the services are (ports, hosts, URLs, logins): a demo's
# .env (STOCKPIPE_FEED, STOCKPIPE_WEBSOCKET_SYMBOLS, retention, ...) must not change what they run.
STOCKPIPE_DOTENV="$STOCKPIPE_LOCAL/test.env"
.venv/bin/python -m stockpipe.config --locations-of .env > "$STOCKPIPE_DOTENV" || exit 1
export STOCKPIPE_DOTENV
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc = 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; exit 1; fi
exit $rc
