"""Typed query → logical plan: which variable is bound where, and in what order.

The plan is a chain of small nodes, each holding configuration only (the physical layer builds
the running operators from it):

    Unit → Generate / Scan / Window (bind variables) → Let (computed columns) → Filter → …
         → Aggregate → Filter (having) → Project → Distinct → Sort → Limit

A generator `w in winagg(s, size, stride)` with constant size and stride is planned as a `Window`
over `s`; window_fusion may then have it compute aggregates per window instead of making windows.
Nested queries are planned by the caller (compiler.plan_query) through `plan_subqueries`.

Conjuncts are ordered so that every variable is bound before it is tested: a test runs as soon as
everything it mentions is bound (a volatile one only after every generator, so it is checked per
row); otherwise a ready generator (`x in e`, `x = e`) binds its
variables, streams first (so a bag generator does not wait behind an endless stream); otherwise
the objects of a type are scanned. A variable nothing can bind is an error, before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .bound import (BoundQuery, Conjunct, TAggregate, TCall, TCase, TConst, TExpr, TNot, TOr, TQuery,
                    TStored, TVar, replace_children)
from .errors import QueryNameError, Span
from .types import Type


@dataclass(eq=False)
class PlanNode:
    input: "PlanNode | None" = None

    def chain(self) -> list["PlanNode"]:
        """The nodes from the first (Unit) to this one."""
        nodes, node = [], self
        while node is not None:
            nodes.append(node)
            node = node.input
        return nodes[::-1]

    def expressions(self) -> list[TExpr]:
        return []

    def map_expressions(self, fn: Callable[[TExpr], TExpr]) -> None:
        """Apply fn to every expression the node holds, in place."""


@dataclass(eq=False)
class Unit(PlanNode):
    """One empty row (carrying the values of enclosing queries)."""


@dataclass(eq=False)
class Generate(PlanNode):
    """Bind `targets` from `source`: each element ('each'), the whole value ('whole'), or the
    elements of a vector one per target ('destructure')."""

    targets: tuple[str, ...] = ()
    source: TExpr = None
    mode: str = "each"
    narrow: tuple[Type | None, ...] = ()
    types: tuple[Type, ...] = ()

    def expressions(self):
        return [self.source]

    def map_expressions(self, fn):
        self.source = fn(self.source)


@dataclass(frozen=True)
class WindowAggregate:
    """One value computed per window: `function` (mean, sum, min, max or rms) of the window,
    bound to `output`."""

    output: str
    function: str
    type: Type


@dataclass(eq=False)
class Window(PlanNode):
    """Count windows over the stream `source` (evaluated per input row): the first after `size`
    elements, then one every `stride` elements; a trailing partial window is dropped and
    stride > size samples. Each window is bound to `target`, checked against `narrow` when its
    declared type needs a run-time check; with `aggregates` (window_fusion) each window instead
    gives one row of their values, and no window is made."""

    source: TExpr = None
    size: int = 0
    stride: int = 0
    target: str = ""
    type: Type | None = None           # the window variable's declared type
    narrow: Type | None = None
    aggregates: tuple[WindowAggregate, ...] = ()
    span: Span | None = None           # the winagg call's, for errors (a window too large to hold)

    def expressions(self):
        return [self.source]

    def map_expressions(self, fn):
        self.source = fn(self.source)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The variables the node binds in each row."""
        if self.aggregates:
            return tuple(a.output for a in self.aggregates)
        return (self.target,)


@dataclass(eq=False)
class Scan(PlanNode):
    """Bind `variable` to every object (or table row) of a type."""

    variable: str = ""
    type: Type = None


@dataclass(eq=False)
class Let(PlanNode):
    """Compute a column. With `required`, rows where it has no value are dropped (a stored
    function without a value yields no row)."""

    name: str = ""
    value: TExpr = None
    required: bool = False

    def expressions(self):
        return [self.value]

    def map_expressions(self, fn):
        self.value = fn(self.value)


@dataclass(eq=False)
class Keep(PlanNode):
    """Drop every column but these (projection pruning): less to carry and to copy."""

    columns: tuple[str, ...] = ()


@dataclass(eq=False)
class Filter(PlanNode):
    predicate: TExpr = None

    def expressions(self):
        return [self.predicate]

    def map_expressions(self, fn):
        self.predicate = fn(self.predicate)


@dataclass(eq=False)
class Aggregate(PlanNode):
    """Group rows by `keys` (output as $g0, $g1, …) and compute `aggregates` ($a0, $a1, …)."""

    keys: list[TExpr] = field(default_factory=list)
    aggregates: list[TAggregate] = field(default_factory=list)

    def expressions(self):
        return list(self.keys) + [a.arg for a in self.aggregates if a.arg is not None]

    def map_expressions(self, fn):
        self.keys = [fn(k) for k in self.keys]
        self.aggregates = [a if a.arg is None else replace(a, arg=fn(a.arg)) for a in self.aggregates]


