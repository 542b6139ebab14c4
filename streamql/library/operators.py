"""Operators: arithmetic, comparison, membership, pattern matching, indexing, constructors, cast.

Integer op Integer stays Integer (except `/`), with overflow an error; mixed numbers give Real;
`%` takes the sign of the dividend; `^` gives Real; `+` joins strings; `+ - .* ./ .^` act
elementwise on vectors, `*` of two vectors is their dot product. Real arithmetic follows IEEE as
numpy does (1.0 / 0 is inf, sqrt(-1) is nan). A comparison with null is false.

What a statement's text cannot bound is checked against its memory budget before it is built
(`sized`): joined strings, vector literals (`[v, v, v, …]` of a large `v`), and arithmetic on
values known only at run time, which numpy may broadcast to a far larger array.
"""
from __future__ import annotations

import math
import operator
import re

import numpy as np

from ..arithmetic import by_row, dot, np_fmod, np_real_div, np_real_pow, real_div, real_mod, real_pow
from ..errors import QueryRuntimeError
from ..registry import Library
from ..selection import like_match
from ..streams import TRACKED_BYTES, LazyBag, reserve
from ..types import INTEGER, NULL, OBJECT, REAL, Type, value_fits, vector_of
from ..values import Bag, Time, brief_value, format_value, make_vector, values_equal

INT64_MAX = 2 ** 63 - 1
INT64_MIN = -2 ** 63


def _checked_int(value: int) -> int:
    if value > INT64_MAX or value < INT64_MIN:
        raise QueryRuntimeError(f"integer overflow: {value} does not fit in 64 bits")
    return value


