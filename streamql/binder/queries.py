"""Binding queries: variables and their scopes, the where clause's conjuncts (with their
generator forms), select items, aggregates over rows and groups, and the query's kind."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .. import ast as A
from ..bound import (BoundQuery, Conjunct, TAggregate, TConst, TExpr, TField, TLet, TNarrow, TQuery, TVar, Variable,
                     replace_children)
from ..errors import QueryTypeError
from ..printer import to_source
from ..registry import AGGREGATE
from ..types import BOOLEAN, INTEGER, NULL, OBJECT, RECORD, Type, bag_of, substitute

def type_expression(t: Type) -> A.TypeExpr:
    """A type as the parser would give it (to declare a variable of a known type)."""
    return A.TypeExpr(t.name, None if t.arg is None else type_expression(t.arg))


AGGREGATE_NAMES = {"count", "sum", "avg", "mean", "min", "max", "stdev", "median", "var", "m2"}


@dataclass
class Scope:
    """Names visible at a point: a query's variables, a derived function's parameters, and
    (through `parent`) enclosing queries."""

    variables: dict[str, Variable] = field(default_factory=dict)   # written lowercase → Variable
    params: dict[str, TExpr] = field(default_factory=dict)          # inlined function parameters
    parent: "Scope | None" = None
    query: "QueryState | None" = None

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
class QueryState:
    """What binding one query collects on the way."""

    aggregates: list[TAggregate] = field(default_factory=list)
    group_keys: list[TExpr] = field(default_factory=list)
    aggregate_context: bool = False      # group by / having present
    became_aggregate: bool = False       # an aggregate over rows was found without group by
    outer: set[str] = field(default_factory=set)
    continuous: bool = False


class QueryBinding:
    """The query-level part of the Binder."""

    # ----------------------------------------------------------------------------- queries
    def bind_statement_query(self, statement: A.Statement) -> BoundQuery:
        """A `select` or a bare expression statement as a query."""
        if isinstance(statement, A.ExprStatement):
            statement = A.Select((A.SelectItem(statement.expr, span=statement.expr.span),),
                                 span=statement.span)
        statement = self._tuple_columns(statement)
        query = self.bind_query(statement, None)
        if self._lone_truth_value(statement, query):
            # OSQL's toploop: a predicate statement gives true or nothing (`1 < 2 and 3 < 2;` prints
            # no row); the predicate becomes the filter, so a false one yields an empty bag.
            item = statement.items[0]
            name = item.alias or self._column_name(item.expr)
            statement = dataclasses.replace(statement, where=item.expr, items=(
                A.SelectItem(A.Literal(True, span=item.expr.span), alias=name, span=item.span),))
            query = self.bind_query(statement, None)
        return query

    def _tuple_columns(self, statement: A.Select) -> A.Select:
        """`marriages(:tore);` of a function with a tuple result gives a column per part, named as
        declared: `select spouse, year from Person spouse, Integer year where (spouse, year) in …`."""
        if statement.items is None or len(statement.items) != 1 or statement.declarations or \
                statement.where is not None or statement.group_by or statement.kind is not None:
            return statement
        call = statement.items[0].expr
        if not isinstance(call, A.Call) or call.star or call.distinct:
            return statement
        functions = [f for f in self.catalog.user_functions(call.name)
                     if len(f.params) == len(call.args)]
        if not functions or not all(f.parts and f.parts == functions[0].parts for f in functions):
            return statement
        span = call.span
        names = [A.Variable(name, span=span) for name, _ in functions[0].parts]
        declarations = tuple(A.Declaration(type_expression(t), name, span=span) for name, t in functions[0].parts)
        return dataclasses.replace(
            statement, items=tuple(A.SelectItem(v, span=span) for v in names), declarations=declarations,
            where=A.In(A.VectorLiteral(tuple(names), span=span), call, span=span))

    @staticmethod
    def _lone_truth_value(statement: A.Select, query: BoundQuery) -> bool:
        """A statement that computes one truth value and binds no variables (`less('b', 'a');`,
        `select 1 < 2;`); a query over variables keeps false as a value (SQL's habit)."""
        return (statement.items is not None and len(statement.items) == 1 and not statement.declarations
                and statement.where is None and not statement.group_by and statement.having is None
                and statement.kind is None and not statement.into and not query.aggregate_query
                and len(query.items) == 1 and query.items[0][1].type == BOOLEAN)

    def bind_query(self, select: A.Select, outer: Scope | None, nested: bool = False) -> BoundQuery:
        state = QueryState()
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

            conjuncts = []
            for term in A.conjuncts(select.where):
                conjuncts.extend(self._bind_where_term(term, scope, variables))

            conjuncts.extend(self._index_generators(select, scope, conjuncts))
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
                    state: "QueryState | None" = None) -> str:
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

    def _over_groups(self, expr: TExpr, state: QueryState, variables, span) -> TExpr:
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
        aggregate = TAggregate(result, fn=fn, arg=arg, node=None if node.star else node.args[0],
                               distinct=node.distinct, span=node.span)
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

    def _try_row_aggregate(self, node: A.Call, scope: Scope) -> TExpr | None:
        state = scope.query
        if node.star:
            state.became_aggregate = True
            return self._row_aggregate(node, scope)
        probe = self.bind_expr(node.args[0], scope)
        if probe.type.is_bag:
            return None
        if probe.type.is_stream:
            if probe.type.element.is_vector:
                return None   # a stream of windows: the vector function per window (as OSQL)
            raise self._aggregate_over_stream(node)
        if node.distinct:
            state.became_aggregate = True
            return self._row_aggregate(node, scope)
        if not state.aggregate_context and (probe.type.is_vector or probe.type in (RECORD,)):
            return None  # mean(w) of a window: the vector function
        if not probe.free_variables():
            return None  # a constant: the scalar function
        state.became_aggregate = True
        return self._row_aggregate(node, scope)

    # --------------------------------------------------------------------------- conjuncts
    def _bind_where_term(self, term: A.Expr, scope: Scope, variables: dict) -> list[Conjunct]:
        """A where-term's conjuncts: `(s, y) in f(p)` (AmosQL's tuple of parts, written `[s, y]`
        too) takes each element of f(p) and destructures it, so it is two."""
        own = scope.variables
        if isinstance(term, A.In) and not term.negated and isinstance(term.element, A.VectorLiteral) \
                and term.element.items and all(isinstance(i, A.Variable) and i.name.lower() in own
                                               for i in term.element.items):
            collection = self.bind_expr(term.collection, scope)
            if collection.type.is_collection or collection.type == OBJECT:
                hidden = self.hidden("t")
                variable = Variable(hidden, collection.type.element, to_source(term.element), term.element.span,
                                    hidden=True)
                own[hidden] = variables[hidden] = variable
                whole = A.Variable(hidden, span=term.element.span)
                return [self.bind_conjunct(A.In(whole, term.collection, span=term.span), scope),
                        self.bind_conjunct(A.Compare("=", term.element, whole, span=term.span), scope)]
        return [self.bind_conjunct(term, scope)]

    def _index_generators(self, select: A.Select, scope: Scope, conjuncts: list[Conjunct]) -> list[Conjunct]:
        """OSQL: an Integer variable nothing else binds, used as an index (`v = w[i]`, `select i,
        b[i] from Integer i`), ranges over the indexes of what it indexes: `i in iota(1, dim(w))`."""
        targets = {t for c in conjuncts for t in c.targets}
        nodes = [select.where] + [item.expr for item in select.items or ()]
        found = []
        for written, variable in scope.variables.items():
            if variable.hidden or variable.name in targets or variable.type != INTEGER:
                continue
            for node in (n for root in nodes if root is not None for n in root.walk()):
                if isinstance(node, A.Index) and isinstance(node.index, A.Variable) \
                        and node.index.name.lower() == written and not any(
                            isinstance(n, A.Variable) and n.name.lower() == written for n in node.target.walk()):
                    span = node.span
                    indexes = A.Call("iota", (A.Literal(1, span=span), A.Call("dim", (node.target,), span=span)),
                                     span=span)
                    found.append(self.bind_conjunct(A.In(A.Variable(written, span=node.index.span), indexes,
                                                         span=span), scope))
                    break
        return found

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
                    if value.type.is_bag and not variable.type.is_bag:   # a Bag variable binds it whole
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
        if cost is None and value_type.name == "Time" and variable.type.name in ("Real", "Number"):
            return variable.type   # OSQL: a Time bound to a Real gives its epoch seconds (converted on binding)
        if cost is None:
            raise self.type_error(f"{variable.written} is declared {variable.type} but is bound to "
                                  f"values of type {value_type}", term.span)
        return variable.type if cost == 2 else None

    def _membership(self, element: TExpr, collection: TExpr, node: A.Node) -> TExpr:
        if collection.type.is_stream:
            return TConst(BOOLEAN, True)  # only ever used as a generator
        return self._call_overloads("in", [element, collection], node.span)

    def _equality(self, left: TExpr, right: TExpr, node: A.Node) -> TExpr:
        if right.type.name == "Time" and left.type.name in ("Real", "Number"):
            right = TNarrow(left.type, right, "a time bound to a Real", span=right.span)   # its epoch seconds
        return self._call_overloads("=", [left, right], node.span)

    def _expect_boolean(self, expr: TExpr, span, clause: str) -> None:
        if expr.type not in (BOOLEAN, OBJECT, NULL):
            raise self.type_error(f"the {clause} clause needs a condition (a Boolean), not {expr.type}", span)
