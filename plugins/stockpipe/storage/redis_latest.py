"""Redis latest state (contract): hash ``stockpipe:latest:{SYMBOL}`` + pub/sub ``stockpipe:bars``.

The hash holds the symbol's latest stored bar and its indicators: ``symbol``, ``ts`` (ISO-8601 UTC),
``ts_ms``, the bar columns, ``fetched_at``, ``written_at`` and every indicator that is not NULL
(a NULL indicator is absent). Floats are written with ``repr`` so they read back bit-identical.
A write only lands when its ``ts`` is at least the stored one and, for the same ``ts``, its
``fetched_at`` is at least the stored one (a Lua check-and-set), so a backfill of an old day or a
slow writer never moves the latest state backwards — not even to an older version of the same bar
(a backfill that read version 1 of a bar before the stream stored version 2 and wrote Redis); each
landed write is published on ``stockpipe:bars`` as one JSON object (NULLs as ``null``).
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from stockpipe.config import REDIS_BARS_CHANNEL as BARS_CHANNEL
from stockpipe.config import REDIS_LATEST_KEY as LATEST_KEY
from stockpipe.config import Settings


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else repr(value)
    if isinstance(value, datetime):
        return _iso(value)
    return str(value)


def latest_message(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row (bars_1m + indicators_1m columns) → the JSON-able latest-state message."""
    message: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, datetime):
            value = _iso(value)
        elif isinstance(value, float) and math.isnan(value):
            value = None
        message[name] = value
    message["ts_ms"] = int(row["ts"].timestamp() * 1000)
    return message


# One call for many symbols (a whole-market micro-batch writes 10,000): KEYS = the hashes; ARGV[1] =
# channel, then four per key: ts_ms, the bar version (:func:`fetched_version`, '' = none), the JSON
# message, the hash's field/value strings as one JSON array of strings (cjson gives strings back
# unchanged: the floats' texts keep every bit). Each key gets a check-and-set: skipped when the stored
# ts_ms is newer, or equal with a newer stored fetched_at (the stored hash's ISO text, normalised in
# Lua exactly as fetched_version does). Returns how many hashes changed. Four arguments a symbol, not
# ~70: redis-py's packing of each argument was most of the client's time.
_SET_IF_NEWER_MANY = """
local function version(text)
  if not text then return nil end
  local fraction = string.match(text, '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.(%d+)') or ''
  return string.sub(text, 1, 19) .. string.sub(fraction .. '000000', 1, 6)
end
local changed = 0
for i, key in ipairs(KEYS) do
  local pos = 4 * i - 2
  local stored = redis.call('HMGET', key, 'ts_ms', 'fetched_at')
  local current, incoming = tonumber(stored[1]), tonumber(ARGV[pos])
  local older = current and (current > incoming or (current == incoming and ARGV[pos + 1] ~= ''
                and stored[2] and version(stored[2]) > ARGV[pos + 1]))
  if not older then
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(cjson.decode(ARGV[pos + 3])))
    redis.call('PUBLISH', ARGV[1], ARGV[pos + 2])
    changed = changed + 1
  end
end
return changed
"""

#: Symbols per script call: a call holds Redis for its duration (~20 µs a symbol), so other clients
#: wait at most ~10 ms; the calls of one write still go in one round trip (a pipeline).
SYMBOLS_PER_CALL = 500


def fetched_version(text: str | None) -> str:
    """The hash's ``fetched_at`` text (ISO-8601 UTC, with or without microseconds) → a fixed-width
    key that orders as the instants do (``YYYY-MM-DDTHH:MM:SS`` + 6 digits of microseconds); '' for
    none. The check-and-set script normalises the stored text the same way."""
    if not text:
        return ""
    fraction = text[20:].split("Z")[0].split("+")[0] if text[19:20] == "." else ""
    return text[:19] + (fraction + "000000")[:6]


def _json_value(value: Any) -> str:
    """``value`` as ``json.dumps`` writes it in :func:`latest_message`'s message (NaN → null)."""
    if value is None:
        return "null"
    if type(value) is float:
        return "null" if value != value else (repr(value) if math.isfinite(value) else json.dumps(value))
    if type(value) is str:
        return json.dumps(value)
    if isinstance(value, datetime):
        return '"' + _iso(value) + '"'
    return json.dumps(value)


