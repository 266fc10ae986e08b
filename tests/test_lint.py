"""The CI workflow's lint job, also in `make test`: `ruff check` and `ruff format --check` (the
ruff pinned in requirements.txt) over every Python folder of the project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["plugins", "dags", "spark_jobs", "dashboard", "tests", "bench", "deploy"]
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command: list[str]):
    result = subprocess.run([str(RUFF), *command, *FOLDERS], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"ruff {' '.join(command)} (fix: ruff {command[0]} {' '.join(FOLDERS)}):\n"
        + (result.stdout + result.stderr)[-3000:]
    )
