"""Roles, database and ordered-SQL migrations for the market schema.

``python -m stockpipe.storage.migrate [--database NAME] [--wait SECONDS]``

As the admin role: create (or re-password) the writer, read-only and rules roles, create the database
owned by the writer, then apply ``migrations/NNN_*.sql`` in order, each in its own transaction, as
the writer (so it owns what the pipeline writes to), recording each in ``public.schema_migrations``.
Applying twice changes nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import resources

import psycopg
from psycopg import sql

from stockpipe.clients import pg_connect
from stockpipe.config import Settings, get_settings
from stockpipe.logs import setup_logging

log = logging.getLogger(__name__)


def wait_for_postgres(settings: Settings, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with pg_connect(settings, "admin", "postgres", connect_timeout=3):
                return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"PostgreSQL at {settings.pg_host}:{settings.pg_port} is unreachable ({error}); "
                    "start it with `make up`."
                ) from None
            time.sleep(0.5)


def _ensure_role(cur: psycopg.Cursor, name: str, password: str, keep_password: bool = False) -> None:
    """Create the login role, or set its password; ``keep_password``: an empty one leaves an existing role as is."""
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    if verb == "ALTER" and keep_password and not password:
        return
    cur.execute(
        sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(sql.SQL(verb), sql.Identifier(name), sql.Literal(password))
    )


def ensure_roles_and_database(settings: Settings, database: str) -> None:
    with pg_connect(settings, "admin", "postgres", autocommit=True) as conn:
        cur = conn.cursor()
        _ensure_role(cur, settings.pg_writer_user, settings.pg_writer_password.get_secret_value())
        _ensure_role(cur, settings.pg_reader_user, settings.pg_reader_password.get_secret_value())
        # a process without the rules role's password (its secrets scope has none) must not clear it
        _ensure_role(cur, settings.pg_rules_user, settings.pg_rules_password.get_secret_value(), keep_password=True)
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if not cur.fetchone():
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(settings.pg_writer_user)
                )
            )
            log.info("created database %s", database)


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("stockpipe.storage") / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


def apply_migrations(settings: Settings, database: str) -> list[str]:
    applied: list[str] = []
    with pg_connect(settings, "writer", database) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.schema_migrations "
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.commit()
        done = {row[0] for row in conn.execute("SELECT version FROM public.schema_migrations")}
        for version, body in migration_files():
            if version in done:
                continue
            with conn.transaction():
                conn.execute(body)
                conn.execute("INSERT INTO public.schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
            log.info("applied migration %s", version)
        # Read-only role: everything in market/ops, now and later (the writer creates partitions).
        reader = sql.Identifier(settings.pg_reader_user)
        for schema in ("market", "ops"):
            ident = sql.Identifier(schema)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, reader))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(ident, reader))
            conn.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(ident, reader)
            )
        # Rules role: it edits alert rules and nothing else (never the market data, never the alerts).
        rules = sql.Identifier(settings.pg_rules_user)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA market TO {}").format(rules))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON market.alert_rules TO {}").format(rules))
        conn.commit()
    return applied


def migrate(settings: Settings | None = None, database: str | None = None, wait_s: float = 0) -> list[str]:
    settings = settings or get_settings()
    database = database or settings.pg_database
    wait_for_postgres(settings, wait_s)
    ensure_roles_and_database(settings, database)
    return apply_migrations(settings, database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="database name (default: STOCKPIPE_PG_DATABASE)")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for PostgreSQL")
    args = parser.parse_args()
    setup_logging("INFO", stream=sys.stderr)  # stdout: the summary line
    applied = migrate(database=args.database, wait_s=args.wait)
    print(f"migrations: {len(applied)} applied" + (f" ({', '.join(applied)})" if applied else ", schema up to date"))


if __name__ == "__main__":
    main()
