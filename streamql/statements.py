"""Executing statements that change the store or check it: create, set, delete, drop, insert,
validate, explain. Queries go through the compiler; each statement here runs in a transaction."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from . import ast as A
from .binder import Binder, Scope
from .bound import TVar, Variable
from .catalog import (DerivedFunction, ForeignFunction, ProceduralFunction, StoredFunction, Table, TableColumn,
                      result_text)
from .errors import (FleetError, ModelError, QueryError, QueryNameError, QueryTypeError, QueryValidationError,
                     StoreError)
from .registry import Param
from .library.foreign import resolve_foreign
from .models import Model, load_model_file
from .osql_statements import SIGNAL_ROOT, CodeLoading, OsqlStatements, check_parts
from .result import Result
from .streams import ExecContext, LazyBag, Limits, StreamValue, gather
from .types import OBJECT, Type, bag_of, canonical_builtin, type_of_value, value_fits, vector_of
from .values import Bag, brief_value, values_equal


class StatementRunner(OsqlStatements, CodeLoading):
    def __init__(self, engine):
        self.engine = engine
        self.store = engine.store

    def run(self, statement: A.Statement, source: str, limits: Limits | None = None) -> Result:
        """Run one statement; what it evaluates (values, the rows it changes, checks) runs in one
        context under `limits`: its memory budget and its time from the start of the statement."""
        method = getattr(self, "_" + type(statement).__name__, None)
        if method is None:
            raise QueryTypeError(f"cannot run a {type(statement).__name__} statement here", statement.span, source)
        return method(statement, source, self.engine.new_context(limits))

    def _done(self, message: str, statement: A.Statement, source: str) -> Result:
        return Result([], [], "statement", message=message, statement=_text(statement, source))

    def _binder(self, source: str) -> Binder:
        return Binder(self.engine.catalog, source)

    # ----------------------------------------------------------------------------- schema
    def _CreateType(self, stmt: A.CreateType, source: str, ctx: ExecContext) -> Result:
        binder = self._binder(source)
        with self.store.transaction():
            if any(t.lower() == SIGNAL_ROOT.lower() for t in stmt.supertypes):
                self.ensure_signal_root()   # `under Signal`: a script defines signals
            try:
                user = self.store.create_type(stmt.name, stmt.supertypes)
            except StoreError as exc:
                raise exc.located(stmt.span).with_source(source)
            for prop in stmt.properties:
                result = binder.resolve_type(prop.type)
                function = StoredFunction(prop.name, (Param(stmt.name.lower(), user.type),), result, key=prop.key)
                try:
                    self.store.add_function(function)
                except StoreError as exc:
                    raise StoreError(exc.message, prop.span, source) from None
                self.store.add_property(user, prop.name)
        return self._done(f"type {stmt.name} created", stmt, source)

    def _CreateFunction(self, stmt: A.CreateFunction, source: str, ctx: ExecContext) -> Result:
        binder = self._binder(source)
        params = []
        seen = set()
        for number, p in enumerate(stmt.parameters, 1):
            name = p.name or f"_{number}"   # an unnamed parameter (AmosQL) cannot be referred to
            if name.lower() in seen:
                raise QueryNameError(f"parameter {p.name} appears twice", p.span, source)
            seen.add(name.lower())
            params.append(Param(name, binder.resolve_type(p.type)))
        parts = ()
        if isinstance(stmt.result.of, A.TupleType):   # AmosQL: -> Bag of (Person spouse, Integer year)
            parts = tuple((p.name or f"_{number}", binder.resolve_type(p.type))
                          for number, p in enumerate(stmt.result.of.parts, 1))
            result = bag_of(vector_of(OBJECT))
        else:
            result = binder.resolve_type(stmt.result)
        stmt = _with_result_variable(stmt, result)
        if stmt.name.lower() in self.engine.library and stmt.name.lower() in _OPERATOR_NAMES:
            raise QueryNameError(f"{stmt.name} is an operator and cannot be redefined", stmt.span, source)
        if isinstance(stmt.body, A.StoredBody):
            function = StoredFunction(stmt.name, tuple(params), result, key=stmt.key, parts=parts)
        elif isinstance(stmt.body, A.ForeignBody):
            try:
                target = resolve_foreign(stmt.body.target, self.engine.foreign_allowed,
                                         self.engine.foreign_registered)
            except QueryError as exc:
                if not getattr(self, "restoring", False):
                    raise exc.located(stmt.body.span).with_source(source)
                # reopening a store whose target the operator no longer allows: the function is
                # kept (so the store opens and what calls it is kept) and a call says why it cannot run
                target = None
            function = ForeignFunction(stmt.name, tuple(params), result, stmt.body.target, target,
                                       _text(stmt, source), parts)
        elif isinstance(stmt.body, (A.Block, A.ForEach)):
            function = ProceduralFunction(stmt.name, tuple(params), result, stmt.body, _text(stmt, source), parts)
        else:
            function = DerivedFunction(stmt.name, tuple(params), result, stmt.body, _text(stmt, source), parts)
            self._check_body(function, stmt, source)
        with self.store.transaction():
            try:
                self.store.add_function(function)
            except StoreError as exc:
                raise exc.located(stmt.span).with_source(source)
        return self._done(f"function {stmt.name} created", stmt, source)

    def _check_body(self, function: DerivedFunction, stmt: A.CreateFunction, source: str) -> None:
        """Type-check a derived function's body against its parameters and declared result now."""
        binder = self._binder(source)
        binder.check_signals = False   # its signals are checked when a query calls it
        scope = Scope(params={p.name.lower(): TVar(p.type, f"${p.name.lower()}") for p in function.params})
        binder._inlining.append(function)
        if isinstance(function.body, A.Select):
            query = binder.bind_query(function.body, scope, nested=True)
            body_type = binder.query_value_type(query)
        else:
            body_type = binder.bind_expr(function.body, scope).type
        if binder.lattice.fit(body_type, function.result) is None:
            # a query body of Bag of T fits a declared T too (each result of the function)
            if not (body_type.is_collection and binder.lattice.fit(body_type.element, function.result) is not None):
                raise QueryTypeError(f"{function.name} is declared to return {function.result}, but its body "
                                     f"gives {body_type}", stmt.body.span, source)

    def _CreateInstances(self, stmt: A.CreateInstances, source: str, ctx: ExecContext) -> Result:
        user = self.store.user_type(stmt.type_name)
        if user is None:
            if canonical_builtin(stmt.type_name) is not None:
                raise StoreError(f"{stmt.type_name} is a built-in type: create makes objects of user types only",
                                 stmt.span, source)
            raise QueryNameError(f"unknown type {stmt.type_name}", stmt.span, source)
        functions = []
        for name in stmt.functions:
            candidates = [f for f in self.store.user_functions(name) if isinstance(f, StoredFunction)
                          and len(f.params) == 1 and self.store.lattice.is_subtype(user.type, f.params[0].type)]
            if not candidates:
                raise QueryNameError(f"{stmt.type_name} has no stored property {name}", stmt.span, source)
            functions.append(candidates[0])
        binder = self._binder(source)
        created = []
        with self.store.transaction():
            for row in stmt.rows:
                if len(row) != len(functions):
                    raise QueryTypeError(f"{len(functions)} values expected per instance, got {len(row)}",
                                         row[0].span if row else stmt.span, source)
                obj = self.store.create_object(user.name)
                for function, expr in zip(functions, row):
                    value = self._value(binder, expr, source, ctx, expected=function.result, what=function.name)
                    self._set(function, (obj,), value, expr, source)
                created.append(obj)
            for variable, obj in zip(stmt.variables, created):
                if variable is not None:
                    self.store.set_session(variable, obj)
        self.engine.last_created = created
        return self._done(f"{len(created)} {user.name} created", stmt, source)

    def _set(self, function: StoredFunction, args: tuple, value: Any, node: A.Node, source: str) -> None:
        try:
            self.store.set_stored(function, args, value)
        except StoreError as exc:
            raise StoreError(exc.message, node.span, source) from None

    def _CreateTable(self, stmt: A.CreateTable, source: str, ctx: ExecContext) -> Result:
        binder = self._binder(source)
        columns = []
        names = set()
        for column in stmt.columns:
            if column.name.lower() in names:
                raise QueryNameError(f"column {column.name} appears twice", column.span, source)
            names.add(column.name.lower())
            columns.append(TableColumn(column.name, binder.resolve_type(column.type), column.not_null))
        for constraint in list(stmt.unique) + ([stmt.primary_key] if stmt.primary_key else []):
            for name in constraint:
                if name.lower() not in names:
                    raise QueryNameError(f"unique({', '.join(constraint)}): no column {name}", stmt.span, source)
        table = Table(stmt.name, columns, [tuple(u) for u in stmt.unique], tuple(stmt.primary_key))
        with self.store.transaction():
            try:
                self.store.create_table(table)
            except StoreError as exc:
                raise exc.located(stmt.span).with_source(source)
        return self._done(f"table {stmt.name} created", stmt, source)

    def _Insert(self, stmt: A.Insert, source: str, ctx: ExecContext) -> Result:
        table = self.store.table(stmt.table)
        if table is None:
            raise QueryNameError(f"no table named {stmt.table}", stmt.span, source)
        if stmt.columns:
            positions = []
            for name in stmt.columns:
                index = table.column_index(name)
                if index is None:
                    raise QueryNameError(f"table {table.name} has no column {name}", stmt.span, source)
                positions.append(index)
        else:
            positions = list(range(len(table.columns)))
        binder = self._binder(source)
        with self.store.transaction():
            for row in stmt.rows:
                if len(row) != len(positions):
                    raise QueryTypeError(f"{len(positions)} values expected, got {len(row)}",
                                         row[0].span if row else stmt.span, source)
                values = [None] * len(table.columns)
                for position, expr in zip(positions, row):
                    column = table.columns[position]
                    values[position] = self._value(binder, expr, source, ctx, expected=column.type,
                                                   what=f"column {column.name}")
                for column, value in zip(table.columns, values):
                    if value is None and column.not_null:
                        raise StoreError(f"column {column.name} of {table.name} cannot be null", row[0].span, source)
                try:
                    self.store.insert_row(table, tuple(values))
                except StoreError as exc:
                    raise StoreError(exc.message, row[0].span if row else stmt.span, source) from None
        return self._done(f"{len(stmt.rows)} rows inserted into {table.name}", stmt, source)

    def _CreateModel(self, stmt: A.CreateModel, source: str, ctx: ExecContext) -> Result:
        models = self.engine.models
        if stmt.path is not None:
            path = self.engine.files.resolve(stmt.path, "create model … from")   # the operator's files only
            if path.exists() and not path.is_file():
                raise ModelError(f"model '{stmt.name}': '{stmt.path}' is not a regular file", stmt.span, source)
            ctx.allocate(path.stat().st_size if path.exists() else 0, f"the model file '{stmt.path}'")
            try:
                model = load_model_file(path, name=stmt.name)
            except QueryError as exc:
                raise ModelError(exc.message, stmt.span, source) from None
            origin = str(path)
        else:
            model = self._value(self._binder(source), stmt.expr, source, ctx, expected=None, what="the model")
            if not isinstance(model, Model):
                raise QueryTypeError(f"create model … as needs a model (such as kmeans([[…]])), not "
                                     f"{type_of_value(model)}", stmt.expr.span, source)
            origin = _text(stmt, source)
        with self.store.transaction():
            previous = models.find(stmt.name)
            try:
                entry = models.install(stmt.name, model, version=stmt.version, origin=origin)
            except QueryError as exc:
                raise ModelError(exc.message, stmt.span, source) from None
            if entry is not previous:  # re-installing the same version and bytes changes nothing
                self.store._record(lambda: _undo_install(models, stmt.name, previous))
        return self._done(f"model {entry.name} version {entry.version} installed", stmt, source)

    # ------------------------------------------------------------------------------ data
    def _SetVariable(self, stmt: A.SetVariable, source: str, ctx: ExecContext) -> Result:
        value = self._value(self._binder(source), stmt.value, source, ctx, expected=None, what=f":{stmt.name}")
        if isinstance(value, StreamValue):
            raise QueryTypeError("a session variable cannot hold a stream: keep the query instead",
                                 stmt.value.span, source)
        with self.store.transaction():
            self.store.set_session(stmt.name, value)
        return self._done(f":{stmt.name} set", stmt, source)

    def _SetFunction(self, stmt: A.SetFunction, source: str, ctx: ExecContext) -> Result:
        stmt = self.signal_definition(stmt, source) or stmt
        functions = [f for f in self.store.user_functions(stmt.function) if len(f.params) == len(stmt.args)]
        if not functions:
            raise QueryNameError(f"no stored function {stmt.function} with {len(stmt.args)} arguments",
                                 stmt.span, source)
        function = functions[0]
        if not isinstance(function, StoredFunction):
            raise QueryTypeError(f"{stmt.function} is derived (computed from other functions): only stored "
                                 "functions can be set", stmt.span, source)
        items = tuple(A.SelectItem(a) for a in stmt.args) + (A.SelectItem(stmt.value),)
        select = A.Select(items, stmt.declarations, stmt.where, span=stmt.span)
        rows = self._rows_of(select, source, ctx)
        binder = self._binder(source)
        for param, arg in zip(function.params, stmt.args):
            t = binder.bind_expr(arg, _scope_for(binder, stmt.declarations)).type
            if binder.lattice.fit(t, param.type) is None:
                raise QueryTypeError(f"{function.name} takes {param.type}, not {t}", arg.span, source)
        value_type = binder.bind_expr(stmt.value, _scope_for(binder, stmt.declarations)).type
        holds = function.result.element if stmt.mode != "set" and function.result.name == "Bag" else function.result
        one_of_bag = (stmt.mode == "set" and function.result.name == "Bag" and value_type.name != "Bag"
                      and binder.lattice.fit(value_type, function.result.element) is not None)
        if one_of_bag:   # OSQL: `set f(x) = v` of a bag-valued f makes v its only value
            holds = function.result.element
        if binder.lattice.fit(value_type, holds) is None:
            raise QueryTypeError(f"{function.name} holds {result_text(function.result, function.parts)}, not {value_type}",
                                 stmt.value.span, source)
        if stmt.mode != "set":
            with self.store.transaction():
                count = self._add_or_remove(function, stmt, rows, source)
            done = {"add": "added", "remove": "removed"}[stmt.mode]
            return self._done(f"{count} values of {function.name} {done}", stmt, source)
        count = 0
        with self.store.transaction():
            for row in rows:
                values = row if isinstance(row, tuple) else (row,)
                *args, value = values
                _check_value(value, holds, stmt.value, source, function.name)
                check_parts(value, function, stmt.value, source)
                if one_of_bag and value is not None:
                    value = Bag([value])
                self._set(function, tuple(args), value, stmt, source)
                count += 1
        return self._done(f"{count} values of {function.name} set", stmt, source)

    def _Delete(self, stmt: A.Delete, source: str, ctx: ExecContext) -> Result:
        declaration = stmt.declaration
        select = A.Select((A.SelectItem(A.Variable(declaration.name, span=declaration.span)),),
                          (declaration,), stmt.where, span=stmt.span)
        binder = self._binder(source)
        var_type = binder.resolve_type(declaration.type)
        table = self.store.table(var_type.name)
        if table is None and self.store.user_type(var_type.name) is None:
            raise QueryTypeError(f"delete removes objects of user types or rows of tables, not {var_type}",
                                 declaration.span, source)
        doomed = self._rows_of(select, source, ctx)
        with self.store.transaction():
            if table is not None:
                count = self.store.delete_rows(table, doomed)
            else:
                for obj in doomed:
                    self.store.delete_object(obj)
                count = len(doomed)
        return self._done(f"{count} deleted", stmt, source)

    def _Drop(self, stmt: A.Drop, source: str, ctx: ExecContext) -> Result:
        with self.store.transaction():
            try:
                if stmt.kind == "function":
                    functions = self.store.user_functions(stmt.name)
                    if not functions:
                        raise QueryNameError(f"no function named {stmt.name}", stmt.span, source)
                    for type_ in self.store.types.values():
                        if stmt.name in type_.properties:
                            raise StoreError(f"{stmt.name} is a property of {type_.name}: drop the type instead",
                                             stmt.span, source)
                    for function in list(functions):
                        self.store.drop_function(function)
                elif stmt.kind == "type":
                    self.store.drop_type(stmt.name)
                elif stmt.kind == "table":
                    self.store.drop_table(stmt.name)
                elif stmt.kind == "model":
                    models = self.engine.models
                    if stmt.name not in models:
                        raise QueryNameError(f"no model named {stmt.name}", stmt.span, source)
                    removed = models.remove(stmt.name)
                    self.store._record(lambda: models.install(removed.name, removed.model, version=removed.version,
                                                              origin=removed.origin))
            except QueryError as exc:
                raise exc.located(stmt.span).with_source(source)
        return self._done(f"{stmt.kind} {stmt.name} dropped", stmt, source)

    # ---------------------------------------------------------------------------- checks
    def _Validate(self, stmt: A.Validate, source: str, ctx: ExecContext) -> Result:
        binder = self._binder(source)
        for number, check in enumerate(stmt.checks, 1):
            got = _settle(self._value(binder, check.expr, source, ctx, expected=None, what="the check"), ctx)
            expected = _settle(self._value(binder, check.expected, source, ctx, expected=None,
                                           what="the expected value"), ctx)
            if not close_enough(got, expected):
                raise QueryValidationError(
                    f"validate {stmt.name!r}, check {number}: {check.expr.sql()} gave {brief_value(got)}, "
                    f"expected {brief_value(expected)}", check.span, source)
        return self._done(f"validate {stmt.name!r}: {len(stmt.checks)} checks passed", stmt, source)

    def _Explain(self, stmt: A.Explain, source: str, ctx: ExecContext) -> Result:
        inner = stmt.statement
        if isinstance(inner, (A.Deploy, A.Rollback, A.Undeploy)):
            raise FleetError("deploy, rollback and undeploy run on a federation", inner.span, source)
        text = self.engine.explain_text(inner, source)
        lines = text.splitlines()
        return Result(["plan"], [Type("Charstring")], "explain", items=iter([{"$c0": line} for line in lines]),
                      statement=_text(stmt, source))

    def _Deploy(self, stmt, source: str, ctx: ExecContext) -> Result:
        raise FleetError("deploy sends a model to edges: it runs on a federation (streamql shell --federation URL)",
                         stmt.span, source)

    _Rollback = _Undeploy = _Deploy

    # --------------------------------------------------------------------------- helpers
    def _value(self, binder: Binder, expr: A.Expr, source: str, ctx: ExecContext, expected: Type | None,
               what: str) -> Any:
        """Evaluate a closed expression (no variables) to one value, type-checked."""
        bound = binder.bind_expr(expr, None)
        if expected is not None and binder.lattice.fit(bound.type, expected) is None:
            raise QueryTypeError(f"{what} is {expected}, not {bound.type}", expr.span, source)
        value = self.engine.evaluate(bound, source, expr.span, ctx)
        if expected is not None:
            _check_value(value, expected, expr, source, what)
        return value

    def _rows_of(self, select: A.Select, source: str, ctx: ExecContext) -> list:
        return list(self.engine._run_select(select, source, ctx))


