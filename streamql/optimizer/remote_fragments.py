"""Remote fragments: what depends on one edge's values runs on that edge.

    select region(e), max(signal_value('t')@e) from Edge e
     where kind(e) = 'dumper' and signal_value('t')@e < -20 group by region(e)
    ─▶ Remote over Edge e, selection [index] kind(e) = 'dumper'
         fragment on each edge: select signal_value('t') where signal_value('t') < -20;   → $r1
       Aggregate by region(e): $a0 = max($r1)

The scan of the Edge variable becomes a `Remote` node, first in the plan:
- conditions on the edge's registry values alone (`region(e) in ('US', 'EU')`, `online(e)`) become
  its selection — answered by the federation's index where they can be, else per device there;
- generators and conditions that depend on one edge's values (`… @ e`, variables bound from them,
  the edge's own metadata) ship in its fragment, so filtering happens on the device;
- what the rest of the query needs from an edge (`… @ e` values, variables bound there) comes back
  as the fragment's columns; everything else runs at the federation after the Remote node.
A `limit` with nothing but a projection between it and the edges goes into the fragment too, and
the Remote stops the edges once it is met. This rule runs first: the other rules see the
federation's part of the plan (the edge optimizes its fragment itself).
"""
from __future__ import annotations

from .. import logical as L
from .. import selection as S
from ..bound import TAggregate, TAnd, TAt, TCall, TConst, TExpr, TNot, TOr, TQuery, TVar, replace_children
from ..errors import QueryTypeError
from ..fleet import is_per_edge_call
from ..fragments import FragmentBuilder, NotShippable
from ..registry import SOURCE
from ..types import EDGE
from .tree import nodes_of, relink

NAME = "remote_fragments"


def rule(plan: L.LogicalPlan, ctx) -> L.LogicalPlan:
    nodes = nodes_of(plan)
    found = _edge_node(nodes)
    if found is None:
        return plan
    position, edge, candidates = found
    query = plan.query
    second = _edge_node(nodes[position + 1:])
    if second is not None:
        other = query.variables[second[1]]
        raise QueryTypeError(f"a fleet query ranges over one Edge variable, not {query.variables[edge].written} and "
                             f"{other.written}: compare edges through a subquery, such as "
                             f"(select … from Edge {other.written} where …)", other.span, query.source)
    variable = query.variables[edge]
    source = query.source
    remote = L.Remote(edge=edge, edge_written=variable.written, candidates=candidates, variables=query.variables)
    local: set[str] = set()
    central: list[L.PlanNode] = list(nodes[1:position])   # independent of the edges: after the Remote
    probe = _builder(remote, source)

    tail_at = len(nodes)
    for index in range(position + 1, len(nodes)):
        node = nodes[index]
        if isinstance(node, (L.Aggregate, L.Project)):
            tail_at = index
            break
        if isinstance(node, L.Generate) and _edge_dependent(node.source, edge, local):
            try:
                probe.check(node.source)
            except NotShippable as exc:
                raise QueryTypeError(f"{_written(query, node.targets)} is bound on the edge, so it can depend only "
                                     f"on that edge's own values: {exc.message}", exc.span, source) from None
            remote.binds.append((node.targets, node.source, node.mode, node.source.span))
            probe.bind(node.targets, node.source, node.mode, node.source.span)   # later checks may read them
            local |= set(node.targets)
            continue
        if isinstance(node, L.Filter):
            predicate = node.predicate
            if _registry_only(predicate, edge):
                remote.selection.append(predicate)
                continue
            if _edge_dependent(predicate, edge, local):
                try:
                    probe.check(predicate)
                    remote.conditions.append(predicate)
                    continue
                except NotShippable:
                    pass  # it mixes edge and federation values: checked at the federation
        central.append(node)
    tail = nodes[tail_at:]

    outputs: dict = {}

    def output(expr: TExpr, name: str | None = None) -> TVar:
        key = name or expr
        if key not in outputs:
            column = name or f"$r{len(outputs) + 1}"
            outputs[key] = column
            remote.outputs.append((column, expr))
        return TVar(expr.type, outputs[key], span=expr.span)

    def extract(expr: TExpr) -> TExpr:
        """expr with its edge-side parts replaced by columns of the fragment."""
        def visit(node: TExpr) -> TExpr:
            if isinstance(node, TAt):
                try:
                    probe.check(node.expr)
                except NotShippable as exc:
                    raise QueryTypeError(f"the expression before @ runs on the edge: {exc.message}", exc.span,
                                         source) from None
                return output(node)
            if isinstance(node, (TCall, TAggregate)) and any(
                    isinstance(child, TQuery) and _mentions_at(child) for child in node.children()):
                try:   # count(select … @e …): the whole call on the edge, one value back
                    probe.check(node)
                    return output(node)
                except NotShippable:
                    pass
            if isinstance(node, TQuery) and _mentions_at(node):
                try:
                    probe.check(node)
                except NotShippable as exc:
                    raise QueryTypeError(f"this subquery reads values of the edges and of the federation: "
                                         f"{exc.message}", exc.span or node.span, source) from None
                if node.type.is_collection:
                    raise QueryTypeError("a bag or stream computed on each edge cannot come back whole: aggregate "
                                         "it there (count(select … @e …)) or bind its elements (x in (select …)@e)",
                                         node.span, source)
                return output(node)
            if isinstance(node, TVar) and node.name in local:
                return output(node, node.name)
            return replace_children(node, visit)
        return visit(expr)

    for node in central + tail:
        node.map_expressions(extract)
    _limit_into_fragment(remote, central, tail)

    index_terms, residual = [], []
    for predicate in remote.selection:
        converted = to_selection(predicate, edge)
        (index_terms if converted is not None else residual).append(converted if converted is not None else predicate)
    remote.index = S.conjunction(index_terms) if index_terms else None
    remote.residual = residual
    needs_edges = bool(remote.binds or remote.conditions or remote.outputs)
    remote.fragment = build_fragment(remote, source, plan.kind) if needs_edges else None
    relink(plan, [nodes[0], remote] + central + tail)
    what = (f"fragment: {remote.fragment.text}" if remote.fragment is not None
            else "answered from the registry, no device contacted")
    ctx.fire(NAME, f"Edge {variable.written} → Remote; {what}")
    return plan


