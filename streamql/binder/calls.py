"""Binding calls: user functions (stored ones looked up, derived ones inlined), library
overloads chosen by argument types (cached where the types alone decide), and scalar functions
lifted over a stream."""
from __future__ import annotations

from dataclasses import replace

from .. import ast as A
from ..bound import TCall, TConst, TExpr, TLet, TNarrow, TQuery, TStored, TVar
from ..catalog import DerivedFunction, ForeignFunction, ProceduralFunction, StoredFunction
from ..errors import QueryNameError, QueryTypeError, Span
from ..registry import AGGREGATE, SCALAR, Overload
from ..types import CHARSTRING, OBJECT, Type, stream_of, substitute
from .osql_calls import OsqlCallBinding
from .queries import AGGREGATE_NAMES, Scope

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


class CallBinding(OsqlCallBinding):
    """The call part of the Binder."""

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
        if node.distinct:
            raise self.type_error(f"{node.name}(distinct …) aggregates the distinct values of a query's rows: "
                                  f"use it in a select over variables, such as count(distinct x)", node.span)

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
            candidates = self.library.names() + self.catalog.user_function_names()
            raise self.name_error(f"unknown function {node.name}{self._suggest(name, candidates)}", node.span)
        return self._call_overloads(name, args, node.span, node)

    def _bind_user_call(self, functions, args: list[TExpr], node: A.Call, scope: Scope) -> TExpr:
        chosen, late = self.choose_user_function(functions, args, node.span)
        if chosen is None:
            position = self.daplex_position(args, [p.type for p in functions[0].params])
            if position is not None and not functions[0].params[position].type.is_bag:
                return self.daplex(node.name, args, position, node.span)
            chosen = functions[0]   # its mismatch is the error
        call = self._bind_one_user_call(chosen, args, node)
        if late:
            def bind_one(function):   # chosen at run time for values of the narrower types
                narrowed = [a if self.lattice.fit(a.type, p.type) is not None else
                            TNarrow(p.type, a, f"argument {p.name} of {function.name}", span=a.span)
                            for p, a in zip(function.params, args)]
                return self._bind_one_user_call(function, narrowed, node)
            return self.late_bound(call, late, args, bind_one, node.span)
        return call

    def _bind_one_user_call(self, function, args: list[TExpr], node: A.Call) -> TExpr:
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
        if isinstance(function, ForeignFunction):      # a Python callable (library/foreign.py)
            call = self.library.overloads("call_foreign")[0]
            return TCall(function.result, call, (TConst(OBJECT, function),) + tuple(narrowed), span=node.span)
        if isinstance(function, ProceduralFunction):   # run when called, for its effects (library/procedures.py)
            run = self.library.overloads("run_procedure")[0]
            return TCall(function.result, run, (TConst(OBJECT, function),) + tuple(narrowed), span=node.span)
        return self._inline(function, narrowed, node)

    def _inline(self, function: DerivedFunction, args: list[TExpr], node: A.Call) -> TExpr:
        if any(function is f for f in self._inlining):
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
        self._inlining.append(function)
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
        if isinstance(body, A.Select) and result.type.is_bag and not declared.is_collection \
                and declared != OBJECT:
            # OSQL: `-> Integer as select …` gives the value (none: no row), not a bag of it
            single = self.library.overloads("single_value")[0]
            result = TCall(result.type.element, single, (result, TConst(CHARSTRING, function.name)),
                           span=node.span)
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
            if any(o.kind == AGGREGATE for o in overloads) and name in AGGREGATE_NAMES \
                    and not any(arg_types[i].element.is_vector for i in stream_positions):
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
        position = self.daplex_position(args)
        if position is not None and name not in AGGREGATE_NAMES and not any(o.kind == AGGREGATE for o in overloads):
            return self.daplex(name, args, position, span)
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
        if overload.name in _SIGNAL_FUNCTIONS and self.check_signals:
            self._check_signal(call_args)
        return TCall(result, overload, tuple(call_args), lift=lift, span=span)

    def _check_signal(self, args: list[TExpr]) -> None:
        """`signal_stream('nope')`: a NameError now, with the signals there are, rather than a run-time
        failure later — where the catalog knows its signals (a local engine; a federation's edges
        check their own)."""
        names = getattr(self.catalog, "signal_names", None)
        name = args[0] if args else None
        if names is None or not isinstance(name, TConst) or not isinstance(name.value, str):
            return
        known = names()
        if known is not None and name.value not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise self.name_error(f"no signal named {name.value!r} on this engine (signals: {listed})"
                                  + self._suggest(name.value, known), name.span)


_SIGNAL_FUNCTIONS = frozenset({"signal_stream", "ts_signal_stream", "signal_value"})


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
