"""Window–aggregate fusion: when a window variable is only ever reduced by mean, avg, sum, min,
max or rms, compute those per window straight from the batch instead of making windows.

    select stream of mean(w) from Vector of Real w
     where w in winagg(signal_stream('s'), 100, 100) and mean(w) > 0.1
    ─▶ Generate $w1 in window_aggregate(mean) over signal_stream('s') size 100 stride 100
       Filter ($w1 > 0.1); Project $w1

Tumbling windows (stride = size) reduce a reshaped view of the batch; sliding windows compute
sums, means and root mean squares from running sums (O(n) however much windows overlap) and
min/max over a strided view. Windows still arrive as soon as they are complete, and a reading
arriving alone takes the scalar path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import logical as L
from ..batch import IDLE, Batch
from ..bound import TCall, TConst, TExpr, TVar
from ..errors import QueryRuntimeError
from ..library.streams import window_rest
from ..physical.expressions import Compiled
from ..streams import StreamValue
from ..types import INTEGER, REAL, Type
from .tree import map_expressions, nodes_of, walk_all

NAME = "window_fusion"
FUSABLE = ("mean", "avg", "sum", "min", "max", "rms")


@dataclass(frozen=True, eq=False)
class TWindowAggregates(TExpr):
    """Per window of `source`, the values of several aggregates (one column each)."""

    source: TExpr = None
    size: int = 0
    stride: int = 0
    aggregates: tuple[str, ...] = ()
    check: str | None = None  # the variable whose declared numeric type the values must fit

    def children(self):
        return (self.source,)

    def describe(self) -> str:
        from ..explain import expr_text
        return (f"window_aggregate({', '.join(self.aggregates)}) over {expr_text(self.source)} "
                f"size {self.size} stride {self.stride}")

    def compile(self, compiler) -> Compiled:
        source = compiler.compile(self.source)
        size, stride, aggregates, check = self.size, self.stride, self.aggregates, self.check
        ctx = compiler.ctx

        def make(stream):
            return StreamValue(lambda: fused_windows(stream.open(), size, stride, aggregates, check, ctx),
                               f"window_aggregate({stream.label})")

        return Compiled(lambda chunk: [make(s) for s in source.batch(chunk)],
                        lambda env: make(source.row(env)), self.type)


def _numeric(values, check: str | None) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf" and values.ndim == 1:
        return values
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 1:
        raise QueryRuntimeError(f"variable {check or 'w'} must be a vector of numbers, but its window holds "
                                f"{values[0]!r}" if len(values) else "a window of no numbers")
    return array


def _reduce_tumbling(view: np.ndarray, name: str) -> np.ndarray:
    if name in ("mean", "avg"):
        return view.mean(axis=1)
    if name == "sum":
        return view.sum(axis=1)
    if name == "min":
        return view.min(axis=1)
    if name == "max":
        return view.max(axis=1)
    # rms: a row-wise dot product squares and sums without a temporary the size of the data
    return np.sqrt(np.einsum("ij,ij->i", view, view, dtype=np.float64) / view.shape[1])


def _reduce_sliding(data: np.ndarray, size: int, stride: int, count: int, names) -> np.ndarray:
    starts = np.arange(count) * stride
    out = np.empty((count, len(names)))
    sums = squares = view = None
    for j, name in enumerate(names):
        if name in ("mean", "avg", "sum"):
            if sums is None:
                running = np.concatenate(([0.0], np.cumsum(data, dtype=np.float64)))
                sums = running[starts + size] - running[starts]
            out[:, j] = sums / size if name != "sum" else sums
        elif name == "rms":
            if squares is None:
                running = np.concatenate(([0.0], np.cumsum(np.square(data, dtype=np.float64))))
                squares = running[starts + size] - running[starts]
            out[:, j] = np.sqrt(np.maximum(squares, 0.0) / size)
        else:
            if view is None:
                view = sliding_window_view(data, size)[::stride][:count]
            out[:, j] = view.min(axis=1) if name == "min" else view.max(axis=1)
    return out


def _reduce_one(window: np.ndarray, names) -> list:
    out = []
    for name in names:
        if name in ("mean", "avg"):
            out.append(float(window.mean()))
        elif name == "sum":
            value = window.sum()
            out.append(value.item())
        elif name == "min":
            out.append(window.min().item())
        elif name == "max":
            out.append(window.max().item())
        else:
            out.append(math.sqrt(float(np.dot(window, window)) / len(window)))
    return out


def fused_windows(items, size: int, stride: int, names: tuple[str, ...], check: str | None, ctx=None):
    """Stream items of per-window aggregate rows: a (windows × aggregates) array per batch. The
    readings waiting for their window are accounted in `ctx` as the query's state."""
    pending: np.ndarray | None = None
    singles: list = []
    skip = 0
    held = 0
    hold = ctx.hold if ctx is not None else None
    try:
        for item in items:
            if item is IDLE:
                yield item
                continue
            if type(item) is not Batch:  # one reading: the scalar path
                if skip:
                    skip -= 1
                    continue
                if pending is not None and len(pending):
                    singles = pending.tolist()
                    pending = None
                singles.append(item)
                if hold is not None and not len(singles) & 1023:   # every 1024 readings: cheap
                    previous, held = held, 16 * len(singles)
                    hold(held - previous)
                if len(singles) >= size:
                    window = _numeric(singles[:size], check)
                    yield _reduce_one(window, names)
                    if stride < size:
                        del singles[:stride]
                    else:
                        singles = []
                        skip = stride - size
                continue
            values = _numeric(item.values, check)
            if singles:
                values = np.concatenate([_numeric(singles, check), values])
                singles = []
            data = values if pending is None or not len(pending) else np.concatenate([pending, values])
            if skip:
                if skip >= len(data):
                    skip -= len(data)
                    pending = None
                    continue
                data = data[skip:]
                skip = 0
            n = len(data)
            if n < size:
                pending = data
                if hold is not None:
                    previous, held = held, data.nbytes
                    hold(held - previous)
                continue
            count = (n - size) // stride + 1
            if stride == size:
                view = data[:count * size].reshape(count, size)
                block = np.empty((count, len(names)))
                for j, name in enumerate(names):
                    block[:, j] = _reduce_tumbling(view, name)
            else:
                block = _reduce_sliding(data, size, stride, count, names)
            yield Batch(block)
            pending, skip = window_rest(data, count, stride)
            if hold is not None:
                previous, held = held, (0 if pending is None else pending.nbytes)
                hold(held - previous)
    finally:
        if hold is not None:
            hold(-held)
        close = getattr(items, "close", None)
        if close:
            close()


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    for index, node in enumerate(nodes):
        if not _window_generator(node):
            continue
        target = node.targets[0]
        calls, other_uses = _uses_of(nodes[index + 1:], target)
        if other_uses or not calls:
            continue
        names = []
        for call in calls:
            name = "mean" if call.fn.name == "avg" else call.fn.name
            if name not in names:
                names.append(name)
        source, size, stride = node.source.args
        element = node.types[0].element if node.types else REAL
        hidden = {name: ctx.name("w") for name in names}
        types = tuple(_result_type(name, element) for name in names)
        check = target.split("~")[0] if any(n is not None for n in node.narrow) else None
        node.source = TWindowAggregates(node.source.type, source, size.value, stride.value, tuple(names), check,
                                        span=node.source.span)
        node.targets = tuple(hidden[name] for name in names)
        node.mode = "columns"
        node.narrow = (None,) * len(names)
        node.types = types
        replacements = {}
        for call in calls:
            name = "mean" if call.fn.name == "avg" else call.fn.name
            replacements[call] = TVar(call.type, hidden[name], span=call.span)

        def swap(expr: TExpr) -> TExpr:
            from .tree import substitute
            return substitute(expr, replacements)

        for later in nodes[index + 1:]:
            map_expressions(later, swap)
        ctx.fire(NAME, f"{', '.join(names)} of {target} computed per window without making windows "
                       f"(size {size.value}, stride {stride.value})")
    return plan


