"""Planning fleet statements: what the registry answers, what each edge runs, what is merged.

A query over `Edge e` splits into
  - a **selection**: conjuncts on e's metadata become index predicates (`region(e) in (…)`), and
    other conjuncts on e alone (`health(e)['cpu'] > 50`) a filter per device, both before any
    edge is contacted;
  - a **fragment** per selected edge: the variables bound from `… @ e`, every condition that
    depends only on them (with `@ e` dropped and e's metadata replaced by that edge's values as
    literals), and the values the central part needs — printed as source, literals exact;
  - the **central part**: conditions that mix edge values with central data, the select items
    (`id(e)` …), and for aggregates the merge of the partial aggregates each edge computed
    (avg → sum and count on the edge; median, which has no partial form, from raw rows).
A statement without `@ e` is answered from the registry alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from streamql import ast as A
from streamql.bound import (BoundQuery, Conjunct, TAggregate, TAnd, TAt, TCall, TConst, TExpr, TNot, TOr,
                            TVar)
from streamql.errors import FleetError
from streamql.printer import to_source
from streamql.types import EDGE, INTEGER

from federation import selection as S

from .catalog import SUBSTITUTABLE

PARTIALS = {  # aggregate → the edge-side expressions of its partial parts, in split order
    "count": lambda a: [A.Call("count", (a,))],
    "sum": lambda a: [A.Call("sum", (a,))],
    "avg": lambda a: [A.Call("sum", (a,)), A.Call("count", (a,))],
    "mean": lambda a: [A.Call("sum", (a,)), A.Call("count", (a,))],
    "min": lambda a: [A.Call("min", (a,))],
    "max": lambda a: [A.Call("max", (a,))],
    "stdev": lambda a: _moments(a),
    "var": lambda a: _moments(a),
}


def _moments(a: A.Expr) -> list[A.Expr]:
    count = A.Call("count", (a,))
    m2 = A.Case(((A.Compare(">", count, A.Literal(1)),
                  A.BinaryOp("*", A.Call("var", (a,)), A.BinaryOp("-", count, A.Literal(1)))),),
                A.Literal(0.0))
    return [count, A.Call("avg", (a,)), m2]


@dataclass
class AggregateSpec:
    fn: Any                       # the aggregate overload
    columns: list[int]            # fragment output positions of its partial parts (or its raw argument)
    partial: bool                 # parts to merge (True) or raw values to aggregate (False)
    star: bool = False            # count(*) over raw rows


@dataclass
class Fragment:
    """What every selected edge runs: a query template printed per edge."""

    select: A.Select
    kind: str                                     # 'stream' | 'bag'
    width: int                                    # result columns

    def source_for(self, edge_id: str, substitute) -> str:
        return to_source(_substitute_edge(self.select, substitute, edge_id)) + ";"

    def template(self) -> str:
        return to_source(_strip_at(self.select)) + ";"


@dataclass
class FleetPlan:
    edge: str | None                              # the Edge variable (internal name)
    edge_written: str | None
    query: BoundQuery
    selection: S.Predicate | None                 # answered by the registry index
    selection_text: str
    candidates_from: TExpr | None = None          # `e in edges_with_signal(…)`: a bag of edges
    prefilters: list[TExpr] = field(default_factory=list)   # conditions on e alone, per device
    fragment: Fragment | None = None
    post_filters: list[TExpr] = field(default_factory=list)  # central conditions over $f… and e
    items: list[tuple[str, TExpr]] = field(default_factory=list)
    order_by: list[tuple[TExpr, bool]] = field(default_factory=list)
    limit: TExpr | None = None
    distinct: bool = False
    central_keys: list[tuple[int, TExpr]] = field(default_factory=list)   # group key position, expr over e
    edge_keys: list[tuple[int, int]] = field(default_factory=list)        # group key position, fragment column
    aggregates: list[AggregateSpec] = field(default_factory=list)
    having: TExpr | None = None
    local: bool = False                           # no fragment: answered from the registry

    @property
    def columns(self) -> list[str]:
        return self.query.columns

    @property
    def types(self) -> list:
        return self.query.types

    @property
    def kind(self) -> str:
        return self.query.kind


def has_at(expr: TExpr) -> bool:
    return any(isinstance(node, TAt) for node in expr.walk())


def _fleet_call(node: TExpr, edge: str) -> bool:
    """`region(e)`, `meta(e, 'k')`, … with constant further arguments: a per-edge literal."""
    if not isinstance(node, TCall) or not node.args:
        return False
    fn = node.fn
    if not (getattr(fn, "metadata_key", None) or (fn.topic == "fleet" and fn.name in SUBSTITUTABLE)):
        return False
    first = node.args[0]
    return isinstance(first, TVar) and first.name == edge and all(isinstance(a, TConst) for a in node.args[1:])


def edge_uses_substitutable(expr: TExpr, edge: str) -> bool:
    """Whether every use of the edge variable is inside a fleet call or on the right of @."""
    def ok(node: TExpr) -> bool:
        if _fleet_call(node, edge):
            return True
        if isinstance(node, TAt):
            return ok(node.expr)
        if isinstance(node, TVar):
            return node.name != edge
        return all(ok(child) for child in node.children())
    return ok(expr)


class FleetPlanner:
    def __init__(self, source: str | None):
        self.source = source

    def error(self, message: str, span) -> FleetError:
        return FleetError(message, span, self.source)

    def plan(self, select: A.Select, query: BoundQuery) -> FleetPlan:
        edges = [v for v in query.variables.values() if v.type == EDGE and not v.hidden]
        if len(edges) != 1:
            raise self.error("a fleet query ranges over exactly one Edge variable", query.span)
        edge = edges[0].name
        ast_conjuncts = A.conjuncts(select.where)

        edge_local = self._edge_local(query, edge)
        central_vars = {name for name, v in query.variables.items() if name != edge and name not in edge_local}

        plan = FleetPlan(edge, edges[0].written, query, None, "all edges")
        index_terms: list[S.Predicate] = []
        shipped: list[A.Expr] = []
        declared: list[A.Declaration] = [d for d in select.declarations if d.name.lower() in edge_local]
        outputs: list[A.Expr] = []
        replacements: dict[TExpr, TExpr] = {}

        def output(ast_expr: A.Expr, typed: TExpr) -> TVar:
            for i, existing in enumerate(outputs):
                if existing == ast_expr:
                    return TVar(typed.type, f"$f{i}")
            outputs.append(ast_expr)
            return TVar(typed.type, f"$f{len(outputs) - 1}")

        for position, conjunct in enumerate(query.conjuncts):
            ast_term = ast_conjuncts[position] if position < len(ast_conjuncts) else None
            targets = set(conjunct.targets)
            if targets & edge_local:
                if ast_term is None:  # a select item of a stream or bag from the edge, flattened
                    source = conjunct.source
                    if not isinstance(source, TAt):
                        raise self.error("this select item mixes edge and federation values", source.span)
                    replacements[TVar(query.variables[conjunct.targets[0]].type, conjunct.targets[0])] = \
                        output(source.node, source.expr)
                    continue
                if not edge_uses_substitutable(conjunct.source, edge) or (
                        conjunct.source.free_variables() & central_vars):
                    raise self.error("a variable bound on the edge can only depend on the edge's own values",
                                     conjunct.span)
                shipped.append(ast_term)
                continue
            if edge in targets:
                if conjunct.source.free_variables() or conjunct.mode != "each":
                    raise self.error(f"{plan.edge_written} can be drawn only from a bag of edges that does not "
                                     "depend on other variables", conjunct.span)
                plan.candidates_from = conjunct.source
                continue
            if targets and ast_term is None and not has_at(conjunct.source) \
                    and conjunct.source.free_variables() <= {edge}:
                # a bag-valued select item computed at the federation (signals(e)): kept as a bag
                target = conjunct.targets[0]
                replacements[TVar(query.variables[target].type, target)] = conjunct.source
                central_vars.discard(target)
                continue
            if targets:
                raise self.error("in a fleet query every variable but the edge must be bound on the edge "
                                 "(x in …@e)", conjunct.span)
            test = conjunct.test
            free = test.free_variables()
            if not has_at(test) and not (free & edge_local):
                if free <= {edge}:
                    predicate = to_selection(test, edge)
                    if predicate is not None:
                        index_terms.append(predicate)
                    else:
                        plan.prefilters.append(test)
                else:
                    raise self.error("a condition on variables bound at the federation cannot be combined with "
                                     "values from the edges", conjunct.span)
                continue
            if ast_term is not None and edge_uses_substitutable(test, edge) and not (free & central_vars):
                shipped.append(ast_term)
            else:
                plan.post_filters.append(self._central(test, edge, edge_local, output, replacements))

        if index_terms:
            plan.selection = S.conjunction(index_terms) if len(index_terms) > 1 else index_terms[0]
            plan.selection_text = str(plan.selection)

        if replacements and not shipped and not outputs and not edge_local \
                and not any(has_at(e) for _, e in query.items):
            plan.local = True  # only registry values: the federation's own engine flattens the bag
            plan.items = query.items
            return plan
        needs_edge = bool(shipped or outputs or edge_local or any(has_at(e) for _, e in query.items))
        if not needs_edge and not any(has_at(a.arg) for a in query.aggregates if a.arg is not None):
            plan.local = True
            plan.items = query.items
            return plan

        kind = "stream" if query.kind == "stream" else "bag"
        edge_group_by: tuple = ()
        if query.aggregate_query:
            edge_group_by = self._plan_aggregates(plan, select, query, edge, edge_local, outputs, output)
        else:
            plan.items = [(name, self._central(expr, edge, edge_local, output, replacements))
                          for name, expr in query.items]
            plan.order_by = [(self._central(expr, edge, edge_local, output, replacements), desc)
                             for expr, desc in query.order_by]
            plan.distinct = query.distinct
        plan.limit = query.limit
        items = tuple(A.SelectItem(expr) for expr in outputs) or (A.SelectItem(A.Literal(True)),)
        fragment_select = A.Select(items, tuple(declared), A.conjoin(shipped), group_by=edge_group_by,
                                   kind="stream" if kind == "stream" else None)
        plan.fragment = Fragment(fragment_select, kind, len(items))
        return plan

    # ----------------------------------------------------------------------------- parts
    def _edge_local(self, query: BoundQuery, edge: str) -> set[str]:
        """Variables bound from `… @ e`, and those bound only from them."""
        local: set[str] = set()
        changed = True
        while changed:
            changed = False
            for conjunct in query.conjuncts:
                if not conjunct.targets or set(conjunct.targets) & local or edge in conjunct.targets:
                    continue
                free = conjunct.source.free_variables()
                if has_at(conjunct.source) or (free and free - {edge} <= local and free - {edge}):
                    local |= set(conjunct.targets)
                    changed = True
        return local

    def _central(self, expr: TExpr, edge: str, edge_local: set[str], output, replacements) -> TExpr:
        """A central expression over fragment outputs: edge values become $f… columns."""
        from streamql.binder import replace_children

        def rewrite(node: TExpr) -> TExpr:
            if node in replacements:
                return replacements[node]
            if isinstance(node, TAt):
                if node.expr.free_variables() - {edge} - edge_local:
                    raise self.error("the expression before @ can only use the edge's own values", node.span)
                return output(node.node, node.expr)
            if isinstance(node, TVar) and node.name in edge_local:
                return output(A.Variable(node.name.split("~")[0]), node)
            return replace_children(node, rewrite)
        return rewrite(expr)

    def _plan_aggregates(self, plan, select, query, edge, edge_local, outputs, output) -> tuple:
        """Group keys and aggregates: partial aggregates on the edges when every aggregate has a
        split, raw rows otherwise. Returns the fragment's group-by keys."""
        edge_group_asts = []
        for position, (key, key_ast) in enumerate(zip(query.group_by, select.group_by)):
            if not has_at(key) and not (key.free_variables() & edge_local):
                plan.central_keys.append((position, key))
            else:
                if not edge_uses_substitutable(key, edge):
                    raise self.error("a group key from the edge can only use the edge's own values", key_ast.span)
                column = output(key_ast, key)
                plan.edge_keys.append((position, int(column.name[2:])))
                edge_group_asts.append(key_ast)
        partial = all(a.fn.split is not None and (a.arg is None or edge_uses_substitutable(a.arg, edge))
                      for a in query.aggregates)
        for aggregate in query.aggregates:
            if aggregate.arg is None:  # count(*)
                if partial:
                    column = output(A.Call("count", (), star=True), TConst(INTEGER, 0))
                    spec = AggregateSpec(aggregate.fn, [int(column.name[2:])], True)
                else:
                    spec = AggregateSpec(aggregate.fn, [], False, star=True)
                plan.aggregates.append(spec)
                continue
            if partial:  # the parts, each computed once on the edge however many aggregates use it
                parts = PARTIALS[aggregate.fn.name](aggregate.node)
                columns = [int(output(part, aggregate.arg).name[2:]) for part in parts]
                plan.aggregates.append(AggregateSpec(aggregate.fn, columns, True))
            else:
                column = output(aggregate.node, aggregate.arg)
                plan.aggregates.append(AggregateSpec(aggregate.fn, [int(column.name[2:])], False))
        plan.items = list(query.items)
        plan.having = query.having
        plan.order_by = list(query.order_by)
        plan.distinct = query.distinct
        return tuple(edge_group_asts) if partial else ()


