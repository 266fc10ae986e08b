"""A compact binary form of a :class:`SymbolIndicators`: one ``struct``-packed blob, bit-exact.

The stream keeps every symbol's indicator state in its checkpoint and reads and rewrites it every
micro-batch, so restoring it has to cost a few µs, not the ~50 µs of ``from_state`` over a
pickled ``to_state()`` dict (which re-runs each part's constructor and validation, then fills the
deques). ``pack_indicators`` writes the slots of each part as they are — floats as their 8 bytes
(IEEE 754, little-endian), counts as integers, ``None`` as a flag bit — and ``unpack_indicators``
rebuilds the objects with ``__new__`` and direct slot assignment; the fixed periods and the
constants derived from them (``k = 2 / (n + 1)`` …) come from a template built once. So a
round trip gives back exactly the object that was packed: stepping it on gives the same bits as
never serialising it.

Layout (``MAGIC`` first, so it is never mistaken for a pickle, which starts with ``0x80``)::

    MAGIC b"\\x00SI\\x01" | q bars | 7 i (counts, session ordinal) | H flags | 4 B window lengths
        | 25 d (scalars) | the windows' values (d each)

The SMA(5), SMA(20), SMA(50) and the Bollinger Bands' SMA(20) windows all hold the last closes
fed to the same ``SymbolIndicators``, so each is a tail of the SMA(50) one: only that one is
written (``flags`` bit ``_SEPARATE`` clear). A state where that does not hold exactly (say, one
restored from a hand-edited ``to_state()``) is written with all four windows, still exact.

The layout belongs to ``STATE_VERSION`` 1 and the parts of ``symbol._PARTS``: a change of either
needs a new ``MAGIC`` (the JSON form, ``to_state()`` / ``from_state()``, stays for everything else).
"""

from __future__ import annotations

import struct
from collections import deque
from datetime import date

from .session_vwap import SessionVWAP
from .symbol import _PARTS, STATE_VERSION, SymbolIndicators
from .talib_compat import EMA, MACD, RSI, SMA, BollingerBands

__all__ = ["MAGIC", "is_packed", "pack_indicators", "unpack_indicators"]

MAGIC = b"\x00SI\x01"

# The layout above is written for exactly these parts (symbol._PARTS) and state version.
_LAYOUT = {
    "sma_5": (SMA, (5,)),
    "sma_20": (SMA, (20,)),
    "sma_50": (SMA, (50,)),
    "ema_12": (EMA, (12,)),
    "ema_26": (EMA, (26,)),
    "rsi_14": (RSI, (14,)),
    "macd": (MACD, (12, 26, 9)),
    "bbands": (BollingerBands, (20, 2.0)),
    "vwap_session": (SessionVWAP, ()),
}
if _PARTS != _LAYOUT or STATE_VERSION != 1:  # pragma: no cover - guards a future edit of symbol.py
    raise ImportError("indicators.packed: the parts or STATE_VERSION of SymbolIndicators changed: new MAGIC")

_FIXED = struct.Struct("<4sq7iH4B25d")
_FIXED_SIZE = _FIXED.size

# flags: which optional values are None, and whether the windows are written separately.
_NO_LAST_TS = 1
_NO_EMA12 = 2
_NO_EMA26 = 4
_NO_RSI_PREV = 8
_NO_FAST_EMA = 16
_NO_SLOW_EMA = 32
_NO_SIGNAL_EMA = 64
_NO_SHIFT = 128
_NO_SESSION = 256
_SEPARATE = 512
_KNOWN_FLAGS = 1023

_FLOATS = [struct.Struct(f"<{n}d") for n in range(5 + 20 + 50 + 20 + 1)]

# Constants derived from the periods: taken from a template so they are the very same doubles.
_TEMPLATE = SymbolIndicators()
_EMA12_K = _TEMPLATE.ema_12.k
_EMA26_K = _TEMPLATE.ema_26.k
_RSI_INV = _TEMPLATE.rsi_14._inv_period
_MACD_FAST_K = _TEMPLATE.macd._fast_k
_MACD_SLOW_K = _TEMPLATE.macd._slow_k
_MACD_SIGNAL_K = _TEMPLATE.macd._signal_k
_BB_NBDEV = _TEMPLATE.bbands.nbdev
_BB_INV = _TEMPLATE.bbands._inv_period
del _TEMPLATE

_new = object.__new__


