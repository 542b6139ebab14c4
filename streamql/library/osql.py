"""Functions SA Engine's OSQL has and scripts written for it call: `in(bag)`, `some`, `notany`,
`range(n)`, `count` of a vector, `ln`, `euclid`, `minkowski`, `max(a, b)`, `min(a, b)`,
`reduce(v, f)`, `ts(v)`, `streamof`, `print`, `sleep`, `doc`, `apropos`, `upper`, `lower`,
`substring`, `sort`, `unique`, `vavg`, and the run-time type test `isa` that late binding uses."""
from __future__ import annotations

import math
import re
import sys

import numpy as np

from ..errors import QueryRuntimeError
from ..physical.running import RunningMax
from ..physical.stateful import run_logic
from ..registry import SOURCE, STREAM, Library
from ..streams import LazyBag, StreamValue
from ..types import INTEGER, REAL, type_of_value
from ..values import Bag, FunctionRef, Obj, Time, Timeval, format_value
from .sources import iota, vector_stream
from .vector import _array, _typed_array as _typed, call_by_name

_COMMENT = re.compile(r"/\*(.*?)\*/", re.S)


def _items(bag) -> list:
    if isinstance(bag, LazyBag):
        column = bag.column()
        return column.tolist() if isinstance(column, np.ndarray) else list(column)
    if isinstance(bag, np.ndarray):
        return bag.tolist()
    return list(bag) if bag is not None else []


def _some(bag) -> bool:
    if isinstance(bag, LazyBag):
        for batch in bag.open():
            if len(batch):
                return True
        return False
    return bool(_items(bag))


def _isa(ctx, value, type_name: str) -> bool:
    if isinstance(value, Obj):
        return type_name.lower() in (t.lower() for t in ctx.engine.store.lattice.ancestors(value.type_name))
    return type_name.lower() in (t.lower() for t in ctx.engine.store.lattice.ancestors(type_of_value(value).name))


def call_any(ctx, function, values: list):
    """Call a function named at run time (a string or #'name'), user or library."""
    return call_by_name(ctx, function.name if isinstance(function, FunctionRef) else str(function), values)


def _rmax(ctx, stream: StreamValue) -> StreamValue:
    """The running maximum of a stream of numbers: each element, the largest so far."""
    return StreamValue(lambda: run_logic(stream.open(), RunningMax(), ctx), f"rmax({stream.label})")


def _reduce(ctx, vector, function):
    items = _items(vector) if not isinstance(vector, np.ndarray) or vector.ndim != 1 else vector.tolist()
    if not items:
        return None
    acc = items[0]
    for i, item in enumerate(items[1:]):
        if not i & 1023:
            ctx.check()
        acc = call_any(ctx, function, [acc, item])
    return acc


def _ts_now(ctx, value):
    return Timeval(Time(ctx.clock.now()), value)


def _print(value):
    print(format_value(value) if not isinstance(value, str) else value, file=sys.stdout, flush=True)
    return value


def _sleep(ctx, seconds):
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise QueryRuntimeError(f"sleep needs a number of seconds, not {seconds}")
    left = float(seconds)
    while left > 0:   # in slices, so that cancellation and the time limit reach a long sleep
        ctx.check()
        step = min(left, 0.1)
        ctx.clock.sleep(step)
        left -= step
    ctx.check()
    return seconds


def _doc(ctx, name: str) -> str | None:
    texts = []
    for function in ctx.engine.store.user_functions(name):
        source = getattr(function, "source", "") or ""
        found = _COMMENT.search(source)
        texts.append(f"{function.signature}" + (f"\n  {found.group(1).strip()}" if found else ""))
    for overload in ctx.engine.library.overloads(name):
        texts.append(f"{overload.signature}" + (f"\n  {overload.doc}" if overload.doc else ""))
    return "\n".join(texts) if texts else None


def _apropos(ctx, part: str) -> Bag:
    part = part.lower()
    names = set(n for n in ctx.engine.library.names() if part in n and n.isidentifier())
    names |= set(n for n in ctx.engine.store.functions if part in n)
    return Bag(sorted(names))


def _substring(s: str, start: int, end: int) -> str:
    """Characters start..end, counted from 0, both included (as SA Engine)."""
    if start < 0 or end < start - 1 or end >= len(s):
        raise QueryRuntimeError(f"substring({start}, {end}) is outside a string of {len(s)} characters")
    return s[start:end + 1]


def _minkowski(a, b, p):
    d = np.abs(_array(a) - _array(b))
    if p == math.inf or p > 1e300:
        return float(np.max(d))
    return float(np.sum(d ** p) ** (1.0 / p))


def _vavg(bag):
    rows = [_array(v) for v in _items(bag)]
    return np.mean(np.stack(rows), axis=0) if rows else None


def _streamof(bag):
    items = _items(bag)
    return vector_stream(items)


