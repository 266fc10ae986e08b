"""Least privilege (DESIGN.md invariant 7), without services: how the local stack is configured to
start (supervisord.conf, stack.sh) and which secrets each process can read (stockpipe.scopes)."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from stockpipe.config import ROOT, load_settings

SUPERVISORD_CONF = ROOT / "infra" / "supervisord.conf"
STACK_SH = ROOT / "infra" / "stack.sh"
# supervisord programs that load stockpipe's settings, and the secrets file each gets
PYTHON_PROGRAMS = {
    "simulator": "simulator", "producer": "producer", "dashboard": "dashboard", "exporter": "exporter",
    "prometheus": "prometheus", "alertmanager": "alertmanager", "airflow-apiserver": "airflow",
    "airflow-scheduler": "airflow", "airflow-dag-processor": "airflow", "airflow-triggerer": "airflow",
    "spark-master": "spark", "spark-worker": "spark",
}  # fmt: skip
ALL_SECRETS = {
    "pg_admin_password": "adm-1", "pg_writer_password": "wri-2", "pg_reader_password": "rea-3",
    "redis_password": "red-4", "simulator_admin_token": "tok-5", "polygon_api_key": "pk-6",
    "airflow_api_password": "vie-7", "kafka_sasl_username": "stockpipe", "kafka_sasl_password": "kaf-8",
    "kafka_security_protocol": "SASL_SSL",
}  # fmt: skip


def programs() -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    parser.read(SUPERVISORD_CONF)
    return {s.split(":", 1)[1]: dict(parser[s]) for s in parser.sections() if s.startswith("program:")}


def test_no_program_runs_as_another_user_than_supervisord():
    """supervisord runs unprivileged (stack.sh), so no program may switch user (`user=postgres` was root's
    privilege); every program is covered by the stack's user."""
    found = programs()
    assert {"postgres", "redis", "kafka", "dashboard", "exporter", "prometheus"} <= set(found)
    for name, options in found.items():
        assert "user" not in options, f"[program:{name}] has user={options['user']}"


def test_stack_starts_supervisord_as_the_unprivileged_user():
    text = STACK_SH.read_text()
    assert re.search(r"useradd --system\b", text), "make up creates the system user"
    start = [line for line in text.splitlines() if 'supervisord" -c' in line and "bin/supervisord" in line]
    assert start and all("as_stack" in line for line in start), start
    assert "setpriv --reuid=" in text
    # the initdb password file is private
    assert "chmod 644" not in text
    assert re.search(r'chmod 600 "\$pwfile"', text)


def test_each_settings_program_gets_only_its_secrets_file():
    from stockpipe.scopes import SCOPES

    found = programs()
    for name, scope in PYTHON_PROGRAMS.items():
        env = found[name].get("environment", "")
        assert f'STOCKPIPE_SECRETS_FILE="%(ENV_STOCKPIPE_LOCAL)s/secrets/{scope}.env"' in env, name
    # any other program (a new one too) that is not one of the servers reads stockpipe's settings:
    # it needs its own scope in stockpipe.scopes.SCOPES and that file in its environment
    for name, options in found.items():
        if name in ("postgres", "redis", "kafka"):
            continue
        match = re.search(r'STOCKPIPE_SECRETS_FILE="%\(ENV_STOCKPIPE_LOCAL\)s/secrets/([\w-]+)\.env"',
                          options.get("environment", ""))  # fmt: skip
        assert match, f"[program:{name}] has no STOCKPIPE_SECRETS_FILE (add a scope to stockpipe.scopes.SCOPES)"
        assert match.group(1) in SCOPES, f"[program:{name}]: no scope {match.group(1)!r} in stockpipe.scopes.SCOPES"
    # no secret is given on a command line or in a program's environment
    for name, options in found.items():
        text = options.get("command", "") + options.get("environment", "")
        assert not re.search(r"PASSWORD|requirepass|TOKEN|API_KEY", text), name


def test_redis_password_comes_from_a_private_config_include(tmp_path):
    from stockpipe.scopes import redis_conf

    command = programs()["redis"]["command"]
    assert "%(ENV_STOCKPIPE_LOCAL)s/redis/redis.conf" in command
    rendered = redis_conf(load_settings(redis_password="s3cret-pw"))
    assert f"include {ROOT / 'infra' / 'redis' / 'redis.conf'}" in rendered
    assert 'requirepass "s3cret-pw"' in rendered


def write_scopes(tmp_path: Path) -> Path:
    from stockpipe.scopes import write_scopes

    folder = tmp_path / "secrets"
    write_scopes(load_settings(**ALL_SECRETS), folder)
    return folder