def build_fragment(remote: L.Remote, source: str | None, kind: str):
    """The fragment text of a Remote node from its parts (rules that change the parts call it again)."""
    builder = _builder(remote, source)
    terms = [(span, "bind", (targets, value, mode, span)) for targets, value, mode, span in remote.binds]
    terms += [(condition.span, "condition", condition) for condition in remote.conditions]
    for _, what, term in sorted(terms, key=lambda t: t[0].start if t[0] is not None else 1 << 60):
        if what == "bind":   # in the order the user wrote them: the fragment reads like the statement
            builder.bind(*term)
        else:
            builder.condition(term)
    for key in remote.group_by:
        builder.group(key)
    for column, expr in remote.outputs:
        builder.output(expr.expr if isinstance(expr, TAt) else expr, column)
    for column, fn_name, arg, type_, span in remote.partials:
        builder.aggregate(fn_name, arg.expr if isinstance(arg, TAt) else arg, column, type_, span)
    builder.limit = remote.limit
    streaming = kind == "stream" and any(value.type.is_stream for _, value, mode, _ in remote.binds if mode == "each")
    fragment = builder.build("stream" if streaming else "bag")
    fragment.partial = bool(remote.partials)
    return fragment


def _builder(remote: L.Remote, source: str | None) -> FragmentBuilder:
    edge = remote.edge
    return FragmentBuilder(edge, remote.edge_written, remote.variables, source,
                           lambda call: is_per_edge_call(call, edge))


# ------------------------------------------------------------------------------ the edge node
def _edge_node(nodes: list[L.PlanNode]):
    """(position, edge variable, candidates) of the node that binds the query's Edge variable."""
    for position, node in enumerate(nodes):
        if isinstance(node, L.Scan) and node.type == EDGE:
            return position, node.variable, None
        if isinstance(node, L.Generate) and node.mode == "each" and len(node.targets) == 1 \
                and node.types and node.types[0] == EDGE and not _mentions_at(node.source):
            return position, node.targets[0], node.source
    return None


def _edge_dependent(expr: TExpr, edge: str, local: set[str]) -> bool:
    return _mentions_at(expr) or bool(expr.free_variables() & local)


def _mentions_at(expr: TExpr) -> bool:
    """Whether `… @ e` occurs in expr, nested queries included."""
    for node in expr.walk():
        if isinstance(node, TAt):
            return True
        if isinstance(node, TQuery) and _query_mentions_at(node.query):
            return True
    return False


def _query_mentions_at(query) -> bool:
    parts = [c.test for c in query.conjuncts] + [c.source for c in query.conjuncts if c.source is not None]
    parts += [e for _, e in query.items] + list(query.group_by) + [a.arg for a in query.aggregates if a.arg is not None]
    return any(_mentions_at(p) for p in parts)