@dataclass(eq=False)
class Remote(PlanNode):
    """Rows from the edges of a fleet. The edges are those the `selection` conditions (on each
    edge's registry values) pick among the `candidates` (every registered edge, or a bag of edges
    such as edges_with_signal('x')): `index` is the part the federation's index answers, `residual`
    the conditions checked per device there. On each selected edge the `fragment` runs, and every
    row it sends back binds `edge` and the fragment's columns. Without a fragment the registry
    alone answers: one row per selected edge, no device contacted.

    The fragment is printed from its parts: `binds` (targets, source, mode, span) and `conditions`
    evaluated on the edge, `outputs` (column, edge-side expression) sent back, and for aggregates
    split across edges the edge's `group_by` keys and `partials` (column, aggregate, argument,
    type, span)."""

    edge: str = ""
    edge_written: str = ""
    selection: list[TExpr] = field(default_factory=list)
    candidates: TExpr | None = None
    variables: dict = field(default_factory=dict)
    binds: list = field(default_factory=list)
    conditions: list[TExpr] = field(default_factory=list)
    outputs: list = field(default_factory=list)
    group_by: list[TExpr] = field(default_factory=list)
    partials: list = field(default_factory=list)
    index: Any = None                # selection.Predicate | None
    residual: list[TExpr] = field(default_factory=list)
    fragment: Any = None             # fragments.Fragment | None
    limit: int | None = None         # the rows wanted in all (limit pushed down): then the rest are cancelled

    def expressions(self):
        # the selection is evaluated inside, on the edges the node binds: no rule may hoist it
        return [self.candidates] if self.candidates is not None else []

    def map_expressions(self, fn):
        if self.candidates is not None:
            self.candidates = fn(self.candidates)

    @property
    def outputs_bound(self) -> set[str]:
        """The variables each row it makes binds: the edge and the fragment's columns."""
        return {self.edge} | (set(self.fragment.columns) if self.fragment is not None else set())

    @property
    def kind(self) -> str:
        return self.fragment.kind if self.fragment is not None else "bag"


@dataclass(eq=False)
class MergeAggregate(PlanNode):
    """The final step of aggregates split across edges: group rows by `keys` (output $g0, …) and
    merge each aggregate's partial parts (columns computed on the edges) with the library's split
    of that aggregate (output $a0, …). `parts[i]` names aggregate i's part columns, in the order
    of its split's parts."""

    keys: list[TExpr] = field(default_factory=list)
    aggregates: list[TAggregate] = field(default_factory=list)
    parts: list[list[str]] = field(default_factory=list)

    def expressions(self):
        return list(self.keys)

    def map_expressions(self, fn):
        self.keys = [fn(k) for k in self.keys]

    @property
    def part_columns(self) -> set[str]:
        return {c for columns in self.parts for c in columns}


@dataclass(eq=False)
class Project(PlanNode):
    """The result columns, plus hidden sort keys (`extra`) kept until sorting is done."""

    items: list[tuple[str, TExpr]] = field(default_factory=list)
    extra: list[tuple[str, TExpr]] = field(default_factory=list)

    def expressions(self):
        return [e for _, e in self.items] + [e for _, e in self.extra]

    def map_expressions(self, fn):
        self.items = [(n, fn(e)) for n, e in self.items]
        self.extra = [(n, fn(e)) for n, e in self.extra]


@dataclass(eq=False)
class Distinct(PlanNode):
    columns: list[str] = field(default_factory=list)


@dataclass(eq=False)
class Sort(PlanNode):
    keys: list[tuple[str, bool]] = field(default_factory=list)  # column, descending


@dataclass(eq=False)
class Limit(PlanNode):
    count: TExpr = None

    def expressions(self):
        return [self.count]

    def map_expressions(self, fn):
        self.count = fn(self.count)


@dataclass
class LogicalPlan:
    """A planned query: the chain of nodes, what it returns, and the optimizer's trace."""

    root: PlanNode
    query: BoundQuery
    columns: list[str]
    types: list[Type]
    kind: str
    rules: list[str] = field(default_factory=list)   # optimizer rules that fired, for EXPLAIN
    trace: list[str] = field(default_factory=list)   # what each rule did, in order

    @property
    def output_names(self) -> list[str]:
        return [f"$c{i}" for i in range(len(self.columns))]


