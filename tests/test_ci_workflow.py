""".github/workflows/ci.yml: actionlint (pinned, built by infra/tools.sh into .local/bin when `go` is
available) finds nothing, and the workflow runs what the README says on a supported system."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
ACTIONLINT = ROOT / ".local" / "bin" / "actionlint"
TOOLS = ROOT / "infra" / "tools.sh"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_actionlint_finds_nothing():
    if not ACTIONLINT.exists():
        if shutil.which("go") is None:
            pytest.skip("actionlint is built with go, and there is no go toolchain here")
        pytest.fail("actionlint is not installed: `make test` installs it (or: infra/tools.sh actionlint)")
    pinned = re.search(r"^ACTIONLINT_VERSION=(\S+)", TOOLS.read_text(), re.M).group(1)
    version = subprocess.run([str(ACTIONLINT), "-version"], capture_output=True, text=True, check=True)
    assert version.stdout.splitlines()[0] == pinned
    done = subprocess.run(
        [str(ACTIONLINT), "-no-color", str(WORKFLOW.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_test_job_runs_make_test_on_a_supported_system():
    job = workflow()["jobs"]["test"]
    assert job["container"] == "debian:12"  # a system infra/platform.sh supports, installing as root
    runs = [step.get("run", "") for step in job["steps"]]
    assert any(run.strip() == "bash .ci/run" for run in runs)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    uses = [step.get("uses", "") for step in job["steps"]]
    assert any(u.startswith("actions/setup-go@") for u in uses), "actionlint needs go in CI"
    assert any(u.startswith("actions/setup-node@") for u in uses), "the CDK CLI needs node in CI"


def test_caches_and_failure_artifacts():
    steps = workflow()["jobs"]["test"]["steps"]
    caches = [s["with"] for s in steps if s.get("uses", "").startswith("actions/cache@")]
    venv = next(c for c in caches if c["path"] == ".venv")
    assert "hashFiles('requirements.txt'" in venv["key"]
    assert any(".m2" in c["path"] for c in caches)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "failure()"
    assert {"test-artifacts/", ".local/logs/"} <= set(upload["with"]["path"].split())


def test_lint_job_runs_ruff_check_and_format_check():
    runs = " ".join(step.get("run", "") for step in workflow()["jobs"]["lint"]["steps"])
    assert "ruff check" in runs and "ruff format --check" in runs
    assert "grep '^ruff==' requirements.txt" in runs  # the same ruff as the venv's


def test_the_other_supported_systems_install():
    job = workflow()["jobs"]["install"]
    assert set(job["strategy"]["matrix"]["system"]) == {"debian:13", "ubuntu:24.04"}
    assert job["container"] == "${{ matrix.system }}"
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "infra/stack.sh up postgres redis kafka" in runs and "pytest tests/infra" in runs
