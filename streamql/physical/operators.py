"""The running operators: the physical planner turns each plan node into a generator stage
over items, choosing the kernels that run it.

Items are `Chunk`s (many rows, columnar), plain dicts (one row, the scalar fast path) or `IDLE`
ticks from live sources, which every stage passes on so that cancellation and time limits are
noticed while waiting. Stateless stages are vectorized over chunks; blocking stages (aggregate,
sort) collect first. The stages that bind variables (Generate, Window, Scan) are in
generators.py. Nested queries come planned; `expression_compiler` runs each once built.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from .. import logical as L
from ..batch import IDLE, Batch
from ..errors import QueryRuntimeError
from ..streams import approximate_bytes
from ..values import Time, hashable, make_vector
from .chunk import Chunk, column_values, concat_chunks, make_column
from .compiled import as_mask, full_column
from .expressions import ExprCompiler
from .generators import build_generate, build_scan, build_window, chunk_with
from .remote import build_merge_aggregate, build_remote
from .stateful import Collect, Distinct, Limit, run_logic

Runner = Callable[[dict], Iterator[Any]]


class PhysicalPlan:
    """A logical plan made runnable for one execution context. Nested plans share `compiler`
    (and so each is built once)."""

    def __init__(self, plan: L.LogicalPlan, ctx, compiler: ExprCompiler | None = None):
        self.plan = plan
        self.ctx = ctx
        self.compiler = compiler if compiler is not None else expression_compiler(ctx)
        self.stages = [self._build(node) for node in plan.root.chain()]

    def run(self, outer: dict | None = None) -> Iterator[Any]:
        stream: Iterator[Any] = iter(())
        for stage in self.stages:
            stream = stage(stream, outer or {})
        return stream

    # ------------------------------------------------------------------------------ build
    def _build(self, node: L.PlanNode):
        return getattr(self, "_build_" + type(node).__name__)(node)

    def _build_Keep(self, node: L.Keep):
        names = list(node.columns)

        def keep(upstream, outer):
            for item in upstream:
                if type(item) is dict:
                    yield {name: item[name] for name in names}
                elif item is IDLE:
                    yield item
                else:
                    yield Chunk({name: item[name] for name in names}, item.n)
        return keep

    def _build_Unit(self, node: L.Unit):
        def unit(upstream, outer):
            yield dict(outer)
        return unit

    def _build_Generate(self, node: L.Generate):
        return build_generate(node, self.compiler, self.ctx)

    def _build_Window(self, node: L.Window):
        return build_window(node, self.compiler, self.ctx)

    def _build_Scan(self, node: L.Scan):
        return build_scan(node, self.ctx)

    def _build_Let(self, node: L.Let):
        value = self.compiler.compile(node.value)
        name, required = node.name, node.required
        value_row = value.row

        def let(upstream, outer):
            for item in upstream:
                if item is IDLE:
                    yield item
                elif type(item) is dict:
                    result = value_row(item)
                    if required and result is None:
                        continue
                    row = dict(item)
                    row[name] = result
                    yield row
                else:
                    column = full_column(value, item)
                    chunk = item.with_column(name, column)
                    if required and not isinstance(column, np.ndarray):
                        present = np.array([v is not None for v in column], dtype=bool)
                        if not present.all():
                            chunk = chunk.take(present)
                            chunk[name] = make_column(chunk[name])
                    if chunk.n:
                        yield chunk
        return let

    def _build_Filter(self, node: L.Filter):
        predicate = self.compiler.compile(node.predicate)
        if predicate.const:
            keep = bool(predicate.value)

            def constant_filter(upstream, outer):
                for item in upstream:
                    if item is IDLE or keep:
                        yield item
            return constant_filter
        test_row, test_batch = predicate.row, predicate.batch

        def filter_(upstream, outer):
            for item in upstream:
                if type(item) is dict:
                    if test_row(item):
                        yield item
                elif item is IDLE:
                    yield item
                else:
                    mask = as_mask(test_batch(item), item.n)
                    kept = np.count_nonzero(mask)
                    if kept == item.n:
                        yield item
                    elif kept:
                        yield item.take(mask, kept)
        return filter_

    def _build_Aggregate(self, node: L.Aggregate):
        keys = [self.compiler.compile(k) for k in node.keys]
        args = [self.compiler.compile(a.arg) if a.arg is not None else None for a in node.aggregates]
        functions = [a.fn for a in node.aggregates]
        distinct = [a.distinct for a in node.aggregates]
        ctx = self.ctx

        def aggregate(upstream, outer):
            return run_logic(upstream, Collect(ctx, lambda chunks: grouped(chunks, outer), _as_chunk,
                                               approximate_bytes), ctx)

        def grouped(chunks, outer):
            chunk = concat_chunks(chunks) if chunks else Chunk({}, 0)
            n = chunk.n
            key_columns = [full_column(k, chunk) if n else [] for k in keys]
            group_ids, first_rows, group_count = _factorize(key_columns, n)
            if not keys:
                group_ids, first_rows, group_count = np.zeros(n, dtype=np.intp), np.zeros(1, dtype=np.intp), 1
            if group_count == 0:
                return
            order = np.argsort(group_ids, kind="stable")
            bounds = np.searchsorted(group_ids[order], np.arange(group_count + 1))
            out: dict[str, Any] = {}
            for i, column in enumerate(key_columns):
                if isinstance(column, np.ndarray):
                    out[f"$g{i}"] = column[first_rows]
                else:
                    out[f"$g{i}"] = make_column([column[j] for j in first_rows])
            for i, (fn, arg) in enumerate(zip(functions, args)):
                if arg is None:  # count(*)
                    out[f"$a{i}"] = np.diff(bounds).astype(np.int64)
                    continue
                column = full_column(arg, chunk) if n else []
                results = []
                for g in range(group_count):
                    rows = order[bounds[g]:bounds[g + 1]]
                    if isinstance(column, np.ndarray):
                        part = column[rows]
                    else:
                        part = [column[j] for j in rows]
                    if distinct[i]:
                        part = _distinct_values(part)
                    results.append(fn.scalar(part))
                out[f"$a{i}"] = make_column(results)
            yield Chunk(out, group_count)
        return aggregate

    def _build_Remote(self, node: L.Remote):
        return build_remote(self, node)

    def _build_MergeAggregate(self, node: L.MergeAggregate):
        return build_merge_aggregate(self, node, _collect)

    def _build_Project(self, node: L.Project):
        compiled = [(name, self.compiler.compile(expr)) for name, expr in list(node.items) + list(node.extra)]
        names = [name for name, _ in compiled]
        rows = [c.row for _, c in compiled]
        if len(compiled) == 1:
            only_name, only_row = names[0], rows[0]

            def project_row(env):
                return {only_name: only_row(env)}
        else:
            def project_row(env):
                return {name: row(env) for name, row in zip(names, rows)}

        def project(upstream, outer):
            for item in upstream:
                if type(item) is dict:
                    yield project_row(item)
                elif item is IDLE:
                    yield item
                else:
                    yield Chunk({name: full_column(c, item) for name, c in compiled}, item.n)
        return project

    def _build_Distinct(self, node: L.Distinct):
        columns = node.columns
        ctx = self.ctx
        key_bytes = _SEEN_KEY_BYTES + 16 * len(columns)

        def distinct(upstream, outer):
            return run_logic(upstream, Distinct(columns, key_bytes, ctx), ctx)
        return distinct

    def _build_Sort(self, node: L.Sort):
        keys = node.keys
        ctx = self.ctx

        def sort(upstream, outer):
            return run_logic(upstream, Collect(ctx, ordered, _as_chunk, approximate_bytes), ctx)

        def ordered(chunks):
            if not chunks:
                return
            chunk = concat_chunks(chunks)
            if chunk.n == 0:
                return
            order = np.arange(chunk.n)
            for name, descending in reversed(keys):
                column = chunk[name]
                order = order[_stable_order(_take(column, order), descending)]
            yield chunk.take(order)
        return sort

    def _build_Limit(self, node: L.Limit):
        count_expr = self.compiler.compile(node.count)
        ctx = self.ctx

        def limit(upstream, outer):
            count = count_expr.row(outer)
            if count is None:
                yield from upstream
            else:
                yield from run_logic(upstream, Limit(int(count)), ctx)
        return limit


# ------------------------------------------------------------------------------ subqueries
def expression_compiler(ctx) -> ExprCompiler:
    """An expression compiler for ctx whose nested queries (planned already) run as physical
    plans, each built once and shared by every use."""
    built: dict[int, PhysicalPlan] = {}

    def run_subquery(plan: L.LogicalPlan) -> Runner:
        physical = built.get(id(plan))
        if physical is None:
            physical = built[id(plan)] = PhysicalPlan(plan, ctx, compiler)
        width = len(plan.columns)
        return lambda outer: query_values(physical.run(outer), width, ctx)

    compiler = ExprCompiler(ctx, run_subquery)
    return compiler


def query_values(items, width: int, ctx=None):
    """A query's output items as stream items of its values (several columns → vectors).

    With a context, cancellation and limits are checked per item: a subquery may be collected
    whole (`x in (select …)`, `count(select …)`) far from any other check."""
    names = [f"$c{i}" for i in range(width)]
    check = ctx.check if ctx is not None else None
    for item in items:
        if check is not None:
            check()
        if item is IDLE:
            yield item
        elif type(item) is dict:
            yield item[names[0]] if width == 1 else make_vector([item[n] for n in names])
        elif width == 1:
            yield Batch(item[names[0]])
        else:
            columns = [column_values(item[n]) for n in names]
            yield Batch([make_vector(list(row)) for row in zip(*columns)])


# ------------------------------------------------------------------------------- helpers
_SEEN_KEY_BYTES = 120    # a set entry and its key tuple, about (the values themselves are counted per column)


def _collect(upstream, ctx) -> tuple[list, int]:
    """Every chunk of a blocking operator's input, with the bytes they hold accounted in `ctx`
    (the caller releases them): a merge of fleet partials over an endless stream meets its memory
    limit. What it holds is no operator's state: no checkpoint is taken while it collects."""
    chunks = []
    held = 0
    states = ctx.states
    if states is not None:
        states.opaque += 1
    try:
        for item in upstream:
            ctx.check()  # blocking: notice cancellation and limits while collecting
            if item is IDLE:
                continue
            chunk = item if type(item) is not dict else chunk_with(item, None, None)
            size = approximate_bytes(chunk)
            held += size
            ctx.hold(size)
            chunks.append(chunk)
    except BaseException:
        ctx.hold(-held)
        raise
    finally:
        if states is not None:
            states.opaque -= 1
    return chunks, held