def _single_value(bag, name):
    """The value of a function declared with one result (`-> Integer as select …`): none (no
    row), or its one value; more than one is an error that says to declare a bag."""
    items = _items(bag)
    if not items:
        return None
    if len(items) > 1:
        raise QueryRuntimeError(f"{name} is declared to return one value but gave {len(items)}: declare its "
                                f"result Bag of …")
    return items[0]


def _count_vector(v):
    return int(v.shape[0]) if isinstance(v, np.ndarray) else len(v)


def _text(x) -> str:
    return x if isinstance(x, str) else format_value(x)


def _roundto_any(value, digits):
    """roundto over a vector of anything: numbers rounded, other elements kept (as SA Engine)."""
    if isinstance(value, (list, tuple)):
        return [_roundto_any(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        return np.round(value.astype(np.float64), digits) if value.dtype != object else \
            [_roundto_any(v, digits) for v in value.tolist()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return round(float(value), digits)
    return value


def _matrix(op):
    def run(a, b):
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if x.shape != y.shape:
            raise QueryRuntimeError(f"elementwise {op.__name__} of matrices of shapes {x.shape} and {y.shape}")
        with np.errstate(all="ignore"):
            return op(x, y)
    return run


def _loads_code_alone(name):
    def refuse(*_):
        raise QueryRuntimeError(f"{name} runs files as a statement of its own ({name}(…);) in a script or "
                                "the shell: not inside a query, and never on an edge or for a remote client")
    return refuse


def _models_folder(ctx, name):
    return str(ctx.engine.model_folder(name)) + "/"


def _matrix_row(m, i):
    rows = m if isinstance(m, np.ndarray) else list(m)
    if not 1 <= i <= len(rows):
        raise QueryRuntimeError(f"row {i} is out of range 1..{len(rows)}")
    return rows[i - 1]


def _matrix_column(m, j):
    a = np.asarray(m) if not isinstance(m, np.ndarray) else m
    if a.ndim != 2 or not 1 <= j <= a.shape[1]:
        raise QueryRuntimeError(f"column {j} is out of range of a matrix of shape {a.shape}")
    column = a[:, j - 1]
    return column if column.dtype != object else column.tolist()


def _pair_result(types, args):
    return INTEGER if all(t == INTEGER for t in types) else REAL


def register(lib: Library) -> None:
    d = lambda sig, **kw: lib.define(sig, topic="osql", **kw)  # noqa: E731
    d("in(Bag of T b) -> Bag of T", scalar=lambda b: b, doc="The elements of a bag (OSQL's in(b))")
    d("in(Vector of T v) -> Bag of T", scalar=lambda v: Bag(_items(v)), doc="The elements of a vector, as a bag")
    d("some(Bag b) -> Boolean", scalar=_some, null_propagating=False, doc="Whether a bag has any element")
    d("notany(Bag b) -> Boolean", scalar=lambda b: not _some(b), null_propagating=False,
      doc="Whether a bag is empty (OSQL's negation)")
    d("range(Integer n) -> Bag of Integer", scalar=lambda ctx, n: iota(ctx, 1, n), needs_context=True,
      kind=SOURCE, volatile=True, doc="The integers 1..n (a bag, as SA Engine's range(n))")
    d("count(Vector v) -> Integer", scalar=_count_vector, doc="The number of elements of a vector")
    d("ln(Number x) -> Real", scalar=lambda x: math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan),
      doc="The natural logarithm")
    d("euclid(Vector of Number a, Vector of Number b) -> Real",
      scalar=lambda a, b: float(np.linalg.norm(_array(a) - _array(b))), doc="The Euclidean distance")
    d("minkowski(Vector of Number a, Vector of Number b, Number p) -> Real", scalar=_minkowski,
      doc="The Minkowski distance of order p (a very large p: Chebyshev)")
    d("max(Number a, Number b) -> Number", scalar=lambda a, b: max(a, b), result_type=_pair_result,
      doc="The larger of two numbers")
    d("min(Number a, Number b) -> Number", scalar=lambda a, b: min(a, b), result_type=_pair_result,
      doc="The smaller of two numbers")
    d("reduce(Vector v, Object f) -> Object", scalar=_reduce, needs_context=True,
      doc="Fold a two-argument function (a name or #'name') over a vector, from its first element")
    d("ts(T v) -> Timeval of T", scalar=_ts_now, needs_context=True, volatile=True,
      doc="The value stamped with the time now")
    d("streamof(Bag of T b) -> Stream of T", scalar=_streamof, doc="The elements of a bag as a stream")
    d("print(T x) -> T", scalar=_print, volatile=True, null_propagating=False,
      doc="Print a value on the engine's standard output; the value itself")
    d("sleep(Number seconds) -> Number", scalar=_sleep, needs_context=True, volatile=True,
      doc="Wait this many seconds (cancellation and time limits still reach it)")
    d("doc(Charstring name) -> Charstring", scalar=_doc, needs_context=True, volatile=True,
      doc="The signatures and documentation of the functions with this name")
    d("apropos(Charstring part) -> Bag of Charstring", scalar=_apropos, needs_context=True, volatile=True,
      doc="The names of the functions whose names contain part")
    d("upper(Charstring s) -> Charstring", scalar=str.upper, doc="The string in upper case")
    d("lower(Charstring s) -> Charstring", scalar=str.lower, doc="The string in lower case")
    d("substring(Charstring s, Integer start, Integer end) -> Charstring", scalar=_substring,
      doc="Characters start..end of s, counted from 0, both included (as SA Engine)")
    d("sort(Vector v) -> Vector", scalar=lambda v: np.sort(v) if isinstance(v, np.ndarray) else sorted(v),
      result_type=lambda t, a: t[0], doc="The elements in ascending order")
    d("unique(Vector v) -> Vector", scalar=lambda v: list(dict.fromkeys(_items(v))) if not isinstance(
        v, np.ndarray) else np.unique(v), result_type=lambda t, a: t[0], doc="The distinct elements, sorted for numbers")
    d("vavg(Bag of Vector of Number b) -> Vector of Real", scalar=_vavg, doc="The elementwise mean of vectors")
    d("single_value(Bag of T b, Charstring function) -> T", scalar=_single_value, null_propagating=False,
      volatile=True,
      doc="The one value of a bag (none: null); what a function declared with one result returns")
    d("roundto(Vector v, Integer digits) -> Vector", scalar=_roundto_any, result_type=lambda t, a: t[0],
      doc="Each number in a vector (nested vectors too) rounded to digits; other elements kept")
    d("ts(Timeval tv, T v) -> Timeval of T", scalar=lambda tv, v: Timeval(tv.time, v),
      doc="v stamped with the time of tv (re-stamping, as SA Engine's ts(tv, v))")
    d("matrix_row(Vector of Vector of T m, Integer i) -> Vector of T", scalar=_matrix_row,
      doc="Row i (from 1) of a matrix: what m[i, *] means")
    d("matrix_column(Vector of Vector of T m, Integer j) -> Vector of T", scalar=_matrix_column,
      doc="Column j (from 1) of a matrix: what m[*, j] means")
    d("array(Charstring kind, Vector of Vector of Number m) -> Vector of Vector of Real",
      scalar=lambda kind, m: _typed(kind, m), doc="A typed numeric matrix: array('f32', [[1, 2], [3, 4]])")
    d("rmax(Stream of Number s) -> Stream of Number", scalar=_rmax, needs_context=True, kind=STREAM, lifts=False,
      result_type=lambda t, a: t[0], doc="The running maximum of a stream: each element, the largest so far")
    d("call(Object f, Vector args) -> Object", scalar=lambda ctx, f, args: call_any(ctx, f, list(args)),
      needs_context=True, doc="Call a function (a name or #'name', user or library) on a vector of arguments")
    d("streamof(T x) -> T", scalar=lambda x: x,
      doc="One value as itself: SA Engine's select streamof(x) … of a continuous query is its stream of x")
    d("rnow() -> Real", scalar=lambda ctx: ctx.clock.now(), needs_context=True, volatile=True,
      doc="The time now in epoch seconds (a Real)")
    d("this_peerid() -> Charstring", scalar=lambda ctx: ctx.engine.name, needs_context=True,
      doc="The name of the engine the statement runs on")
    code = dict(topic="models", volatile=True, null_propagating=False)
    lib.define("load_osql(Charstring path) -> Charstring", scalar=_loads_code_alone("load_osql"), **code,
               doc="Run the statements of an OSQL file (a statement of its own; the path follows the files rule)")
    lib.define("models:load(Charstring name) -> Charstring", scalar=_loads_code_alone("models:load"), **code,
               doc="Run the master.osql of a model in the models folder (a statement of its own)")
    lib.define("system_models:load(Charstring name) -> Charstring", scalar=_loads_code_alone("system_models:load"),
               **code, doc="SA Engine's system models: not part of StreamQL (an error that says so)")
    lib.define("models:folder(Charstring name) -> Charstring", scalar=_models_folder, needs_context=True,
               topic="models", doc="The directory of a model in the models folder, ending with /")
    op = dict(topic="operator", batch_scalars=True)
    for symbol, npf in (("+", np.add), ("-", np.subtract), (".*", np.multiply), ("./", np.true_divide),
                        (".^", np.power)):
        lib.define(f"{symbol}(Vector of Vector of Number a, Vector of Vector of Number b) -> Vector of Vector of Real",
                   scalar=_matrix(npf), doc=f"Elementwise {symbol} of two matrices of one shape", **op)
    lib.define("+(Charstring a, Number b) -> Charstring", scalar=lambda a, b: a + _text(b),
               doc="Joins a string and a number's printed form (as OSQL)", **op)
    lib.define("+(Number a, Charstring b) -> Charstring", scalar=lambda a, b: _text(a) + b,
               doc="Joins a number's printed form and a string (as OSQL)", **op)
    d("isa(Object x, Charstring type) -> Boolean", scalar=_isa, needs_context=True, null_propagating=False,
      doc="Whether x is of the type (or a subtype): the run-time test of late binding")
