"""A correctly rounded fused multiply-add, ``fma(a, b, c) == round(a * b + c)``.

TA-Lib's C build contracts the EMA recursion ``(x - prev) * k + prev`` into one fused multiply-add
(its ``.fma`` clones use the instruction, its ``.default`` clones call libm's ``fma``), so TA-Lib's
EMA and MACD round once where plain Python rounds twice. Near a MACD crossing that last-bit
difference is a large *relative* error in ``macd`` and ``macd_hist``; rounding the way TA-Lib
does keeps them bit-identical instead.

Every implementation below is correctly rounded, so which one is picked never changes a result:
``math.fma`` (Python >= 3.13), else libm's ``fma`` through ctypes, else exact integer arithmetic.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable

__all__ = ["fma"]


def _exact_fma(a: float, b: float, c: float) -> float:
    # Doubles are dyadic rationals; int / int true division in CPython is correctly rounded.
    num_a, den_a = a.as_integer_ratio()
    num_b, den_b = b.as_integer_ratio()
    num_c, den_c = c.as_integer_ratio()
    den_ab = den_a * den_b
    if den_c > den_ab:
        return (num_a * num_b * (den_c // den_ab) + num_c) / den_c
    return (num_a * num_b + num_c * (den_ab // den_c)) / den_ab


def _libm_fma() -> Callable[[float, float, float], float] | None:
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or None)
        native = libm.fma
    except (OSError, AttributeError):
        return None
    native.restype = ctypes.c_double
    native.argtypes = (ctypes.c_double, ctypes.c_double, ctypes.c_double)
    return native


def _pick() -> Callable[[float, float, float], float]:
    candidates = [getattr(math, "fma", None), _libm_fma()]
    for candidate in candidates:
        # 0.1 * 10 - 1 is 2**-54 when fused and 0.0 when rounded twice: proves the fusion.
        if candidate is not None and candidate(0.1, 10.0, -1.0) == _exact_fma(0.1, 10.0, -1.0) != 0.0:
            return candidate
    return _exact_fma


fma = _pick()
