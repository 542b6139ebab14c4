"""Aggregates over bags and over the rows of a group.

Each skips nulls; over vector rows each works elementwise. Each but median also has its split
for fleets: a partial aggregate computed on every edge and a merge on the federation
(avg → sum, count; stdev → n, mean, M2 by Chan's parallel formula).

The same split streams an aggregate through a lazy bag (`count(iota(1, 1000000000000))`, a
subquery's bag): a partial per part, merged as they come, so the bag is never held and the
statement's cancellation and time limit are noticed between parts. Median needs every value: it
holds the bag, within the statement's memory budget.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import QueryRuntimeError
from ..registry import AGGREGATE, AggregateSplit, Library
from ..streams import LazyBag, to_column
from ..types import INTEGER, REAL, Type, vector_of
from ..values import Bag, as_numeric_array
from .vector import check_int_sums


def values_of(bag):
    """The non-null values of a bag or column, as a numpy array when numeric."""
    column = to_column(bag)
    if isinstance(column, np.ndarray):
        if column.dtype == object:
            column = [v for v in column.tolist() if v is not None]
        else:
            return column
    kept = [v for v in column if v is not None]
    converted = as_numeric_array(kept)
    return converted if converted is not None else kept


def _numeric(values, name):
    if isinstance(values, np.ndarray):
        return values
    if not values:
        return np.empty(0)
    raise QueryRuntimeError(f"{name} needs numbers, not {values[0]!r}")


def _py(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def agg_count(bag):
    if isinstance(bag, Bag):   # a held bag (a session variable): counted without converting it
        return len(bag.items) - sum(v is None for v in bag.items)
    return len(values_of(bag))


def agg_sum(bag):
    values = _numeric(values_of(bag), "sum")
    if len(values) == 0:
        return 0
    check_int_sums(values, 0)
    return _py(values.sum(axis=0))


def agg_mean(bag):
    values = _numeric(values_of(bag), "avg")
    if len(values) == 0:
        return None
    return _py(values.mean(axis=0))


def _minmax(fn, name):
    def run(bag):
        values = values_of(bag)
        if len(values) == 0:
            return None
        if isinstance(values, np.ndarray):
            return _py(fn(values, axis=0))
        try:
            return (min if fn is np.min else max)(values)
        except TypeError:
            raise QueryRuntimeError(f"{name} cannot order these values") from None
    return run


def agg_stdev(bag):
    values = _numeric(values_of(bag), "stdev")
    if len(values) < 2:
        return None
    return _py(values.std(axis=0, ddof=1))


def agg_var(bag):
    values = _numeric(values_of(bag), "var")
    if len(values) < 2:
        return None
    return _py(values.var(axis=0, ddof=1))


def agg_median(bag):
    values = _numeric(values_of(bag), "median")
    if len(values) == 0:
        return None
    return _py(np.median(values, axis=0))


# --- splits for fleets --------------------------------------------------------------------------
def _add(a, b):
    return tuple(x + y for x, y in zip(a, b))


def _moments(bag):
    values = _numeric(values_of(bag), "stdev").astype(np.float64)
    n = len(values)
    if n == 0:
        return (0, 0.0, 0.0)
    mean = values.mean(axis=0)
    return (n, _py(mean), _py(((values - mean) ** 2).sum(axis=0)))


def _merge_moments(a, b):
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    if n == 0:
        return (0, 0.0, 0.0)
    delta = np.asarray(mean_b) - np.asarray(mean_a)
    mean = np.asarray(mean_a) + delta * (n_b / n)
    m2 = np.asarray(m2_a) + np.asarray(m2_b) + delta * delta * (n_a * n_b / n)
    return (n, _py(mean) if np.ndim(mean) == 0 else mean, _py(m2) if np.ndim(m2) == 0 else m2)


def _final_stdev(parts):
    n, _, m2 = parts
    return None if n < 2 else _py(np.sqrt(np.asarray(m2) / (n - 1)))


def _final_var(parts):
    n, _, m2 = parts
    return None if n < 2 else _py(np.asarray(m2) / (n - 1))


def _merge_extreme(pick):
    def merge(a, b):
        if a[0] is None:
            return b
        if b[0] is None:
            return a
        return (pick(a[0], b[0]),)
    return merge


def _pick(np_fn, py_fn):
    def pick(x, y):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            return np_fn(x, y)
        return py_fn(x, y)
    return pick


def agg_m2(bag):
    """The sum of squared deviations from the mean: stdev's and var's partial across edges."""
    return _moments(bag)[2] if len(values_of(bag)) else None


SPLITS = {
    "count": AggregateSplit(("count",), lambda bag: (agg_count(bag),), _add, lambda p: p[0], ("count",)),
    "sum": AggregateSplit(("sum",), lambda bag: (agg_sum(bag),), _add, lambda p: p[0], ("sum",)),
    "avg": AggregateSplit(("sum", "count"), lambda bag: (agg_sum(bag), agg_count(bag)), _add,
                          lambda p: None if p[1] == 0 else _py(np.asarray(p[0]) / p[1]), ("sum", "count")),
    "min": AggregateSplit(("min",), lambda bag: (_minmax(np.min, "min")(bag),), _merge_extreme(_pick(np.minimum, min)),
                          lambda p: p[0], ("min",)),
    "max": AggregateSplit(("max",), lambda bag: (_minmax(np.max, "max")(bag),), _merge_extreme(_pick(np.maximum, max)),
                          lambda p: p[0], ("max",)),
    "stdev": AggregateSplit(("n", "mean", "M2"), _moments, _merge_moments, _final_stdev, ("count", "avg", "m2")),
    "var": AggregateSplit(("n", "mean", "M2"), _moments, _merge_moments, _final_var, ("count", "avg", "m2")),
}
SPLITS["mean"] = SPLITS["avg"]
_M2 = replace(SPLITS["stdev"], final=lambda parts: parts[2] if parts[0] else None)


def _streaming(split: AggregateSplit, held, check_total=False):
    """The aggregate over a lazy bag a part at a time (its split's partial per part, merged); over
    anything else `held`, as before."""
    def run(bag):
        if not isinstance(bag, LazyBag) or bag.held:
            return held(bag)
        result = split.merged(split.partial(part) for part in bag.parts())
        if check_total and isinstance(result, int) and not -2 ** 63 <= result < 2 ** 63:
            raise QueryRuntimeError("integer overflow: a sum does not fit in 64 bits")
        return result
    return run


def _element_result(default: Type):
    def result(types, args) -> Type:
        element = types[0].element if types and (types[0].is_bag or types[0].is_vector) else types[0]
        if element.is_vector:
            return vector_of(INTEGER if element.element == INTEGER and default == INTEGER else REAL)
        if default == INTEGER:
            return INTEGER if element == INTEGER else REAL
        return default
    return result


def _minmax_result(types, args) -> Type:
    element = types[0].element if types and types[0].is_bag else types[0]
    return element


def register(lib: Library) -> None:
    common = dict(kind=AGGREGATE, topic="aggregate", null_propagating=False)
    lib.define("count(Bag of Object b) -> Integer", scalar=_streaming(SPLITS["count"], agg_count),
               split=SPLITS["count"],
               doc="The number of (non-null) elements", **common)
    lib.define("sum(Bag of Object b) -> Number", scalar=_streaming(SPLITS["sum"], agg_sum, True), split=SPLITS["sum"],
               result_type=_element_result(INTEGER), doc="The sum of the elements (0 for none)", **common)
    for name in ("avg", "mean"):
        lib.define(f"{name}(Bag of Object b) -> Real", scalar=_streaming(SPLITS[name], agg_mean), split=SPLITS[name],
                   result_type=_element_result(REAL), doc="The mean of the elements", **common)
    lib.define("min(Bag of Object b) -> Object", scalar=_streaming(SPLITS["min"], _minmax(np.min, "min")),
               split=SPLITS["min"],
               result_type=_minmax_result, doc="The smallest element", **common)
    lib.define("max(Bag of Object b) -> Object", scalar=_streaming(SPLITS["max"], _minmax(np.max, "max")),
               split=SPLITS["max"],
               result_type=_minmax_result, doc="The largest element", **common)
    lib.define("stdev(Bag of Object b) -> Real", scalar=_streaming(SPLITS["stdev"], agg_stdev), split=SPLITS["stdev"],
               result_type=_element_result(REAL), doc="The sample standard deviation (n - 1)", **common)
    lib.define("var(Bag of Object b) -> Real", scalar=_streaming(SPLITS["var"], agg_var), split=SPLITS["var"],
               result_type=_element_result(REAL), doc="The sample variance (n - 1)", **common)
    lib.define("median(Bag of Object b) -> Real", scalar=agg_median, result_type=_element_result(REAL),
               doc="The median (no partial form: computed where all the data is)", **common)
    lib.define("m2(Bag of Object b) -> Real", scalar=_streaming(_M2, agg_m2), result_type=_element_result(REAL),
               doc="The sum of squared deviations from the mean (the partial of stdev and var across edges)",
               **common)
