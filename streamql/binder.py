"""The binder and type checker: AST + catalog → typed tree, before anything runs.

It resolves names (variables, session variables, library, stored and derived functions, types),
picks overloads, lifts scalar functions over streams and numeric vectors, decides which `in` and
`=` terms can generate variables, inlines derived functions, and reports every problem as a
`QueryTypeError` or `QueryNameError` with the position of the offending expression.
"""
from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field, replace

import numpy as np

from . import ast as A
from .bound import (BoundQuery, Conjunct, TAggregate, TAnd, TCall, TCase, TConst, TExpr, TField,
                    TLet, TNarrow, TNot, TOr, TQuery, TStored, TVar, Variable, replace_children)
from .catalog import Catalog, DerivedFunction, StoredFunction
from .errors import FleetError, QueryNameError, QueryTypeError, Span
from .registry import AGGREGATE, SCALAR, Overload
from .printer import to_source
from .types import (BOOLEAN, CHARSTRING, CONSTRUCTORS, INTEGER, NULL, NUMBER, OBJECT, REAL, RECORD,
                    Type, bag_of, canonical_builtin, stream_of, substitute, type_of_value, vector_of)
from .values import Bag, make_vector

AGGREGATE_NAMES = {"count", "sum", "avg", "mean", "min", "max", "stdev", "median", "var"}

# Overload fits by (function, argument types): resolution is pure for built-in types, and a query
# resolves the same few calls over and over. User types are left out (their lattice can change).
_FITS: dict = {}      # (overloads, argument types) → the overloads that fit, with their costs
_CHOSEN: dict = {}    # (overloads, argument types) → the overload chosen, when types alone decide
_BUILTIN_TYPE_NAMES = {"Object", "Number", "Integer", "Real", "Charstring", "Boolean", "Record", "Time",
                       "Timeval", "Vector", "Bag", "Stream", "Model", "Edge", "Function", "Null"}


def _has_user_types(types) -> bool:
    for t in types:
        while t is not None:
            if t.name not in _BUILTIN_TYPE_NAMES and not t.name.startswith("?"):
                return True
            t = t.arg
    return False


@dataclass
class Scope:
    """Names visible at a point: a query's variables, a derived function's parameters, and
    (through `parent`) enclosing queries."""

    variables: dict[str, Variable] = field(default_factory=dict)   # written lowercase → Variable
    params: dict[str, TExpr] = field(default_factory=dict)          # inlined function parameters
    parent: "Scope | None" = None
    query: "_QueryState | None" = None

    def lookup(self, name: str) -> tuple[Variable | TExpr | None, "Scope | None"]:
        scope = self
        while scope is not None:
            if name in scope.params:
                return scope.params[name], scope
            if name in scope.variables:
                return scope.variables[name], scope
            scope = scope.parent
        return None, None


@dataclass
class _QueryState:
    """What binding one query collects on the way."""

    aggregates: list[TAggregate] = field(default_factory=list)
    group_keys: list[TExpr] = field(default_factory=list)
    aggregate_context: bool = False      # group by / having present
    became_aggregate: bool = False       # an aggregate over rows was found without group by
    outer: set[str] = field(default_factory=set)
    continuous: bool = False


