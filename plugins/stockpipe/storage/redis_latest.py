"""Redis latest state (contract): hash ``stockpipe:latest:{SYMBOL}`` + pub/sub ``stockpipe:bars``.

The hash holds the symbol's latest stored bar and its indicators: ``symbol``, ``ts`` (ISO-8601 UTC),
``ts_ms``, the bar columns, ``fetched_at``, ``written_at`` and every indicator that is not NULL
(a NULL indicator is absent). Floats are written with ``repr`` so they read back bit-identical.
A write only lands when its ``ts`` is at least the stored one (a Lua check-and-set), so a backfill
of an old day or a slow writer never moves the latest state backwards; each landed write is
published on ``stockpipe:bars`` as one JSON object (NULLs as ``null``).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from stockpipe.config import REDIS_BARS_CHANNEL as BARS_CHANNEL
from stockpipe.config import REDIS_LATEST_KEY as LATEST_KEY
from stockpipe.config import Settings

# KEYS[1] = hash; ARGV[1] = ts_ms, ARGV[2] = channel, ARGV[3] = JSON message, ARGV[4..] = field, value, ...
_SET_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'ts_ms')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""


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


class LatestWriter:
    def __init__(self, settings: Settings) -> None:
        self.client = settings.redis_client(socket_timeout=10)
        self._script = self.client.register_script(_SET_IF_NEWER)

    def write(self, rows: list[dict[str, Any]]) -> int:
        """Write each symbol's latest row; return how many hashes changed."""
        if not rows:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            message = latest_message(row)
            fields: list[str] = []
            for name, value in message.items():
                text = _text(row.get(name, value)) if name != "ts_ms" else str(value)
                if text is not None:
                    fields += [name, text]
            self._script(
                keys=[LATEST_KEY.format(symbol=row["symbol"])],
                args=[message["ts_ms"], BARS_CHANNEL, json.dumps(message, separators=(",", ":")), *fields],
                client=pipe,
            )
        return sum(int(r) for r in pipe.execute())

    def close(self) -> None:
        self.client.close()
