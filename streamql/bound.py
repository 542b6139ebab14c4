"""The typed tree the binder produces: expressions with their types, resolved functions and
variables, and queries with typed conjuncts. Structural equality (spans excluded) lets the
optimizer find common subexpressions.

A few nodes exist only in optimized plans (`TKernel`, `TSourceFilter`, `TTake`): optimizer rules
make them, and the physical layer chooses how to run them. `replace_children` rebuilds any node
with new children, for the binder's and the rules' rewrites.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from .errors import Span
from .types import Type
from .values import hashable

_span = lambda: field(default=None, compare=False, repr=False, kw_only=True)  # noqa: E731
_EMPTY: frozenset = frozenset()


@dataclass(frozen=True)
class TExpr:
    type: Type
    span: Span | None = _span()

    def children(self) -> tuple["TExpr", ...]:
        return ()

    def walk(self) -> Iterator["TExpr"]:
        yield self
        for child in self.children():
            yield from child.walk()

    def free_variables(self) -> frozenset[str]:
        """The variables the expression reads (computed once per node; nodes are immutable)."""
        cached = self.__dict__.get("_free")
        if cached is None:
            cached = self._compute_free()
            object.__setattr__(self, "_free", cached)
        return cached

    def _compute_free(self) -> frozenset[str]:
        children = self.children()
        if not children:
            return _EMPTY
        if len(children) == 1:
            return children[0].free_variables()
        out: set[str] = set()
        for child in children:
            out |= child.free_variables()
        return frozenset(out)

    @property
    def volatile(self) -> bool:
        """Whether evaluating twice may give different answers (never folded, hoisted or shared)."""
        cached = self.__dict__.get("_volatile")
        if cached is None:
            cached = self._own_volatility() or any(child.volatile for child in self.children())
            object.__setattr__(self, "_volatile", cached)
        return cached

    def _own_volatility(self) -> bool:
        return False

    @property
    def facts(self) -> tuple[int, bool, bool]:
        """(node count, holds a call of a non-operator function, holds a subquery or aggregate),
        computed once per node: the optimizer asks about every subtree many times."""
        cached = self.__dict__.get("_facts")
        if cached is None:
            size, costly, opaque = 1, self._own_cost(), self._own_opacity()
            for child in self.children():
                child_size, child_costly, child_opaque = child.facts
                size += child_size
                costly = costly or child_costly
                opaque = opaque or child_opaque
            cached = (size, costly, opaque)
            object.__setattr__(self, "_facts", cached)
        return cached

    def _own_cost(self) -> bool:
        return False

    def _own_opacity(self) -> bool:
        return False


@dataclass(frozen=True)
class TConst(TExpr):
    value: Any

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TConst) and self.type == other.type
                and type(self.value) is type(other.value) and _exact(self.value) == _exact(other.value))

    def __hash__(self) -> int:
        return hash((self.type, _exact(self.value)))


@dataclass(frozen=True)
class TVar(TExpr):
    """A query variable (lowercase name), a hidden one (`$…`) or a function parameter."""

    name: str

    def _compute_free(self) -> frozenset[str]:
        return frozenset((self.name,))


@dataclass(frozen=True)
class TCall(TExpr):
    """A call of a library overload. `lift` is 'stream' when a scalar function maps over a
    stream argument (`sqrt(siota(1, 10))`), else None."""

    fn: Any  # registry.Overload (compared by identity)
    args: tuple[TExpr, ...] = ()
    lift: str | None = None
    options: tuple = ()  # static extras some functions need (e.g. a cast's target type)

    def children(self):
        return self.args

    def _own_volatility(self) -> bool:
        return self.fn.volatile

    def _own_cost(self) -> bool:
        return self.fn.topic != "operator"


@dataclass(frozen=True)
class TStored(TExpr):
    """A call of a stored function: a lookup that may find no value (then the row is dropped)."""

    function: Any  # store.StoredFunction
    args: tuple[TExpr, ...] = ()

    def children(self):
        return self.args


@dataclass(frozen=True)
class TField(TExpr):
    """A column of a table row variable: `r.site`."""

    target: TExpr
    table: str
    column: str
    position: int

    def children(self):
        return (self.target,)


@dataclass(frozen=True)
class TAnd(TExpr):
    terms: tuple[TExpr, ...] = ()

    def children(self):
        return self.terms


@dataclass(frozen=True)
class TOr(TExpr):
    terms: tuple[TExpr, ...] = ()

    def children(self):
        return self.terms


@dataclass(frozen=True)
class TNot(TExpr):
    operand: TExpr = None

    def children(self):
        return (self.operand,)


@dataclass(frozen=True)
class TCase(TExpr):
    whens: tuple[tuple[TExpr, TExpr], ...] = ()
    otherwise: TExpr | None = None

    def children(self):
        out = [x for pair in self.whens for x in pair]
        if self.otherwise is not None:
            out.append(self.otherwise)
        return tuple(out)


@dataclass(frozen=True)
class TNarrow(TExpr):
    """A value known only at run time to have `type`: checked there, naming `label` on failure."""

    operand: TExpr = None
    label: str = ""

    def children(self):
        return (self.operand,)


@dataclass(frozen=True)
class TLet(TExpr):
    """Evaluate `value` once, name it, and evaluate `body` (keeps volatile arguments single)."""

    name: str = ""
    value: TExpr = None
    body: TExpr = None

    def children(self):
        return (self.value, self.body)

    def _compute_free(self) -> frozenset[str]:
        return self.value.free_variables() | (self.body.free_variables() - {self.name})


@dataclass(frozen=True)
class TQuery(TExpr):
    """A nested query used as a value: a Bag, Vector or Stream. `plan` is its logical plan, given
    before the physical plan is built (compiler.plan_query plans every nested query)."""

    query: Any = None  # BoundQuery
    plan: Any = field(default=None, compare=False, repr=False)  # logical.LogicalPlan

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def _compute_free(self) -> frozenset[str]:
        return frozenset(self.query.outer_references)

    def _own_volatility(self) -> bool:
        return self.query.volatile

    def _own_opacity(self) -> bool:
        return True


@dataclass(frozen=True)
class TAt(TExpr):
    """`expr @ e`: evaluated on edge e (planned by a federation)."""

    expr: TExpr = None
    edge: TExpr = None
    source: str = ""  # the fragment's printed source
    node: Any = field(default=None, compare=False, repr=False)  # the AST of `expr`, printed into fragments

    def children(self):
        return (self.expr, self.edge)

    def _own_volatility(self) -> bool:
        return True


@dataclass(frozen=True)
class TAggregate(TExpr):
    """An aggregate over the rows of a group (`count(e)` with group by, `sum(x)` over a query)."""

    fn: Any = None  # the aggregate overload
    arg: TExpr | None = None  # None for count(*)
    distinct: bool = False    # count(distinct x): each value once
    node: Any = field(default=None, compare=False, repr=False)  # the argument's AST (for fleet fragments)

    def _own_opacity(self) -> bool:
        return True

    def children(self):
        return () if self.arg is None else (self.arg,)


# ------------------------------------------------------------------------- plan expressions
@dataclass(frozen=True)
class TKernel(TExpr):
    """A tree of elementwise arithmetic, comparisons and math on numbers, run as one kernel
    (made by elementwise_fusion; physical/kernels.py generates the code). `expr` is what it
    computes, also what runs when an input is not a plain numeric column."""

    expr: TExpr = None

    def children(self):
        return (self.expr,)


# What a kernel may hold: elementwise_fusion picks only these, physical/kernels.py runs each.
KERNEL_BINARY = frozenset({"+", "-", "*", "/", "%", "^", "<", "<=", ">", ">=", "=", "!="})
KERNEL_UNARY = frozenset({"neg", "sqrt", "exp", "log", "sin", "cos", "tan", "abs"})


@dataclass(frozen=True)
class TSourceFilter(TExpr):
    """A stream or bag whose elements are filtered as they are produced (predicate_pushdown):
    each element, named `variable`, is kept when `predicate` holds, after a check against the
    declared type `narrow` when there is one."""

    source: TExpr = None
    variable: str = ""
    predicate: TExpr = None
    narrow: Any = None  # types.Type | None

    def children(self):
        return (self.source, self.predicate)

    def _compute_free(self) -> frozenset[str]:
        # the predicate reads only the element it tests, which the filter itself binds
        return self.source.free_variables() | (self.predicate.free_variables() - {self.variable})


@dataclass(frozen=True)
class TTake(TExpr):
    """The first `count` elements of a stream or bag (limit_pushdown): the source stops after them."""

    source: TExpr = None
    count: int = 0

    def children(self):
        return (self.source,)


def _exact(value):
    """A key equal only for the very same constant: 0.0 and -0.0 differ (atan2 and 1/x tell them
    apart), and nan equals nan; everything else as values compare."""
    if isinstance(value, float):
        return ("float", value.hex())
    return hashable(value)


def _cache_hashes() -> None:
    """Frozen dataclasses hash their whole tree on every call; typed trees are immutable, so each
    node keeps its hash after the first time (the optimizer hashes subtrees a lot)."""
    for cls in (TExpr, TConst, TVar, TCall, TStored, TField, TAnd, TOr, TNot, TCase, TNarrow, TLet, TAt,
                TAggregate, TKernel, TSourceFilter, TTake):
        original = cls.__dict__.get("__hash__")
        if original is None:
            continue

        def cached(self, _original=original):
            value = self.__dict__.get("_hash")
            if value is None:
                value = _original(self)
                object.__setattr__(self, "_hash", value)
            return value
        cls.__hash__ = cached
        original_eq = cls.__dict__.get("__eq__")
        if original_eq is not None:
            # equal trees hash alike, so different hashes settle most comparisons at once
            def equal(self, other, _original=original_eq):
                if self is other:
                    return True
                if type(other) is not type(self) or hash(self) != hash(other):
                    return NotImplemented if not isinstance(other, TExpr) else False
                return _original(self, other)
            cls.__eq__ = equal


_cache_hashes()


# ------------------------------------------------------------------------------- rewriting
def replace_children(node: TExpr, fn) -> TExpr:
    """node with fn applied to each child expression; the same node when nothing changed
    (queries and aggregates are left alone: they are rewritten where they are planned)."""
    kind = type(node)
    replacer = _REPLACERS.get(kind)
    if replacer is None:
        replacer = next((r for base, r in _REPLACER_BASES if issubclass(kind, base)), _leaf)
        _REPLACERS[kind] = replacer
    return replacer(node, fn)


def _leaf(node, fn):
    return node


def _replace_args(node, fn):
    args = tuple(fn(a) for a in node.args)
    return node if _same(args, node.args) else replace(node, args=args)


def _replace_terms(node, fn):
    terms = tuple(fn(t) for t in node.terms)
    return node if _same(terms, node.terms) else replace(node, terms=terms)


def _replace_operand(node, fn):
    operand = fn(node.operand)
    return node if operand is node.operand else replace(node, operand=operand)


def _replace_case(node, fn):
    whens = tuple((fn(c), fn(v)) for c, v in node.whens)
    otherwise = None if node.otherwise is None else fn(node.otherwise)
    if otherwise is node.otherwise and all(a is c and b is v for (a, b), (c, v) in zip(whens, node.whens)):
        return node
    return replace(node, whens=whens, otherwise=otherwise)


def _replace_target(node, fn):
    target = fn(node.target)
    return node if target is node.target else replace(node, target=target)


def _replace_let(node, fn):
    value, body = fn(node.value), fn(node.body)
    return node if value is node.value and body is node.body else replace(node, value=value, body=body)


def _replace_kernel(node, fn):
    expr = fn(node.expr)
    return node if expr is node.expr else replace(node, expr=expr)


def _replace_source_filter(node, fn):
    source, predicate = fn(node.source), fn(node.predicate)
    if source is node.source and predicate is node.predicate:
        return node
    return replace(node, source=source, predicate=predicate)


def _replace_source(node, fn):
    source = fn(node.source)
    return node if source is node.source else replace(node, source=source)


# a lookup by the node's class: the rewrites of the binder and optimizer call this for every node
_REPLACER_BASES = ((TCall, _replace_args), (TStored, _replace_args), (TAnd, _replace_terms),
                   (TOr, _replace_terms), (TNot, _replace_operand), (TNarrow, _replace_operand),
                   (TCase, _replace_case), (TField, _replace_target), (TLet, _replace_let),
                   (TKernel, _replace_kernel), (TSourceFilter, _replace_source_filter), (TTake, _replace_source))
_REPLACERS: dict[type, object] = {}


def _same(new: tuple, old: tuple) -> bool:
    return all(a is b for a, b in zip(new, old))


# -------------------------------------------------------------------------------------- queries
@dataclass
class Variable:
    name: str          # lowercase
    type: Type
    written: str       # as the user wrote it, for messages
    span: Span | None
    hidden: bool = False


@dataclass
class Conjunct:
    """One `and`-term of a where clause.

    `test` is how it is checked when everything it mentions is bound. When it can also bind
    variables (`x in e`, `x = e`, `[a, b] = v`), `targets` are those variables, `source` the
    expression they come from and `mode` how: 'each' element of a bag/vector/stream, 'whole'
    value, or 'destructure' a vector into several variables.
    """

    test: TExpr
    span: Span | None = None
    targets: tuple[str, ...] = ()
    source: TExpr | None = None
    mode: str | None = None
    narrow: tuple[Type | None, ...] = ()  # per target: a run-time check to the declared type


@dataclass
class BoundQuery:
    kind: str                                   # 'bag' | 'vector' | 'stream'
    variables: dict[str, Variable]              # the query's own variables (declared and hidden)
    conjuncts: list[Conjunct]
    items: list[tuple[str, TExpr]]              # column name, expression
    distinct: bool = False
    group_by: list[TExpr] = field(default_factory=list)
    aggregates: list[TAggregate] = field(default_factory=list)
    having: TExpr | None = None
    order_by: list[tuple[TExpr, bool]] = field(default_factory=list)
    limit: TExpr | None = None
    outer_references: frozenset[str] = frozenset()
    extents: dict[str, Any] = field(default_factory=dict)   # variable → what enumerates it
    span: Span | None = None
    source: str | None = None
    aggregate_query: bool = False

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in self.items]

    @property
    def types(self) -> list[Type]:
        return [expr.type for _, expr in self.items]

    @property
    def continuous(self) -> bool:
        return self.kind == "stream"

    @property
    def volatile(self) -> bool:
        return self.continuous or any(c.test.volatile or (c.source is not None and c.source.volatile)
                                      for c in self.conjuncts) or any(e.volatile for _, e in self.items)
