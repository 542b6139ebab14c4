"""Vector functions. A numeric vector is a numpy array; batch implementations receive a column of
vectors as a 2-D array and reduce along its last axis, so a batch of windows is one numpy call.

The functions whose arguments choose the size of what they build (`zeros(n)`, `ones(n)`,
`range(a, b)`, `concat`, `flatten`) are `sized`: they ask the statement's context for the room
(`ctx.allocate`) before numpy allocates anything, and a value past the memory budget is a
LimitError, not a frozen machine."""
from __future__ import annotations

import math

import numpy as np

from ..arithmetic import dot
from ..bound import TConst
from ..errors import QueryRuntimeError
from ..registry import Library
from ..streams import approximate_bytes, reserve
from ..types import INTEGER, REAL, Type, TypeLattice, type_of_value, vector_of
from ..values import Bag, FunctionRef, make_vector

DTYPES = {"f32": np.float32, "f64": np.float64, "i8": np.int8, "i16": np.int16, "i32": np.int32,
          "i64": np.int64, "u8": np.uint8}


def _array(v) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, Bag):
        v = v.items
    try:
        return np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise QueryRuntimeError("this function needs a vector of numbers") from None


def _nonempty(name, fn):
    def run(v):
        a = _array(v)
        if a.shape[-1:] == (0,):
            return None
        with np.errstate(all="ignore"):
            result = fn(a)
        return result.item() if isinstance(result, np.generic) else result
    return run


def _axis(fn):
    """A reduction over the last axis: works on one vector and on a column of vectors."""
    def run(v):
        with np.errstate(all="ignore"):
            return fn(_array(v), axis=-1)
    return run


def _rms(v, axis=None):
    a = np.asarray(v, dtype=np.float64)
    return np.sqrt(np.mean(a * a, axis=-1 if axis is None else axis))


def _stdev(v, axis=-1):
    a = np.asarray(v, dtype=np.float64)
    if a.shape[-1] < 2:
        return np.full(a.shape[:-1], np.nan) if a.ndim > 1 else math.nan
    return np.std(a, axis=axis, ddof=1)


def _var(v, axis=-1):
    a = np.asarray(v, dtype=np.float64)
    if a.shape[-1] < 2:
        return np.full(a.shape[:-1], np.nan) if a.ndim > 1 else math.nan
    return np.var(a, axis=axis, ddof=1)


def check_int_sums(a: np.ndarray, axis: int, running: bool = False) -> None:
    """numpy's integer sums wrap around past 64 bits: raise the contract's overflow error instead.
    The largest magnitude times the count bounds every partial sum (min and max copy nothing, so a
    constant vector repeated over a batch stays a view); only near the limit are sums redone
    exactly: totals from their 32-bit halves, or with `running` every partial sum as cumsum
    gives them."""
    if a.dtype.kind not in "iu" or a.size == 0:
        return
    count = a.shape[axis]
    largest = np.maximum(np.abs(a.max(axis=axis).astype(np.float64)), np.abs(a.min(axis=axis).astype(np.float64)))
    if largest.max() * count <= 9.2e18:
        return
    if not running and a.dtype.kind == "i" and count < 2 ** 31:
        # a = high · 2**32 + low with 0 <= low < 2**32: both halves sum without overflow
        high = (a >> 32).sum(axis=axis)
        low = (a & 0xFFFFFFFF).sum(axis=axis)
        exact = [int(h) * 2 ** 32 + int(lo) for h, lo in zip(np.ravel(high), np.ravel(low))]
    else:
        exact = np.ravel(np.cumsum(a.astype(object), axis=axis) if running else a.astype(object).sum(axis=axis))
    if any(not -2 ** 63 <= int(x) < 2 ** 63 for x in exact):
        raise QueryRuntimeError("integer overflow: a sum does not fit in 64 bits")


def _sum_vector(v):
    a = _array(v)
    check_int_sums(a, -1)
    result = a.sum(axis=-1)
    return result.item() if isinstance(result, np.generic) else result


def _cumsum(v):
    a = _array(v)
    check_int_sums(a, -1, running=True)
    return np.cumsum(a, axis=-1)


def _arg(fn):
    def scalar(v):
        a = _array(v)
        if a.shape[-1] == 0:
            return None
        return int(fn(a)) + 1
    return scalar


def _percentile(v, p):
    a = _array(v)
    if a.shape[-1] == 0:
        return None
    if isinstance(p, np.ndarray):
        return np.array([np.percentile(row, q) for row, q in zip(a, p)])
    if not 0 <= p <= 100:
        raise QueryRuntimeError(f"percentile takes p between 0 and 100, not {p}")
    result = np.percentile(a, p, axis=-1)
    return result.item() if isinstance(result, np.generic) else result


def _normalize(v):
    a = np.asarray(v, dtype=np.float64)
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    with np.errstate(all="ignore"):
        return a / norm


