"""Real arithmetic as the language defines it where Python's differs: division by zero gives
±inf or nan (as IEEE and numpy do), `%` takes the sign of the dividend, `^` overflows to inf;
and the dot product of two numeric vectors. The library's operators and the physical layer's
fused kernels both compute with these, so a fused and an unfused expression agree.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import QueryRuntimeError


def real_div(a, b):
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * (math.copysign(1.0, b) if isinstance(b, float) else 1.0)


def real_mod(a, b):
    try:
        return math.fmod(a, b)
    except ValueError:
        return math.nan


def real_pow(a, b):
    try:
        result = math.pow(a, b)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.nan
    return result


def np_fmod(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.fmod(a, b)


def np_real_div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.true_divide(a, b)


def np_real_pow(a, b):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.power(np.asarray(a, dtype=np.float64), b)


def dot(a, b):
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape[-1] != b_arr.shape[-1]:
        raise QueryRuntimeError(f"vectors of different lengths ({a_arr.shape[-1]} and {b_arr.shape[-1]})")
    if a_arr.ndim == 1 and b_arr.ndim == 1:
        return float(a_arr @ b_arr)
    return np.einsum("...i,...i->...", a_arr, b_arr)


def by_row(v, x):
    """A vector per row and a number per row, shaped to combine row by row: `v` a column of
    vectors (n, k) or one constant vector (k,) for every row, `x` a column (n,) or one number.
    (A constant vector against a column of numbers gives n vectors, not one elementwise vector.)"""
    if isinstance(x, np.ndarray) and x.ndim == 1:
        v = np.asarray(v)
        return (v[None, :] if v.ndim == 1 else v), x[:, None]
    return v, x