class Planner:
    def __init__(self, source: str | None = None):
        self.source = source
        self._hidden = 0

    def _name(self, prefix: str) -> str:
        self._hidden += 1
        return f"${prefix}{self._hidden}"

    def plan(self, query: BoundQuery) -> LogicalPlan:
        node: PlanNode = Unit()
        bound = set(query.outer_references)
        pending = list(query.conjuncts)
        declared = [name for name, v in query.variables.items() if not v.hidden]
        unbound = set(query.variables)

        while pending:
            # Volatile tests (frand() > 0.5, signal_value('t') < -20) are checked per row, so they
            # wait until every generator has run; the others as soon as what they read is bound.
            generators_left = any(c.targets and not set(c.targets) <= bound for c in pending)
            test = next((c for c in pending if c.test.free_variables() <= bound
                         and set(c.targets) <= bound and not (generators_left and c.test.volatile)), None)
            if test is not None:
                pending.remove(test)
                node = self._filter(node, test.test, bound)
                continue
            generator = self._ready_generator(pending, bound)
            if generator is not None:
                pending.remove(generator)
                node = self._generate(node, generator, query, bound)
                bound |= set(generator.targets)
                unbound -= set(generator.targets)
                continue
            # scan first what a pending generator needs, not what one would bind: `(s, y) in
            # marriages(p)` scans p and takes s from the marriages, rather than scanning s too
            targets = {t for c in pending for t in c.targets}
            scannable = [name for name in declared if name in unbound and name in query.extents]
            scanned = next((name for name in scannable if name not in targets), scannable[0] if scannable else None)
            if scanned is not None:
                node = Scan(node, scanned, query.extents[scanned])
                bound.add(scanned)
                unbound.discard(scanned)
                continue
            raise self._never_bound(query, pending, bound)

        for name in declared:
            if name in unbound:
                if name in query.extents:
                    node = Scan(node, name, query.extents[name])
                    unbound.discard(name)
                    bound.add(name)
                else:
                    raise self._unbound_variable(query, name)

        if query.aggregate_query:
            node = self._hoist_stored(node, query.group_by + [a.arg for a in query.aggregates if a.arg is not None], bound)
            node = Aggregate(node, list(query.group_by), list(query.aggregates))
            if query.having is not None:
                node = Filter(node, query.having)
        items = query.items
        if not query.aggregate_query:
            node = self._hoist_stored(node, [e for _, e in items] + [e for e, _ in query.order_by], bound)
        extra = [(f"$o{i}", expr) for i, (expr, _) in enumerate(query.order_by)]
        columns = [f"$c{i}" for i in range(len(items))]
        node = Project(node, [(c, self._generated_values(e)) for c, (_, e) in zip(columns, items)], extra)
        if query.distinct:
            node = Distinct(node, columns)
        if query.order_by:
            node = Sort(node, [(f"$o{i}", desc) for i, (_, desc) in enumerate(query.order_by)])
        if query.limit is not None:
            node = Limit(node, query.limit)
        return LogicalPlan(node, query, [n for n, _ in items], [e.type for _, e in items], query.kind)

    # --------------------------------------------------------------------------- steps
    def _ready_generator(self, pending: list[Conjunct], bound: set[str]) -> Conjunct | None:
        ready = [c for c in pending if c.targets and not (set(c.targets) & bound)
                 and c.source.free_variables() <= bound]
        if not ready:
            return None
        streams = [c for c in ready if c.source.type.is_stream and c.mode == "each"]
        return streams[0] if streams else ready[0]

    def _filter(self, node: PlanNode, predicate: TExpr, bound: set[str]) -> PlanNode:
        if isinstance(predicate, TConst) and predicate.value is True:
            return node
        node = self._hoist_stored(node, [predicate], bound)
        return Filter(node, self._replace_hoisted(predicate))

    def _generate(self, node: PlanNode, conjunct: Conjunct, query: BoundQuery, bound: set[str]) -> PlanNode:
        node = self._hoist_stored(node, [conjunct.source], bound)
        types = tuple(query.variables[t].type for t in conjunct.targets)
        source = self._replace_hoisted(conjunct.source)
        shape = _count_window(source) if conjunct.mode == "each" and len(conjunct.targets) == 1 else None
        if shape is not None:
            stream, size, stride = shape
            narrow = conjunct.narrow[0] if conjunct.narrow else None
            return Window(node, stream, size, stride, conjunct.targets[0], types[0], narrow, span=source.span)
        return Generate(node, conjunct.targets, source, conjunct.mode, conjunct.narrow, types)

    # Stored-function calls in strict positions become Let(required) steps, so that a missing
    # value drops the row; under or/not/case/is null they read as null instead.
    def _hoist_stored(self, node: PlanNode, exprs: list[TExpr], bound: set[str]) -> PlanNode:
        self._hoisted = getattr(self, "_hoisted", {})
        for expr in exprs:
            for call in _strict_stored_calls(expr):
                if call in self._hoisted:
                    continue
                name = self._name("s")
                self._hoisted[call] = TVar(call.type, name, span=call.span)
                if isinstance(call, TCall) and call.fn.name == "single_value":   # OSQL: a row per value
                    bag = self._replace_hoisted(call.args[0], inner=True)
                    node = Generate(node, (name,), bag, "each", (None,), (call.type,))
                    continue
                node = Let(node, name, self._replace_hoisted(call, inner=True), required=True)
        return node

    def _generated_values(self, expr: TExpr) -> TExpr:
        """A derived function's values generated above (OSQL: a row each) read from their column."""
        hoisted = getattr(self, "_hoisted", {})
        if not any(isinstance(call, TCall) for call in hoisted):
            return expr

        def rewrite(node: TExpr) -> TExpr:   # (a procedure's call, hoisted, runs once per row)
            if isinstance(node, TCall) and node in hoisted:
                return hoisted[node]
            return replace_children(node, rewrite)
        return rewrite(expr)

    def _replace_hoisted(self, expr: TExpr, inner: bool = False) -> TExpr:
        hoisted = getattr(self, "_hoisted", {})
        if not hoisted:
            return expr

        def rewrite(node: TExpr) -> TExpr:
            if not (inner and node is expr) and node in hoisted:
                return hoisted[node]
            return replace_children(node, rewrite)
        return rewrite(expr)

    # --------------------------------------------------------------------------- errors
    def _never_bound(self, query: BoundQuery, pending: list[Conjunct], bound: set[str]):
        conjunct = pending[0]
        missing = sorted((conjunct.test.free_variables() | (conjunct.source.free_variables()
                                                           if conjunct.source is not None else set())) - bound)
        name = missing[0] if missing else "?"
        variable = query.variables.get(name)
        written = variable.written if variable else name
        return QueryNameError(
            f"variable {written} is never given values: bind it with `{written} in …` or `{written} = …`"
            f" in the where clause (or declare it of a type whose objects can be listed)",
            conjunct.span or query.span, self.source)

    def _unbound_variable(self, query: BoundQuery, name: str):
        variable = query.variables[name]
        return QueryNameError(
            f"variable {variable.written} of type {variable.type} is never given values: bind it with "
            f"`{variable.written} in …` or `{variable.written} = …` in the where clause",
            variable.span, self.source)


