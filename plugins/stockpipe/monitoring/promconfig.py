"""Prometheus / Alertmanager configuration of the local stack, rendered from the settings.

``python -m stockpipe.monitoring.promconfig prometheus|alertmanager OUT`` writes OUT from
``infra/prometheus/{prometheus,alertmanager}.yml`` with the ports of the settings and prints the
server's command-line flags, one per line (``infra/prometheus/run.sh`` execs the server with them).
Everything listens on 127.0.0.1; data lives under ``.local/prometheus/``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from stockpipe.config import ROOT, Settings, get_settings

CONFIG_DIR = ROOT / "infra" / "prometheus"
RULES = CONFIG_DIR / "rules" / "stockpipe.yml"


def _targets(config: dict[str, Any], job: str, target: str) -> None:
    for scrape in config["scrape_configs"]:
        if scrape["job_name"] == job:
            scrape["static_configs"] = [{"targets": [target]}]
            return
    raise KeyError(f"job {job} not in {CONFIG_DIR / 'prometheus.yml'}")


def prometheus_config(settings: Settings) -> dict[str, Any]:
    config = yaml.safe_load((CONFIG_DIR / "prometheus.yml").read_text())
    host = "127.0.0.1"
    config["rule_files"] = [str(RULES)]
    _targets(config, "prometheus", f"{host}:{settings.prometheus_port}")
    _targets(config, "stockpipe-exporter", f"{host}:{settings.exporter_port}")
    if settings.producer_mode in ("service", "supervisor") and settings.producer_metrics_port:
        _targets(config, "stockpipe-producer", f"{host}:{settings.producer_metrics_port}")
    else:  # no long-running producer to scrape
        config["scrape_configs"] = [s for s in config["scrape_configs"] if s["job_name"] != "stockpipe-producer"]
    if settings.alertmanager_enabled:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [f"{host}:{settings.alertmanager_port}"]}]}]
        }
    return config


def prometheus_flags(settings: Settings, config_file: Path) -> list[str]:
    data = settings.local_dir / "prometheus" / "data"
    return [
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data}",
        f"--storage.tsdb.retention.time={settings.prometheus_retention}",
        f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
        f"--web.external-url=http://127.0.0.1:{settings.prometheus_port}/",
    ]


def alertmanager_config(settings: Settings) -> dict[str, Any]:
    config = yaml.safe_load((CONFIG_DIR / "alertmanager.yml").read_text())
    receiver = next(r for r in config["receivers"] if r["name"] == "webhook")
    if settings.alert_webhook_url is None:
        receiver.pop("webhook_configs", None)  # alerts stay visible in Alertmanager's UI only
    else:
        receiver["webhook_configs"][0]["url"] = settings.alert_webhook_url.get_secret_value()
    return config


def alertmanager_flags(settings: Settings, config_file: Path) -> list[str]:
    data = settings.local_dir / "prometheus" / "alertmanager"
    return [
        f"--config.file={config_file}",
        f"--storage.path={data}",
        f"--web.listen-address=127.0.0.1:{settings.alertmanager_port}",
        f"--web.external-url=http://127.0.0.1:{settings.alertmanager_port}/",
        "--cluster.listen-address=",  # no HA gossip: it would listen on 0.0.0.0:9094
    ]


def write(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Rendered by python -m stockpipe.monitoring.promconfig from {CONFIG_DIR}; edit that, not this.\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold the webhook URL
    with os.fdopen(fd, "w") as handle:
        handle.write(header + yaml.safe_dump(config, sort_keys=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stockpipe.monitoring.promconfig", description=__doc__.splitlines()[0]
    )
    parser.add_argument("server", choices=["prometheus", "alertmanager"])
    parser.add_argument("out", type=Path, help="config file to write")
    args = parser.parse_args(argv)
    settings = get_settings()
    out = args.out.resolve()
    if args.server == "prometheus":
        write(out, prometheus_config(settings))
        flags = prometheus_flags(settings, out)
    else:
        write(out, alertmanager_config(settings))
        flags = alertmanager_flags(settings, out)
    print("\n".join(flags))


if __name__ == "__main__":
    main()
