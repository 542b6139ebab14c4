"""Binding expressions: one method per AST node (calls are in calls.py)."""
from __future__ import annotations

from .. import ast as A
from ..bound import (BoundQuery, TAnd, TCall, TCase, TConst, TExpr, TField, TNot, TOr, TQuery, TVar)
from ..errors import FleetError
from ..printer import to_source
from ..types import (BOOLEAN, CHARSTRING, NULL, OBJECT, RECORD, Type, bag_of, stream_of, type_of_value,
                     vector_of)
from ..streams import FOLD_BYTES, approximate_bytes
from ..values import make_vector
from .queries import Scope


class ExpressionBinding:
    """The expression part of the Binder."""

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
            if not hint and self.catalog.model(node.name) is not None:
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
        # constants make a constant, when small: `[:v, :v, :v]` of a large :v is built as the
        # statement runs, within its memory limit
        if all(isinstance(i, TConst) for i in items) and sum(approximate_bytes(i.value) for i in items) <= FOLD_BYTES:
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
