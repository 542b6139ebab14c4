"""The abstract syntax tree: one frozen dataclass per node.

Every node carries a `span` that takes no part in equality or repr, so two parses of the same text
compare equal whatever the spacing. Names keep the spelling the user wrote; the binder compares
them case-insensitively. `to_source` prints any node back to source that parses to an equal node.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Union

from .errors import Span
from .printer import to_source

_span = lambda: field(default=None, compare=False, repr=False, kw_only=True)  # noqa: E731


@dataclass(frozen=True)
class Node:
    span: Span | None = _span()

    def children(self) -> Iterator["Node"]:
        """The direct child nodes, in field order (tuples and pairs unpacked)."""
        names = _CHILD_FIELDS.get(type(self))
        if names is None:
            names = _CHILD_FIELDS[type(self)] = tuple(
                f.name for f in fields(self) if f.name not in ("span", "directives"))
        for name in names:
            value = getattr(self, name)
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                yield from _nodes_in(value)

    def walk(self) -> Iterator["Node"]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children():
            yield from child.walk()

    def sql(self) -> str:
        return to_source(self)


_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}   # node class → its fields that may hold nodes


def _nodes_in(value: Any) -> Iterator[Node]:
    if isinstance(value, Node):
        yield value
    elif isinstance(value, tuple):
        for item in value:
            yield from _nodes_in(item)


# ------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class TypeExpr(Node):
    """A type as written: `Real`, `Vector of Real`, `Stream of Vector of Number`, `function`."""

    name: str
    of: "TypeExpr | TupleType | None" = None


@dataclass(frozen=True)
class TupleType(Node):
    """AmosQL's tuple result, `Bag of (Person spouse, Integer year)`: named parts."""

    parts: tuple["Parameter", ...]


# ------------------------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Expr(Node):
    pass


@dataclass(frozen=True)
class Literal(Expr):
    """A constant: int, float, str, bool, None, Time or FunctionRef."""

    value: Any

    def __eq__(self, other: object) -> bool:
        # true = 1 must not make Literal(True) equal Literal(1); 1 and 1.0 are different literals.
        return (isinstance(other, Literal) and type(self.value) is type(other.value)
                and self.value == other.value)

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@dataclass(frozen=True)
class Variable(Expr):
    name: str


@dataclass(frozen=True)
class SessionVariable(Expr):
    name: str  # without the colon


@dataclass(frozen=True)
class Call(Expr):
    """`f(a, b)`, `csv:file_stream(p)` (name holds the namespace), `count(*)` (star=True) or
    `count(distinct x)` (distinct=True)."""

    name: str
    args: tuple[Expr, ...] = ()
    star: bool = False
    distinct: bool = False


@dataclass(frozen=True)
class BinaryOp(Expr):
    """Arithmetic: + - * / % ^ and the elementwise .* ./ .^"""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Negate(Expr):
    operand: Expr


@dataclass(frozen=True)
class Compare(Expr):
    """= != < <= > >= (`<>` is read as `!=`)."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class And(Expr):
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or(Expr):
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not(Expr):
    operand: Expr


@dataclass(frozen=True)
class In(Expr):
    """`x in e`: generates x when x is unbound, tests membership otherwise."""

    element: Expr
    collection: Expr
    negated: bool = False


@dataclass(frozen=True)
class InList(Expr):
    """`x in (a, b, …)` with two or more items."""

    element: Expr
    items: tuple[Expr, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between(Expr):
    operand: Expr
    low: Expr
    high: Expr
    negated: bool = False


@dataclass(frozen=True)
class Like(Expr):
    operand: Expr
    pattern: Expr
    negated: bool = False


@dataclass(frozen=True)
class IsNull(Expr):
    operand: Expr
    negated: bool = False


@dataclass(frozen=True)
class Index(Expr):
    """`v[i]` (1-based) or `r['key']`."""

    target: Expr
    index: Expr


@dataclass(frozen=True)
class Slice(Expr):
    """`v[i:j]`, both ends inclusive and 1-based."""

    target: Expr
    start: Expr
    stop: Expr


@dataclass(frozen=True)
class Field(Expr):
    """`r.site`: a column of a table row variable."""

    target: Expr
    name: str


@dataclass(frozen=True)
class AtEdge(Expr):
    """`expr @ e`: evaluate expr on edge e's own engine."""

    expr: Expr
    edge: Expr


@dataclass(frozen=True)
class Cast(Expr):
    operand: Expr
    type: TypeExpr


