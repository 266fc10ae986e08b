"""Least privilege (DESIGN.md invariant 7) on the running local stack: no process runs as root,
Redis wants its password, the dashboard holds no PostgreSQL admin/writer password.

`make test` starts PostgreSQL, Redis and Kafka (infra/run-tests.sh), so supervisord runs; the process
checks cover whatever else of the stack is up too (the whole of it after `make up`)."""

from __future__ import annotations

import psutil
import pytest
import redis

from stockpipe.config import ROOT, load_settings

PIDFILE = ROOT / ".local" / "supervisor" / "supervisord.pid"


def supervisord() -> psutil.Process:
    try:
        process = psutil.Process(int(PIDFILE.read_text().strip()))
        assert "supervisord" in " ".join(process.cmdline())
        return process
    except (OSError, ValueError, psutil.Error, AssertionError):
        pytest.skip("the local stack's supervisord is not running (make up / make test start it)")


def test_no_stack_process_runs_as_root():
    root = supervisord()
    processes = [root, *root.children(recursive=True)]
    users = {}
    for process in processes:
        try:
            users[f"{process.pid} {' '.join(process.cmdline())[:100]}"] = process.username()
        except psutil.NoSuchProcess:
            continue
    assert len(users) >= 4, users  # supervisord + postgres, redis, kafka at least
    as_root = {what: user for what, user in users.items() if user == "root"}
    assert not as_root, f"running as root: {as_root}"
    # and .local/ belongs to the stack's user
    assert (ROOT / ".local").stat().st_uid == root.uids().real


def test_redis_refuses_a_client_without_the_password():
    settings = load_settings()
    assert settings.redis_password.get_secret_value(), "make up generates STOCKPIPE_REDIS_PASSWORD"
    anonymous = redis.Redis.from_url(settings.redis_url, socket_timeout=3)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(settings.redis_url.replace("://", "://:wrong-password@"), socket_timeout=3).ping()
    client = settings.redis_client(socket_timeout=3)
    assert client.ping()
    client.close()


def test_secrets_files_are_private():
    local = ROOT / ".local"
    files = [local / "secrets.env", local / "redis" / "redis.conf", *sorted((local / "secrets").glob("*.env"))]
    assert (local / "secrets" / "dashboard.env") in files
    for path in files:
        assert path.exists(), path
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


def program_environ(name: str) -> dict[str, str] | None:
    """The environment supervisord gave program ``name`` (its running process), or None if it is down."""
    root = supervisord()
    for child in root.children():
        try:
            environ = child.environ()
        except psutil.Error:
            continue
        if environ.get("SUPERVISOR_PROCESS_NAME") == name:
            return environ
    return None


def test_the_dashboard_holds_no_admin_or_writer_password():
    settings = load_settings()  # everything (.local/secrets.env): what must not reach the dashboard
    forbidden = {
        "PostgreSQL admin": settings.pg_admin_password.get_secret_value(),
        "PostgreSQL writer": settings.pg_writer_password.get_secret_value(),
    }
    scope = ROOT / ".local" / "secrets" / "dashboard.env"
    text = scope.read_text()
    for what, value in forbidden.items():
        assert value and value not in text, f"{scope} holds the {what} password"
    assert settings.pg_reader_password.get_secret_value() in text
    environ = program_environ("dashboard")
    if environ is None:
        pytest.skip("the dashboard is not running (make up starts it); its secrets file was checked")
    assert environ["STOCKPIPE_SECRETS_FILE"] == str(scope)
    for what, value in forbidden.items():
        assert not any(value in v for v in environ.values()), f"the dashboard's environment holds the {what} password"
    assert not any(k in environ for k in ("POLYGON_API_KEY", "STOCKPIPE_PG_ADMIN_PASSWORD"))