def is_packed(blob: bytes) -> bool:
    """Whether ``blob`` is :func:`pack_indicators` output (rather than a pickle or JSON)."""
    return blob[:4] == MAGIC


def _tail_of(window: deque, longest: list, n_longest: int) -> bool:
    n = len(window)
    return n <= n_longest and list(window) == longest[n_longest - n :]


def pack_indicators(ind: SymbolIndicators) -> bytes:
    """The packed state of ``ind`` (not modified); :func:`unpack_indicators` restores it exactly."""
    sma_5, sma_20, sma_50, ema_12, ema_26 = ind.sma_5, ind.sma_20, ind.sma_50, ind.ema_12, ind.ema_26
    rsi, macd, bands, vwap = ind.rsi_14, ind.macd, ind.bbands, ind.vwap_session
    band_sma = bands._sma
    flags = 0
    last_ts = ind.last_ts
    if last_ts is None:
        flags |= _NO_LAST_TS
        last_ts = 0.0
    ema_12_value = ema_12._value
    if ema_12_value is None:
        flags |= _NO_EMA12
        ema_12_value = 0.0
    ema_26_value = ema_26._value
    if ema_26_value is None:
        flags |= _NO_EMA26
        ema_26_value = 0.0
    rsi_prev = rsi._prev
    if rsi_prev is None:
        flags |= _NO_RSI_PREV
        rsi_prev = 0.0
    fast_ema = macd._fast_ema
    if fast_ema is None:
        flags |= _NO_FAST_EMA
        fast_ema = 0.0
    slow_ema = macd._slow_ema
    if slow_ema is None:
        flags |= _NO_SLOW_EMA
        slow_ema = 0.0
    signal_ema = macd._signal_ema
    if signal_ema is None:
        flags |= _NO_SIGNAL_EMA
        signal_ema = 0.0
    shift = bands._shift
    if shift is None:
        flags |= _NO_SHIFT
        shift = 0.0
    session = vwap._session
    if session is None:
        flags |= _NO_SESSION
        ordinal = 0
    else:
        ordinal = session.toordinal()

    w5, w20, wbb = sma_5._window, sma_20._window, band_sma._window
    w50 = list(sma_50._window)
    n50 = len(w50)
    # `==` on floats is bitwise except for ±0.0 (equal, different bits; NaN is never equal unless it
    # is the same object): with a zero among the closes, keep the windows apart rather than check bits.
    if (
        _tail_of(w5, w50, n50)
        and _tail_of(w20, w50, n50)
        and _tail_of(wbb, w50, n50)
        and 0.0 not in w50  # matches -0.0 too
    ):
        values = w50
    else:
        flags |= _SEPARATE
        values = [*w5, *w20, *w50, *wbb]
    head = _FIXED.pack(
        MAGIC,
        ind.bars,
        ema_12._count,
        ema_26._count,
        rsi._changes,
        macd._count,
        macd._signal_count,
        bands._bars_to_reseed,
        ordinal,
        flags,
        len(w5),
        len(w20),
        n50,
        len(wbb),
        last_ts,
        sma_5._total,
        sma_20._total,
        sma_50._total,
        ema_12._seed_total,
        ema_12_value,
        ema_26._seed_total,
        ema_26_value,
        rsi_prev,
        rsi._gain,
        rsi._loss,
        macd._fast_total,
        macd._slow_total,
        fast_ema,
        slow_ema,
        macd._signal_total,
        signal_ema,
        band_sma._total,
        shift,
        bands._dev_total,
        bands._dev_sq_total,
        vwap._start,
        vwap._end,
        vwap._price_volume,
        vwap._volume,
    )
    return head + _FLOATS[len(values)].pack(*values)