@dataclass(frozen=True)
class VectorLiteral(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class RecordLiteral(Expr):
    fields: tuple[tuple[str, Expr], ...]

    def children(self) -> Iterator[Node]:
        for _, value in self.fields:
            yield value


@dataclass(frozen=True)
class Case(Expr):
    whens: tuple[tuple[Expr, Expr], ...]
    otherwise: Expr | None = None


@dataclass(frozen=True)
class Subquery(Expr):
    query: "Select"


# -------------------------------------------------------------------------------- statements
@dataclass(frozen=True)
class Statement(Node):
    directives: tuple[str, ...] = field(default=(), compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Declaration(Node):
    type: TypeExpr
    name: str


@dataclass(frozen=True)
class SelectItem(Node):
    expr: Expr
    alias: str | None = None


@dataclass(frozen=True)
class OrderItem(Node):
    expr: Expr
    descending: bool = False


@dataclass(frozen=True)
class Select(Statement):
    """`select [distinct] [stream of|vector of|bag of] items from … where … group by … having …
    order by … limit …`. items is None for `select *`; kind is None when not written."""

    items: tuple[SelectItem, ...] | None
    declarations: tuple[Declaration, ...] = ()
    where: Expr | None = None
    group_by: tuple[Expr, ...] = ()
    having: Expr | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: Expr | None = None
    distinct: bool = False
    kind: str | None = None  # 'stream' | 'vector' | 'bag' | None
    into: tuple[str, ...] = ()   # `select … into :a, :b`: the first row's values, set


@dataclass(frozen=True)
class ExprStatement(Statement):
    """A bare expression: a query of its value (`sqrt(siota(1, 5));`)."""

    expr: Expr


@dataclass(frozen=True)
class Property(Node):
    name: str
    type: TypeExpr
    key: bool = False


@dataclass(frozen=True)
class CreateType(Statement):
    name: str
    supertypes: tuple[str, ...] = ()
    properties: tuple[Property, ...] = ()


@dataclass(frozen=True)
class CreateInstances(Statement):
    type_name: str
    functions: tuple[str, ...]
    rows: tuple[tuple[Expr, ...], ...]
    variables: tuple[str | None, ...] = ()   # AmosQL `instances :p (…)`: session variables bound
    local: bool = False                      # … or, in a procedure, `instances p`: local variables


@dataclass(frozen=True)
class Parameter(Node):
    type: TypeExpr
    name: str          # "" when left out (AmosQL `born(Person) -> Integer`)


@dataclass(frozen=True)
class StoredBody(Node):
    """The body `as stored`: the function is a table of values."""


@dataclass(frozen=True)
class ForeignBody(Node):
    """The body `as foreign 'py:package.module.function'`: a Python callable the operator allows."""

    target: str


@dataclass(frozen=True)
class CreateFunction(Statement):
    name: str
    parameters: tuple[Parameter, ...]
    result: TypeExpr
    body: Union[StoredBody, ForeignBody, Expr, Select, "Block", "ForEach"]
    result_name: str | None = None   # AmosQL `-> Bag of Person c`
    key: bool = False                # `-> Charstring key`: values unique


@dataclass(frozen=True)
class CreateModel(Statement):
    """`create model NAME from 'file' [version 'v']` or `create model NAME as expr [version 'v']`."""

    name: str
    path: str | None = None
    expr: Expr | None = None
    version: str | None = None


@dataclass(frozen=True)
class ColumnDef(Node):
    name: str
    type: TypeExpr
    not_null: bool = False


@dataclass(frozen=True)
class CreateTable(Statement):
    name: str
    columns: tuple[ColumnDef, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    primary_key: tuple[str, ...] = ()


@dataclass(frozen=True)
class Insert(Statement):
    table: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Expr, ...], ...]


@dataclass(frozen=True)
class SetFunction(Statement):
    """`set f(args) = value [from … where …]`; `add …` / `remove …` (mode) for bag-valued ones."""

    function: str
    args: tuple[Expr, ...]
    value: Expr
    declarations: tuple[Declaration, ...] = ()
    where: Expr | None = None
    mode: str = "set"   # 'set' | 'add' | 'remove'


@dataclass(frozen=True)
class SetVariable(Statement):
    """`set :name = value`."""

    name: str
    value: Expr


@dataclass(frozen=True)
class Delete(Statement):
    declaration: Declaration
    where: Expr | None = None


@dataclass(frozen=True)
class Drop(Statement):
    kind: str  # 'function' | 'type' | 'table' | 'model'
    name: str


@dataclass(frozen=True)
class Explain(Statement):
    statement: Statement


@dataclass(frozen=True)
class Check(Node):
    expr: Expr
    expected: Expr


@dataclass(frozen=True)
class Validate(Statement):
    name: str
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class EdgeSelection(Node):
    """The devices a fleet statement addresses: `Edge e where …`. Shared by deploy, rollback,
    undeploy and the federation's planner for fleet queries."""

    declaration: Declaration
    where: Expr | None = None


@dataclass(frozen=True)
class Rollout(Node):
    """How a fleet change goes out: `over 3 waves` (equal waves) or `over waves of 1, 10 percent`
    (these sizes, then the rest as a last wave), `abort above 10 percent` (of the devices a wave
    finished), `wave timeout 2 minutes` (kept in seconds), `rollback on abort`. None: the
    federation's default. A wave size is (number, True for a percentage of the devices)."""

    waves: int | None = None
    wave_sizes: tuple[tuple[int | float, bool], ...] = ()
    abort_above: int | float | None = None   # percent
    wave_timeout: int | float | None = None  # seconds
    rollback_on_abort: bool = False


@dataclass(frozen=True)
class Deploy(Statement):
    model: str
    selection: EdgeSelection
    version: str | None = None
    rollout: Rollout | None = None


@dataclass(frozen=True)
class Rollback(Statement):
    model: str
    selection: EdgeSelection
    version: str | None = None
    rollout: Rollout | None = None


@dataclass(frozen=True)
class Undeploy(Statement):
    model: str
    selection: EdgeSelection
    rollout: Rollout | None = None


@dataclass(frozen=True)
class Script(Node):
    statements: tuple[Statement, ...]

    def __iter__(self):
        return iter(self.statements)

    def __len__(self) -> int:
        return len(self.statements)

    def __getitem__(self, index: int) -> Statement:
        return self.statements[index]


def conjuncts(expr: Expr | None) -> list[Expr]:
    """The top-level `and` terms of a predicate, left to right."""
    if expr is None:
        return []
    if isinstance(expr, And):
        return conjuncts(expr.left) + conjuncts(expr.right)
    return [expr]


def conjoin(terms: list[Expr]) -> Expr | None:
    """The `and` of terms (None for none)."""
    result: Expr | None = None
    for term in terms:
        result = term if result is None else And(result, term, span=(result.span.merge(term.span) if result.span else term.span))
    return result



@dataclass(frozen=True)
class DeleteObject(Statement):
    """`delete :p`: the object a session variable holds, and every value that mentions it."""

    variable: str


@dataclass(frozen=True)
class DeclareVariables(Statement):
    """`declare Integer :i, Real :x`: session variables of a type, unset until set."""

    items: tuple[tuple[TypeExpr, str], ...]


@dataclass(frozen=True)
class Toploop(Statement):
    """`quit`, `commit` (save the store) or `rollback` (return to the last saved store)."""

    command: str


@dataclass(frozen=True)
class OpenCursor(Statement):
    """`open :c for expr`: a scan over the rows of expr (OSQL's cursors)."""

    name: str
    expr: Expr


@dataclass(frozen=True)
class FetchCursor(Statement):
    """`fetch :c [into :a, :b]`: the scan's next row, shown or put into session variables."""

    name: str
    into: tuple[str, ...] = ()


@dataclass(frozen=True)
class CloseCursor(Statement):
    """`close :c`: the scan ends and frees what it holds."""

    name: str


# ------------------------------------------------------------------- procedural OSQL (bodies)
@dataclass(frozen=True)
class Block(Node):
    """A procedural body `{ s1; s2; … }` or `begin … end`."""

    statements: tuple[Node, ...]


@dataclass(frozen=True)
class ForEach(Node):
    """`for each T x, … where … <statement>`: the statement once per row of the query."""

    declarations: tuple[Declaration, ...]
    where: Expr | None
    body: Node


@dataclass(frozen=True)
class If(Node):
    condition: Expr
    then: Node
    otherwise: Node | None = None


@dataclass(frozen=True)
class Return(Node):
    """`return v`: v is one of the procedure's results (it goes on, as in a `for each`)."""

    value: Expr | None = None


@dataclass(frozen=True)
class SetLocal(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class DeclareLocal(Node):
    items: tuple[tuple[TypeExpr, str], ...]


@dataclass(frozen=True)
class ProcCall(Node):
    """A call for its effect (a procedure's result is dropped)."""

    call: Call