def _window_generator(node) -> bool:
    if not (isinstance(node, L.Generate) and node.mode == "each" and len(node.targets) == 1):
        return False
    source = node.source
    if not (isinstance(source, TCall) and source.fn.name == "winagg" and len(source.args) == 3):
        return False
    _, size, stride = source.args
    if not (isinstance(size, TConst) and isinstance(stride, TConst)):
        return False
    if not (isinstance(size.value, int) and isinstance(stride.value, int) and size.value >= 1 and stride.value >= 1):
        return False
    declared = node.types[0] if node.types else source.type.element
    element = declared.element if declared.is_vector else None
    # Integer windows keep their exact integer sums and extremes unfused.
    return element is not None and element.name in ("Real", "Number", "Object")


def _uses_of(nodes, target: str):
    """The fusable calls f(target) and whether target is used in any other way."""
    calls = []
    other = False
    for node in nodes:
        for expr in node.expressions():
            if expr is None:
                continue
            parents = {}
            for sub in walk_all(expr):
                for child in sub.children():
                    parents.setdefault(id(child), sub)
            for sub in walk_all(expr):
                if isinstance(sub, TVar) and sub.name == target:
                    parent = parents.get(id(sub))
                    if (isinstance(parent, TCall) and parent.fn.name in FUSABLE and len(parent.args) == 1
                            and parent.fn.kind == "scalar" and parent.lift is None):
                        calls.append(parent)
                    else:
                        other = True
        if getattr(node, "used_variables", None) and target in node.used_variables():
            other = True
    return calls, other


def _result_type(name: str, element: Type) -> Type:
    if name in ("sum", "min", "max") and element == INTEGER:
        return INTEGER
    return REAL