class Binder:
    def __init__(self, catalog: Catalog, source: str | None = None):
        self.catalog = catalog
        self.lattice = catalog.lattice
        self.library = catalog.library
        self.source = source
        self._counter = itertools.count(1)
        self._inlining: list[str] = []
        self._depth = 0

    # ------------------------------------------------------------------------------ errors
    def type_error(self, message: str, span: Span | None) -> QueryTypeError:
        return QueryTypeError(message, span, self.source)

    def name_error(self, message: str, span: Span | None) -> QueryNameError:
        return QueryNameError(message, span, self.source)

    def _suggest(self, name: str, candidates) -> str:
        spelled = {c.lower(): c for c in candidates}  # suggest a name as it is written (Integer)
        close = difflib.get_close_matches(name.lower(), list(spelled), n=1, cutoff=0.75)
        return f" (did you mean {spelled[close[0]]}?)" if close else ""

    def hidden(self, prefix: str) -> str:
        return f"${prefix}{next(self._counter)}"

    # ------------------------------------------------------------------------------- types
    def resolve_type(self, node: A.TypeExpr) -> Type:
        if node.of is not None:
            base = canonical_builtin(node.name)
            if base is None or base.name not in CONSTRUCTORS:
                raise self.type_error(f"{node.name} is not a collection type: 'of' needs Vector, Bag, "
                                      "Stream or Timeval", node.span)
            return Type(base.name, self.resolve_type(node.of))
        found = canonical_builtin(node.name)
        if found is not None:
            return found
        user = self.catalog.user_type(node.name)
        if user is not None:
            return user.type
        table = self.catalog.table(node.name)
        if table is not None:
            return table.type
        known = [n for n in ("Number", "Integer", "Real", "Charstring", "Boolean", "Record", "Time",
                             "Vector", "Bag", "Stream", "Timeval", "Object", "Model", "Edge")]
        raise self.name_error(f"unknown type {node.name}{self._suggest(node.name, known)}", node.span)

    # ----------------------------------------------------------------------------- queries
    def bind_statement_query(self, statement: A.Statement) -> BoundQuery:
        """A `select` or a bare expression statement as a query."""
        if isinstance(statement, A.ExprStatement):
            statement = A.Select((A.SelectItem(statement.expr, span=statement.expr.span),),
                                 span=statement.span)
        return self.bind_query(statement, None)

    def bind_query(self, select: A.Select, outer: Scope | None, nested: bool = False) -> BoundQuery:
        state = _QueryState()
        scope = Scope(parent=outer, query=state)
        variables: dict[str, Variable] = {}
        self._depth += 1
        try:
            for declaration in select.declarations:
                written = declaration.name.lower()
                if written in scope.variables:
                    raise self.name_error(f"variable {declaration.name} is declared twice", declaration.span)
                var_type = self.resolve_type(declaration.type)
                internal = written if not nested else f"{written}~{next(self._counter)}"
                variable = Variable(internal, var_type, declaration.name, declaration.span)
                scope.variables[written] = variable
                variables[internal] = variable

            conjuncts = [self.bind_conjunct(term, scope) for term in A.conjuncts(select.where)]

            state.aggregate_context = bool(select.group_by) or select.having is not None
            state.group_keys = [self.bind_expr(e, scope) for e in select.group_by]
            items = self._bind_items(select, scope, variables)

            having = None
            if select.having is not None:
                having = self._bind_aggregate_expr(select.having, scope)
                self._expect_boolean(having, select.having.span, "having")

            order_by = []
            for item in select.order_by:
                expr = self._bind_order_key(item.expr, scope, items)
                order_by.append((expr, item.descending))

            limit = None
            if select.limit is not None:
                limit = self.bind_expr(select.limit, scope)
                if not (limit.type == INTEGER or limit.type in (OBJECT, NULL)):
                    # a count of rows: limit 2.5 means nothing, and limit 1e999 cannot be counted to
                    raise self.type_error(f"limit needs an Integer, not {limit.type}", select.limit.span)
                if limit.free_variables() & set(variables):
                    raise self.type_error("limit cannot depend on the query's variables", select.limit.span)
        finally:
            self._depth -= 1

        aggregate_query = state.aggregate_context or state.became_aggregate
        if aggregate_query:
            items = [(name, self._over_groups(expr, state, variables, span)) for name, expr, span in items]
            if having is not None:
                having = self._over_groups(having, state, variables, select.having.span)
            order_by = [(self._over_groups(e, state, variables, None), d) for e, d in order_by]
        else:
            items = [(name, expr) for name, expr, _ in items]
            items = self._flatten_items(items, variables, conjuncts)

        kind = self._query_kind(select, conjuncts, aggregate_query, state)
        extents = {}
        for name, variable in variables.items():
            if not variable.hidden and self.catalog.has_extent(variable.type):
                extents[name] = variable.type

        outer_refs = set(state.outer)
        query = BoundQuery(kind=kind, variables=variables, conjuncts=conjuncts, items=items,
                           distinct=select.distinct, group_by=state.group_keys,
                           aggregates=state.aggregates, having=having, order_by=order_by, limit=limit,
                           outer_references=frozenset(outer_refs), extents=extents, span=select.span,
                           source=self.source, aggregate_query=aggregate_query)
        return query

    def _query_kind(self, select: A.Select, conjuncts: list[Conjunct], aggregate_query: bool,
                    state: "_QueryState | None" = None) -> str:
        streaming = any(c.source is not None and c.source.type.is_stream and c.mode == "each"
                        for c in conjuncts)
        if select.kind == "vector":
            return "vector"
        if select.kind == "bag":
            return "bag"
        if streaming or select.kind == "stream":
            if streaming and (select.group_by or select.order_by or aggregate_query):
                what = "group by" if select.group_by else "order by" if select.order_by else "an aggregate over its rows"
                span = select.span
                if select.group_by:
                    span = select.group_by[0].span
                elif select.order_by:
                    span = select.order_by[0].span
                elif state is not None and state.aggregates:
                    span = state.aggregates[0].span or span
                raise self.type_error(
                    f"a query over a stream runs forever, so it cannot use {what}: aggregate windows "
                    "with winagg(s, size, stride) or collect a finite stream with vectorof(s)", span)
            return "stream"
        return "bag"

    def _bind_items(self, select: A.Select, scope: Scope, variables: dict[str, Variable]):
        items = []
        if select.items is None:  # select *
            for declaration in select.declarations:
                variable = scope.variables[declaration.name.lower()]
                table = self.catalog.table(variable.type.name)
                if table is not None:
                    ref = TVar(variable.type, variable.name, span=declaration.span)
                    for index, column in enumerate(table.columns):
                        items.append((column.name, TField(column.type, ref, table.name, column.name, index,
                                                          span=declaration.span), declaration.span))
                else:
                    items.append((variable.written, TVar(variable.type, variable.name, span=declaration.span),
                                  declaration.span))
            if not items:
                raise self.type_error("select * needs a from clause", select.span)
            return items
        for item in select.items:
            expr = self._bind_aggregate_expr(item.expr, scope)
            name = item.alias or self._column_name(item.expr)
            items.append((name, expr, item.span))
        return items

    @staticmethod
    def _column_name(expr: A.Expr) -> str:
        if isinstance(expr, A.Variable):
            return expr.name
        if isinstance(expr, A.Field):
            return expr.name
        return to_source(expr)

    def _bind_order_key(self, expr: A.Expr, scope: Scope, items) -> TExpr:
        if isinstance(expr, A.Literal) and isinstance(expr.value, int) and not isinstance(expr.value, bool):
            position = expr.value
            if not 1 <= position <= len(items):
                raise self.type_error(f"order by {position}: there are {len(items)} columns", expr.span)
            return items[position - 1][1]
        if isinstance(expr, A.Variable):
            found, _ = scope.lookup(expr.name.lower())
            if found is None:
                for name, bound, _ in items:
                    if name.lower() == expr.name.lower():
                        return bound
        return self._bind_aggregate_expr(expr, scope)

    def _flatten_items(self, items, variables, conjuncts):
        """A select item that is a bag or a stream gives one row per element (as OSQL)."""
        out = []
        flattened = 0
        for name, expr in items:
            if expr.type.is_stream or expr.type.is_bag:
                flattened += 1
                if flattened > 1 and expr.type.is_stream:
                    raise self.type_error("a select can produce only one stream: combine streams with "
                                          "merge(s1, s2) or pivot([s1, s2])", expr.span)
                hidden = self.hidden("e")
                element = expr.type.element
                variables[hidden] = Variable(hidden, element, name, expr.span, hidden=True)
                conjuncts.append(Conjunct(test=TConst(BOOLEAN, True), span=expr.span, targets=(hidden,),
                                          source=expr, mode="each", narrow=(None,)))
                out.append((name, TVar(element, hidden, span=expr.span)))
            else:
                out.append((name, expr))
        return out

    # ---------------------------------------------------------------------- aggregates
    def _bind_aggregate_expr(self, expr: A.Expr, scope: Scope) -> TExpr:
        return self.bind_expr(expr, scope, allow_row_aggregates=True)

    def _over_groups(self, expr: TExpr, state: _QueryState, variables, span) -> TExpr:
        """Rewrite an item of an aggregate query over group keys and aggregate results, and check
        that nothing else of a row is left."""
        keys = state.group_keys

        def rewrite(node: TExpr) -> TExpr:
            for index, key in enumerate(keys):
                if node == key:
                    return TVar(node.type, f"$g{index}", span=node.span)
            if isinstance(node, TVar) and node.name.startswith("$a"):
                return node
            if isinstance(node, TQuery):
                # a subquery reading a group key gets it from the group's column
                wrapped = node
                for name in sorted(node.query.outer_references & set(variables)):
                    index = next((i for i, k in enumerate(keys) if isinstance(k, TVar) and k.name == name), None)
                    if index is None:
                        raise self.type_error(
                            f"{variables[name].written} must appear in the group by clause to be used in "
                            "a subquery of an aggregate query", node.span or span)
                    wrapped = TLet(node.type, name, TVar(keys[index].type, f"$g{index}"), wrapped, span=node.span)
                return wrapped
            if isinstance(node, TVar) and node.name in variables:
                raise self.type_error(
                    f"{variables[node.name].written} must appear in the group by clause or be used inside "
                    "an aggregate function such as count, sum or avg", node.span or span)
            return replace_children(node, rewrite)

        return rewrite(expr)

    def _row_aggregate(self, node: A.Call, scope: Scope) -> TExpr:
        state = scope.query
        name = node.name.lower()
        overloads = [o for o in self.library.overloads(name) if o.kind == AGGREGATE]
        arg = None
        if node.star:
            if name != "count":
                raise self.type_error(f"only count takes *, not {node.name}", node.span)
            result = INTEGER
            fn = overloads[0]
        else:
            arg = self.bind_expr(node.args[0], scope)
            if arg.type.is_stream:
                raise self._aggregate_over_stream(node)
            element = arg.type
            fn, result = None, None
            for overload in overloads:
                bindings: dict = {}
                expected = overload.params[0].type
                cost = self.lattice.unify(expected.element if expected.is_bag else expected, element, bindings)
                if cost is not None:
                    fn = overload
                    result = substitute(overload.result, bindings)
                    if overload.result_type is not None:
                        result = overload.result_type([bag_of(element)], [arg])
                    break
            if fn is None:
                raise self.type_error(f"{node.name} cannot aggregate values of type {element}: "
                                      + "; ".join(o.signature for o in overloads), node.span)
        aggregate = TAggregate(result, fn=fn, arg=arg, node=None if node.star else node.args[0], span=node.span)
        for index, existing in enumerate(state.aggregates):
            if existing == aggregate:
                return TVar(result, f"$a{index}", span=node.span)
        state.aggregates.append(aggregate)
        return TVar(result, f"$a{len(state.aggregates) - 1}", span=node.span)

    def _aggregate_over_stream(self, node: A.Call) -> QueryTypeError:
        return self.type_error(
            f"{node.name} aggregates a bag and never runs over a stream, which does not end: aggregate "
            f"windows with {node.name}(w) for w in winagg(s, size, stride), or collect a finite stream "
            "with vectorof(s)", node.span)

    # --------------------------------------------------------------------------- conjuncts
    def bind_conjunct(self, term: A.Expr, scope: Scope) -> Conjunct:
        """A where-term, with its generator form when it has one."""
        own = scope.variables
        if isinstance(term, A.In) and not term.negated and isinstance(term.element, A.Variable) \
                and term.element.name.lower() in own:
            variable = own[term.element.name.lower()]
            collection = self.bind_expr(term.collection, scope)
            ref = TVar(variable.type, variable.name, span=term.element.span)
            if collection.type.is_collection:
                element = collection.type.element
                narrow = self._binding_fit(variable, element, term)
                test = self._membership(ref, collection, term)
                return Conjunct(test, term.span, (variable.name,), collection, "each", (narrow,))
            narrow = self._binding_fit(variable, collection.type, term)
            test = self._equality(ref, collection, term)
            return Conjunct(test, term.span, (variable.name,), collection, "whole", (narrow,))
        if isinstance(term, A.InList) and not term.negated and isinstance(term.element, A.Variable) \
                and term.element.name.lower() in own:
            # `t in (-40, 0, 100)` with t unbound generates the items, as `t in bag(-40, 0, 100)`
            variable = own[term.element.name.lower()]
            collection = self.bind_expr(A.Call(name="bag", args=term.items, span=term.span), scope)
            narrow = self._binding_fit(variable, collection.type.element, term)
            return Conjunct(self.bind_expr(term, scope), term.span, (variable.name,), collection, "each", (narrow,))
        if isinstance(term, A.Compare) and term.op == "=":
            # `[a, b] = v` destructures v even when v is a variable of this query (bound elsewhere)
            if isinstance(term.left, A.VectorLiteral) and term.left.items and all(
                    isinstance(i, A.Variable) and i.name.lower() in own for i in term.left.items):
                value = self.bind_expr(term.right, scope)
                if not (value.type.is_vector or value.type == OBJECT):
                    raise self.type_error(f"[…] = destructures a vector, not {value.type}", term.right.span)
                targets, narrows = [], []
                for item in term.left.items:
                    variable = own[item.name.lower()]
                    targets.append(variable.name)
                    narrows.append(self._binding_fit(variable, value.type.element, term))
                test = self.bind_expr(term, scope)
                return Conjunct(test, term.span, tuple(targets), value, "destructure", tuple(narrows))
            for target, other in ((term.left, term.right), (term.right, term.left)):
                if isinstance(target, A.Variable) and target.name.lower() in own:
                    variable = own[target.name.lower()]
                    value = self.bind_expr(other, scope)
                    ref = TVar(variable.type, variable.name, span=target.span)
                    if value.type.is_bag:
                        narrow = self._binding_fit(variable, value.type.element, term)
                        test = self._membership(ref, value, term)
                        return Conjunct(test, term.span, (variable.name,), value, "each", (narrow,))
                    narrow = self._binding_fit(variable, value.type, term)
                    test = self._equality(ref, value, term)
                    return Conjunct(test, term.span, (variable.name,), value, "whole", (narrow,))
        test = self.bind_expr(term, scope)
        self._expect_boolean(test, term.span, "where")
        return Conjunct(test, term.span)

    def _binding_fit(self, variable: Variable, value_type: Type, term: A.Expr) -> Type | None:
        cost = self.lattice.fit(value_type, variable.type)
        if cost is None:
            raise self.type_error(f"{variable.written} is declared {variable.type} but is bound to "
                                  f"values of type {value_type}", term.span)
        return variable.type if cost == 2 else None

    def _membership(self, element: TExpr, collection: TExpr, node: A.Node) -> TExpr:
        if collection.type.is_stream:
            return TConst(BOOLEAN, True)  # only ever used as a generator
        return self._call_overloads("in", [element, collection], node.span)

    def _equality(self, left: TExpr, right: TExpr, node: A.Node) -> TExpr:
        return self._call_overloads("=", [left, right], node.span)

    def _expect_boolean(self, expr: TExpr, span, clause: str) -> None:
        if expr.type not in (BOOLEAN, OBJECT, NULL):
            raise self.type_error(f"the {clause} clause needs a condition (a Boolean), not {expr.type}", span)

    # -------------------------------------------------------------------------- expressions
    def bind_expr(self, node: A.Expr, scope: Scope | None, allow_row_aggregates: bool = False) -> TExpr:
        scope = scope or Scope()
        method = getattr(self, "_bind_" + type(node).__name__)
        return method(node, scope, allow_row_aggregates)

    def _bind_Literal(self, node: A.Literal, scope, agg) -> TExpr:
        return TConst(type_of_value(node.value), node.value, span=node.span)

    def _bind_Variable(self, node: A.Variable, scope: Scope, agg) -> TExpr:
        name = node.name.lower()
        found, owner = scope.lookup(name)
        if found is None:
            visible = []
            s = scope
            while s is not None:
                visible += list(s.variables) + list(s.params)
                s = s.parent
            hint = self._suggest(name, visible)
            if not hint and (name in self.library or self.catalog.user_functions(name)):
                hint = f" ({node.name} is a function: call it as {node.name}(…))"
            find_model = getattr(self.catalog, "model", None)
            if not hint and find_model is not None and find_model(node.name) is not None:
                hint = f" ({node.name} is a model: name it with a string, '{node.name}')"
            raise self.name_error(f"unknown variable {node.name}{hint}", node.span)
        if isinstance(found, TExpr):  # an inlined function parameter
            return found
        if owner is not scope:
            # a variable of an enclosing query: record it on every query between here and there
            s = scope
            while s is not None and s is not owner:
                if s.query is not None:
                    s.query.outer.add(found.name)
                s = s.parent
        return TVar(found.type, found.name, span=node.span)

    def _bind_SessionVariable(self, node: A.SessionVariable, scope, agg) -> TExpr:
        try:
            value = self.catalog.session_variable(node.name)
        except KeyError:
            raise self.name_error(f"session variable :{node.name} is not set: set it with "
                                  f"set :{node.name} = …;", node.span) from None
        return TConst(type_of_value(value), value, span=node.span)

    def _bind_BinaryOp(self, node: A.BinaryOp, scope, agg) -> TExpr:
        left = self.bind_expr(node.left, scope, agg)
        right = self.bind_expr(node.right, scope, agg)
        return self._call_overloads(node.op, [left, right], node.span, node)

    def _bind_Negate(self, node: A.Negate, scope, agg) -> TExpr:
        operand = self.bind_expr(node.operand, scope, agg)
        return self._call_overloads("neg", [operand], node.span, node)

    def _bind_Compare(self, node: A.Compare, scope, agg) -> TExpr:
        left = self.bind_expr(node.left, scope, agg)
        right = self.bind_expr(node.right, scope, agg)
        return self._call_overloads(node.op, [left, right], node.span, node)

    def _boolean_operand(self, node: A.Expr, scope, agg) -> TExpr:
        expr = self.bind_expr(node, scope, agg)
        if expr.type not in (BOOLEAN, OBJECT, NULL):
            raise self.type_error(f"and/or/not need conditions (Booleans), not {expr.type}", node.span)
        return expr

    def _bind_And(self, node: A.And, scope, agg) -> TExpr:
        terms = [self._boolean_operand(t, scope, agg) for t in A.conjuncts(node)]
        return TAnd(BOOLEAN, tuple(terms), span=node.span)

    def _bind_Or(self, node: A.Or, scope, agg) -> TExpr:
        terms = []
        todo = [node]
        while todo:
            current = todo.pop(0)
            if isinstance(current, A.Or):
                todo[:0] = [current.left, current.right]
            else:
                terms.append(self._boolean_operand(current, scope, agg))
        return TOr(BOOLEAN, tuple(terms), span=node.span)

    def _bind_Not(self, node: A.Not, scope, agg) -> TExpr:
        return TNot(BOOLEAN, self._boolean_operand(node.operand, scope, agg), span=node.span)

    def _bind_In(self, node: A.In, scope, agg) -> TExpr:
        element = self.bind_expr(node.element, scope, agg)
        collection = self.bind_expr(node.collection, scope, agg)
        if collection.type.is_stream:
            raise self.type_error("testing membership in a stream would never end: bind a variable "
                                  "with x in s, or test against a window or a bag", node.span)
        if collection.type.is_collection:
            test = self._call_overloads("in", [element, collection], node.span, node)
        else:
            test = self._call_overloads("=", [element, collection], node.span, node)
        return TNot(BOOLEAN, test, span=node.span) if node.negated else test

    def _bind_InList(self, node: A.InList, scope, agg) -> TExpr:
        element = self.bind_expr(node.element, scope, agg)
        items = [self.bind_expr(i, scope, agg) for i in node.items]
        for item in items:
            if not self.lattice.compatible(element.type, item.type):
                raise self.type_error(f"cannot compare {element.type} with {item.type}", item.span)
        test = self._call_overloads("in_list", [element] + items, node.span, node)
        return TNot(BOOLEAN, test, span=node.span) if node.negated else test

    def _bind_Between(self, node: A.Between, scope, agg) -> TExpr:
        operand = self.bind_expr(node.operand, scope, agg)
        low = self.bind_expr(node.low, scope, agg)
        high = self.bind_expr(node.high, scope, agg)
        test = self._call_overloads("between", [operand, low, high], node.span, node)
        return TNot(BOOLEAN, test, span=node.span) if node.negated else test

    def _bind_Like(self, node: A.Like, scope, agg) -> TExpr:
        operand = self.bind_expr(node.operand, scope, agg)
        pattern = self.bind_expr(node.pattern, scope, agg)
        test = self._call_overloads("like", [operand, pattern], node.span, node)
        return TNot(BOOLEAN, test, span=node.span) if node.negated else test

    def _bind_IsNull(self, node: A.IsNull, scope, agg) -> TExpr:
        operand = self.bind_expr(node.operand, scope, agg)
        test = self._call_overloads("is_null", [operand], node.span, node)
        return TNot(BOOLEAN, test, span=node.span) if node.negated else test

    def _bind_Index(self, node: A.Index, scope, agg) -> TExpr:
        target = self.bind_expr(node.target, scope, agg)
        index = self.bind_expr(node.index, scope, agg)
        return self._call_overloads("index", [target, index], node.span, node)

    def _bind_Slice(self, node: A.Slice, scope, agg) -> TExpr:
        target = self.bind_expr(node.target, scope, agg)
        start = self.bind_expr(node.start, scope, agg)
        stop = self.bind_expr(node.stop, scope, agg)
        return self._call_overloads("slice", [target, start, stop], node.span, node)

    def _bind_Field(self, node: A.Field, scope, agg) -> TExpr:
        target = self.bind_expr(node.target, scope, agg)
        table = self.catalog.table(target.type.name) if target.type.arg is None else None
        if table is not None:
            position = table.column_index(node.name)
            if position is None:
                columns = [c.name for c in table.columns]
                raise self.name_error(f"table {table.name} has no column {node.name}"
                                      f"{self._suggest(node.name, columns)}; its columns: {', '.join(columns)}",
                                      node.span)
            column = table.columns[position]
            return TField(column.type, target, table.name, column.name, position, span=node.span)
        if target.type in (RECORD, OBJECT):
            return self._call_overloads("index", [target, TConst(CHARSTRING, node.name)], node.span, node)
        raise self.type_error(f"{to_source(node.target)} is a {target.type}, which has no fields", node.span)

    def _bind_AtEdge(self, node: A.AtEdge, scope, agg) -> TExpr:
        hook = getattr(self.catalog, "bind_at_edge", None)
        if hook is None:
            raise FleetError("`expr @ e` runs an expression on edge e: it needs a federation "
                             "(streamql shell --federation URL)", node.span, self.source)
        return hook(self, node, scope)

    def _bind_Cast(self, node: A.Cast, scope, agg) -> TExpr:
        operand = self.bind_expr(node.operand, scope, agg)
        target = self.resolve_type(node.type)
        fn = self.library.overloads("cast")[0]
        if not (self.lattice.compatible(operand.type, target) or operand.type == CHARSTRING
                or target == CHARSTRING or (operand.type.is_numeric and target.is_numeric)
                or (operand.type == BOOLEAN and target.is_numeric)):
            raise self.type_error(f"cannot cast {operand.type} to {target}", node.span)
        return TCall(target, fn, (operand,), options=(target,), span=node.span)

    def _bind_VectorLiteral(self, node: A.VectorLiteral, scope, agg) -> TExpr:
        items = [self.bind_expr(i, scope, agg) for i in node.items]
        element = NULL
        for item in items:
            element = self.lattice.join(element, item.type)
        element = OBJECT if element == NULL else element
        if all(isinstance(i, TConst) for i in items):
            return TConst(Type("Vector", element), make_vector([i.value for i in items]), span=node.span)
        fn = self.library.overloads("vector")[0]
        return TCall(Type("Vector", element), fn, tuple(items), span=node.span)

    def _bind_RecordLiteral(self, node: A.RecordLiteral, scope, agg) -> TExpr:
        values = [self.bind_expr(v, scope, agg) for _, v in node.fields]
        keys = tuple(k for k, _ in node.fields)
        if all(isinstance(v, TConst) for v in values):
            return TConst(RECORD, {k: v.value for k, v in zip(keys, values)}, span=node.span)
        fn = self.library.overloads("record")[0]
        return TCall(RECORD, fn, tuple(values), options=keys, span=node.span)

    def _bind_Case(self, node: A.Case, scope, agg) -> TExpr:
        whens = []
        result = NULL
        for condition, value in node.whens:
            cond = self._boolean_operand(condition, scope, agg)
            bound = self.bind_expr(value, scope, agg)
            whens.append((cond, bound))
            result = self._join_branch(result, bound, value)
        otherwise = None
        if node.otherwise is not None:
            otherwise = self.bind_expr(node.otherwise, scope, agg)
            result = self._join_branch(result, otherwise, node.otherwise)
        return TCase(OBJECT if result == NULL else result, tuple(whens), otherwise, span=node.span)

    def _join_branch(self, so_far: Type, branch: TExpr, node: A.Node) -> Type:
        if so_far != NULL and not self.lattice.compatible(so_far, branch.type):
            raise self.type_error(f"the branches of case give {so_far} and {branch.type}, which do not mix",
                                  node.span)
        return self.lattice.join(so_far, branch.type)

    def _bind_Subquery(self, node: A.Subquery, scope, agg) -> TExpr:
        query = self.bind_query(node.query, scope, nested=True)
        return TQuery(self.query_value_type(query), query=query, span=node.span)

    def query_value_type(self, query: BoundQuery) -> Type:
        if len(query.items) == 1:
            element = query.items[0][1].type
        else:
            element = vector_of(OBJECT)
        return {"stream": stream_of, "vector": vector_of}.get(query.kind, bag_of)(element)

    # ------------------------------------------------------------------------------- calls
    def _bind_Call(self, node: A.Call, scope: Scope, allow_row_aggregates: bool) -> TExpr:
        name = node.name.lower()
        if allow_row_aggregates and name in AGGREGATE_NAMES and scope.query is not None \
                and (node.star or len(node.args) == 1):
            bound = self._try_row_aggregate(node, scope)
            if bound is not None:
                return bound
        if node.star:
            raise self.type_error(f"{node.name}(*) counts rows: it is written count(*)", node.span)

        user = self.catalog.user_functions(name)
        args = [self.bind_expr(a, scope, allow_row_aggregates) for a in node.args]
        if user:
            matching = [f for f in user if len(f.params) == len(args)]
            if matching:
                return self._bind_user_call(matching, args, node, scope)
            if name not in self.library:
                raise self.type_error(f"{node.name} takes {len(user[0].params)} arguments, got {len(args)}: "
                                      f"{user[0].signature}", node.span)
        if name not in self.library:
            candidates = self.library.names() + [n for n in self._user_function_names()]
            raise self.name_error(f"unknown function {node.name}{self._suggest(name, candidates)}", node.span)
        return self._call_overloads(name, args, node.span, node)

    def _user_function_names(self):
        names = getattr(self.catalog, "user_function_names", None)
        return names() if names else []

    def _try_row_aggregate(self, node: A.Call, scope: Scope) -> TExpr | None:
        state = scope.query
        if node.star:
            state.became_aggregate = True
            return self._row_aggregate(node, scope)
        probe = self.bind_expr(node.args[0], scope)
        if probe.type.is_bag:
            return None
        if probe.type.is_stream:
            raise self._aggregate_over_stream(node)
        if not state.aggregate_context and (probe.type.is_vector or probe.type in (RECORD,)):
            return None  # mean(w) of a window: the vector function
        if not probe.free_variables():
            return None  # a constant: the scalar function
        state.became_aggregate = True
        return self._row_aggregate(node, scope)

    def _bind_user_call(self, functions, args: list[TExpr], node: A.Call, scope: Scope) -> TExpr:
        function = functions[0]
        narrowed = []
        for param, arg, arg_node in zip(function.params, args, node.args):
            cost = self.lattice.fit(arg.type, param.type)
            if cost is None:
                if arg.type.is_stream and isinstance(function, DerivedFunction):
                    cost = self.lattice.fit(arg.type.element, param.type)
                if cost is None:
                    raise self.type_error(f"{function.name} takes {param.type} {param.name}, not {arg.type}: "
                                          f"{function.signature}", arg_node.span)
            narrowed.append(TNarrow(param.type, arg, f"argument {param.name} of {function.name}",
                                    span=arg.span) if cost == 2 else arg)
        if isinstance(function, StoredFunction):
            return TStored(function.result, function, tuple(narrowed), span=node.span)
        return self._inline(function, narrowed, node)

    def _inline(self, function: DerivedFunction, args: list[TExpr], node: A.Call) -> TExpr:
        if function.name.lower() in self._inlining:
            raise self.type_error(f"{function.name} calls itself: recursive functions are not supported",
                                  node.span)
        body = function.body
        uses = {p.name.lower(): 0 for p in function.params}
        for sub in body.walk():
            if isinstance(sub, A.Variable) and sub.name.lower() in uses:
                uses[sub.name.lower()] += 1
        lets = []
        params = {}
        for param, arg in zip(function.params, args):
            key = param.name.lower()
            if uses[key] > 1 and not isinstance(arg, (TVar, TConst)):
                hidden = self.hidden("p")
                lets.append((hidden, arg))
                params[key] = TVar(arg.type, hidden, span=arg.span)
            else:
                params[key] = arg
        scope = Scope(params=params)
        self._inlining.append(function.name.lower())
        try:
            if isinstance(body, A.Select):
                query = self.bind_query(body, scope, nested=True)
                outer = set()
                for arg in args:
                    outer |= arg.free_variables()
                for hidden, _ in lets:
                    outer.add(hidden)
                query.outer_references = frozenset(query.outer_references | outer)
                result = TQuery(self.query_value_type(query), query=query, span=node.span)
            else:
                result = self.bind_expr(body, scope)
        except (QueryTypeError, QueryNameError) as exc:
            # keep the kind: a name missing from the body is still a NameError
            raise type(exc)(f"in {function.name}: {exc.message}", node.span, self.source) from None
        finally:
            self._inlining.pop()
        declared = function.result
        cost = self.lattice.fit(result.type, declared)
        if cost == 2:
            result = TNarrow(declared, result, f"the result of {function.name}", span=node.span)
        elif cost is not None and result.type != declared and not declared.is_collection:
            result = _retype(result, declared)
        for hidden, value in reversed(lets):
            result = TLet(result.type, hidden, value, result, span=node.span)
        return result

    def _call_overloads(self, name: str, args: list[TExpr], span: Span | None,
                        node: A.Node | None = None) -> TExpr:
        overloads = self.library.overloads(name)
        chosen = self._resolve(overloads, args) if overloads else None
        if chosen is not None:
            return self._make_call(*chosen, args, span, lift=None)
        arg_types = [a.type for a in args]
        display = _display_name(name)
        if not overloads:
            raise self.name_error(f"unknown function {display}", span)
        if not any(o.accepts_arity(len(args)) for o in overloads):
            raise self.type_error(f"{display} takes {_arities(overloads)} arguments, not {len(args)}: "
                                  + "; ".join(o.signature for o in overloads), span)
        # Lifting: a scalar function over a stream maps over its elements.
        stream_positions = [i for i, t in enumerate(arg_types) if t.is_stream]
        if stream_positions:
            if any(o.kind == AGGREGATE for o in overloads) and name in AGGREGATE_NAMES:
                raise self.type_error(
                    f"{display} aggregates a bag and never runs over a stream, which does not end: aggregate "
                    f"windows with winagg(s, size, stride), or collect a finite stream with vectorof(s)", span)
            if len(stream_positions) > 1:
                raise self.type_error(f"{display} cannot combine two streams element by element: use "
                                      "merge(s1, s2) or pivot([s1, s2])", span)
            position = stream_positions[0]
            lifted_args = list(args)
            lifted_args[position] = _as_element(args[position])
            liftable = [o for o in overloads if o.kind == SCALAR and o.lifts]
            chosen = self._resolve(liftable, lifted_args)
            if chosen is not None:
                overload, result, narrows = chosen
                call = self._make_call(overload, result, narrows, lifted_args, span, lift="stream",
                                       real_args=args)
                return call
        if name in ("=", "!=", "<", "<=", ">", ">=") and len(args) == 2:
            raise self.type_error(f"cannot compare {arg_types[0]} with {arg_types[1]}", span)
        if name in ("+", "-", "*", "/", "%", "^", ".*", "./", ".^") and len(args) == 2:
            raise self.type_error(f"cannot apply {name} to {arg_types[0]} and {arg_types[1]}", span)
        wanted = ", ".join(str(t) for t in arg_types)
        raise self.type_error(f"{display} cannot take ({wanted}): "
                              + "; ".join(o.signature for o in overloads), span)

    def _resolve(self, overloads: list[Overload], args: list[TExpr]):
        """The best-fitting overload: least cost, then most specific; with its result type."""
        types = tuple(a.type for a in args)
        # the overloads themselves in the key: a dropped function's id is never mistaken for a new one's
        key = (tuple(overloads), types)
        cacheable = not _has_user_types(types)
        if cacheable:
            known = _CHOSEN.get(key)
            if known is not None:
                return known
        fitting = _FITS.get(key) if cacheable else None
        if fitting is None:
            fitting = []
            for overload in overloads:
                if not overload.accepts_arity(len(args)):
                    continue
                bindings: dict = {}
                total = 0
                narrows = []
                for param_type, arg_type in zip(overload.param_types(len(args)), types):
                    cost = self.lattice.unify(param_type, arg_type, bindings)
                    if cost is None:
                        break
                    total += cost
                    narrows.append(param_type if cost == 2 and not param_type.contains_variable()
                                   and arg_type == OBJECT and param_type != OBJECT else None)
                else:
                    fitting.append((total, overload, bindings, narrows))
            if cacheable:
                if len(_FITS) > 4096:
                    _FITS.clear()
                _FITS[key] = fitting
        best = [f for f in fitting if f[1].check_args is None or f[1].check_args(self, args)]
        if not best:
            return None
        lowest = min(b[0] for b in best)
        tied = [b for b in best if b[0] == lowest]
        chosen = tied[0]
        for candidate in tied[1:]:
            if self._more_specific(candidate[1], chosen[1], len(args)):
                chosen = candidate
        total, overload, bindings, narrows = chosen
        result = substitute(overload.result, bindings)
        if overload.result_type is not None:
            result = overload.result_type([a.type for a in args], args)
        if overload.catalog_type is not None:
            result = overload.catalog_type(self.catalog, args) or result
        answer = (overload, result, narrows)
        if (cacheable and overload.result_type is None and overload.catalog_type is None
                and all(f[1].check_args is None for f in fitting)):
            # the choice depended on the argument types alone
            if len(_CHOSEN) > 4096:
                _CHOSEN.clear()
            _CHOSEN[key] = answer
        return answer

    def _more_specific(self, a: Overload, b: Overload, n: int) -> bool:
        a_types, b_types = a.param_types(n), b.param_types(n)
        return all(self.lattice.is_subtype(x, y) for x, y in zip(a_types, b_types)) and a_types != b_types

    def _make_call(self, overload: Overload, result: Type, narrows, args, span, lift, real_args=None) -> TExpr:
        call_args = list(real_args if real_args is not None else args)
        for i, target in enumerate(narrows):
            if target is not None and (lift is None or not call_args[i].type.is_stream):
                call_args[i] = TNarrow(target, call_args[i], f"argument {i + 1} of {overload.name}",
                                       span=call_args[i].span)
        if lift == "stream":
            result = stream_of(result)
        options = ()
        if overload.name == "signal_stream" or overload.name == "ts_signal_stream":
            options = ()
        return TCall(result, overload, tuple(call_args), lift=lift, options=options, span=span)


def _as_element(arg: TExpr) -> TExpr:
    """Stand-in for one element of a stream argument, for overload resolution when lifting."""
    return TVar(arg.type.element, "$element", span=arg.span)


def _display_name(name: str) -> str:
    return {"neg": "unary -", "in_list": "in (…)", "index": "[…]", "is_null": "is null"}.get(name, name)


def _arities(overloads) -> str:
    counts = sorted({len(o.params) for o in overloads})
    return " or ".join(str(c) for c in counts)


def _retype(expr: TExpr, new_type: Type) -> TExpr:
    try:
        return replace(expr, type=new_type)
    except TypeError:
        return expr