_OPERATOR_NAMES = {"+", "-", "*", "/", "%", "^", ".*", "./", ".^", "=", "!=", "<", "<=", ">", ">=", "neg",
                   "in", "in_list", "between", "like", "is_null", "index", "slice", "vector", "record", "cast"}


def _with_result_variable(stmt: A.CreateFunction, result: Type) -> A.CreateFunction:
    """AmosQL: a named result (`-> Bag of (Person f) as select f where …`) is declared for the body."""
    body = stmt.body
    if not stmt.result_name or not isinstance(body, A.Select):
        return stmt
    name = stmt.result_name.lower()
    if any(d.name.lower() == name for d in body.declarations) or not any(
            isinstance(node, A.Variable) and node.name.lower() == name for node in body.walk()):
        return stmt
    type_expr = stmt.result.of if stmt.result.name.lower() == "bag" and stmt.result.of is not None else stmt.result
    declaration = A.Declaration(type_expr, stmt.result_name, span=stmt.result.span)
    return replace(stmt, body=replace(body, declarations=body.declarations + (declaration,)))


def _undo_install(models, name: str, previous) -> None:
    if previous is None:
        try:
            models.remove(name)
        except QueryError:
            pass
        return
    try:
        models.rollback(name)
    except QueryError:
        models.install(previous.name, previous.model, version=previous.version, origin=previous.origin)


