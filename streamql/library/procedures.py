"""Procedural OSQL: the statements of a procedural function's body (`as { … }`, `begin … end`,
`for each … where …`) run when it is called, in one transaction with the statement that calls
it. Expressions are bound and evaluated with the procedure's local variables as constants; a
`for each` runs its query the same way and its body once per row. `return v` adds v to the
results (and goes on, as in Amos II); a function declared with one result gives the first."""
from __future__ import annotations

from typing import Any

from .. import ast as A
from ..binder import Binder, Scope
from ..bound import TConst
from ..catalog import ProceduralFunction, StoredFunction
from ..errors import QueryError, QueryNameError, QueryRuntimeError, QueryTypeError
from ..registry import Library
from ..streams import LazyBag
from ..types import OBJECT, type_of_value, value_fits
from ..values import Bag, hashable, values_equal

MAX_DEPTH = 64   # procedures calling procedures


class _Run:
    def __init__(self, ctx, function: ProceduralFunction):
        self.ctx, self.engine, self.function = ctx, ctx.engine, function
        self.source = function.source
        self.results: list = []

    # ------------------------------------------------------------------------- values
    def binder(self) -> Binder:
        binder = Binder(self.engine.catalog, self.source)
        binder.check_signals = False
        return binder

    def scope(self, local: dict) -> Scope:
        return Scope(params={name: TConst(t, value) for name, (t, value) in local.items()})

    def value(self, expr: A.Expr, local: dict) -> Any:
        bound = self.binder().bind_expr(expr, self.scope(local))
        value = self.engine.evaluate(bound, self.source, expr.span, self.ctx)
        return value.materialize() if isinstance(value, LazyBag) else value

    # ----------------------------------------------------------------------- statements
    def run(self, node: A.Node, local: dict) -> None:
        self.ctx.check()
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise QueryTypeError(f"a {type(node).__name__} statement cannot run in a procedure", node.span, self.source)
        method(node, local)

    def _Block(self, node: A.Block, local: dict) -> None:
        for statement in node.statements:
            self.run(statement, local)

    def _DeclareLocal(self, node: A.DeclareLocal, local: dict) -> None:
        binder = self.binder()
        for type_expr, name in node.items:
            local[name.lower()] = (binder.resolve_type(type_expr), None)

    def _SetLocal(self, node: A.SetLocal, local: dict) -> None:
        name = node.name.lower()
        if name not in local:
            raise QueryNameError(f"{node.name} is not a local variable: declare it first (declare Integer "
                                 f"{node.name})", node.span, self.source)
        declared, _ = local[name]
        value = self.value(node.value, local)
        if value is not None and declared != OBJECT and not value_fits(value, declared) \
                and not (declared.name == "Real" and isinstance(value, int)):
            raise QueryTypeError(f"{node.name} is {declared}, not {type_of_value(value)}", node.value.span, self.source)
        local[name] = (declared, value)

    def _Return(self, node: A.Return, local: dict) -> None:
        if node.value is not None:
            value = self.value(node.value, local)
            if isinstance(value, Bag) and self.function.result.name == "Bag":
                self.results.extend(value.items)
            elif value is not None:
                self.results.append(value)

    def _If(self, node: A.If, local: dict) -> None:
        if self.value(node.condition, local) is True:
            self.run(node.then, local)
        elif node.otherwise is not None:
            self.run(node.otherwise, local)

    def _ProcCall(self, node: A.ProcCall, local: dict) -> None:
        self.value(node.call, local)

    def _ForEach(self, node: A.ForEach, local: dict) -> None:
        names = [d.name for d in node.declarations]
        select = A.Select((A.SelectItem(A.VectorLiteral(tuple(A.Variable(n, span=node.span) for n in names),
                                                        span=node.span), span=node.span),),
                          node.declarations, node.where, span=node.span)
        rows = self.value(A.Subquery(select, span=node.span), local)
        binder = self.binder()
        types = [binder.resolve_type(d.type) for d in node.declarations]
        for row in list(rows.items if isinstance(rows, Bag) else rows):
            inner = dict(local)
            for name, type_, value in zip(names, types, row):
                inner[name.lower()] = (type_, value)
            self.run(node.body, inner)
            for name in local:   # assignments to the procedure's own variables stay
                if name not in {n.lower() for n in names}:
                    local[name] = inner[name]

    def _SetFunction(self, node: A.SetFunction, local: dict) -> None:
        if node.declarations or node.where is not None:
            raise QueryTypeError("in a procedure, set one value at a time (a for each gives the rows)",
                                 node.span, self.source)
        args = tuple(self.value(a, local) for a in node.args)
        value = self.value(node.value, local)
        function = self._stored(node, args)
        key = tuple(hashable(a) for a in args)
        old = function.values.get(key)
        if node.mode == "add":
            value = Bag(list(old or ()) + [value]) if function.result.name == "Bag" else value
        elif node.mode == "remove":
            items = list(old or ()) if function.result.name == "Bag" else ([old] if old is not None else [])
            hit = next((i for i, item in enumerate(items) if values_equal(item, value)), None)
            if hit is None:
                return
            items.pop(hit)
            value = (Bag(items) if items else None) if function.result.name == "Bag" else None
        value = _fitted(value, function, node, self.source)
        try:
            self.engine.store.set_stored(function, args, value)
        except QueryError as exc:
            raise type(exc)(exc.message, node.span, self.source) from None

    def _stored(self, node: A.SetFunction, args: tuple) -> StoredFunction:
        lattice = self.engine.store.lattice
        for function in self.engine.store.user_functions(node.function):
            if isinstance(function, StoredFunction) and len(function.params) == len(args) and all(
                    a is None or lattice.fit(type_of_value(a), p.type) is not None for p, a in zip(function.params, args)):
                return function
        raise QueryNameError(f"no stored function {node.function} takes these {len(args)} arguments",
                             node.span, self.source)

    def _CreateInstances(self, node: A.CreateInstances, local: dict) -> None:
        store = self.engine.store
        user = store.user_type(node.type_name)
        if user is None:
            raise QueryNameError(f"unknown type {node.type_name}", node.span, self.source)
        for variable, row in zip(node.variables or (None,) * len(node.rows), node.rows):
            obj = store.create_object(user.name)
            for name, expr in zip(node.functions, row):
                function = self._stored(A.SetFunction(name, (), expr, span=expr.span), (obj,))
                store.set_stored(function, (obj,), self.value(expr, local))
            if variable is not None:
                if node.local:
                    local[variable.lower()] = (user.type, obj)
                else:
                    store.set_session(variable, obj)

    def _DeleteObject(self, node: A.DeleteObject, local: dict) -> None:
        value = self.engine.store.session.get(node.variable.lower())
        if value is not None:
            self.engine.store.delete_object(value)