# ------------------------------------------------------------------------- index selection
_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}


def _key(node: TExpr, edge: str):
    """The index key a fleet call reads, or None."""
    if not isinstance(node, TCall) or not node.args:
        return None
    first = node.args[0]
    if not (isinstance(first, TVar) and first.name == edge):
        return None
    fn = node.fn
    key = getattr(fn, "metadata_key", None)
    if key is not None and len(node.args) == 1:
        return S.meta(key)
    if fn.topic != "fleet":
        return None
    if fn.name == "id" and len(node.args) == 1:
        return S.ID
    if fn.name == "online" and len(node.args) == 1:
        return S.ONLINE
    if fn.name in ("meta", "capability") and len(node.args) == 2 and isinstance(node.args[1], TConst) \
            and isinstance(node.args[1].value, str):
        return S.meta(node.args[1].value) if fn.name == "meta" else S.capability(node.args[1].value)
    return None


def _const(node: TExpr):
    return node.value if isinstance(node, TConst) else _NOT_CONST


_NOT_CONST = object()


def to_selection(test: TExpr, edge: str) -> S.Predicate | None:
    """An index predicate equivalent to a condition on the edge's metadata, or None."""
    if isinstance(test, TAnd):
        parts = [to_selection(t, edge) for t in test.terms]
        return None if any(p is None for p in parts) else S.And(tuple(parts))
    if isinstance(test, TOr):
        parts = [to_selection(t, edge) for t in test.terms]
        return None if any(p is None for p in parts) else S.Or(tuple(parts))
    if isinstance(test, TNot):
        inner = to_selection(test.operand, edge)
        return None if inner is None else S.Not(inner)
    if isinstance(test, TCall):
        name, args = test.fn.name, test.args
        if name == "in_list":
            key = _key(args[0], edge)
            values = [_const(a) for a in args[1:]]
            if key is not None and all(v is not _NOT_CONST for v in values):
                return S.In(key, tuple(values))
        elif name in _OPS and len(args) == 2:
            for left, right, op in ((args[0], args[1], name), (args[1], args[0], _FLIP[name])):
                key = _key(left, edge)
                value = _const(right)
                if key is not None and value is not _NOT_CONST and value is not None:
                    if key == S.ONLINE and op == "=" and isinstance(value, bool):
                        return S.Eq(key, value)
                    return S.Eq(key, value) if op == "=" else S.Compare(key, op, value)
        elif name == "like" and len(args) == 2:
            key, pattern = _key(args[0], edge), _const(args[1])
            if key is not None and isinstance(pattern, str):
                return S.Like(key, pattern)
        elif name == "is_null" and len(args) == 1:
            key = _key(args[0], edge)
            if key is not None:
                return S.IsNull(key)
        elif name == "between" and len(args) == 3:
            key, low, high = _key(args[0], edge), _const(args[1]), _const(args[2])
            if key is not None and low is not _NOT_CONST and high is not _NOT_CONST:
                return S.And((S.Compare(key, ">=", low), S.Compare(key, "<=", high)))
        elif name == "online" and _key(test, edge) == S.ONLINE:
            return S.Eq(S.ONLINE, True)
    return None