def _filled(name: str, make):
    """zeros(n) / ones(n): the count checked, the room asked for, then built."""
    def build(ctx, n):
        if n < 0:
            raise QueryRuntimeError(f"{name} needs a count of 0 or more, not {n}")
        reserve(ctx, 8 * n, f"{name}({n})")
        return ctx.keep(make(n))
    return build


def _range(ctx, a, b):
    if isinstance(a, int) and isinstance(b, int):
        count = max(b - a + 1, 0)
    else:
        if not (math.isfinite(a) and math.isfinite(b)):
            raise QueryRuntimeError(f"range needs finite bounds, not {a} and {b}")
        count = max(int(math.floor(b - a)) + 1, 0)
    reserve(ctx, 8 * count, f"range({a}, {b}) of {count} elements")
    if isinstance(a, int) and isinstance(b, int):
        return ctx.keep(np.arange(a, b + 1, dtype=np.int64))
    return ctx.keep(a + np.arange(count, dtype=np.float64))


def _concat(ctx, *vectors):
    reserve(ctx, sum(approximate_bytes(v) if isinstance(v, (np.ndarray, list)) else 16 for v in vectors),
            f"concat of {len(vectors)} vectors")
    if all(isinstance(v, np.ndarray) for v in vectors):
        return ctx.keep(np.concatenate(vectors))
    out = []
    for v in vectors:
        out.extend(v.tolist() if isinstance(v, np.ndarray) else list(v))
    return ctx.keep(make_vector(out))


def _transpose(m):
    a = np.asarray(m)
    if a.ndim != 2:
        raise QueryRuntimeError("transpose needs a matrix (a vector of equal-length vectors)")
    return a.T.copy()


def _flatten(ctx, m):
    if isinstance(m, np.ndarray):
        return m.reshape(-1)
    count = sum(len(item) if isinstance(item, (np.ndarray, list)) else 1 for item in m)
    reserve(ctx, 8 * count, f"flatten of {count} elements")
    out = []
    for item in m:
        out.extend(item.tolist() if isinstance(item, np.ndarray) else list(item) if isinstance(item, list) else [item])
    return make_vector(out)


