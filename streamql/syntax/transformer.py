"""The tree → AST transformer: every grammar rule and alias has a method; spans come from the
tokens each node was made of."""
from __future__ import annotations

from lark import Token, Transformer

from .. import ast as A
from ..errors import QueryParseError
from ..values import FunctionRef, Time
from .osql_forms import OsqlForms
from .spans import _Instance, _span, _unquote, token_span


class _Star:
    """Marks `select *`."""


def _names(children):
    return [str(c) for c in children if isinstance(c, Token) and c.type == "NAME_VALUE"]


class _Signed:
    """A prefix-signed operand inside an arithmetic list: its signs bind looser than `^`."""

    __slots__ = ("signs", "operand")

    def __init__(self, signs, operand):
        self.signs = signs
        self.operand = operand


def _apply_signs(signs, operand, children=None):
    minus = sum(1 for s in signs if s.type == "MINUS")
    if minus % 2 == 0:
        return operand
    return A.Negate(operand, span=_span([signs[0], operand]))


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "%": 2, ".*": 2, "./": 2, "^": 4, ".^": 4}
_RIGHT = {"^", ".^"}
_UNARY = 3


class _Precedence:
    """Groups a flat `a op b op c …` list by precedence (unary minus between `*` and `^`)."""

    __slots__ = ("items", "pos")

    def __init__(self, items):
        self.items = items
        self.pos = 0

    def parse(self, minimum: int = 1):
        left = self._operand()
        items = self.items
        while self.pos < len(items):
            op = items[self.pos].value
            precedence = _PRECEDENCE[op]
            if precedence < minimum:
                break
            self.pos += 1
            right = self.parse(precedence if op in _RIGHT else precedence + 1)
            left = A.BinaryOp(op, left, right, span=_span([left, right]))
        return left

    def _operand(self):
        item = self.items[self.pos]
        self.pos += 1
        if not isinstance(item, _Signed):
            return item
        operand = item.operand
        items = self.items
        while self.pos < len(items) and _PRECEDENCE[items[self.pos].value] > _UNARY:
            op = items[self.pos].value
            self.pos += 1
            right = self.parse(_PRECEDENCE[op] if op in _RIGHT else _PRECEDENCE[op] + 1)
            operand = A.BinaryOp(op, operand, right, span=_span([operand, right]))
        return _apply_signs(item.signs, operand)


