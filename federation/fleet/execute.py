"""Running fleet plans: selection, fragments on the edges through the hub, the central merge.

Every selected device ends with an outcome in `status` — answered, offline, timed out, failed
(with the reason) or cancelled — never silently missing. Rows from the edges are merged in
arrival order; bag queries are sorted, made distinct and limited after the merge, and partial
aggregates from the edges are merged into the final values.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any, AsyncIterator

import numpy as np

from streamql import ast as A
from streamql.batch import IDLE
from streamql.bound import Conjunct, TConst
from streamql.compiler import ExpressionCompiler, physical_plan, plan_query
from streamql.errors import QueryError, QueryRuntimeError
from streamql.physical.chunk import Chunk, column_values, make_column
from streamql.physical.compiled import as_mask, full_column
from streamql.physical.operators import _stable_order
from streamql.types import EDGE, bag_of
from streamql.values import Bag, EdgeRef, Time, hashable

from .catalog import SUBSTITUTABLE, FleetCatalog
from .plan import NO_VALUE, FleetPlan

try:  # the hub's own errors (federation/hub.py)
    from federation.hub import EdgeOffline, FragmentError
except ImportError:  # pragma: no cover - until the hub exists
    class EdgeOffline(Exception):
        pass

    class FragmentError(Exception):
        def __init__(self, outcome: str, error: dict | None = None):
            super().__init__(outcome)
            self.outcome, self.error = outcome, error

_END = object()


def literal_ast(value) -> A.Expr:
    """A value as the literal that prints it exactly (records and vectors of literals too)."""
    if isinstance(value, dict):
        return A.RecordLiteral(tuple((str(k), literal_ast(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, np.ndarray)):
        items = value.tolist() if isinstance(value, np.ndarray) else list(value)
        return A.VectorLiteral(tuple(literal_ast(v) for v in items))
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str, Time)):
        return A.Literal(value)
    raise QueryRuntimeError(f"an edge value of type {type(value).__name__} cannot be sent in a fragment")


def substituter(catalog: FleetCatalog, edge_written: str):
    """The per-edge literal for a fleet call in a fragment (`region(e)` → 'US')."""
    edge_name = edge_written.lower()

    def substitute(node: A.Call, edge_id: str):
        if not node.args or not isinstance(node.args[0], A.Variable) or node.args[0].name.lower() != edge_name:
            return NO_VALUE
        candidates = [o for o in catalog.library.extra.overloads(node.name)
                      if (getattr(o, "metadata_key", None) or o.name in SUBSTITUTABLE) and len(o.params) == len(node.args)]
        if not candidates or not all(isinstance(a, A.Literal) for a in node.args[1:]):
            return NO_VALUE
        value = candidates[0].scalar(EdgeRef(edge_id), *[a.value for a in node.args[1:]])
        return literal_ast(value)
    return substitute


class FleetRun:
    """One run of a fleet plan: `rows()` yields merged rows; `status` has every device's outcome."""

    def __init__(self, plan: FleetPlan, catalog: FleetCatalog, engine, hub, candidates: list[str], *,
                 fragment_timeout: float | None = 30.0, credit: int = 10_000, limits: dict | None = None):
        self.plan = plan
        self.catalog = catalog
        self.engine = engine
        self.hub = hub
        self.candidates = candidates
        self.fragment_timeout = fragment_timeout
        self.credit = credit
        self.limits = dict(limits or {})
        self.status: dict[str, dict] = {}
        self.ctx = engine.new_context()
        self.compiler = ExpressionCompiler(self.ctx, None, engine._optimizer() if engine.optimize_enabled else None)
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    # ------------------------------------------------------------------------------ rows
    async def rows(self) -> AsyncIterator[list]:
        plan = self.plan
        if plan.local:
            async for row in self._local_rows():
                yield row
            return
        devices = self._prefiltered(self.candidates)
        if plan.query.aggregate_query:
            async for row in self._aggregate_rows(devices):
                yield row
            return
        blocking = bool(plan.order_by or plan.distinct) and plan.kind != "stream"
        limit = self._limit()
        delivered = 0
        collected: list = []
        filters = [self.compiler.compile(f) for f in plan.post_filters]
        items = [self.compiler.compile(e) for _, e in plan.items]
        keys = [self.compiler.compile(e) for e, _ in plan.order_by]
        seen: set = set()

        def project(chunk: Chunk) -> list:
            for f in filters:
                mask = as_mask(full_column(f, chunk), chunk.n)
                if not mask.all():
                    chunk = chunk.take(mask)
                if chunk.n == 0:
                    return []
            columns = [column_values(full_column(c, chunk)) for c in items + keys]
            return [list(r) for r in zip(*columns)] if columns else [[] for _ in range(chunk.n)]

        try:
            async for chunk in self._fragments(devices):
                for row in project(chunk):
                    if plan.distinct:
                        key = tuple(hashable(v) for v in row[:len(items)])
                        if key in seen:
                            continue
                        seen.add(key)
                    if blocking:
                        collected.append(row)
                        continue
                    yield row[:len(items)]
                    delivered += 1
                    if limit is not None and delivered >= limit:
                        return
            if blocking:
                for row in self._finish(collected, len(items))[:limit]:
                    yield row
        finally:
            await self.aclose()

    def _limit(self) -> int | None:
        if self.plan.limit is None:
            return None
        value = self.compiler.compile(self.plan.limit).row({})
        return None if value is None else max(0, int(value))

    def _finish(self, rows: list, width: int) -> list:
        """Sort (by the hidden keys after the items) and cut back to the selected columns."""
        if self.plan.order_by and rows:
            order = np.arange(len(rows))
            for position in range(len(self.plan.order_by) - 1, -1, -1):
                descending = self.plan.order_by[position][1]
                column = make_column([rows[i][width + position] for i in order])
                order = order[_stable_order(column, descending)]
            rows = [rows[i] for i in order]
        return [row[:width] for row in rows]

    # -------------------------------------------------------------------------- devices
    def _prefiltered(self, devices: list[str]) -> list[str]:
        if not self.plan.prefilters or not devices:
            return devices
        chunk = Chunk({self.plan.edge: [EdgeRef(d) for d in devices]}, len(devices))
        for condition in self.plan.prefilters:
            compiled = self.compiler.compile(condition)
            mask = as_mask(full_column(compiled, chunk), chunk.n)
            chunk = chunk.take(mask)
        return [e.id for e in chunk[self.plan.edge]]

    async def _fragments(self, devices: list[str]) -> AsyncIterator[Chunk]:
        """Chunks of fragment results from every device, in arrival order."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=64)
        substitute = substituter(self.catalog, self.plan.edge_written)
        substituted = False

        def noting(node, edge_id):
            nonlocal substituted
            value = substitute(node, edge_id)
            substituted = substituted or value is not NO_VALUE
            return value

        shared = None     # the fragment's text when it holds none of e's metadata: printed once
        running = 0
        for device in devices:
            if not self.hub.is_online(device):
                self.status[device] = {"outcome": "offline", "rows": 0, "reason": "not connected"}
                continue
            try:
                source = shared
                if source is None:
                    source = self.plan.fragment.source_for(device, noting)
                    if not substituted:   # whether a call is substituted depends on the call, not the device
                        shared = source
            except QueryError as exc:
                self.status[device] = {"outcome": "failed", "rows": 0, "reason": exc.message}
                continue
            self.status[device] = {"outcome": "running", "rows": 0, "reason": None}
            self._tasks.append(asyncio.create_task(self._one(device, source, queue)))
            running += 1
        while running:
            item = await queue.get()
            if item is _END:
                running -= 1
                continue
            yield item

    async def _one(self, device: str, source: str, queue: asyncio.Queue) -> None:
        status = self.status[device]
        edge = EdgeRef(device)
        width = self.plan.fragment.width
        try:
            timeout = self.fragment_timeout if self.plan.fragment.kind != "stream" else None
            async with _deadline(timeout):
                stream = self.hub.fragment(device, source, limits=self.limits or None, credit=self.credit)
                try:
                    async for batch in stream:
                        n = batch.n
                        if n == 0:
                            continue
                        columns = {f"$f{i}": _column(batch.cols[i]) for i in range(min(width, len(batch.cols)))}
                        columns[self.plan.edge] = [edge] * n
                        status["rows"] += n
                        await queue.put(Chunk(columns, n))
                finally:
                    with contextlib.suppress(Exception):
                        await stream.aclose()
            status["outcome"] = "answered"
        except asyncio.TimeoutError:
            status.update(outcome="timed out", reason=f"no complete answer within {self.fragment_timeout} s")
        except EdgeOffline as exc:
            if getattr(exc, "dropped", False):  # it was answering when its link dropped (protocol §6)
                status.update(outcome="failed", reason=f"disconnected: {getattr(exc, 'reason', exc)}")
            else:
                status.update(outcome="offline", reason=getattr(exc, "reason", None) or str(exc))
        except FragmentError as exc:
            error = exc.error or {}
            outcome = "failed" if exc.outcome != "limit" else "limit"
            if exc.outcome == "cancelled":
                outcome = "cancelled"
            status.update(outcome=outcome, reason=error.get("message") or exc.outcome, error=exc.error)
        except asyncio.CancelledError:
            status.update(outcome="cancelled", reason="the query was stopped")
            raise
        except Exception as exc:  # noqa: BLE001 - one device's failure must not end the others
            status.update(outcome="failed", reason=f"{type(exc).__name__}: {exc}")
        finally:
            try:
                queue.put_nowait(_END)
            except asyncio.QueueFull:
                await queue.put(_END)

    # -------------------------------------------------------------------------- aggregates
    async def _aggregate_rows(self, devices: list[str]) -> AsyncIterator[list]:
        plan = self.plan
        central_keys = [(position, self.compiler.compile(expr)) for position, expr in plan.central_keys]
        key_count = len(plan.central_keys) + len(plan.edge_keys)
        groups: dict[tuple, dict] = {}
        central_cache: dict[str, tuple] = {}
        try:
            async for chunk in self._fragments(devices):
                edge = chunk[plan.edge][0]
                if edge.id not in central_cache:
                    one = Chunk({plan.edge: [edge]}, 1)
                    central_cache[edge.id] = tuple((p, column_values(full_column(c, one))[0]) for p, c in central_keys)
                central = central_cache[edge.id]
                columns = {name: column_values(col) for name, col in chunk.items() if name.startswith("$f")}
                for r in range(chunk.n):
                    key_values = [None] * key_count
                    for position, value in central:
                        key_values[position] = value
                    for position, column in plan.edge_keys:
                        key_values[position] = columns[f"$f{column}"][r]
                    group_key = tuple(hashable(v) for v in key_values)
                    group = groups.get(group_key)
                    if group is None:
                        group = groups[group_key] = {"keys": key_values,
                                                      "acc": [None] * len(plan.aggregates),
                                                      "raw": [[] for _ in plan.aggregates], "rows": 0}
                    group["rows"] += 1
                    for i, spec in enumerate(plan.aggregates):
                        if spec.partial:
                            parts = tuple(_python(columns[f"$f{c}"][r]) for c in spec.columns)
                            group["acc"][i] = _merge(spec.fn.split, group["acc"][i], parts)
                        elif not spec.star:
                            group["raw"][i].append(columns[f"$f{spec.columns[0]}"][r])
            if not groups and key_count == 0:
                groups[()] = {"keys": [], "acc": [None] * len(plan.aggregates),
                              "raw": [[] for _ in plan.aggregates], "rows": 0}
            out = {f"$g{i}": [] for i in range(key_count)}
            out.update({f"$a{i}": [] for i in range(len(plan.aggregates))})
            for group in groups.values():
                for i, value in enumerate(group["keys"]):
                    out[f"$g{i}"].append(value)
                for i, spec in enumerate(plan.aggregates):
                    if spec.star:
                        value = group["rows"]
                    elif spec.partial:
                        value = _final(spec.fn.split, group["acc"][i])
                    else:
                        value = spec.fn.scalar(group["raw"][i])
                    out[f"$a{i}"].append(value)
            chunk = Chunk({k: make_column(v) for k, v in out.items()}, len(groups))
            if plan.having is not None and chunk.n:
                chunk = chunk.take(as_mask(full_column(self.compiler.compile(plan.having), chunk), chunk.n))
            items = [self.compiler.compile(e) for _, e in plan.items]
            keys = [self.compiler.compile(e) for e, _ in plan.order_by]
            columns = [column_values(full_column(c, chunk)) for c in items + keys] if chunk.n else []
            rows = [list(r) for r in zip(*columns)] if columns else []
            if plan.distinct:
                seen, unique = set(), []
                for row in rows:
                    key = tuple(hashable(v) for v in row[:len(items)])
                    if key not in seen:
                        seen.add(key)
                        unique.append(row)
                rows = unique
            for row in self._finish(rows, len(items))[:self._limit()]:
                yield row
        finally:
            await self.aclose()

    # ------------------------------------------------------------------------ registry only
    async def _local_rows(self) -> AsyncIterator[list]:
        """A statement without `@ e`: the registry answers it, on the federation's own engine."""
        from dataclasses import replace
        plan = self.plan
        query = plan.query
        edges = Bag([EdgeRef(d) for d in self._prefiltered(self.candidates)])
        generator = Conjunct(TConst(bag_of(EDGE), True), None, (plan.edge,), TConst(bag_of(EDGE), edges), "each", (None,))
        extents = {k: v for k, v in query.extents.items() if k != plan.edge}
        local = replace(query, conjuncts=[generator] + list(query.conjuncts), extents=extents)
        optimize = self.engine._optimizer() if self.engine.optimize_enabled else None
        physical = physical_plan(plan_query(local, None, optimize), self.ctx, optimize)
        from streamql.result import Result
        result = Result(query.columns, query.types, query.kind, items=physical.run({}), ctx=self.ctx)
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(None, list, result)
        width = len(query.columns)
        for row in rows:
            yield list(row) if width > 1 else [row]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            if not task.done():
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        for device, status in self.status.items():
            if status["outcome"] == "running":
                status.update(outcome="cancelled", reason="the query was stopped")


@contextlib.asynccontextmanager
async def _deadline(seconds: float | None):
    if seconds is None:
        yield
        return
    async with asyncio.timeout(seconds):
        yield


def _column(values):
    if isinstance(values, np.ndarray):
        return values
    return make_column(list(values))


def _python(value):
    return value.item() if isinstance(value, np.generic) else value


def _merge(split, accumulated, parts):
    if _empty_parts(split, parts):
        return accumulated
    if accumulated is None:
        return parts
    return split.merge(accumulated, parts)


def _empty_parts(split, parts) -> bool:
    """Partials of no rows (count 0) add nothing, and their means are null."""
    if "n" in split.parts:
        return not parts[split.parts.index("n")]
    if "count" in split.parts and len(split.parts) > 1:
        return not parts[split.parts.index("count")]
    return False


def _final(split, accumulated):
    if accumulated is None:
        empty = tuple(0 if p in ("count", "n", "sum") else (0.0 if p == "M2" else None) for p in split.parts)
        return split.final(empty)
    return split.final(accumulated)
