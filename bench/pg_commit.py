"""Minute close → PostgreSQL as the commit of the row (shared by bench/market_live.py,
bench/websocket_feed.py and bench/live_freshness.py).

A row is visible in PostgreSQL when its transaction commits. ``written_at`` is ``clock_timestamp()``
at the bars upsert (plugins/stockpipe/storage/postgres.py), which runs before the indicators, the
latest_1m upsert and the bookkeeping of the same transaction — ~0.1–0.35 s before the commit at
10,000 bars a micro-batch. With ``track_commit_timestamp = on`` (infra/postgres/postgresql.conf.template;
read at server start) ``pg_xact_commit_timestamp(xmin)`` gives the commit of the transaction that wrote
each row's current version: the figure is the later of the bar's and its indicators row's commits
(one transaction in the sink; an indicators row left unchanged by a rewrite keeps its older commit).
``written_at`` stays as a second figure ("write started"), comparable with earlier runs.
"""

from __future__ import annotations

from typing import Any

OFF_NOTE = (
    "track_commit_timestamp is off in this PostgreSQL (infra/postgres/postgresql.conf.template sets it; it takes a "
    "server restart), so close → PostgreSQL falls back to written_at, when the bar's write started, before its commit."
)
COMMITTED = "committed (pg_xact_commit_timestamp)"
FALLBACK = "write started (written_at; track_commit_timestamp off)"


def tracking(conn: Any) -> bool:
    """Is ``track_commit_timestamp`` on in the server ``conn`` is connected to?"""
    return str(conn.execute("SHOW track_commit_timestamp").fetchone()[0]).lower() == "on"


def commit_epoch(alias: str, on: bool) -> str:
    """SQL: the unix time the transaction that wrote ``alias``'s row committed (NULL when unknown)."""
    return f"extract(epoch FROM pg_xact_commit_timestamp({alias}.xmin))::float8" if on else "NULL::float8"


def visible_at(written_at: float, *commits: float | None) -> tuple[float, bool]:
    """(when the row with its indicators became visible, known): the latest of the rows' commits; when
    one is unknown (tracking off, or committed before it was turned on) ``written_at``, not known."""
    if commits and all(c is not None for c in commits):
        return max(commits), True  # type: ignore[type-var]
    return written_at, False