def _column_texts(values: list[Any]) -> tuple[list[str | None], list[str]]:
    """One column of rows → each value's hash text (:func:`_text`; None = absent) and JSON text.

    The usual columns hold one type (floats with NaN/None, texts, timestamps): formatted by a list
    comprehension over the column, not per row and field."""
    kinds = {type(v) for v in values}
    if kinds <= {float, type(None)}:
        texts = [None if v is None or v != v else repr(v) for v in values]
        if "inf" not in texts and "-inf" not in texts:  # JSON writes those Infinity
            return texts, ["null" if t is None else t for t in texts]
    elif kinds <= {str}:
        joined = "".join(values)  # json.dumps quotes a plain ASCII text as it is
        if joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined:
            return list(values), ['"' + v + '"' for v in values]
        return list(values), [json.dumps(v) for v in values]
    elif kinds <= {datetime}:
        texts = [_iso(v) for v in values]
        return texts, ['"' + t + '"' for t in texts]
    return [_text(v) for v in values], [_json_value(v) for v in values]


def _encode_columns(names: list[str], values: list[list[Any]], ts_ms: list[int]) -> tuple[list, list[str]]:
    """Columns (``names``, each a list over the rows) → (name, hash texts, JSON texts) per column, with
    ``ts_ms`` appended when absent, and each row's bar version (:func:`fetched_version`)."""
    columns = []
    versions = [""] * len(ts_ms)
    for name, column in zip(names, values, strict=True):
        if name == "ts_ms":
            texts = [str(t) for t in ts_ms]
            columns.append((name, texts, texts))
        else:
            texts, jsons = _column_texts(column)
            columns.append((name, texts, jsons))
            if name == "fetched_at":
                versions = [fetched_version(t) for t in texts]
    if "ts_ms" not in names:
        texts = [str(t) for t in ts_ms]
        columns.append(("ts_ms", texts, texts))
    return columns, versions


def _template(columns: list) -> str:
    """The message's %-format over ``columns``' JSON texts (without the braces)."""
    return ",".join(json.dumps(name).replace("%", "%%") + ":%s" for name, _, _ in columns)


def encode_rows(rows: list[dict[str, Any]]) -> list[tuple[str, int, str, str, list[str]]]:
    """Rows → (symbol, ts_ms, bar version (:func:`fetched_version`), JSON message, hash fields)
    each: what :func:`latest_message` and the hash of the contract say — the same message text as
    ``json.dumps(latest_message(row), separators=(",", ":"))`` and the same field texts, formatted
    column by column."""
    if not rows:
        return []
    names = list(rows[0])
    if any(list(row) != names for row in rows):  # mixed shapes: one group per shape
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(tuple(row), []).append(i)
        out: list[Any] = [None] * len(rows)
        for positions in groups.values():
            for i, encoded in zip(positions, encode_rows([rows[i] for i in positions]), strict=True):
                out[i] = encoded
        return out
    ts_ms = [int(row["ts"].timestamp() * 1000) for row in rows]
    columns, versions = _encode_columns(names, [[row[name] for row in rows] for name in names], ts_ms)
    # the message: one %-format per row; the fields: a copy of the names with the texts slotted in
    template = "{" + _template(columns) + "}"
    column_names = [name for name, _, _ in columns]
    base: list[str | None] = [None] * (2 * len(columns))
    base[0::2] = column_names
    out = []
    text_rows = zip(*(texts for _, texts, _ in columns), strict=True)
    json_rows = zip(*(jsons for _, _, jsons in columns), strict=True)
    for row, texts, jsons, stamp, version in zip(rows, text_rows, json_rows, ts_ms, versions, strict=True):
        if None in texts:
            pairs = zip(column_names, texts, strict=True)
            fields = [x for name, text in pairs if text is not None for x in (name, text)]
        else:
            fields = base.copy()
            fields[1::2] = texts
        out.append((str(row["symbol"]), stamp, version, template % jsons, fields))
    return out


#: One symbol's script arguments as :meth:`LatestWriter._call` sends them: (symbol, ts_ms,
#: bar version, JSON message, the hash's field/value strings as a JSON array).
Encoded = tuple[str, int, str, str, str]


def _fields_json(fields: list[str]) -> str:
    return json.dumps(fields, separators=(",", ":"))


def _field_pairs(name: str, texts: list[str | None]) -> list[str | None]:
    """One column's ``"name","value"`` texts of the hash's field array in JSON (None where NULL): as
    ``json.dumps`` writes each string, quoted as they are when no value of the column needs escaping
    (floats, timestamps, plain ASCII), else each by ``json.dumps``."""
    head = json.dumps(name) + ","
    joined = "".join(t for t in texts if t is not None)
    if joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined:
        return [None if t is None else head + '"' + t + '"' for t in texts]
    return [None if t is None else head + json.dumps(t) for t in texts]


