"""Least privilege for the local stack's secrets: each supervisord program reads only what it needs.

``make up`` (infra/stack.sh) generates every secret once into ``.local/secrets.env`` (0600), then
writes, at each start, one file per program into ``.local/secrets/`` (0600, owned by the stack's
user) holding only that program's secrets (:data:`SCOPES`). supervisord starts each program with
``STOCKPIPE_SECRETS_FILE`` pointing at its file; :mod:`stockpipe.config` then reads secrets from
that file alone (never ``.local/secrets.env``, never a secret from ``.env``).

``python -m stockpipe.scopes scopes DIR``        write DIR/<program>.env for every scope
``python -m stockpipe.scopes redis-conf FILE``   Redis' config include: the tracked redis.conf plus
                                                  ``requirepass`` (0600; not on the command line,
                                                  where ``ps`` would show it)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from stockpipe.config import ROOT, Settings, _env_name, load_settings

# program -> the secret settings it may hold (plus the Kafka SCRAM login, whose user name lives in
# .local/secrets.env too). Everything else it reads (ports, hosts) is not secret and comes from .env /
# the defaults as usual.
KAFKA_LOGIN = ("kafka_sasl_username", "kafka_sasl_password")
SCOPES: dict[str, tuple[str, ...]] = {
    # Airflow's components run the producer, the Spark jobs, health checks and maintenance tasks:
    # the writer role, Redis, Kafka, the market-data key; never the PostgreSQL admin or reader password.
    "airflow": (
        "pg_writer_password", "redis_password", "polygon_api_key", "simulator_api_key", "alert_webhook_url",
        *KAFKA_LOGIN,
    ),
    "producer": ("pg_writer_password", "redis_password", "polygon_api_key", "simulator_api_key", *KAFKA_LOGIN),
    "simulator": ("simulator_admin_token",),
    # read-only: the reader role, Redis (latest tiles), Kafka (topics page, lag), Airflow's read-only login;
    # and the rules role (the Alerts page edits market.alert_rules, and nothing else)
    "dashboard": ("pg_reader_password", "pg_rules_password", "redis_password", "airflow_api_password", *KAFKA_LOGIN),
    "exporter": ("pg_reader_password", "redis_password", "airflow_api_password", *KAFKA_LOGIN),
    "prometheus": (),
    # the alerts delivery worker: claims and updates market.alerts (writer), publishes on Redis, POSTs webhooks
    "alerts": ("pg_writer_password", "redis_password", "user_alerts_webhook_url"),
    # the standalone cluster's master and worker (STOCKPIPE_SPARK_CLUSTER=standalone): the jobs' code
    # reaches the executors with the driver's settings, the daemons themselves hold no secret
    "spark": (),
    "alertmanager": ("alert_webhook_url",),
}  # fmt: skip


def airflow_api_password(settings: Settings) -> str:
    """The read-only Airflow login's password: the setting, else Airflow's generated passwords file."""
    if settings.airflow_api_password.get_secret_value():
        return settings.airflow_api_password.get_secret_value()
    try:
        passwords = json.loads((settings.local_dir / "airflow" / "passwords.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(passwords.get(settings.airflow_api_user, ""))


def scope_values(settings: Settings, scope: str) -> dict[str, str]:
    """``{ENV_NAME: value}`` of the secrets ``scope`` may hold (empty ones left out)."""
    values: dict[str, str] = {}
    for field in SCOPES[scope]:
        if field == "airflow_api_password":
            value = airflow_api_password(settings)
        else:
            secret = getattr(settings, field)
            value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret or "")
        if value:
            values[_env_name(field)] = value
    return values


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _env_line(name: str, value: str) -> str:
    if any(c in value for c in " #'\"\\\n$"):
        value = json.dumps(value)
    return f"{name}={value}"


def write_scopes(settings: Settings, directory: Path) -> list[Path]:
    written = []
    for scope in SCOPES:
        lines = [f"# {scope}'s secrets, from .local/secrets.env by infra/stack.sh (stockpipe.scopes); never commit."]
        lines += [_env_line(name, value) for name, value in scope_values(settings, scope).items()]
        if not set(KAFKA_LOGIN) & set(SCOPES[scope]):
            # no Kafka client here: without the SCRAM login, a SASL protocol in .env would not validate
            lines.append("STOCKPIPE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT")
        path = directory / f"{scope}.env"
        _write_private(path, "\n".join(lines) + "\n")
        written.append(path)
    return written


def redis_conf(settings: Settings) -> str:
    password = settings.redis_password.get_secret_value()
    lines = [
        "# Rendered by infra/stack.sh (stockpipe.scopes redis-conf): the tracked config + the password.",
        f"include {ROOT / 'infra' / 'redis' / 'redis.conf'}",
    ]
    if password:
        lines.append(f"requirepass {json.dumps(password)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m stockpipe.scopes", description="Per-program secrets files.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("scopes", help="write one 0600 secrets file per program into DIR").add_argument("path")
    commands.add_parser("redis-conf", help="write Redis' 0600 config include (password) to FILE").add_argument("path")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "scopes":
        write_scopes(settings, Path(args.path))
    else:
        _write_private(Path(args.path), redis_conf(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
