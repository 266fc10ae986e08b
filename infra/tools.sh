#!/usr/bin/env bash
# Tools `make test` checks the repository with, each pinned and installed under .local/ (idempotent):
#   actionlint   .local/bin/actionlint     (go install; skipped, with one line, when `go` is absent)
#   CDK          .local/cdk-venv/          (deploy/requirements.txt: aws-cdk-lib, constructs, cfn-lint;
#                                           a venv of its own so .venv stays lean)
#                .local/cdk-cli/           (the `cdk` CLI from npm; skipped when `npm` is absent)
# Usage: infra/tools.sh [actionlint|cdk]...   (all by default). Every step prints its duration.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
LOGS="$LOCAL/logs"
mkdir -p "$LOGS" "$LOCAL/bin"

ACTIONLINT_VERSION=v1.7.12
CDK_CLI_VERSION=2.1148.1

# shellcheck source=infra/steps.sh
. "$ROOT/infra/steps.sh"

install_actionlint() {
  step "actionlint $ACTIONLINT_VERSION (.local/bin)"
  local bin="$LOCAL/bin/actionlint"
  if [ -x "$bin" ] && [ "$("$bin" -version 2>/dev/null | head -n 1)" = "$ACTIONLINT_VERSION" ]; then
    step_done "up to date"; return
  fi
  if ! command -v go >/dev/null; then step_done "skipped: no go toolchain on PATH (the workflow is not linted)"; return; fi
  run_logged "$LOGS/install-actionlint.log" env GOBIN="$LOCAL/bin" GOFLAGS=-mod=mod \
    go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  step_done "installed"
}

install_cdk() {
  step "CDK venv (deploy/requirements.txt)"
  local venv="$LOCAL/cdk-venv" want
  want=$(sha256sum "$ROOT/deploy/requirements.txt" | cut -c1-16)
  if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$want" ]; then
    step_done "up to date"
  else
    local log="$LOGS/install-cdk.log" python=python3
    [ -x "$ROOT/.venv/bin/python" ] && python="$ROOT/.venv/bin/python"
    [ -x "$venv/bin/python" ] || run_logged "$log" "$python" -m venv "$venv"
    run_logged "$log" "$venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/deploy/requirements.txt"
    echo "$want" > "$venv/.stamp"
    step_done "installed"
  fi
  step "CDK CLI aws-cdk@$CDK_CLI_VERSION (.local/cdk-cli)"
  local cli="$LOCAL/cdk-cli"
  if [ -f "$cli/.stamp" ] && [ "$(cat "$cli/.stamp")" = "$CDK_CLI_VERSION" ] && [ -x "$cli/node_modules/.bin/cdk" ]; then
    step_done "up to date"; return
  fi
  if ! command -v npm >/dev/null; then step_done "skipped: no npm on PATH (cdk synth is not run)"; return; fi
  run_logged "$LOGS/install-cdk.log" npm install --prefix "$cli" --no-audit --no-fund --loglevel=error \
    "aws-cdk@$CDK_CLI_VERSION"
  echo "$CDK_CLI_VERSION" > "$cli/.stamp"
  step_done "installed"
}

[ $# -gt 0 ] || set -- actionlint cdk
for tool in "$@"; do
  case "$tool" in
    actionlint) install_actionlint ;;
    cdk) install_cdk ;;
    *) echo "usage: $0 [actionlint|cdk]..." >&2; exit 2 ;;
  esac
done
