"""Numeric functions. Each acts elementwise on numeric vectors as well as on numbers."""
from __future__ import annotations

import math

import numpy as np

from ..arithmetic import by_row, np_real_pow, real_pow
from ..errors import QueryRuntimeError
from ..registry import Library
from ..types import INTEGER, REAL, Type, vector_of


def _same_type(types, args) -> Type:
    t = types[0]
    if t.is_vector:
        return vector_of(INTEGER if t.element == INTEGER else REAL)
    return INTEGER if t == INTEGER else REAL


def _real_of(types, args) -> Type:
    return vector_of(REAL) if types[0].is_vector else REAL


def _safe(fn):
    """A math-module function with numpy's answers where math raises (nan, inf)."""
    def run(*args):
        try:
            return fn(*args)
        except ValueError:
            return math.nan
        except OverflowError:
            return math.inf
    return run


def _np(fn):
    def run(*args):
        with np.errstate(all="ignore"):
            return fn(*args)
    return run


def round_half_away(x):
    """Round half away from zero (round(2.5) = 3, round(-2.5) = -3)."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return x
    # whole part and fraction are exact; floor(|x| + 0.5) is not (0.49999999999999994 + 0.5 is 1.0)
    if isinstance(x, np.ndarray):
        with np.errstate(invalid="ignore"):
            whole = np.trunc(x)
            return np.where(np.abs(x - whole) >= 0.5, whole + np.sign(x), whole)
    if not math.isfinite(x):
        return x
    fraction, whole = math.modf(x)
    return whole + math.copysign(1.0, x) if abs(fraction) >= 0.5 else whole


def roundto(x, digits):
    """Round to a number of decimals, half away from zero."""
    if isinstance(x, np.ndarray) or isinstance(digits, np.ndarray):
        x_arr = np.asarray(x, dtype=np.float64)
        d = np.asarray(digits, dtype=np.float64)
        if x_arr.ndim == 2 and d.ndim == 1:
            d = d[:, None]
        with np.errstate(all="ignore"):
            factor = 10.0 ** d
            return np.sign(x_arr) * np.floor(np.abs(x_arr) * factor + 0.5) / factor
    factor = 10.0 ** digits
    if not math.isfinite(x):
        return x
    return math.copysign(math.floor(abs(x) * factor + 0.5), x) / factor


def _floor(x):
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return x
    return float(math.floor(x)) if math.isfinite(x) else x


def _ceil(x):
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return x
    return float(math.ceil(x)) if math.isfinite(x) else x


def _sign(x):
    if isinstance(x, (int, np.integer)):
        return (x > 0) - (x < 0)
    if x != x:
        return x
    return float((x > 0) - (x < 0))


def _keep_int(np_fn):
    def run(x):
        if isinstance(x, np.ndarray) and x.dtype.kind in "iu":
            return x
        with np.errstate(all="ignore"):
            return np_fn(x)
    return run


def _abs(x):
    if isinstance(x, int) and not isinstance(x, bool):
        if x == -2 ** 63:
            raise QueryRuntimeError("integer overflow in abs")
    return abs(x)


def _mod(a, b):
    if isinstance(a, int) and isinstance(b, int):
        if b == 0:
            raise QueryRuntimeError("integer division by zero in mod")
        remainder = abs(a) % abs(b)  # exact: fmod would round integers past 2**53
        return -remainder if a < 0 else remainder
    try:
        return math.fmod(a, b)
    except ValueError:
        return math.nan


def register(lib: Library) -> None:
    def unary(name, doc, scalar, batch, result=_real_of, params="Number x"):
        lib.define(f"{name}({params}) -> Real", scalar=scalar, batch=batch, doc=doc, topic="math",
                   elementwise=True, result_type=result, batch_scalars=True)
        lib.define(f"{name}(Vector of Number x) -> Vector of Real", scalar=batch, batch=batch, doc=doc,
                   topic="math", elementwise=True, result_type=result, batch_scalars=True)

    unary("abs", "Absolute value", _abs, _np(np.abs), _same_type)
    unary("sqrt", "Square root (nan for negative numbers)", _safe(math.sqrt), _np(np.sqrt))
    unary("exp", "e to the power x", _safe(math.exp), _np(np.exp))
    unary("log", "Natural logarithm (-inf at 0, nan below)", lambda x: _log(x, math.log), _np(np.log))
    unary("log10", "Base-10 logarithm", lambda x: _log(x, math.log10), _np(np.log10))
    unary("sin", "Sine (radians)", _safe(math.sin), _np(np.sin))
    unary("cos", "Cosine (radians)", _safe(math.cos), _np(np.cos))
    unary("tan", "Tangent (radians)", _safe(math.tan), _np(np.tan))
    unary("asin", "Arc sine", _safe(math.asin), _np(np.arcsin))
    unary("acos", "Arc cosine", _safe(math.acos), _np(np.arccos))
    unary("atan", "Arc tangent", _safe(math.atan), _np(np.arctan))
    unary("floor", "Largest whole number not above x", _floor, _keep_int(np.floor), _same_type)
    unary("ceil", "Smallest whole number not below x", _ceil, _keep_int(np.ceil), _same_type)
    unary("round", "Round half away from zero", round_half_away, _keep_int(round_half_away), _same_type)
    unary("sign", "-1, 0 or 1 by the sign of x", _sign, _np(np.sign), _same_type)

    for params, result in (("Number y, Number x", "Real"), ("Vector of Number y, Vector of Number x", "Vector of Real")):
        lib.define(f"atan2({params}) -> {result}", scalar=_safe(math.atan2) if result == "Real" else _np(np.arctan2),
                   batch=_np(np.arctan2), doc="Angle of the point (x, y) in radians", topic="math",
                   elementwise=True, batch_scalars=True)
    lib.define("power(Number x, Number y) -> Real", scalar=real_pow, batch=np_real_pow, doc="x to the power y",
               topic="math", elementwise=True, batch_scalars=True)
    lib.define("power(Vector of Number x, Number y) -> Vector of Real", scalar=np_real_pow, batch=_np(
        lambda v, y: np.power(*by_row(np.asarray(v, dtype=np.float64), y))),
        doc="Each element to the power y", topic="math", elementwise=True, batch_scalars=True)
    lib.define("mod(Integer a, Integer b) -> Integer", scalar=_mod, doc="Remainder with the sign of the dividend",
               topic="math", batch_scalars=True)
    lib.define("mod(Number a, Number b) -> Real", scalar=_mod, batch=_np(np.fmod),
               doc="Remainder with the sign of the dividend", topic="math", batch_scalars=True)
    lib.define("roundto(Number x, Integer digits) -> Real", scalar=roundto, batch=roundto,
               doc="Round to a number of decimals, half away from zero", topic="math", batch_scalars=True)
    lib.define("roundto(Vector of Number x, Integer digits) -> Vector of Real", scalar=roundto,
               batch=lambda x, digits: roundto(*by_row(x, digits)),
               doc="Round each element to a number of decimals", topic="math", batch_scalars=True)
    lib.define("max_of(Number a, Number b) -> Real", scalar=lambda a, b: a if a >= b else b,
               batch=np.maximum, result_type=lambda t, a: INTEGER if t == [INTEGER, INTEGER] else REAL,
               doc="The larger of two numbers", topic="math", batch_scalars=True)
    lib.define("min_of(Number a, Number b) -> Real", scalar=lambda a, b: a if a <= b else b,
               batch=np.minimum, result_type=lambda t, a: INTEGER if t == [INTEGER, INTEGER] else REAL,
               doc="The smaller of two numbers", topic="math", batch_scalars=True)
    lib.define("pi() -> Real", scalar=lambda: math.pi, doc="π", topic="math")
    lib.define("frand() -> Real", scalar=lambda ctx: float(ctx.rng.random()),
               batch=lambda ctx, n: ctx.rng.random(n), needs_context=True, volatile=True,
               doc="A random number in [0, 1) from the engine's seeded generator", topic="math")
    lib.define("frand(Number low, Number high) -> Real",
               scalar=lambda ctx, lo, hi: float(ctx.rng.uniform(lo, hi)),
               batch=lambda ctx, n, lo, hi: ctx.rng.uniform(lo, hi, n), needs_context=True, volatile=True,
               doc="A random number in [low, high)", topic="math")


def _log(x, fn):
    if x == 0:
        return -math.inf
    if x < 0 or x != x:
        return math.nan
    return fn(x)