def _fitted(value, function: StoredFunction, node: A.Node, source: str):
    """A value for a stored function, checked against its type (an integral Real for an Integer
    one is that Integer: `/` gives Reals)."""
    wanted = function.result
    if value is None or isinstance(value, Bag) or wanted == OBJECT or value_fits(value, wanted):
        return value
    if wanted.name == "Integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if wanted.name == "Real" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise QueryTypeError(f"{function.name} holds {wanted}, not {value!r}", node.span, source)


def run_procedure(ctx, function: ProceduralFunction, *args):
    if not isinstance(function, ProceduralFunction):
        raise QueryRuntimeError("run_procedure runs a procedural function: call the function by its name")
    depth = getattr(ctx, "procedure_depth", 0)
    if depth >= MAX_DEPTH:
        raise QueryRuntimeError(f"procedures call each other more than {MAX_DEPTH} deep (in {function.name})")
    ctx.procedure_depth = depth + 1
    run = _Run(ctx, function)
    local = {p.name.lower(): (p.type, a) for p, a in zip(function.params, args)}
    try:
        with ctx.engine.store.transaction():
            run.run(function.body, local)
    except QueryError as exc:
        if exc.source is None or exc.source == function.source:
            raise type(exc)(f"in {function.name}: {exc.message}", None, None) from None
        raise
    finally:
        ctx.procedure_depth = depth
    if function.result.name == "Bag":
        return Bag(run.results)
    return run.results[0] if run.results else None


def register(lib: Library) -> None:
    lib.define("run_procedure(Object procedure, Object args...) -> Object", scalar=run_procedure,
               needs_context=True, volatile=True, null_propagating=False, topic="osql",
               doc="Run a procedural function (what a call of one binds to)")
