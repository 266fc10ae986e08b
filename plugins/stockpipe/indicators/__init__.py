"""Pure, incremental, TA-Lib-exact technical indicators (no Spark, no I/O, nothing of ours).

``SymbolIndicators`` holds one symbol's ``market.indicators_1m`` columns as state machines:
``update(bar)`` per bar, ``to_state()`` / ``from_state()`` to persist and restore (JSON), ``copy()``
to keep a cheap snapshot; ``pack_indicators`` / ``unpack_indicators`` are the compact, fast,
bit-exact binary form the stream's state uses. ``compute_frame(df, state)`` runs the same machine over a frame of bars
(``compute_values`` over numpy columns).
Their output equals the ``ta-lib`` wheel run over the symbol's whole series, bit for bit; see
``talib_compat`` for the TA-Lib details that takes, and ``session_vwap`` for the VWAP definition.
"""

from .frame import REQUIRED_COLUMNS, compute_frame, compute_values
from .packed import is_packed, pack_indicators, unpack_indicators
from .session_vwap import SESSION_TIMEZONE, SessionVWAP
from .symbol import INDICATOR_COLUMNS, STATE_VERSION, SymbolIndicators, epoch_seconds
from .talib_compat import EMA, MACD, RSI, SMA, BollingerBands

__all__ = [
    "EMA",
    "INDICATOR_COLUMNS",
    "MACD",
    "REQUIRED_COLUMNS",
    "RSI",
    "SESSION_TIMEZONE",
    "SMA",
    "STATE_VERSION",
    "BollingerBands",
    "SessionVWAP",
    "SymbolIndicators",
    "compute_frame",
    "compute_values",
    "epoch_seconds",
    "is_packed",
    "pack_indicators",
    "unpack_indicators",
]