def _registry_only(expr: TExpr, edge: str) -> bool:
    """A condition on the edge's registry values alone: answered at the federation per device."""
    if _mentions_at(expr) or not expr.free_variables() <= {edge} or edge not in expr.free_variables():
        return False

    def ok(node: TExpr) -> bool:
        if isinstance(node, TCall) and node.fn.topic == "fleet" and node.args and \
                isinstance(node.args[0], TVar) and node.args[0].name == edge:
            return all(ok(a) for a in node.args[1:])
        if isinstance(node, TVar):
            return node.name != edge
        if isinstance(node, TCall) and node.fn.kind == SOURCE:
            return False
        if isinstance(node, TQuery):
            return False
        return all(ok(child) for child in node.children())
    return ok(expr)


def _limit_into_fragment(remote: L.Remote, central: list, tail: list) -> None:
    """`… limit n` with nothing but a projection after the edges: each edge sends at most n rows,
    and the Remote cancels the rest once n have come."""
    if central or len(tail) != 2 or not isinstance(tail[0], L.Project) or not isinstance(tail[1], L.Limit):
        return
    count = tail[1].count
    if isinstance(count, TConst) and isinstance(count.value, int) and not isinstance(count.value, bool) \
            and count.value >= 0:
        remote.limit = count.value


def _written(query, targets) -> str:
    names = [query.variables[t].written if t in query.variables else t for t in targets]
    return ", ".join(names)


# ------------------------------------------------------------------------------ index selection
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}
_NOT_CONST = object()


def _key(node: TExpr, edge: str):
    """The registry key a fleet call reads (`region(e)` → meta('region')), or None."""
    if not isinstance(node, TCall) or not node.args or node.fn.topic != "fleet":
        return None
    first = node.args[0]
    if not (isinstance(first, TVar) and first.name == edge):
        return None
    key = getattr(node.fn, "metadata_key", None)
    if key is not None and len(node.args) == 1:
        return S.meta(key)
    name = node.fn.name
    if name == "id" and len(node.args) == 1:
        return S.ID
    if name == "online" and len(node.args) == 1:
        return S.ONLINE
    if name in ("meta", "capability") and len(node.args) == 2 and isinstance(node.args[1], TConst) \
            and isinstance(node.args[1].value, str):
        return S.meta(node.args[1].value) if name == "meta" else S.capability(node.args[1].value)
    return None


def _const(node: TExpr):
    return node.value if isinstance(node, TConst) else _NOT_CONST


def to_selection(test: TExpr, edge: str) -> S.Predicate | None:
    """The index predicate equivalent to a condition on an edge's registry values, or None."""
    if isinstance(test, (TAnd, TOr)):
        parts = [to_selection(t, edge) for t in test.terms]
        if any(p is None for p in parts):
            return None
        return S.And(tuple(parts)) if isinstance(test, TAnd) else S.Or(tuple(parts))
    if isinstance(test, TNot):
        inner = to_selection(test.operand, edge)
        return None if inner is None else S.Not(inner)
    if not isinstance(test, TCall):
        return None
    name, args = test.fn.name, test.args
    if name == "in_list":
        key = _key(args[0], edge)
        values = [_const(a) for a in args[1:]]
        if key is not None and all(v is not _NOT_CONST for v in values):
            return S.In(key, tuple(values))
    elif name in _FLIP and len(args) == 2:
        for left, right, op in ((args[0], args[1], name), (args[1], args[0], _FLIP[name])):
            key, value = _key(left, edge), _const(right)
            if key is not None and value is not _NOT_CONST and value is not None:
                return S.Eq(key, value) if op == "=" else S.Compare(key, op, value)
    elif name == "like" and len(args) == 2:
        key, pattern = _key(args[0], edge), _const(args[1])
        if key is not None and isinstance(pattern, str):
            return S.Like(key, pattern)
    elif name == "is_null" and len(args) == 1:
        key = _key(args[0], edge)
        if key is not None and key != S.ONLINE:
            return S.IsNull(key)
    elif name == "between" and len(args) == 3:
        key, low, high = _key(args[0], edge), _const(args[1]), _const(args[2])
        if key is not None and low is not _NOT_CONST and high is not _NOT_CONST and None not in (low, high):
            return S.And((S.Compare(key, ">=", low), S.Compare(key, "<=", high)))
    elif name == "online" and _key(test, edge) == S.ONLINE:
        return S.Eq(S.ONLINE, True)
    return None