def _scope_for(binder: Binder, declarations) -> Any:
    scope = Scope()
    for d in declarations:
        t = binder.resolve_type(d.type)
        scope.variables[d.name.lower()] = Variable(d.name.lower(), t, d.name, d.span)
    return scope


def _check_value(value, expected: Type, node: A.Node, source: str, what: str) -> None:
    if value is None or expected is None:
        return
    if expected.name == "Real" and isinstance(value, int) and not isinstance(value, bool):
        return
    if not value_fits(value, expected):
        raise QueryTypeError(f"{what} is {expected}, not {brief_value(value)}", node.span, source)


def _settle(value, ctx: ExecContext):
    """A value to compare: bags and finite streams collected (within the statement's budget)."""
    if isinstance(value, LazyBag):
        return value.materialize()
    if isinstance(value, StreamValue):
        column = gather(value.open(), ctx, "a stream")
        return column if isinstance(column, np.ndarray) else list(column)
    return value


def close_enough(got, expected, rel: float = 1e-9) -> bool:
    """`validate`'s comparison: numbers within a relative tolerance, elementwise for vectors."""
    if got is None or expected is None:
        return got is None and expected is None
    if isinstance(got, Bag) != isinstance(expected, Bag) and isinstance(got, (Bag, list, np.ndarray)) \
            and isinstance(expected, (Bag, list, np.ndarray)):   # a collected stream against bag(…)
        got, expected = (Bag(list(x)) if not isinstance(x, Bag) else x for x in (got, expected))
    if isinstance(got, Bag) and isinstance(expected, Bag):
        if len(got) != len(expected):
            return False
        remaining = list(expected.items)
        for item in got.items:
            match = next((i for i, e in enumerate(remaining) if close_enough(item, e, rel)), None)
            if match is None:
                return False
            remaining.pop(match)
        return True
    if isinstance(got, (np.ndarray, list)) or isinstance(expected, (np.ndarray, list)):
        try:
            a = np.asarray(got, dtype=np.float64)
            b = np.asarray(expected, dtype=np.float64)
        except (TypeError, ValueError):
            if isinstance(got, (list, np.ndarray)) and isinstance(expected, (list, np.ndarray)) and len(got) == len(expected):
                return all(close_enough(x, y, rel) for x, y in zip(got, expected))
            return values_equal(got, expected)
        if a.shape != b.shape:
            return False
        return bool(np.all(np.isclose(a, b, rtol=rel, atol=0.0) | ((a == b) | (np.isnan(a) & np.isnan(b)))))
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)) and not isinstance(got, bool) \
            and not isinstance(expected, bool):
        if math.isnan(got) and math.isnan(expected):
            return True
        return got == expected or math.isclose(got, expected, rel_tol=rel, abs_tol=0.0)
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(close_enough(got[k], expected[k], rel) for k in got)
    return values_equal(got, expected) or got == expected


def _text(statement: A.Node, source: str) -> str:
    span = statement.span
    if span is not None and source:
        return source[span.start:span.end]
    return statement.sql()
