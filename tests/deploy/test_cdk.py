"""The AWS CDK app in deploy/: `cdk synth` (pinned CLI in .local/cdk-cli, the app's own venv in
.local/cdk-venv, both installed by infra/tools.sh) with a dummy account and region, so no AWS account
or lookup is needed; cfn-lint on the template; the security assertions of deploy/tests (run in the
CDK venv on the same template); and every STOCKPIPE_* name the stack hands out is a real setting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from stockpipe.config import Settings, _env_name

pytestmark = pytest.mark.slow  # ~30-40 s: one cdk synth, cfn-lint, the assertions
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CDK_PYTHON = ROOT / ".local" / "cdk-venv" / "bin" / "python"
CFN_LINT = ROOT / ".local" / "cdk-venv" / "bin" / "cfn-lint"
CDK_CLI = ROOT / ".local" / "cdk-cli" / "node_modules" / ".bin" / "cdk"
ACCOUNT, REGION = "123456789012", "us-east-1"


def cdk_env() -> dict[str, str]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
    return dict(
        os.environ,
        CDK_DISABLE_CLI_TELEMETRY="true",
        # jsii warns loudly on a Node release it no longer supports (the dev box's Node 20; CI has 22)
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=node.split(".")[0],
        JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=node.split(".")[0],
    )


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory) -> Path:
    if not CDK_PYTHON.exists():
        pytest.fail("the CDK venv is missing: `make test` installs it (or: infra/tools.sh cdk)")
    if not CDK_CLI.exists():
        if shutil.which("npm") is None:
            pytest.skip("the CDK CLI comes from npm, and there is no npm here")
        pytest.fail("the CDK CLI is missing: `make test` installs it (or: infra/tools.sh cdk)")
    out = tmp_path_factory.mktemp("cdk.out")
    started = time.monotonic()
    done = subprocess.run(
        [str(CDK_CLI), "synth", "--quiet", "--no-notices", "--no-version-reporting",
         "--app", f"{CDK_PYTHON} app.py", "--output", str(out), "-c", f"account={ACCOUNT}", "-c", f"region={REGION}"],
        cwd=DEPLOY, env=cdk_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"cdk synth: {time.monotonic() - started:.1f} s")
    template = out / "Stockpipe.template.json"
    assert template.exists(), sorted(p.name for p in out.iterdir())
    return template


def test_cfn_lint_finds_nothing(synthesized):
    done = subprocess.run(
        [str(CFN_LINT), "--config-file", str(DEPLOY / ".cfnlintrc.yaml"), "--format", "parseable", str(synthesized)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_security_assertions(synthesized):
    """deploy/tests/test_stack.py (aws_cdk.assertions) in the CDK venv, on the synthesized template."""
    done = subprocess.run(
        [str(CDK_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=DEPLOY, env=dict(cdk_env(), STOCKPIPE_CDK_TEMPLATE=str(synthesized)),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]


def test_stockpipe_names_are_real_settings(synthesized):
    template = json.loads(synthesized.read_text())
    settings = {_env_name(name) for name in Settings.model_fields}
    outputs = {o["Description"].split(":")[0] for o in template["Outputs"].values() if "Description" in o}
    handed_out = {n for n in outputs if n.startswith("STOCKPIPE_") or n == "POLYGON_API_KEY"}
    assert handed_out - settings == set()
    for name in (
        "STOCKPIPE_KAFKA_BOOTSTRAP",
        "STOCKPIPE_PG_HOST",
        "STOCKPIPE_REDIS_URL",
        "STOCKPIPE_STREAM_CHECKPOINT",
    ):
        assert name in handed_out
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::ECS::TaskDefinition":
            continue
        for container in resource["Properties"]["ContainerDefinitions"]:
            names = [v["Name"] for v in container.get("Environment", [])] + [
                s["Name"] for s in container.get("Secrets", [])
            ]
            assert {n for n in names if n.startswith("STOCKPIPE_")} - settings == set()