def _as_chunk(row: dict) -> Chunk:
    return chunk_with(row, None, None)


def _distinct_values(part):
    """Each value of a group once (count(distinct x)), in order of first appearance."""
    seen, kept = set(), []
    for value in column_values(part):
        key = hashable(value)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return make_column(kept)


def _take(column, order):
    if isinstance(column, np.ndarray):
        return column[order]
    return [column[i] for i in order]


def _factorize(columns: list, n: int):
    """Group numbers for rows by key columns: (group id per row, first row of each group, count)."""
    if not columns:
        return np.zeros(n, dtype=np.intp), np.zeros(min(n, 1), dtype=np.intp), min(n, 1)
    if n == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp), 0
    if len(columns) == 1 and isinstance(columns[0], np.ndarray) and columns[0].ndim == 1 \
            and columns[0].dtype != object:
        _, first, inverse = np.unique(columns[0], return_index=True, return_inverse=True)
        # keep groups in order of first appearance
        rank = np.argsort(np.argsort(first))
        return rank[inverse].astype(np.intp), np.sort(first), len(first)
    groups: dict = {}
    ids = np.empty(n, dtype=np.intp)
    first = []
    values = [column_values(c) for c in columns]
    for i, row in enumerate(zip(*values)):
        key = tuple(hashable(v) for v in row)
        gid = groups.get(key)
        if gid is None:
            gid = groups[key] = len(groups)
            first.append(i)
        ids[i] = gid
    return ids, np.array(first, dtype=np.intp), len(groups)


