"""Prometheus alert rules and configs, checked by Debian's promtool/amtool (installed by `make test`,
infra/stack.sh's install step: a missing binary is a failure, never a skip)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stockpipe.config import ROOT, load_settings, shell_exports
from stockpipe.monitoring import promconfig

RULES_DIR = ROOT / "infra" / "prometheus" / "rules"
RULES = RULES_DIR / "stockpipe.yml"
RULE_TESTS = RULES_DIR / "stockpipe_test.yml"


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    assert path, f"{name} not found: `make install` (infra/stack.sh) installs Debian's prometheus packages"
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules():
    out = run(tool("promtool"), "check", "rules", RULES).stdout
    assert f"SUCCESS: {len(alert_names())} rules found" in out


def test_promtool_test_rules():
    out = run(tool("promtool"), "test", "rules", RULE_TESTS).stdout
    assert "SUCCESS" in out


def test_every_alert_is_unit_tested():
    tested = {
        case["alertname"]
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alert_names()) == tested
    # the alerts the issue asks for
    for name in ("DataStale", "StreamStalled", "ConsumerLagHigh", "DLQGrowth", "ApiErrorRate", "DagRunFailed"):
        assert f"Stockpipe{name}" in tested


def test_checked_in_prometheus_config_is_valid():
    run(tool("promtool"), "check", "config", ROOT / "infra" / "prometheus" / "prometheus.yml")


@pytest.mark.parametrize("alertmanager", [False, True])
def test_rendered_prometheus_config(tmp_path: Path, alertmanager: bool):
    settings = load_settings(
        prometheus_port=19090,
        exporter_port=19109,
        producer_metrics_port=19108,
        producer_mode="supervisor",
        alertmanager_enabled=alertmanager,
    )
    out = tmp_path / "prometheus.yml"
    promconfig.write(out, promconfig.prometheus_config(settings))
    run(tool("promtool"), "check", "config", out)
    config = yaml.safe_load(out.read_text())
    targets = {s["job_name"]: s["static_configs"][0]["targets"] for s in config["scrape_configs"]}
    assert targets == {
        "prometheus": ["127.0.0.1:19090"],
        "stockpipe-producer": ["127.0.0.1:19108"],
        "stockpipe-exporter": ["127.0.0.1:19109"],
    }
    assert config["rule_files"] == [str(RULES)]
    assert ("alerting" in config) is alertmanager
    if alertmanager:
        assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
            f"127.0.0.1:{settings.alertmanager_port}"
        ]
    flags = promconfig.prometheus_flags(settings, out)
    assert "--web.listen-address=127.0.0.1:19090" in flags
    assert any(f.startswith("--storage.tsdb.path=") and f.endswith(".local/prometheus/data") for f in flags)


def test_no_producer_target_when_airflow_runs_the_producer(tmp_path: Path):
    config = promconfig.prometheus_config(load_settings(producer_mode="airflow"))
    assert "stockpipe-producer" not in {s["job_name"] for s in config["scrape_configs"]}


@pytest.mark.parametrize("webhook", ["", "https://hooks.example.com/stockpipe?token=abc"])
def test_rendered_alertmanager_config(tmp_path: Path, webhook: str):
    settings = load_settings(alertmanager_enabled=True, alert_webhook_url=webhook)
    out = tmp_path / "alertmanager.yml"
    promconfig.write(out, promconfig.alertmanager_config(settings))
    assert out.stat().st_mode & 0o077 == 0, "may hold the webhook URL: owner-only"
    run(tool("amtool"), "check-config", out)
    receiver = yaml.safe_load(out.read_text())["receivers"][0]
    if webhook:
        assert receiver["webhook_configs"][0]["url"] == webhook
    else:
        assert "webhook_configs" not in receiver
    flags = promconfig.alertmanager_flags(settings, out)
    assert f"--web.listen-address=127.0.0.1:{settings.alertmanager_port}" in flags
    assert "--cluster.listen-address=" in flags  # no gossip port on 0.0.0.0


def test_alertmanager_port_does_not_clash_with_the_native_stack():
    settings = load_settings()
    exports = dict(re.findall(r"export (\w+)=(\S+)", shell_exports(settings)))
    ports = [v for k, v in exports.items() if k.endswith("_PORT")]
    assert len(ports) == len(set(ports)), exports
