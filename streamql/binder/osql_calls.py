"""OSQL's call semantics beside StreamQL's: user functions overloaded on argument types (chosen
statically by the most specific type, or late — by the value's type at run time — where a more
specific resolvent may apply, as Amos II), and Daplex semantics: a function that takes one value,
given a bag, applies to each element (`name(parents(p))`, `sum(range(200) / 2)`)."""
from __future__ import annotations

from .. import ast as A
from ..bound import TAnd, TCall, TCase, TConst, TExpr, TQuery
from ..catalog import DerivedFunction
from ..errors import Span
from ..types import BOOLEAN, CHARSTRING, Type
from .queries import Scope

_BINARY = frozenset({"+", "-", "*", "/", "%", "^", ".*", "./", ".^"})


def type_expr(t: Type, span: Span | None = None) -> A.TypeExpr:
    """The written form of a type (to declare a variable of it in a query built here)."""
    return A.TypeExpr(t.name, None if t.arg is None else type_expr(t.arg, span), span=span)


class OsqlCallBinding:
    """The OSQL part of the Binder's call binding (a mixin of CallBinding's class)."""

    # ----------------------------------------------------------------------------- Daplex
    def daplex_position(self, args: list[TExpr], params: list[Type] | None = None) -> int | None:
        """The first bag argument whose elements would fit (params: the parameter types, if known)."""
        for i, arg in enumerate(args):
            if not arg.type.is_bag:
                continue
            if params is None or self.lattice.fit(arg.type.element, params[i]) is not None:
                return i
        return None

    def daplex(self, name: str, args: list[TExpr], position: int, span: Span | None) -> TExpr:
        """`f(…, b, …)` with b a bag, f taking one value there: the bag of f of each element."""
        params = {}
        refs = []
        for i, arg in enumerate(args):
            hidden = self.hidden("a")
            params[hidden] = arg
            refs.append(A.Variable(hidden, span=span))
        element = self.hidden("e")
        bag = refs[position]
        refs[position] = A.Variable(element, span=span)
        if name in _BINARY and len(refs) == 2:
            call: A.Expr = A.BinaryOp(name, refs[0], refs[1], span=span)
        elif name == "neg" and len(refs) == 1:
            call = A.Negate(refs[0], span=span)
        else:
            call = A.Call(name, tuple(refs), span=span)
        select = A.Select((A.SelectItem(call, span=span),),
                          (A.Declaration(type_expr(args[position].type.element, span), element, span=span),),
                          A.In(A.Variable(element, span=span), bag, span=span), span=span)
        query = self.bind_query(select, Scope(params=params), nested=True)
        outer = set()
        for arg in args:
            outer |= arg.free_variables()
        query.outer_references = frozenset(query.outer_references | outer)
        return TQuery(self.query_value_type(query), query=query, span=span)

    # ------------------------------------------------------------------------- overloading
    def choose_user_function(self, functions: list, args: list[TExpr], span: Span | None):
        """The resolvent for these argument types: (function, late) where late lists the more
        specific resolvents that may apply at run time; (None, []) when none fits."""
        fitting = []
        for function in functions:
            total = 0
            for param, arg in zip(function.params, args):
                cost = self.lattice.fit(arg.type, param.type)
                if cost is None and arg.type.is_stream and isinstance(function, DerivedFunction):
                    cost = self.lattice.fit(arg.type.element, param.type)
                    cost = None if cost is None else cost + 3   # lifting over a stream: after exact fits
                if cost is None:
                    break
                total += cost
            else:
                fitting.append((total, function))
        if not fitting:
            return None, []
        lowest = min(cost for cost, _ in fitting)
        best = [f for cost, f in fitting if cost == lowest]
        chosen = best[0]
        for other in best[1:]:
            if self._specific(other, chosen):
                chosen = other
        rivals = [f for f in best if f is not chosen and not self._specific(chosen, f)]
        if rivals:
            listed = "; ".join(f.signature for f in [chosen] + rivals)
            raise self.type_error(f"the call of {chosen.name} is ambiguous: more than one resolvent fits as "
                                  f"well ({listed}); cast an argument to choose", span)
        # late binding: resolvents for subtypes of the argument types may apply to some values
        late = [f for f in functions if f is not chosen and len(f.params) == len(args)
                and self._specific(f, chosen)
                and not any(f is g for g in self._inlining)
                and all(self.lattice.is_subtype(p.type, a.type) or self.lattice.is_subtype(a.type, p.type)
                        for p, a in zip(f.params, args))]
        if any(isinstance(arg, TCall) and arg.fn.name == "cast" for arg in args):
            late = []   # a cast states the type: static binding (as Amos II)
        return chosen, late

    def _specific(self, a, b) -> bool:
        """a's parameters are all subtypes of b's, and not the same."""
        pairs = list(zip(a.params, b.params))
        return all(self.lattice.is_subtype(x.type, y.type) for x, y in pairs) and \
            any(x.type != y.type for x, y in pairs)

    def late_bound(self, chosen_call: TExpr, late: list, args: list[TExpr], bind_one, span: Span | None) -> TExpr:
        """case when the arguments' run-time types fit a more specific resolvent then that one …
        else the statically chosen one (most specific first)."""
        late = sorted(late, key=lambda f: sum(self._depth_of(p.type) for p in f.params), reverse=True)
        whens = []
        isa = self.library.overloads("isa")[0]
        for function in late:
            tests = [TCall(isa.result, isa, (arg, TConst(CHARSTRING, p.type.name)), span=span)
                     for p, arg in zip(function.params, args) if p.type != arg.type]
            condition = tests[0] if len(tests) == 1 else TAnd(BOOLEAN, tuple(tests), span=span)
            whens.append((condition, bind_one(function)))
        return TCase(chosen_call.type, tuple(whens), chosen_call, span=span)

    def _depth_of(self, t: Type) -> int:
        return len(self.lattice.ancestors(t.name))