def _stable_order(column, descending: bool) -> np.ndarray:
    """A stable sorting permutation; nulls last either way."""
    if isinstance(column, np.ndarray) and column.ndim == 1 and column.dtype.kind in "iufb":
        if descending:
            return np.argsort(-column.astype(np.float64) if column.dtype.kind == "b" else -column, kind="stable") \
                if column.dtype.kind != "u" else np.argsort(column, kind="stable")[::-1]
        return np.argsort(column, kind="stable")
    values = column_values(column)
    present = [i for i, v in enumerate(values) if v is not None]
    missing = [i for i, v in enumerate(values) if v is None]
    try:
        present.sort(key=lambda i: _sort_key(values[i]), reverse=descending)
    except TypeError as exc:
        raise QueryRuntimeError(f"cannot order values of different kinds: {exc}") from None
    if descending:
        # reverse=True is not stable for equal keys; restore first-come order among equals
        present = _stable_desc(present, values)
    return np.array(present + missing, dtype=np.intp)


def _stable_desc(indices, values):
    groups: dict = {}
    order = []
    for i in indices:
        key = hashable(values[i])
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(i)
    out = []
    for key in order:
        out.extend(sorted(groups[key]))
    return out


def _sort_key(value):
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    if isinstance(value, Time):
        return value.seconds
    return value