def _count_window(source: TExpr) -> tuple[TExpr, int, int] | None:
    """(stream, size, stride) of `winagg(stream, size, stride)` with constant size and stride."""
    if not (isinstance(source, TCall) and source.fn.name == "winagg" and len(source.args) == 3
            and source.lift is None):
        return None
    stream, size, stride = source.args
    for bound in (size, stride):
        if not (isinstance(bound, TConst) and type(bound.value) is int and bound.value >= 1):
            return None
    return stream, size.value, stride.value


def plan_subqueries(plan: LogicalPlan, plan_query: Callable[[BoundQuery], LogicalPlan]) -> LogicalPlan:
    """Give every nested query in the plan's expressions its own plan, made by `plan_query`
    (once per query, wherever it occurs: `order by 1` repeats a select item)."""
    plan_once = planned_once(plan_query)
    for node in plan.root.chain():
        node.map_expressions(lambda expr: with_subplans(expr, plan_once))
    return plan


def planned_once(plan_query: Callable[[BoundQuery], LogicalPlan]) -> Callable[[BoundQuery], LogicalPlan]:
    """`plan_query`, remembering each query's plan."""
    plans: dict[int, tuple[BoundQuery, LogicalPlan]] = {}

    def plan_once(query: BoundQuery) -> LogicalPlan:
        known = plans.get(id(query))
        if known is None:
            known = plans[id(query)] = (query, plan_query(query))   # the query kept: its id stays its own
        return known[1]
    return plan_once


def with_subplans(expr: TExpr, plan_query: Callable[[BoundQuery], LogicalPlan]) -> TExpr:
    """The expression with each nested query (TQuery) holding its plan."""
    if not expr.facts[2]:   # no subquery or aggregate anywhere below: the usual case
        return expr

    def visit(node: TExpr) -> TExpr:
        if isinstance(node, TQuery):
            return node if node.plan is not None else replace(node, plan=plan_query(node.query))
        return replace_children(node, visit)
    return visit(expr)


def _strict_stored_calls(expr: TExpr):
    """Stored-function calls outside or/not/case/is null/subqueries, innermost first."""
    if isinstance(expr, (TOr, TNot, TCase, TQuery)):
        return
    if isinstance(expr, TCall) and expr.fn.name in ("is_null", "coalesce"):
        return
    for child in expr.children():
        yield from _strict_stored_calls(child)
    if isinstance(expr, TStored) or (isinstance(expr, TCall) and (
            expr.fn.name == "single_value" or (expr.fn.name == "run_procedure" and not expr.type.is_bag))):
        yield expr   # a single-valued derived or procedural function without a value yields no row too (OSQL)
