"""Fleet fragments: the part of a fleet statement that one edge runs, as the source it travels as.

The planner hands typed pieces to a `FragmentBuilder` — the variables an edge binds (`w in
winagg(signal_stream('vibration'), 256, 256)@e`), the conditions that depend only on one edge's
values, the values the federation needs back, partial aggregates — and gets a `Fragment`: one
query text for every edge.

    select stream of w from Vector of Real w
     where signal_value('outside_temperature') < :edge_limit
       and w in winagg(signal_stream('vibration'), 256, 256);      params: edge_limit = capability(e, 'limit')

- Typed trees go back to AST nodes and are printed by `printer`, so every literal travels exactly.
- What differs per edge (`id(e)`, `region(e)`, `capability(e, 'limit')`) becomes a session
  parameter: the text is the same everywhere and each edge's values ride along with it.
- Functions defined at the federation were inlined by the binder, so their bodies travel (and a
  same-named function of a deployed bundle cannot shadow them). Stored functions, tables and
  variables of the federation cannot travel: `NotShippable` says why, at the user's position.
- Each printed node keeps its span in the user's text: an error an edge reports at a line and
  column of the fragment is reported at the user's (`Fragment.user_span`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import ast as A
from .bound import (BoundQuery, TAggregate, TAnd, TAt, TCall, TCase, TConst, TExpr, TField, TLet, TNarrow,
                    TNot, TOr, TQuery, TStored, TVar, replace_children)
from .errors import QueryTypeError, Span
from .printer import literal_source, to_source
from .types import Type
from .values import FunctionRef, Time

SIGNAL_FUNCTIONS = ("signal_value", "signal_stream", "ts_signal_stream")
MODEL_FUNCTIONS = ("predict", "predict_batch", "predict_named", "model_info")
_BINARY = {"+", "-", "*", "/", "%", "^", ".*", "./", ".^"}
_COMPARE = {"=", "!=", "<", "<=", ">", ">="}


class NotShippable(QueryTypeError):
    """A part of a statement that cannot run on an edge (a value or function of the federation)."""


@dataclass(frozen=True)
class EdgeParam:
    """A value that differs per edge, sent as a session parameter: `:name` in the fragment is
    `value` (a fleet call such as region(e), or a constant without literal syntax) for each edge."""

    name: str
    value: TExpr


@dataclass
class Fragment:
    """One query text for every selected edge, what it needs there, and where it came from."""

    text: str
    kind: str                                      # 'bag' | 'stream'
    columns: list[str]                             # the names its columns take at the federation
    types: list[Type]
    params: list[EdgeParam] = field(default_factory=list)
    signals: dict[str, Span | None] = field(default_factory=dict)    # literal signal names it reads
    models: dict[str, Span | None] = field(default_factory=dict)
    functions: dict[str, Span | None] = field(default_factory=dict)  # functions only edges have
    pieces: list[tuple[int, int, Span]] = field(default_factory=list)   # fragment range → user span
    partial: bool = False                          # computes partial aggregates (see aggregate_split)

    def user_span(self, line: int | None, column: int | None) -> Span | None:
        """The span of the user's text that the fragment's (line, column) was printed from."""
        if line is None or column is None:
            return None
        lines = self.text.split("\n")
        if not 1 <= line <= len(lines):
            return None
        offset = sum(len(text) + 1 for text in lines[:line - 1]) + column - 1
        best = None
        for start, end, span in self.pieces:
            if start <= offset < end and (best is None or end - start < best[1] - best[0]):
                best = (start, end, span)
        return best[2] if best is not None else None

    def describe(self) -> str:
        text = self.text
        if self.params:
            text += "   -- per edge: " + ", ".join(f":{p.name} = {_text(p.value)}" for p in self.params)
        return text


def _text(expr: TExpr) -> str:
    try:
        return to_source(_Converter(None, {}, None).convert(expr))
    except QueryTypeError:
        return type(expr).__name__


class FragmentBuilder:
    """Collects the pieces of one fragment (see the module docstring)."""

    def __init__(self, edge: str, edge_written: str, variables: dict, source: str | None,
                 is_fleet_call: Callable[[TCall], bool]):
        self.edge = edge
        self.edge_written = edge_written
        self.variables = variables               # the query's variables (name → bound.Variable)
        self.source = source
        self.is_fleet_call = is_fleet_call
        self.local: dict[str, str] = {}         # variable bound on the edge → its name in the fragment
        self.declarations: list[A.Declaration] = []
        self.terms: list[A.Expr] = []
        self.items: list[A.SelectItem] = []
        self.columns: list[str] = []
        self.types: list[Type] = []
        self.group_by: list[A.Expr] = []
        self.limit: int | None = None
        self.params: dict[Any, EdgeParam] = {}
        self.needs = {"signals": {}, "models": {}, "functions": {}}
        self._hidden = 0

    # ----------------------------------------------------------------------------- pieces
    def bind(self, targets: tuple[str, ...], source: TExpr, mode: str, span: Span | None) -> None:
        """The edge binds `targets` from `source` (`x in s`, `x = v`, `[a, b] = v`)."""
        value = self.convert(source)
        names = []
        for target in targets:
            name = self._local_name(target)
            names.append(name)
            variable = self.variables.get(target)
            declared = variable.type if variable is not None else source.type.element
            self.declarations.append(A.Declaration(type_expr(declared), name, span=variable.span if variable else span))
        if mode == "each":
            term = A.In(A.Variable(names[0], span=span), value, span=span)
        elif mode == "whole":
            term = A.Compare("=", A.Variable(names[0], span=span), value, span=span)
        else:
            term = A.Compare("=", A.VectorLiteral(tuple(A.Variable(n, span=span) for n in names), span=span),
                             value, span=span)
        self.terms.append(term)

    def condition(self, test: TExpr) -> None:
        self.terms.append(self.convert(test))

    def check(self, expr: TExpr) -> None:
        """Raise NotShippable when `expr` cannot be printed for the edge (nothing is kept)."""
        saved = (dict(self.params), {k: dict(v) for k, v in self.needs.items()}, list(self.terms), self._hidden)
        try:
            self.convert(expr)
        finally:
            self.params, self.needs, self.terms, self._hidden = saved[0], saved[1], saved[2], saved[3]

    def output(self, expr: TExpr, name: str) -> None:
        """A column the federation needs: `name` is what it is called there."""
        self.items.append(A.SelectItem(self.convert(expr), span=expr.span))
        self.columns.append(name)
        self.types.append(expr.type)

    def group(self, key: TExpr) -> None:
        self.group_by.append(self.convert(key))

    def aggregate(self, fn_name: str, arg: TExpr | None, name: str, type_: Type, span: Span | None) -> None:
        """A partial aggregate column: `fn_name(arg)` (count(*) when arg is None)."""
        if arg is None:
            call = A.Call(fn_name, (), star=True, span=span)
        else:
            call = A.Call(fn_name, (self.convert(arg),), span=span)
        self.items.append(A.SelectItem(call, span=span))
        self.columns.append(name)
        self.types.append(type_)

    def convert(self, expr: TExpr) -> A.Expr:
        return _Converter(self, self.local, self.source).convert(expr)

    def _local_name(self, target: str) -> str:
        variable = self.variables.get(target)
        if variable is not None and not variable.hidden and variable.written.isidentifier():
            name = variable.written
        else:
            self._hidden += 1
            name = f"_v{self._hidden}"
        self.local[target] = name
        return name

    def hoist(self, value: TExpr, span: Span | None) -> A.Expr:
        """A value computed once per row on the edge (a function argument used twice): bound to a
        hidden variable of the fragment."""
        self._hidden += 1
        name = f"_p{self._hidden}"
        self.declarations.append(A.Declaration(type_expr(value.type), name, span=span))
        self.terms.append(A.Compare("=", A.Variable(name, span=span), self.convert(value), span=span))
        return A.Variable(name, span=span)

    def param(self, key: Any, prefix: str, value: TExpr) -> A.Expr:
        found = self.params.get(key)
        if found is None:
            name = f"edge_{prefix}" if not any(p.name == f"edge_{prefix}" for p in self.params.values()) \
                else f"edge_{prefix}_{len(self.params) + 1}"
            found = self.params[key] = EdgeParam(name, value)
        return A.SessionVariable(found.name, span=value.span)

    # ----------------------------------------------------------------------------- result
    def build(self, kind: str) -> Fragment:
        items = tuple(self.items) or (A.SelectItem(A.Literal(True)),)
        where = None
        for term in self.terms:
            where = term if where is None else A.And(where, term)
        limit = A.Literal(self.limit) if self.limit is not None else None
        select = A.Select(items, tuple(self.declarations), where, group_by=tuple(self.group_by), limit=limit,
                          kind="stream" if kind == "stream" else None)
        text = to_source(select) + ";"
        columns = list(self.columns) or ["$none"]
        types = list(self.types) or [Type("Boolean")]
        return Fragment(text, kind, columns, types, list(self.params.values()),
                        dict(self.needs["signals"]), dict(self.needs["models"]), dict(self.needs["functions"]),
                        source_map(select, text))


def type_expr(t: Type) -> A.TypeExpr:
    return A.TypeExpr(t.name, type_expr(t.arg) if t.arg is not None else None)


class _Converter:
    """Typed tree → AST of what the edge evaluates."""

    def __init__(self, builder: FragmentBuilder | None, local: dict[str, str], source: str | None):
        self.builder = builder
        self.local = local
        self.source = source
        self.scopes: list[dict[str, str]] = []   # variables of subqueries being printed

    def fail(self, message: str, span: Span | None) -> NotShippable:
        return NotShippable(message, span, self.source)

    def convert(self, expr: TExpr) -> A.Expr:
        method = getattr(self, "_" + type(expr).__name__, None)
        if method is None:
            raise self.fail(f"{type(expr).__name__} cannot be computed on an edge", expr.span)
        return method(expr)

    def _TConst(self, expr: TConst) -> A.Expr:
        value = expr.value
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, (bool, int, float, str, Time, FunctionRef)):
            literal_source(value)  # raises for what has no syntax
            return A.Literal(value, span=expr.span)
        if isinstance(value, (np.ndarray, list)) and _flat_literals(value):
            items = value.tolist() if isinstance(value, np.ndarray) else value
            return A.VectorLiteral(tuple(A.Literal(v, span=expr.span) for v in items), span=expr.span)
        if self.builder is None:
            return A.Literal(str(value))
        # anything else (a matrix, a record, a bag of a session variable) travels as a parameter
        return self.builder.param(("const", id(expr)), "value", expr)

    def _TVar(self, expr: TVar) -> A.Expr:
        for scope in reversed(self.scopes):
            if expr.name in scope:
                return A.Variable(scope[expr.name], span=expr.span)
        if expr.name in self.local:
            return A.Variable(self.local[expr.name], span=expr.span)
        builder = self.builder
        if builder is not None and expr.name == builder.edge:
            raise self.fail(f"on the edge, {builder.edge_written} can be used only through its functions, such as "
                            f"id({builder.edge_written}) or region({builder.edge_written})", expr.span)
        if builder is None:
            return A.Variable(expr.name.lstrip("$"), span=expr.span)
        written = builder.variables[expr.name].written if expr.name in builder.variables else expr.name
        raise self.fail(f"{written} is a value of the federation, which an edge cannot see: compute it "
                        f"on the edge (… @ {builder.edge_written}) or use it outside @", expr.span)

    def _TCall(self, expr: TCall) -> A.Expr:
        builder = self.builder
        fn = expr.fn
        span = expr.span
        if builder is not None and fn.topic == "fleet":
            if builder.is_fleet_call(expr):
                return builder.param(expr, _param_prefix(expr), expr)
            raise self.fail(f"{fn.name} is answered by the federation's registry, not by an edge: use it "
                            f"outside @", span)
        if builder is not None:
            self._note(expr)
        args = [self.convert(a) for a in expr.args]
        name = fn.name
        if name in _BINARY and len(args) == 2:
            return A.BinaryOp(name, args[0], args[1], span=span)
        if name in _COMPARE and len(args) == 2:
            return A.Compare(name, args[0], args[1], span=span)
        if name == "neg":
            return A.Negate(args[0], span=span)
        if name == "in_list":
            return A.InList(args[0], tuple(args[1:]), span=span)
        if name == "in" and len(args) == 2:
            return A.In(args[0], args[1], span=span)
        if name == "between":
            return A.Between(args[0], args[1], args[2], span=span)
        if name == "like":
            return A.Like(args[0], args[1], span=span)
        if name == "is_null":
            return A.IsNull(args[0], span=span)
        if name == "index":
            return A.Index(args[0], args[1], span=span)
        if name == "slice":
            return A.Slice(args[0], args[1], args[2], span=span)
        if name == "cast":
            return A.Cast(args[0], type_expr(expr.options[0]), span=span)
        if name == "vector":
            return A.VectorLiteral(tuple(args), span=span)
        if name == "record":
            return A.RecordLiteral(tuple(zip(expr.options, args)), span=span)
        return A.Call(name, tuple(args), span=span)

    def _note(self, expr: TCall) -> None:
        needs = self.builder.needs
        name = expr.fn.name
        first = expr.args[0] if expr.args else None
        literal = first.value if isinstance(first, TConst) and isinstance(first.value, str) else None
        if name in SIGNAL_FUNCTIONS and literal is not None:
            needs["signals"].setdefault(literal, first.span)
        elif name in MODEL_FUNCTIONS and literal is not None:
            needs["models"].setdefault(literal, first.span)
        elif expr.fn.topic == "edge":
            needs["functions"].setdefault(name, expr.span)

    def _TAt(self, expr: TAt) -> A.Expr:
        return self.convert(expr.expr)

    def _TAnd(self, expr: TAnd) -> A.Expr:
        return _fold(A.And, [self.convert(t) for t in expr.terms], expr.span)

    def _TOr(self, expr: TOr) -> A.Expr:
        return _fold(A.Or, [self.convert(t) for t in expr.terms], expr.span)

    def _TNot(self, expr: TNot) -> A.Expr:
        return A.Not(self.convert(expr.operand), span=expr.span)

    def _TCase(self, expr: TCase) -> A.Expr:
        whens = tuple((self.convert(c), self.convert(v)) for c, v in expr.whens)
        otherwise = self.convert(expr.otherwise) if expr.otherwise is not None else None
        return A.Case(whens, otherwise, span=expr.span)

    def _TNarrow(self, expr: TNarrow) -> A.Expr:
        return self.convert(expr.operand)   # the edge checks its own values against the declarations

    def _TLet(self, expr: TLet) -> A.Expr:
        # the body reads the let's name: print the value in its place (a volatile value is
        # computed once per row on the edge instead, bound to a hidden variable of the fragment)
        if not expr.value.volatile or self.builder is None or self.scopes:
            value = self.convert(expr.value)
        else:
            value = self.builder.hoist(expr.value, expr.span)
        marker = f"__let{len(self.scopes)}"
        self.scopes.append({expr.name: marker})
        try:
            body = self.convert(expr.body)
        finally:
            self.scopes.pop()
        return _replace_variable(body, marker, value)

    def _TStored(self, expr: TStored) -> A.Expr:
        raise self.fail(f"{expr.function.name} is a stored function of the federation: its values stay there and "
                        f"stored functions do not run on edges", expr.span)

    def _TField(self, expr: TField) -> A.Expr:
        raise self.fail(f"{expr.table}.{expr.column} is a table of the federation, which edges cannot read",
                        expr.span)

    def _TAggregate(self, expr: TAggregate) -> A.Expr:
        if expr.arg is None:
            return A.Call(expr.fn.name, (), star=True, span=expr.span)
        return A.Call(expr.fn.name, (self.convert(expr.arg),), distinct=expr.distinct, span=expr.span)

    def _TQuery(self, expr: TQuery) -> A.Expr:
        return A.Subquery(self._query(expr.query), span=expr.span)

    def _query(self, query: BoundQuery) -> A.Select:
        scope: dict[str, str] = {}
        self.scopes.append(scope)
        try:
            declarations, terms, hidden_items = [], [], {}
            for name, variable in query.variables.items():
                if variable.hidden:
                    continue
                scope[name] = variable.written if variable.written.isidentifier() else f"_q{len(scope)}"
                declarations.append(A.Declaration(type_expr(variable.type), scope[name], span=variable.span))
            for conjunct in query.conjuncts:
                hidden = [t for t in conjunct.targets if query.variables.get(t) and query.variables[t].hidden]
                if hidden and len(conjunct.targets) == 1:
                    hidden_items[hidden[0]] = conjunct.source  # a stream or bag select item, flattened
                    continue
                if conjunct.targets and conjunct.mode in ("each", "whole", "destructure"):
                    value = self.convert(conjunct.source)
                    variables = [A.Variable(scope[t], span=conjunct.span) for t in conjunct.targets]
                    if conjunct.mode == "each":
                        terms.append(A.In(variables[0], value, span=conjunct.span))
                    elif conjunct.mode == "whole":
                        terms.append(A.Compare("=", variables[0], value, span=conjunct.span))
                    else:
                        terms.append(A.Compare("=", A.VectorLiteral(tuple(variables)), value, span=conjunct.span))
                else:
                    terms.append(self.convert(conjunct.test))
            groups = {f"$g{i}": key for i, key in enumerate(query.group_by)}
            aggregates = {f"$a{i}": a for i, a in enumerate(query.aggregates)}

            def item(expr: TExpr) -> A.Expr:
                if isinstance(expr, TVar) and expr.name in hidden_items:
                    return self.convert(hidden_items[expr.name])
                return self.convert(_ungroup(expr, groups, aggregates))

            items = tuple(A.SelectItem(item(e), alias=None, span=e.span) for _, e in query.items)
            where = _fold(A.And, terms, query.span) if terms else None
            return A.Select(items, tuple(declarations), where,
                            group_by=tuple(self.convert(k) for k in query.group_by),
                            having=self.convert(_ungroup(query.having, groups, aggregates))
                            if query.having is not None else None,
                            order_by=tuple(A.OrderItem(self.convert(_ungroup(e, groups, aggregates)), d)
                                           for e, d in query.order_by),
                            limit=self.convert(query.limit) if query.limit is not None else None,
                            distinct=query.distinct,
                            kind=query.kind if query.kind in ("stream", "vector") else None, span=query.span)
        finally:
            self.scopes.pop()


def _replace_variable(node: Any, name: str, value: A.Expr) -> Any:
    """The AST with every `Variable(name)` replaced by `value`."""
    if isinstance(node, A.Variable) and node.name == name:
        return value
    if isinstance(node, tuple):
        return tuple(_replace_variable(item, name, value) for item in node)
    if not isinstance(node, A.Node):
        return node
    changes = {}
    for f in dataclasses.fields(node):
        if f.name in ("span", "directives"):
            continue
        current = getattr(node, f.name)
        if isinstance(current, (A.Node, tuple)):
            new = _replace_variable(current, name, value)
            if new is not current:
                changes[f.name] = new
    return dataclasses.replace(node, **changes) if changes else node


def _ungroup(expr: TExpr | None, groups: dict, aggregates: dict) -> TExpr | None:
    """An item of an aggregate query written back over its group keys and aggregates."""
    if expr is None:
        return None

    def rewrite(node: TExpr) -> TExpr:
        if isinstance(node, TVar) and node.name in groups:
            return groups[node.name]
        if isinstance(node, TVar) and node.name in aggregates:
            return aggregates[node.name]
        return replace_children(node, rewrite)
    return rewrite(expr)


def _fold(kind, terms: list[A.Expr], span) -> A.Expr:
    out = terms[0]
    for term in terms[1:]:
        out = kind(out, term, span=span)
    return out


def _flat_literals(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.dtype.kind in "iufb" and len(value) <= 4096
    return len(value) <= 4096 and all(v is None or isinstance(v, (bool, int, float, str)) for v in value)


def _param_prefix(call: TCall) -> str:
    name = call.fn.name
    extra = [a.value for a in call.args[1:] if isinstance(a, TConst) and isinstance(a.value, str)]
    text = "_".join([name] + extra)
    clean = "".join(c if c.isalnum() or c == "_" else "_" for c in text.lower())
    return clean[:40] or "value"


# ------------------------------------------------------------------------------- source map
def source_map(select: A.Select, text: str) -> list[tuple[int, int, Span]]:
    """(start, end, user span) of every printed node that came from the user's text, found by
    locating each node's printed form inside its parent's printed range, left to right."""
    pieces: list[tuple[int, int, Span]] = []

    def visit(node: A.Node, start: int, end: int) -> None:
        cursor = start
        for child in _children(node):
            try:
                printed = to_source(child)
            except TypeError:
                continue
            found = text.find(printed, cursor, end)
            if found < 0:
                continue
            if child.span is not None:
                pieces.append((found, found + len(printed), child.span))
            visit(child, found, found + len(printed))
            cursor = found + len(printed)

    visit(select, 0, len(text))
    return pieces


def _children(node: A.Node):
    for f in dataclasses.fields(node):
        if f.name in ("span", "directives"):
            continue
        value = getattr(node, f.name)
        if isinstance(value, A.Node):
            yield value
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, A.Node):
                    yield item
                elif isinstance(item, tuple):
                    for sub in item:
                        if isinstance(sub, A.Node):
                            yield sub
