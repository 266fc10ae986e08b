"""Helper of the tests that run the pipeline against an in-thread simulator. Not a test module."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from stockpipe.config import Settings
from stockpipe.sources.simulator import RunningSimulator


def on_simulator(settings: Settings, simulator: RunningSimulator, api_key: str, **changes: Any) -> Settings:
    """``settings`` talking to ``simulator`` (no Massive key) with ``api_key``, a generous rate limit
    (1000 calls/min) and AAPL, MSFT; ``changes`` (setting names) win."""
    host, port = simulator.url.removeprefix("http://").split(":")
    values: dict[str, Any] = {
        "simulator_host": host,
        "simulator_port": int(port),
        "polygon_api_key": None,
        "watchlist": ["AAPL", "MSFT"],
        "rate_limit_per_minute": 1000,
        **changes,
    }
    values["simulator_api_key"] = SecretStr(changes.get("simulator_api_key", api_key))
    return settings.model_copy(update=values)