def test_scope_files_are_private_and_hold_only_what_the_program_needs(tmp_path):
    folder = write_scopes(tmp_path)
    texts = {path.stem: path.read_text() for path in folder.glob("*.env")}
    for path in folder.glob("*.env"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for reader in ("dashboard", "exporter"):
        assert "rea-3" in texts[reader] and "red-4" in texts[reader] and "vie-7" in texts[reader]
        for secret in ("adm-1", "wri-2", "tok-5", "pk-6"):
            assert secret not in texts[reader], (reader, secret)
    assert "adm-1" not in "".join(texts.values()), "no supervisord program holds the PostgreSQL admin password"
    assert "pk-6" in texts["producer"] and "pk-6" in texts["airflow"]
    assert {stem for stem, text in texts.items() if "pk-6" in text} == {"producer", "airflow"}
    assert {stem for stem, text in texts.items() if "tok-5" in text} == {"simulator"}
    assert "red-4" not in texts["prometheus"] and "wri-2" not in texts["simulator"]
    assert "STOCKPIPE_KAFKA_SASL_PASSWORD=kaf-8" in texts["dashboard"] and "kaf-8" not in texts["simulator"]


def run_settings(env: dict[str, str], cwd: Path) -> dict[str, str]:
    """The secrets a fresh process sees with ``env`` (what supervisord gives a program)."""
    code = (
        "import json; from stockpipe.config import get_settings as g; s = g(); "
        "print(json.dumps({f: (getattr(s, f).get_secret_value() if getattr(s, f) else '') "
        "for f in ('pg_admin_password', 'pg_writer_password', 'pg_reader_password', 'redis_password', "
        "'polygon_api_key', 'airflow_api_password')}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STOCKPIPE_") and k != "POLYGON_API_KEY"}
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", code],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_the_dashboard_process_never_sees_the_admin_or_writer_password(tmp_path):
    """Started as supervisord starts it (STOCKPIPE_SECRETS_FILE), the dashboard's settings hold the reader
    password and nothing of .local/secrets.env or of a secret in .env."""
    folder = write_scopes(tmp_path)
    home = tmp_path / "home"
    (home / ".local").mkdir(parents=True)
    (home / ".local" / "secrets.env").write_text(
        "STOCKPIPE_PG_ADMIN_PASSWORD=adm-1\nSTOCKPIPE_PG_WRITER_PASSWORD=wri-2\n"
    )
    (home / ".env").write_text("STOCKPIPE_PG_WRITER_PASSWORD=wri-2\nPOLYGON_API_KEY=pk-6\nSTOCKPIPE_PG_PORT=5999\n")
    base = {"STOCKPIPE_HOME": str(home)}
    everything = run_settings(base, home)
    assert everything["pg_admin_password"] == "adm-1" and everything["polygon_api_key"] == "pk-6"  # unscoped
    seen = run_settings({**base, "STOCKPIPE_SECRETS_FILE": str(folder / "dashboard.env")}, home)
    assert seen["pg_reader_password"] == "rea-3" and seen["redis_password"] == "red-4"
    assert seen["airflow_api_password"] == "vie-7"
    assert seen["pg_admin_password"] == "" and seen["pg_writer_password"] == "" and seen["polygon_api_key"] == ""


def test_dashboard_and_exporter_use_airflows_read_only_login(tmp_path, monkeypatch: pytest.MonkeyPatch):
    from stockpipe.airflow import bootstrap

    assert load_settings().airflow_api_user == bootstrap.VIEWER_USER == "viewer"
    airflow_sh = (ROOT / "infra" / "airflow" / "airflow.sh").read_text()
    users = re.search(r"SIMPLE_AUTH_MANAGER_USERS=(\S+)", airflow_sh).group(1)
    assert set(users.split(",")) == {"admin:admin", "viewer:viewer"}
    # an older passwords.json (admin only) gains the viewer login; the admin's is kept
    monkeypatch.setattr(bootstrap, "airflow_dir", lambda _settings: tmp_path)
    (tmp_path / "passwords.json").write_text('{"admin": "adm-pw"}')
    bootstrap.ensure_secrets(load_settings(airflow_api_password=""))
    logins = json.loads((tmp_path / "passwords.json").read_text())
    assert logins["admin"] == "adm-pw" and logins["viewer"] and logins["viewer"] != "adm-pw"
    assert (tmp_path / "passwords.json").stat().st_mode & 0o777 == 0o600


def test_redis_clients_get_the_password_from_the_settings():
    """Redis wants its password: a client built from ``redis_url`` (password-free, it gets logged) would be
    refused. Clients come from ``Settings.redis_client()`` or ``Settings.redis_dsn``."""
    built_from_url = re.compile(r"(from_url|RedisStorage|SharedRateLimiter|Redis)\(\s*[\w.]*\.redis_url\b", re.S)
    offenders = []
    for folder in ("plugins", "dashboard", "spark_jobs", "dags", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "test_least_privilege_stack.py":
                continue  # where an anonymous client is the point: Redis must refuse it
            if built_from_url.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"Redis clients built from redis_url (use settings.redis_client() / redis_dsn): {offenders}"
