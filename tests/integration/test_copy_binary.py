"""storage.copy_binary against a real PostgreSQL: the staging rows it copies are the rows psycopg's
``write_row`` copies (the sink's former path), value for value and bit for bit, whatever is NULL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockpipe.indicators import INDICATOR_COLUMNS
from stockpipe.storage import copy_binary
from stockpipe.storage.postgres import _CREATE_STAGE, STAGE_COLUMNS, STAGE_TYPES, stage_columns, stage_copy

pytestmark = pytest.mark.integration


def operator_rows(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Rows as the operator hands them to the sink, with every kind of NULL and awkward value."""
    frame = pd.DataFrame(
        {
            "kind": rng.choice(["bar", "late"], n).astype(object),
            "symbol": rng.choice(["A", "MSFT", "BRK.B", "M00042", "ÄPFEL", ""], n).astype(object),
            "ts_ms": pd.array(1_795_962_600_000 + 60_000 * rng.integers(-10_000_000, 10_000, n), dtype="Int64"),
            "trades": pd.array(rng.integers(-(2**31), 2**31 - 1, n), dtype="Int64"),
            "source": rng.choice(["simulator", "polygon", "ünï ✓"], n).astype(object),
            "fetched_us": pd.array(1_795_962_600_000_000 + rng.integers(0, 10**12, n), dtype="Int64"),
            "bar_changed": pd.array(rng.random(n) < 0.5, dtype="boolean"),
        }
    )
    for name in ["open", "high", "low", "close", "volume", "vwap", *INDICATOR_COLUMNS]:
        values = rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, n)
        values[rng.random(n) < 0.2] = np.nan
        frame[name] = values
    frame.loc[0, "close"], frame.loc[1, "close"], frame.loc[2, "close"] = -0.0, np.inf, 5e-324
    frame.loc[3, "close"], frame.loc[4, "sma_5"] = 1.7976931348623157e308, 0.1 + 0.2
    for name in ("source", "kind"):
        frame.loc[rng.random(n) < 0.1, name] = None
    frame.loc[rng.random(n) < 0.1, "trades"] = pd.NA
    frame.loc[rng.random(n) < 0.1, "fetched_us"] = pd.NA
    frame.loc[rng.random(n) < 0.1, "bar_changed"] = pd.NA
    frame.loc[5, ["open", "high", "low", "trades", "source"]] = [np.nan, np.nan, np.nan, pd.NA, None]
    return frame


def _staged(pg_conn, table: str) -> list[tuple]:
    # float8send: the exact bits; text comparison keeps NULL, '' and -0.0 apart
    exprs = [f"float8send({c})" if t == "float8" else c for c, t in zip(STAGE_COLUMNS, STAGE_TYPES, strict=True)]
    return sorted(pg_conn.execute(f"SELECT {', '.join(exprs)} FROM {table}").fetchall(), key=lambda row: repr(row))


def test_the_encoded_copy_stages_what_write_row_stages(pg_conn):
    frame = operator_rows(3_000, np.random.default_rng(11))
    frame = frame[frame["kind"].notna()]  # kind and symbol are NOT NULL in the staging table
    with pg_conn.transaction():
        pg_conn.execute(_CREATE_STAGE)
        pg_conn.execute("CREATE TEMP TABLE stage_old (LIKE stage_rows)")
        copy_sql = f"({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT binary)"
        with pg_conn.cursor().copy(f"COPY stage_old {copy_sql}") as copy:
            copy.set_types(STAGE_TYPES)
            for record in zip(*stage_columns(frame), strict=True):
                copy.write_row(record)
        with pg_conn.cursor().copy(f"COPY stage_rows {copy_sql}") as copy:
            copy.write(stage_copy(frame))
        old, new = _staged(pg_conn, "stage_old"), _staged(pg_conn, "stage_rows")
        assert len(new) == len(frame) and new == old
        pg_conn.execute("DROP TABLE stage_old")
        pg_conn.execute("DROP TABLE stage_rows")


def test_an_empty_copy_and_a_bad_type_are_refused_or_empty():
    assert copy_binary.encode([]) == copy_binary.SIGNATURE + copy_binary.TRAILER
    with pytest.raises(ValueError, match="no binary COPY encoding for PostgreSQL type 'numeric'"):
        copy_binary.encode([copy_binary.Column("numeric", np.zeros(2))])