def _typed_array(kind, values):
    dtype = DTYPES.get(kind.lower()) if isinstance(kind, str) else None   # 'F32' as SA Engine writes it
    if dtype is None:
        raise QueryRuntimeError(f"unknown array type {kind!r}: use one of {', '.join(DTYPES)}")
    a = np.asarray(values, dtype=np.float64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if a.size and (a.min() < info.min or a.max() > info.max or not np.all(a == np.round(a))):
            raise QueryRuntimeError(f"values do not fit array type {kind}")
    return a.astype(dtype)


def _length(v):
    return len(v)


def _apply(ctx, fn, args):
    function = fn.name if isinstance(fn, FunctionRef) else str(fn)
    values = args.tolist() if isinstance(args, np.ndarray) and args.ndim == 1 else list(args)
    return call_by_name(ctx, function, values)


def call_by_name(ctx, name: str, values: list):
    """Call a library function on run-time values, choosing the overload by their types."""
    lattice = TypeLattice()
    library = ctx.engine.library
    candidates = [o for o in library.overloads(name) if o.accepts_arity(len(values)) and o.kind == "scalar"]
    if not candidates:
        raise QueryRuntimeError(f"apply: no function {name} taking {len(values)} arguments")
    types = [type_of_value(v) for v in values]
    for overload in candidates:
        bindings: dict = {}
        if all(lattice.unify(p, t, bindings) is not None for p, t in zip(overload.param_types(len(values)), types)):
            if any(v is None for v in values) and overload.null_propagating:
                return None
            if overload.needs_context:
                return overload.scalar(ctx, *values)
            return overload.scalar(*values)
    raise QueryRuntimeError(f"apply: {name} cannot take ({', '.join(map(str, types))})")


def _reduce(ctx, fn, vector, init):
    function = fn.name if isinstance(fn, FunctionRef) else str(fn)
    acc = init
    items = vector.tolist() if isinstance(vector, np.ndarray) and vector.ndim == 1 else list(vector)
    for i, item in enumerate(items):
        if not i & 1023:   # a long fold still notices cancellation and the time limit
            ctx.check()
        acc = call_by_name(ctx, function, [acc, item])
    return acc


def _numeric_result(types, args) -> Type:
    t = types[0]
    return INTEGER if t.is_vector and t.element == INTEGER else REAL


def register(lib: Library) -> None:
    d = lambda sig, **kw: lib.define(sig, topic="vector", **kw)  # noqa: E731
    d("dim(Vector v) -> Integer", scalar=_length, doc="The number of elements of a vector")
    d("length(Vector v) -> Integer", scalar=_length, doc="The number of elements of a vector")
    d("length(Charstring s) -> Integer", scalar=len, doc="The number of characters of a string")
    d("sum(Vector of Number v) -> Real", scalar=_sum_vector, batch=_sum_vector,
      result_type=_numeric_result, doc="The sum of the elements")
    for name in ("mean", "avg"):
        d(f"{name}(Vector of Number v) -> Real", scalar=_nonempty(name, np.mean), batch=_axis(np.mean),
          doc="The mean of the elements")
    d("stdev(Vector of Number v) -> Real", scalar=_nonempty("stdev", _stdev), batch=_stdev,
      doc="The sample standard deviation (n - 1) of the elements")
    d("var(Vector of Number v) -> Real", scalar=_nonempty("var", _var), batch=_var,
      doc="The sample variance (n - 1) of the elements")
    d("median(Vector of Number v) -> Real", scalar=_nonempty("median", np.median), batch=_axis(np.median),
      doc="The median of the elements")
    d("min(Vector of Number v) -> Real", scalar=_nonempty("min", np.min), batch=_axis(np.min),
      result_type=_numeric_result, doc="The smallest element")
    d("max(Vector of Number v) -> Real", scalar=_nonempty("max", np.max), batch=_axis(np.max),
      result_type=_numeric_result, doc="The largest element")
    d("argmin(Vector of Number v) -> Integer", scalar=_arg(np.argmin),
      batch=lambda v: np.argmin(v, axis=-1) + 1, doc="The position (from 1) of the smallest element")
    d("argmax(Vector of Number v) -> Integer", scalar=_arg(np.argmax),
      batch=lambda v: np.argmax(v, axis=-1) + 1, doc="The position (from 1) of the largest element")
    d("rms(Vector of Number v) -> Real", scalar=_nonempty("rms", _rms), batch=_rms,
      doc="The root mean square of the elements")
    d("dot(Vector of Number a, Vector of Number b) -> Real", scalar=dot,
      batch=dot, doc="The dot product of two vectors")
    d("norm(Vector of Number v) -> Real", scalar=lambda v: float(np.linalg.norm(_array(v))),
      batch=lambda v: np.linalg.norm(v, axis=-1), doc="The Euclidean length of a vector")
    d("normalize(Vector of Number v) -> Vector of Real", scalar=_normalize, batch=_normalize,
      doc="The vector divided by its Euclidean length")
    d("diff(Vector of Number v) -> Vector of Real", scalar=lambda v: np.diff(_array(v)),
      batch=lambda v: np.diff(v, axis=-1), result_type=lambda t, a: t[0],
      doc="Differences of consecutive elements (one fewer element)")
    d("cumsum(Vector of Number v) -> Vector of Real", scalar=_cumsum, batch=_cumsum, result_type=lambda t, a: t[0],
      doc="Running sums of the elements")
    d("percentile(Vector of Number v, Number p) -> Real", scalar=_percentile,
      doc="The p-th percentile (0–100) with linear interpolation")
    d("concat(Vector a, Vector b...) -> Vector", scalar=_concat, sized=True,
      result_type=lambda t, a: t[0] if all(x == t[0] for x in t) else vector_of(REAL) if all(
          x.is_vector and x.element.is_numeric for x in t) else t[0],
      doc="The elements of several vectors, one after the other")
    d("zeros(Integer n) -> Vector of Real", scalar=_filled("zeros", np.zeros), sized=True,
      doc="A vector of n zeros")
    d("ones(Integer n) -> Vector of Real", scalar=_filled("ones", np.ones), sized=True, doc="A vector of n ones")
    d("range(Number a, Number b) -> Vector of Number", scalar=_range, sized=True,
      result_type=lambda t, a: vector_of(INTEGER) if t == [INTEGER, INTEGER] else vector_of(REAL),
      doc="The numbers a, a + 1, …, up to b (inclusive)")
    d("rfft(Vector of Number v) -> Vector of Real", scalar=lambda v: np.abs(np.fft.rfft(_array(v))),
      batch=lambda v: np.abs(np.fft.rfft(v, axis=-1)), doc="Magnitudes of the real FFT of a vector")
    d("transpose(Vector of Vector of Number m) -> Vector of Vector of Real", scalar=_transpose,
      doc="A matrix with rows and columns swapped")
    d("flatten(Vector v) -> Vector", scalar=_flatten, sized=True,
      result_type=lambda t, a: t[0].element if t[0].element.is_vector else t[0],
      doc="The elements of a vector of vectors, in one vector")
    d("array(Charstring kind, Vector of Number values) -> Vector of Number", scalar=_typed_array,
      result_type=lambda t, a: vector_of(INTEGER) if (_constant_kind(a) or "").lower() in ("i8", "i16", "i32", "i64", "u8") else vector_of(REAL),
      doc="A typed numeric array for model tensors: kind is f32, f64, i8, i16, i32, i64 or u8")
    lib.define("apply(Function f, Vector args) -> Object", scalar=_apply, needs_context=True, topic="function",
               doc="Call the function f on the arguments in a vector: apply(#'max_of', [1, 2])")
    lib.define("reduce(Function f, Vector v, Object init) -> Object", scalar=_reduce, needs_context=True,
               topic="function", doc="Fold a two-argument function over a vector, starting from init")


def _constant_kind(args) -> str | None:
    first = args[0]
    return first.value if isinstance(first, TConst) else None