class Staged:
    """Rows encoded before one of their values is known (the sink's ``written_at``, stamped by
    PostgreSQL): the message and the hash's field array of each row as the text before and after
    that value, which :meth:`splice` puts in — the same texts :func:`encode_rows` gives for the rows
    with that value (a datetime, never NULL). Built from columns (the sink's staged rows), not dicts."""

    def __init__(self, names: list[str], values: list[list[Any]], missing: str = "written_at") -> None:
        symbols = [str(s) for s in values[names.index("symbol")]]
        ts_ms = [int(t.timestamp() * 1000) for t in values[names.index("ts")]]
        position = names.index(missing)
        columns, versions = _encode_columns(names, values, ts_ms)
        before, after = columns[:position], columns[position + 1 :]
        head_template = "{" + _template(before) + ("," if before else "") + json.dumps(missing) + ":"
        tail_template = ("," + _template(after) if after else "") + "}"
        missing_field = json.dumps(missing) + ","
        self.rows: dict[str, tuple[int, str, str, str, str, str]] = {}
        heads = zip(*(_field_pairs(name, texts) for name, texts, _ in before), strict=True)
        tails = zip(*(_field_pairs(name, texts) for name, texts, _ in after), strict=True)
        json_rows = zip(*(jsons for _, _, jsons in columns), strict=True)
        for symbol, head, tail, jsons, stamp, version in zip(
            symbols, heads, tails, json_rows, ts_ms, versions, strict=True
        ):
            head_fields = ",".join(filter(None, head))
            tail_fields = ",".join(filter(None, tail))
            self.rows[symbol] = (
                stamp,
                version,
                head_template % jsons[:position],
                tail_template % jsons[position + 1 :],
                "[" + head_fields + ("," if head_fields else "") + missing_field,
                ("," + tail_fields if tail_fields else "") + "]",
            )

    @classmethod
    def empty(cls) -> Staged:
        staged = cls.__new__(cls)
        staged.rows = {}
        return staged

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def splice(self, symbol: str, value: datetime) -> Encoded:
        """``symbol``'s script arguments with ``value`` (a datetime) in the missing column."""
        stamp, version, head, tail, fields_head, fields_tail = self.rows[symbol]
        text = '"' + _iso(value) + '"'
        return symbol, stamp, version, head + text + tail, fields_head + text + fields_tail


class LatestWriter:
    def __init__(self, settings: Settings) -> None:
        self.client = settings.redis_client(socket_timeout=10)
        self._script = self.client.register_script(_SET_IF_NEWER_MANY)
        # Sends the script calls in order while the caller encodes the next symbols (one thread:
        # Redis runs one script at a time anyway, and the calls keep the rows' order).
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-latest")

    def _call(self, chunk: list[Encoded]) -> int:
        keys = [LATEST_KEY.format(symbol=symbol) for symbol, _, _, _, _ in chunk]
        args: list[Any] = [BARS_CHANNEL]
        for _, ts_ms, version, message, fields in chunk:
            args += (ts_ms, version, message, fields)
        return int(self._script(keys=keys, args=args))

    def write(
        self, rows: list[dict[str, Any]], staged: Staged | None = None, written: dict[str, datetime] | None = None
    ) -> int:
        """Write each symbol's latest row (check-and-set: never older than the stored one, by ts and
        then fetched_at): the ``staged`` rows of the symbols in ``written`` (symbol → their
        ``written_at``, spliced in: :class:`Staged`), then ``rows``; return how many hashes changed.
        One script call per :data:`SYMBOLS_PER_CALL` symbols, sent by a thread while the next ones
        are encoded — not one call of ~70 arguments per symbol (10,000 symbols: ~650 ms of the
        driver's CPU per micro-batch, most of it redis-py packing the arguments, then Redis' ~200 ms
        after it). Raises the first call's error (e.g. Redis down)."""
        calls = []
        try:
            if written:
                items = list(written.items())
                for start in range(0, len(items), SYMBOLS_PER_CALL):
                    chunk = [staged.splice(symbol, at) for symbol, at in items[start : start + SYMBOLS_PER_CALL]]
                    calls.append(self._sender.submit(self._call, chunk))
            for start in range(0, len(rows), SYMBOLS_PER_CALL):
                chunk = [
                    (symbol, stamp, version, message, _fields_json(fields))
                    for symbol, stamp, version, message, fields in encode_rows(rows[start : start + SYMBOLS_PER_CALL])
                ]
                calls.append(self._sender.submit(self._call, chunk))
            return sum(call.result() for call in calls)
        finally:
            for call in calls:  # after a failure (Redis down or hung): no more calls queued behind it
                call.cancel()

    def close(self) -> None:
        self._sender.shutdown(wait=True)
        self.client.close()