class ToAst(OsqlForms, Transformer):
    """Lark rules → AST nodes, applied while parsing. Every grammar rule and alias has a method.

    Names come back from `name` as tokens of type NAME_VALUE so that they keep their position.
    """

    # -- statements -------------------------------------------------------------------------
    def start(self, children):
        return [c for c in children if not isinstance(c, Token)]

    def expr_statement(self, children):
        return A.ExprStatement(children[0], span=children[0].span)

    def select(self, children):
        keyword, distinct, kind, items, into, from_, where, group, having, order, limit = children
        if keyword.type == "VSELECT":   # AmosQL: vselect … is select vector of …
            kind = "vector"
        return A.Select(None if isinstance(items, _Star) else items, from_ or (), where,
                        group or (), having, order or (), limit, distinct is not None, kind,
                        into=into or (), span=_span(children))

    def into_clause(self, children):
        return tuple(c.value[1:] for c in children if c.type == "SESSION_VARIABLE")

    def stream_kind(self, children):
        return "stream"

    def vector_kind(self, children):
        return "vector"

    def bag_kind(self, children):
        return "bag"

    def select_list(self, children):
        return tuple(children)

    def select_star(self, children):
        return _Star()

    def select_item(self, children):
        expr, _, alias = children
        return A.SelectItem(expr, None if alias is None else str(alias), span=_span(children))

    def from_clause(self, children):
        return tuple(c for c in children if isinstance(c, A.Declaration))

    def declaration(self, children):
        type_, name = children
        if name is None:   # `from T`: the variable is named after its type
            if type_.of is not None:
                raise QueryParseError(f"a variable of type {type_.name} of … needs a name: from {type_.name} "
                                      f"of … x", type_.span)
            return A.Declaration(type_, type_.name.split(":")[-1].lower(), span=_span(children))
        return A.Declaration(type_, str(name), span=_span(children))

    def where_clause(self, children):
        return children[1]

    def group_clause(self, children):
        return tuple(c for c in children if isinstance(c, A.Expr))

    def having_clause(self, children):
        return children[1]

    def order_clause(self, children):
        return tuple(c for c in children if isinstance(c, A.OrderItem))

    def order_item(self, children):
        expr, direction = children
        return A.OrderItem(expr, direction is not None and direction.type == "DESC", span=_span(children))

    def order_direction(self, children):
        return children[0]

    def limit_clause(self, children):
        return children[1]

    def create_type(self, children):
        names = _names(children)
        properties = tuple(c for c in children if isinstance(c, A.Property))
        return A.CreateType(names[0], tuple(names[1:]), properties, span=_span(children))

    def property(self, children):
        name, type_, key = children
        return A.Property(str(name), type_, key is not None, span=_span(children))

    def create_instances(self, children):
        names = _names(children)
        instances = [c for c in children if isinstance(c, _Instance)]
        rows = tuple(i.values for i in instances)
        variables = tuple(i.variable for i in instances)
        local = any(i.local for i in instances)
        if local and not all(i.local for i in instances):
            raise QueryParseError("instances are bound either to session variables (:p) or, in a procedure, "
                                  "to local ones (p), not both", _span(children))
        return A.CreateInstances(names[0], tuple(names[1:]), rows,
                                 variables if any(v is not None for v in variables) else (), local,
                                 span=_span(children))

    def instance(self, children):
        variable = children[0].value[1:] if isinstance(children[0], Token) and \
            children[0].type == "SESSION_VARIABLE" else None
        return _Instance(variable, tuple(c for c in children if isinstance(c, A.Expr)), children)

    def value_row(self, children):
        return tuple(c for c in children if isinstance(c, A.Expr))

    def create_function(self, children):
        name = children[2]
        parameters = tuple(p for p in children if isinstance(p, A.Parameter))
        (result, result_name, key), body = children[-3], children[-1]
        if isinstance(result.of, A.TupleType):
            parts = result.of.parts
            if len(parts) > 1 and result.name.lower() != "bag":
                raise QueryParseError("a result of several parts is a bag of tuples: -> Bag of (T a, U b)",
                                      result.span)
        if isinstance(result.of, A.TupleType) and len(result.of.parts) == 1:
            parts = result.of.parts
            result = A.TypeExpr(result.name, parts[0].type, span=result.span)
            result_name = parts[0].name or None
        return A.CreateFunction(str(name), parameters, result, body, result_name, key,
                                span=_span(children))

    def function_name(self, children):
        token = children[0]
        return token if token.type == "NAME_VALUE" else Token(
            "NAME_VALUE", token.value, token.start_pos, token.line, token.column, token.end_line,
            token.end_column, token.end_pos)

    def result(self, children):
        type_, name, key = children
        return type_, None if name is None else str(name), key is not None

    def parameter(self, children):
        type_, name = children
        return A.Parameter(type_, "" if name is None else str(name), span=_span(children))

    def tuple_type(self, children):
        return A.TupleType(tuple(c for c in children if isinstance(c, A.Parameter)), span=_span(children))

    def stored_body(self, children):
        return A.StoredBody(span=_span(children))

    def query_body(self, children):
        return children[0]

    def expr_body(self, children):
        return children[0]

    def create_model(self, children):
        _, _, name, (path, expr), _, version = children
        return A.CreateModel(str(name), path, expr, None if version is None else _unquote(version),
                             span=_span(children))

    def model_name(self, children):
        child = children[0]
        return _unquote(child) if child.type == "STRING" else child

    def model_from_file(self, children):
        return (_unquote(children[1]), None)

    def model_from_expr(self, children):
        return (None, children[1])

    def create_table(self, children):
        name = _names(children)[0]
        columns = tuple(c for c in children if isinstance(c, A.ColumnDef))
        unique = tuple(c[1] for c in children if isinstance(c, tuple) and c[0] == "unique")
        primary = next((c[1] for c in children if isinstance(c, tuple) and c[0] == "primary"), ())
        return A.CreateTable(name, columns, unique, primary, span=_span(children))

    def column_def(self, children):
        name, type_, not_, _ = children
        return A.ColumnDef(str(name), type_, not_ is not None, span=_span(children))

    def unique_constraint(self, children):
        return ("unique", tuple(_names(children)))

    def primary_key_constraint(self, children):
        return ("primary", tuple(_names(children)))

    def insert(self, children):
        names = _names(children)
        rows = tuple(c for c in children if isinstance(c, tuple))
        return A.Insert(names[0], tuple(names[1:]), rows, span=_span(children))

    def arguments(self, children):
        return tuple(children)

    def set_function(self, children):
        _, name, _, args, _, value, from_, where = children
        return A.SetFunction(str(name), args or (), value, from_ or (), where, span=_span(children))

    def set_variable(self, children):
        return A.SetVariable(children[1].value[1:], children[2], span=_span(children))

    def delete(self, children):
        _, _, declaration, where = children
        return A.Delete(declaration, where, span=_span(children))

    def drop(self, children):
        _, kind, name = children
        name = _unquote(name) if name.type == "STRING" else str(name)
        return A.Drop(kind, name, span=_span(children))

    def drop_kind(self, children):
        return children[0].value.lower()

    def explain(self, children):
        statement = children[1]
        if isinstance(statement, A.Expr):
            statement = A.ExprStatement(statement, span=statement.span)
        return A.Explain(statement, span=_span(children))

    def validate(self, children):
        return A.Validate(_unquote(children[1]), tuple(children[2:]), span=_span(children))

    def check(self, children):
        return A.Check(children[1], children[2], span=_span(children))

    def deploy(self, children):
        _, _, model, _, version, _, selection, rollout = children
        return A.Deploy(_unquote(model), selection, None if version is None else _unquote(version), rollout,
                        span=_span(children))

    def rollback(self, children):
        _, _, model, _, _, version, _, selection, rollout = children
        return A.Rollback(_unquote(model), selection, None if version is None else _unquote(version), rollout,
                          span=_span(children))

    def undeploy(self, children):
        return A.Undeploy(_unquote(children[2]), children[4], children[5], span=_span(children))

    def rollout(self, children):
        """The options (`_rollout_option`, inlined) arrive as one flat list of tokens, with None
        where a wave size has no PERCENT; read it left to right into one Rollout."""
        def number(token, low, high=None, whole=False):
            value = float(token) if any(c in token for c in ".eE") else int(token)
            if value < low or (high is not None and value > high) or (whole and not isinstance(value, int)):
                rule = "a whole number" if whole else "a number"
                rule += f" from {low:g}" + (f" to {high:g}" if high is not None else " up")
                raise QueryParseError(f"{token} is out of range here: {rule}", token_span(token))
            return value
        found, i = {}, 0
        while i < len(children):
            head, kind = children[i], children[i].type
            if kind == "OVER" and children[i + 1].type == "NUMBER":
                key, value, i = "waves", number(children[i + 1], 1, whole=True), i + 3
            elif kind == "OVER":
                key, sizes, i = "wave_sizes", [], i + 3
                while i < len(children) and children[i] is not None and children[i].type == "NUMBER":
                    percent = children[i + 1] is not None
                    sizes.append((number(children[i], 1, 100) if percent else number(children[i], 1, whole=True),
                                  percent))
                    i += 2
                value = tuple(sizes)
            elif kind == "ABORT":
                key, value, i = "abort_above", number(children[i + 2], 0, 100), i + 4
            elif kind == "WAVE":
                seconds = number(children[i + 2], 0.001)
                key, i = "wave_timeout", i + 4
                value = seconds * 60 if children[i - 1].type == "MINUTES" else seconds
            else:  # ROLLBACK ON ABORT
                key, value, i = "rollback_on_abort", True, i + 3
            if key in found or {key, *found} >= {"waves", "wave_sizes"}:
                raise QueryParseError("each rollout option may be given once (and the waves one way)",
                                      token_span(head))
            found[key] = value
        return A.Rollout(**found, span=_span(children))

    def edge_selection(self, children):
        return A.EdgeSelection(children[0], children[1], span=_span(children))

    # -- types --------------------------------------------------------------------------------
    def type_expr(self, children):
        name, _, of = children
        return A.TypeExpr(str(name), of, span=_span(children))

    def type_ref(self, children):
        return self.type_name(children)

    def type_name(self, children):
        child = children[0]
        return child if child.type == "NAME_VALUE" else Token("NAME_VALUE", child.value, child.start_pos,
                                                            child.line, child.column, child.end_line,
                                                            child.end_column, child.end_pos)

    # -- expressions ----------------------------------------------------------------------
    def or_op(self, children):
        return A.Or(children[0], children[2], span=_span(children))

    def and_op(self, children):
        return A.And(children[0], children[2], span=_span(children))

    def not_op(self, children):
        return A.Not(children[1], span=_span(children))

    def compare(self, children):
        left, op, right = children
        return A.Compare("!=" if op.value == "<>" else op.value, left, right, span=_span(children))

    def equals(self, children):
        return A.Compare("=", children[0], children[1], span=_span(children))

    def in_op(self, children):
        element, negated, _, (kind, target, end) = children
        span = _span([element, end])
        if kind == "list":
            return A.InList(element, target, negated is not None, span=span)
        return A.In(element, target, negated is not None, span=span)

    def tuple_in(self, children):
        element, negated, _, collection = children
        return A.In(element, collection, negated is not None, span=_span([element, collection]))

    def tuple(self, children):
        # AmosQL's tuple of parts is a vector here: the parts of a tuple-valued function's result
        return A.VectorLiteral(tuple(c for c in children if isinstance(c, A.Expr)), span=_span(children))

    def in_list(self, children):
        return ("list", tuple(c for c in children if isinstance(c, A.Expr)), children[-1])

    def in_expr(self, children):
        return ("expr", children[0], children[0])

    def between(self, children):
        operand, negated, _, low, _, high = children
        return A.Between(operand, low, high, negated is not None, span=_span(children))

    def like(self, children):
        operand, negated, _, pattern = children
        return A.Like(operand, pattern, negated is not None, span=_span(children))

    def is_null(self, children):
        operand, _, negated, _ = children
        return A.IsNull(operand, negated is not None, span=_span(children))

    def arithmetic(self, children):
        return _Precedence(children).parse()

    def negation(self, children):
        return _apply_signs(children[:-1], children[-1], children)

    def signed_operand(self, children):
        return _Signed(children[:-1], children[-1])

    def paren(self, children):
        return children[1]

    def index(self, children):
        return A.Index(children[0], children[2], span=_span(children))

    def slice(self, children):
        return A.Slice(children[0], children[2], children[3], span=_span(children))

    def field(self, children):
        return A.Field(children[0], str(children[1]), span=_span(children))

    def at_edge(self, children):
        return A.AtEdge(children[0], children[1], span=_span(children))

    def variable(self, children):
        return A.Variable(str(children[0].value), span=token_span(children[0]))

    def session_variable(self, children):
        return A.SessionVariable(children[0].value[1:], span=token_span(children[0]))

    def call(self, children):
        args = tuple(c for c in children[2:-1] if c is not None)
        return A.Call(children[0].value, args, span=_span(children))

    def call_query(self, children):
        query = children[2]
        return A.Call(children[0].value, (A.Subquery(query, span=query.span),), span=_span(children))

    def call_star(self, children):
        return A.Call(children[0].value, (), star=True, span=_span(children))

    def call_distinct(self, children):
        return A.Call(children[0].value, (children[3],), distinct=True, span=_span(children))

    def cast(self, children):
        return A.Cast(children[2], children[4], span=_span(children))

    def subquery(self, children):
        return A.Subquery(children[1], span=_span(children))

    def vector(self, children):
        return A.VectorLiteral(tuple(c for c in children[1:-1] if c is not None), span=_span(children))

    def record(self, children):
        return A.RecordLiteral(tuple(c for c in children[1:-1] if c is not None), span=_span(children))

    def record_field(self, children):
        return (_unquote(children[0]), children[1])

    def case(self, children):
        whens = tuple(c for c in children if isinstance(c, tuple))
        otherwise = children[-2]
        return A.Case(whens, otherwise, span=_span(children))

    def case_when(self, children):
        return (children[1], children[3])

    def number(self, children):
        token = children[0]
        text = token.value
        value = float(text) if ("." in text or "e" in text or "E" in text) else int(text)
        return A.Literal(value, span=token_span(token))

    def string(self, children):
        return A.Literal(_unquote(children[0].value), span=token_span(children[0]))

    def true(self, children):
        return A.Literal(True, span=token_span(children[0]))

    def false(self, children):
        return A.Literal(False, span=token_span(children[0]))

    def null(self, children):
        return A.Literal(None, span=token_span(children[0]))

    def time(self, children):
        token = children[0]
        try:
            value = Time.parse(token.value[1:-1])
        except ValueError as exc:
            raise QueryParseError(str(exc), token_span(token)) from None
        return A.Literal(value, span=token_span(token))

    def function_ref(self, children):
        return A.Literal(FunctionRef(children[0].value[2:-1]), span=token_span(children[0]))

    def name(self, children):
        token = children[0]
        return Token("NAME_VALUE", token.value, token.start_pos, token.line, token.column,
                     token.end_line, token.end_column, token.end_pos)