def unpack_indicators(blob: bytes) -> SymbolIndicators:
    """The :class:`SymbolIndicators` that :func:`pack_indicators` packed into ``blob``."""
    if len(blob) < _FIXED_SIZE or blob[:4] != MAGIC:
        raise ValueError("not a packed indicator state (or another layout): recompute this symbol from its bars")
    (
        _,
        bars,
        ema_12_count,
        ema_26_count,
        rsi_changes,
        macd_count,
        signal_count,
        bars_to_reseed,
        ordinal,
        flags,
        n5,
        n20,
        n50,
        nbb,
        last_ts,
        sma_5_total,
        sma_20_total,
        sma_50_total,
        ema_12_seed,
        ema_12_value,
        ema_26_seed,
        ema_26_value,
        rsi_prev,
        rsi_gain,
        rsi_loss,
        fast_total,
        slow_total,
        fast_ema,
        slow_ema,
        signal_total,
        signal_ema,
        band_total,
        shift,
        dev_total,
        dev_sq_total,
        session_start,
        session_end,
        price_volume,
        volume,
    ) = _FIXED.unpack_from(blob)
    separate = flags & _SEPARATE
    count = n5 + n20 + n50 + nbb if separate else n50
    if (
        flags & ~_KNOWN_FLAGS
        or n5 > 5
        or n20 > 20
        or n50 > 50
        or nbb > 20
        or len(blob) != _FIXED_SIZE + 8 * count
        or not separate
        and (n5 > n50 or n20 > n50 or nbb > n50)
    ):
        raise ValueError("corrupt packed indicator state: recompute this symbol from its bars")
    values = _FLOATS[count].unpack_from(blob, _FIXED_SIZE)
    if separate:
        w5, w20 = values[:n5], values[n5 : n5 + n20]
        w50, wbb = values[n5 + n20 : n5 + n20 + n50], values[n5 + n20 + n50 :]
    else:
        w50, w5, w20, wbb = values, values[n50 - n5 :], values[n50 - n20 :], values[n50 - nbb :]

    sma_5 = _new(SMA)
    sma_5.period, sma_5._window, sma_5._total = 5, deque(w5, 5), sma_5_total
    sma_20 = _new(SMA)
    sma_20.period, sma_20._window, sma_20._total = 20, deque(w20, 20), sma_20_total
    sma_50 = _new(SMA)
    sma_50.period, sma_50._window, sma_50._total = 50, deque(w50, 50), sma_50_total
    ema_12 = _new(EMA)
    ema_12.period, ema_12.k, ema_12._count, ema_12._seed_total = 12, _EMA12_K, ema_12_count, ema_12_seed
    ema_12._value = None if flags & _NO_EMA12 else ema_12_value
    ema_26 = _new(EMA)
    ema_26.period, ema_26.k, ema_26._count, ema_26._seed_total = 26, _EMA26_K, ema_26_count, ema_26_seed
    ema_26._value = None if flags & _NO_EMA26 else ema_26_value
    rsi = _new(RSI)
    rsi.period, rsi._inv_period, rsi._changes, rsi._gain, rsi._loss = 14, _RSI_INV, rsi_changes, rsi_gain, rsi_loss
    rsi._prev = None if flags & _NO_RSI_PREV else rsi_prev
    macd = _new(MACD)
    macd.fast, macd.slow, macd.signal = 12, 26, 9
    macd._fast_k, macd._slow_k, macd._signal_k = _MACD_FAST_K, _MACD_SLOW_K, _MACD_SIGNAL_K
    macd._count, macd._fast_total, macd._slow_total = macd_count, fast_total, slow_total
    macd._fast_ema = None if flags & _NO_FAST_EMA else fast_ema
    macd._slow_ema = None if flags & _NO_SLOW_EMA else slow_ema
    macd._signal_count, macd._signal_total = signal_count, signal_total
    macd._signal_ema = None if flags & _NO_SIGNAL_EMA else signal_ema
    band_sma = _new(SMA)
    band_sma.period, band_sma._window, band_sma._total = 20, deque(wbb, 20), band_total
    bands = _new(BollingerBands)
    bands.period, bands.nbdev, bands._inv_period, bands._sma = 20, _BB_NBDEV, _BB_INV, band_sma
    bands._shift = None if flags & _NO_SHIFT else shift
    bands._dev_total, bands._dev_sq_total, bands._bars_to_reseed = dev_total, dev_sq_total, bars_to_reseed
    vwap = _new(SessionVWAP)
    vwap._session = None if flags & _NO_SESSION else date.fromordinal(ordinal)
    vwap._start, vwap._end, vwap._price_volume, vwap._volume = session_start, session_end, price_volume, volume

    ind = _new(SymbolIndicators)
    ind.sma_5, ind.sma_20, ind.sma_50, ind.ema_12, ind.ema_26 = sma_5, sma_20, sma_50, ema_12, ema_26
    ind.rsi_14, ind.macd, ind.bbands, ind.vwap_session = rsi, macd, bands, vwap
    ind.bars = bars
    ind.last_ts = None if flags & _NO_LAST_TS else last_ts
    return ind