def _int_batch(op, python_op):
    """An int64 array operation that fails on overflow instead of wrapping around."""
    def run(a, b):
        with np.errstate(over="ignore"):
            result = op(a, b)
        estimate = op(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
        near = np.abs(estimate) > 9.2e18
        if np.any(near):
            # the float estimate only finds candidates: results up to 2**63 - 1 still fit
            for x, y in zip(*(np.broadcast_to(v, near.shape)[near] for v in (a, b))):
                _checked_int(python_op(int(x), int(y)))
        return result
    return run


def _fmod_int(a: int, b: int) -> int:
    """a % b with the sign of the dividend, exact for every 64-bit integer."""
    if b == 0:
        raise QueryRuntimeError("integer division by zero in %")
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


def _int_mod_batch(a, b):
    if np.any(np.asarray(b) == 0):
        raise QueryRuntimeError("integer division by zero in %")
    return np.fmod(a, b)


def _vector_scalar(op):
    """v op x where v is a vector column (n, k) or a constant vector, and x a number column (n,)
    or a constant."""
    def run(v, x):
        v, x = by_row(v, x)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return op(v, x)
    return run


def _scalar_vector(op):
    def run(x, v):
        v, x = by_row(v, x)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return op(x, v)
    return run


def _elementwise(op):
    def run(a, b):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        if a_arr.shape[-1:] != b_arr.shape[-1:]:
            raise QueryRuntimeError(f"vectors of different lengths ({a_arr.shape[-1]} and {b_arr.shape[-1]})")
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return op(a_arr, b_arr)
    return run


def _vector_result(types, args) -> Type:
    elements = [t.element if t.is_vector else t for t in types]
    if all(e == INTEGER for e in elements):
        return vector_of(INTEGER)
    return vector_of(REAL)


def _dynamic(op_name: str, python_op):
    """Arithmetic on values whose types are known only at run time."""
    def run(ctx, a, b):
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            _room_for_broadcast(ctx, op_name, a, b)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                return python_op(np.asarray(a), np.asarray(b)) if op_name != "*" or not (
                    isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) else dot(a, b)
        if isinstance(a, str) and isinstance(b, str) and op_name == "+":
            return _join_strings(ctx, a, b)
        if isinstance(a, Time) or isinstance(b, Time):
            result = python_op(a, b)
            if result is NotImplemented:
                raise QueryRuntimeError(f"cannot apply {op_name} to {brief_value(a)} and {brief_value(b)}")
            return result
        if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            raise QueryRuntimeError(f"cannot apply {op_name} to {brief_value(a)} and {brief_value(b)}")
        if op_name == "/":
            return real_div(float(a), b)
        if op_name == "^":
            return real_pow(a, b)
        if op_name == "%":
            return _fmod_int(a, b) if isinstance(a, int) and isinstance(b, int) else real_mod(a, b)
        result = python_op(a, b)
        return _checked_int(result) if isinstance(result, int) else result
    return run


def _room_for_broadcast(ctx, op_name: str, a, b) -> None:
    """numpy broadcasts a column against a row into a matrix: ask for its room first."""
    try:
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    except ValueError:
        return   # shapes that do not broadcast: numpy's own error follows, nothing is built
    reserve(ctx, 8 * math.prod(shape), f"{op_name} giving {' × '.join(map(str, shape))} elements")


def _join_strings(ctx, a: str, b: str) -> str:
    size = len(a) + len(b)
    if size >= TRACKED_BYTES:   # (inline: joining short strings in every row stays cheap)
        ctx.allocate(size, f"a string of {size} characters")
    return a + b


def _only_when_unknown(binder, args) -> bool:
    """Generic overloads apply only when an argument's type is known only at run time."""
    types = [a.type for a in args]
    if not any(t in (OBJECT, NULL) or (t.is_vector and t.element == OBJECT) for t in types):
        return False
    return all(binder.lattice.compatible(types[0], t) or t in (OBJECT, NULL) or types[0] in (OBJECT, NULL)
               or (t.is_numeric or t == OBJECT) for t in types)


def _compatible_args(binder, args) -> bool:
    return binder.lattice.compatible(args[0].type, args[1].type)


# ------------------------------------------------------------------------------ comparisons
def _equal(a, b) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b
    return values_equal(a, b)


def _order(op):
    def run(a, b):
        if a is None or b is None:
            return False
        if isinstance(a, Time) and isinstance(b, Time):
            return op(a.seconds, b.seconds)
        try:
            return bool(op(a, b))
        except TypeError:
            raise QueryRuntimeError(f"cannot compare {brief_value(a)} with {brief_value(b)}") from None
    return run


def _quiet_nan_comparisons() -> bool:
    """Whether this numpy compares NaN without raising the invalid-operation flag (numpy 2 does
    on x86-64): then a batch comparison needs no errstate (a few µs per batch)."""
    probe = np.array([np.nan, 1.0] * 32)
    try:
        with np.errstate(invalid="raise"):
            for op in (np.less, np.less_equal, np.greater, np.greater_equal, np.equal, np.not_equal):
                op(probe, 0.0)
                op(probe.astype(np.float32), np.float32(0.0))
    except FloatingPointError:
        return False
    return True


QUIET_NAN_COMPARISONS = _quiet_nan_comparisons()


def _cmp_batch(op):
    if QUIET_NAN_COMPARISONS:
        return op

    def run(a, b):
        with np.errstate(invalid="ignore"):
            return op(a, b)
    return run


def _vector_equal_batch(a, b):
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.shape != b_arr.shape:
        return np.zeros(len(a_arr), dtype=bool)
    return np.all(a_arr == b_arr, axis=tuple(range(1, a_arr.ndim)))


# ------------------------------------------------------------------------------- membership
def _in(x, collection) -> bool:
    if x is None:
        return False
    if isinstance(collection, LazyBag):
        collection = collection.column()
    if isinstance(collection, Bag):
        collection = collection.items
    if isinstance(collection, np.ndarray) and collection.ndim == 1 and isinstance(x, (int, float)) \
            and not isinstance(x, bool) and collection.dtype.kind in "iuf":
        return bool(np.any(collection == x))
    return any(_equal(x, item) for item in collection)


def _in_list(x, *items) -> bool:
    return x is not None and any(_equal(x, item) for item in items)


def _in_list_batch(x, *items):
    result = np.zeros(len(x), dtype=bool)
    for item in items:
        with np.errstate(invalid="ignore"):
            result |= (x == item)
    return result


def _between(x, low, high) -> bool:
    less_equal = _order(operator.le)
    return less_equal(low, x) and less_equal(x, high)


def _like(text, pattern) -> bool:
    """SQL LIKE: `%` any run of characters, `_` exactly one; everything else literal (matched in
    linear time: a backtracking regular expression could run for hours on one row)."""
    if text is None or pattern is None:
        return False
    if not isinstance(text, str):
        text = format_value(text)
    return like_match(text, pattern, escapes=False)


# --------------------------------------------------------------------------------- indexing
def _index(target, index):
    if isinstance(target, dict):
        return target.get(index)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        else:
            raise QueryRuntimeError(f"a vector index must be an integer, not {brief_value(index)}")
    length = len(target)
    if not 1 <= index <= length:
        raise QueryRuntimeError(f"index {index} is out of range 1..{length}")
    value = target[index - 1]
    return value.item() if isinstance(value, np.generic) else value


def _index_batch(target, index):
    if not isinstance(target, np.ndarray) or target.ndim < 2 or not isinstance(index, np.ndarray) \
            or index.dtype.kind not in "iu":
        return [_index(t, i) for t, i in zip(target, index)]   # ragged or mixed vectors: one row at a time
    length = target.shape[1]
    if len(index) and (index.min() < 1 or index.max() > length):
        bad = index[(index < 1) | (index > length)][0]
        raise QueryRuntimeError(f"index {bad} is out of range 1..{length}")
    return target[np.arange(len(target)), index - 1]


def _slice(target, start, stop):
    for bound in (start, stop):
        if isinstance(bound, bool) or not isinstance(bound, (int, np.integer)):
            raise QueryRuntimeError(f"slice bounds must be integers, not {brief_value(bound)}")
    length = len(target)
    first = max(int(start), 1)
    last = min(int(stop), length)
    if last < first:
        return target[0:0]
    return target[first - 1:last]


def _vector(ctx, *items):
    first = items[0] if items else None
    if isinstance(first, np.ndarray) and all(isinstance(v, np.ndarray) and v.shape == first.shape for v in items):
        # equal vectors are stacked into one array: a copy of them all (anything else is a list of them)
        reserve(ctx, first.nbytes * len(items), f"a vector of {len(items)} vectors")
    return ctx.keep(make_vector(list(items)))


def _vector_batch(ctx, n, *columns):
    if len({c.shape for c in columns}) != 1:   # vectors and numbers mixed: each row's vector is a list
        rows = zip(*(c.tolist() if c.ndim == 1 else list(c) for c in columns))
        return [make_vector(list(row)) for row in rows]
    reserve(ctx, sum(c.nbytes for c in columns), f"a column of {n} vectors")
    return np.stack(columns, axis=-1)


def _record(*values, options=()):
    return dict(zip(options, values))


def _coalesce(*values):
    for v in values:
        if v is not None:
            return v
    return None


# ------------------------------------------------------------------------------------- cast
def cast_value(value, options=()):
    target = options[0]
    name = target.name
    if value is None:
        return None
    try:
        if name == "Integer":
            if isinstance(value, str):
                text = value.strip()
                if re.fullmatch(r"[+-]?\d+", text):
                    return _checked_int(int(text))
                value = float(text)
            if isinstance(value, (bool, np.bool_)):
                return int(value)
            if isinstance(value, (float, np.floating)):
                if not math.isfinite(value):
                    raise QueryRuntimeError(f"cannot cast {brief_value(value)} to Integer")
                return _checked_int(_round_half_away(float(value)))
            return _checked_int(int(value))
        if name in ("Real", "Number"):
            if isinstance(value, str):
                return float(value.strip())
            return float(value)
        if name == "Charstring":
            return value if isinstance(value, str) else format_value(value).strip("'")
        if name == "Boolean":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("true", "false"):
                    return lowered == "true"
                raise QueryRuntimeError(f"cannot cast {brief_value(value)} to Boolean")
            return bool(value)
        if name == "Time":
            if isinstance(value, Time):
                return value
            if isinstance(value, str):
                return Time.parse(value)
            return Time(float(value))
        if name == "Vector":
            element = target.arg.name if target.arg is not None else None
            if element in ("Real", "Number"):
                return np.asarray(value, dtype=np.float64)
            if element == "Integer":  # each element as cast(x as Integer) converts it
                return make_vector([cast_value(v, (target.arg,)) for v in list(value)])
            return make_vector(list(value))
    except (ValueError, OverflowError):
        raise QueryRuntimeError(f"cannot cast {brief_value(value)} to {target}") from None
    if not value_fits(value, target):
        raise QueryRuntimeError(f"cannot cast {brief_value(value)} to {target}")
    return value


def _cast(ctx, value, options=()):
    """cast(x as T), asking the statement's budget first for what converting a large vector builds:
    its text (about 24 characters an element) or its copy."""
    if isinstance(value, (list, np.ndarray)) and len(value) >= 1024:
        per_element = 24 if options[0].name == "Charstring" else 8
        reserve(ctx, per_element * len(value), f"cast of a vector of {len(value)} elements to {options[0]}")
    return cast_value(value, options)


def _round_half_away(x: float) -> int:
    fraction, whole = math.modf(x)  # exact, unlike floor(|x| + 0.5)
    return int(whole) + (int(math.copysign(1, x)) if abs(fraction) >= 0.5 else 0)


# ----------------------------------------------------------------------------- registration
def register(lib: Library) -> None:
    d = lib.define
    op = dict(topic="operator", batch_scalars=True)
    add, sub, mul = operator.add, operator.sub, operator.mul

    def int_op(f):
        return lambda a, b: _checked_int(f(a, b))

    for symbol, f, npf in (("+", add, np.add), ("-", sub, np.subtract), ("*", mul, np.multiply)):
        d(f"{symbol}(Integer a, Integer b) -> Integer", scalar=int_op(f), batch=_int_batch(npf, f),
          doc=f"Integer {symbol}: stays Integer; overflow is an error", **op)
        d(f"{symbol}(Number a, Number b) -> Real", scalar=f, batch=f, doc=f"Number {symbol}", **op)
    d("+(Charstring a, Charstring b) -> Charstring", scalar=_join_strings, sized=True, doc="Joins two strings", **op)
    d("+(Time t, Number seconds) -> Time", scalar=add, doc="A time moved by some seconds", **op)
    d("+(Number seconds, Time t) -> Time", scalar=lambda s, t: t + s, doc="A time moved by some seconds", **op)
    d("-(Time a, Time b) -> Real", scalar=sub, doc="Seconds between two times", **op)
    d("-(Time t, Number seconds) -> Time", scalar=sub, doc="A time moved back by some seconds", **op)
    d("/(Number a, Number b) -> Real", scalar=lambda a, b: real_div(float(a), b), batch=np_real_div,
      doc="Division, always Real (IEEE: 1.0 / 0 is inf)", **op)
    d("%(Integer a, Integer b) -> Integer", scalar=_fmod_int, batch=_int_mod_batch,
      doc="Remainder with the sign of the dividend", **op)
    d("%(Number a, Number b) -> Real", scalar=real_mod, batch=np_fmod,
      doc="Remainder with the sign of the dividend", **op)
    d("^(Number a, Number b) -> Real", scalar=real_pow, batch=np_real_pow, doc="Power, always Real", **op)
    vector_ops = {"+": np.add, "-": np.subtract, ".*": np.multiply, "./": np.true_divide, ".^": np.power}
    for symbol, npf in vector_ops.items():
        fn = _elementwise(npf)
        d(f"{symbol}(Vector of Number a, Vector of Number b) -> Vector of Real", scalar=fn, batch=fn,
          result_type=_vector_result, doc=f"Elementwise {symbol} of two vectors", **op)
        vs, sv = _vector_scalar(npf), _scalar_vector(npf)
        d(f"{symbol}(Vector of Number v, Number x) -> Vector of Real", scalar=vs, batch=vs,
          result_type=_vector_result, doc=f"{symbol} of each element and a number", **op)
        d(f"{symbol}(Number x, Vector of Number v) -> Vector of Real", scalar=sv, batch=sv,
          result_type=_vector_result, doc=f"{symbol} of a number and each element", **op)
    for symbol, npf in (("*", np.multiply), ("/", np.true_divide)):
        vs = _vector_scalar(npf)
        d(f"{symbol}(Vector of Number v, Number x) -> Vector of Real", scalar=vs, batch=vs,
          result_type=_vector_result if symbol == "*" else None, doc=f"Each element {symbol} a number", **op)
    sv = _scalar_vector(np.multiply)
    d("*(Number x, Vector of Number v) -> Vector of Real", scalar=sv, batch=sv, result_type=_vector_result,
      doc="A vector scaled by a number", **op)
    d("*(Vector of Number a, Vector of Number b) -> Real", scalar=dot, batch=dot,
      doc="The dot product of two vectors", **op)
    for symbol, f in (("+", add), ("-", sub), ("*", mul), ("/", operator.truediv), ("%", operator.mod),
                      ("^", operator.pow)):
        d(f"{symbol}(Object a, Object b) -> Object", scalar=_dynamic(symbol, f), check_args=_only_when_unknown,
          sized=True,
          doc=f"{symbol} of values known only at run time", **op)
    d("neg(Integer x) -> Integer", scalar=lambda x: _checked_int(-x), batch=np.negative, doc="Negation", **op)
    d("neg(Number x) -> Real", scalar=operator.neg, batch=np.negative, doc="Negation", **op)
    d("neg(Vector of Number v) -> Vector of Real", scalar=np.negative, batch=np.negative,
      result_type=lambda t, a: vector_of(INTEGER) if t[0].element == INTEGER else vector_of(REAL),
      doc="Negation of each element", **op)
    d("neg(Object x) -> Object", scalar=lambda x: -np.asarray(x) if isinstance(x, (list, np.ndarray)) else -x,
      check_args=_only_when_unknown, doc="Negation", **op)

    cmp = dict(topic="operator", null_propagating=False, batch_scalars=True)
    d("=(Number a, Number b) -> Boolean", scalar=_equal, batch=_cmp_batch(np.equal), doc="Equality (1 = 1.0)", **cmp)
    d("!=(Number a, Number b) -> Boolean", scalar=lambda a, b: a is not None and b is not None and not _equal(a, b),
      batch=_cmp_batch(np.not_equal), doc="Inequality", **cmp)
    d("=(Vector of Number a, Vector of Number b) -> Boolean", scalar=_equal, batch=_vector_equal_batch,
      doc="Whether two vectors are equal in every element", **{**cmp, "batch_scalars": False})
    d("!=(Vector of Number a, Vector of Number b) -> Boolean",
      scalar=lambda a, b: a is not None and b is not None and not _equal(a, b),
      batch=lambda a, b: ~_vector_equal_batch(a, b), doc="Whether two vectors differ",
      **{**cmp, "batch_scalars": False})
    d("=(Object a, Object b) -> Boolean", scalar=_equal, check_args=_compatible_args, doc="Equality", **cmp)
    d("!=(Object a, Object b) -> Boolean", scalar=lambda a, b: a is not None and b is not None and not _equal(a, b),
      check_args=_compatible_args, doc="Inequality", **cmp)
    for symbol, f, npf in (("<", operator.lt, np.less), ("<=", operator.le, np.less_equal),
                           (">", operator.gt, np.greater), (">=", operator.ge, np.greater_equal)):
        d(f"{symbol}(Number a, Number b) -> Boolean", scalar=_order(f), batch=_cmp_batch(npf),
          doc=f"Ordering {symbol}", **cmp)
        d(f"{symbol}(Charstring a, Charstring b) -> Boolean", scalar=_order(f), doc=f"Ordering {symbol}", **cmp)
        d(f"{symbol}(Time a, Time b) -> Boolean", scalar=_order(f), doc=f"Ordering {symbol}", **cmp)
        d(f"{symbol}(Object a, Object b) -> Boolean", scalar=_order(f), check_args=_compatible_args,
          doc=f"Ordering {symbol}", **cmp)

    def member_check(binder, args):
        return binder.lattice.compatible(args[0].type, args[1].type.element)

    d("in(Object x, Bag of Object b) -> Boolean", scalar=_in, check_args=member_check,
      doc="Whether x is an element of a bag", **{**cmp, "batch_scalars": False})
    d("in(Object x, Vector of Object v) -> Boolean", scalar=_in, check_args=member_check,
      doc="Whether x is an element of a vector", **{**cmp, "batch_scalars": False})
    d("in_list(Object x, Object items...) -> Boolean", scalar=_in_list, batch=_in_list_batch,
      doc="x in (a, b, …)", **cmp)
    d("between(Object x, Object low, Object high) -> Boolean", scalar=_between,
      check_args=lambda b, a: all(b.lattice.compatible(a[0].type, x.type) for x in a[1:]),
      doc="low <= x <= high", **cmp)
    d("like(Charstring text, Charstring pattern) -> Boolean", scalar=_like,
      doc="SQL pattern match: % any characters, _ one character", **cmp)
    d("like(Object text, Charstring pattern) -> Boolean", scalar=_like, doc="SQL pattern match", **cmp)
    d("is_null(Object x) -> Boolean", scalar=lambda x: x is None,
      batch=lambda x: np.zeros(len(x), dtype=bool), doc="Whether x is null", **cmp)
    d("coalesce(Object values...) -> Object", scalar=_coalesce, null_propagating=False,
      result_type=lambda t, a: next((x for x in t if x != NULL), OBJECT), doc="The first value that is not null",
      topic="general")

    d("index(Vector of T v, Integer i) -> T", scalar=_index, batch=_index_batch, topic="vector",
      doc="The i-th element, counting from 1")
    d("index(Record r, Charstring key) -> Object", scalar=_index, topic="general", doc="A field of a record")
    d("index(Object v, Object i) -> Object", scalar=_index, check_args=_only_when_unknown, topic="vector",
      doc="An element by position (vectors, from 1) or key (records)")
    d("slice(Vector of T v, Integer first, Integer last) -> Vector of T", scalar=_slice, topic="vector",
      doc="Elements first..last, both included, counting from 1")
    d("vector(T items...) -> Vector of T", scalar=_vector, batch=_vector_batch, topic="vector", sized=True,
      doc="A vector of the given elements")
    d("record(Object values...) -> Record", scalar=_record, null_propagating=False, topic="general",
      doc="A record of the given fields")
    d("cast(Object x) -> Object", scalar=_cast, sized=True, topic="general", doc="cast(x as Type): convert a value")