# ------------------------------------------------------------------------ fragment source
def _strip_at(node: A.Node) -> A.Node:
    return _rewrite_ast(node, lambda n: n.expr if isinstance(n, A.AtEdge) else None)


def _substitute_edge(node: A.Node, substitute, edge_id: str) -> A.Node:
    """The fragment for one edge: `@ e` dropped, e's fleet functions replaced by literals."""
    def visit(n: A.Node):
        if isinstance(n, A.AtEdge):
            return _rewrite_ast(n.expr, visit)
        if isinstance(n, A.Call):
            value = substitute(n, edge_id)
            if value is not _NO_VALUE:
                return value
        return None
    return _rewrite_ast(node, visit)


_NO_VALUE = object()
NO_VALUE = _NO_VALUE


def _rewrite_ast(node, fn):
    """Rebuild an AST bottom-up … top-down: fn(node) may return a replacement (then not descended)."""
    import dataclasses
    replaced = fn(node) if isinstance(node, A.Node) else None
    if replaced is not None:
        return replaced
    if isinstance(node, tuple):
        return tuple(_rewrite_ast(item, fn) for item in node)
    if not isinstance(node, A.Node):
        return node
    changes = {}
    for f in dataclasses.fields(node):
        if f.name in ("span", "directives"):
            continue
        value = getattr(node, f.name)
        if isinstance(value, (A.Node, tuple)):
            new = _rewrite_ast(value, fn)
            if new is not value:
                changes[f.name] = new
    return dataclasses.replace(node, **changes) if changes else node
