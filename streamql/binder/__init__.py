"""The binder and type checker: AST + catalog → typed tree, before anything runs.

It resolves names (variables, session variables, library, stored and derived functions, types),
picks overloads, lifts scalar functions over streams and numeric vectors, decides which `in` and
`=` terms can generate variables, inlines derived functions, and reports every problem as a
`QueryTypeError` or `QueryNameError` with the position of the offending expression.

The Binder is one class in three parts, by topic: queries.py (queries, conjuncts, items,
aggregates), expressions.py (one method per AST node) and calls.py (functions and overloads).
"""
from __future__ import annotations

import difflib
import itertools

from .. import ast as A
from ..bound import replace_children
from ..catalog import Catalog
from ..errors import QueryNameError, QueryTypeError, Span
from ..types import CONSTRUCTORS, Type, canonical_builtin
from .calls import CallBinding
from .expressions import ExpressionBinding
from .queries import AGGREGATE_NAMES, QueryBinding, Scope

_ARRAY_ELEMENTS = {"f32": "Real", "f64": "Real", "i8": "Integer", "i16": "Integer", "i32": "Integer",
                   "i64": "Integer", "u8": "Integer"}

__all__ = ["Binder", "Scope", "AGGREGATE_NAMES", "replace_children"]


class Binder(QueryBinding, ExpressionBinding, CallBinding):
    def __init__(self, catalog: Catalog, source: str | None = None):
        self.catalog = catalog
        self.lattice = catalog.lattice
        self.library = catalog.library
        self.source = source
        self._counter = itertools.count(1)
        self._inlining: list = []   # the derived functions being inlined (a call of one of them recurses)
        self._depth = 0
        # a signal named by a literal must exist when the query compiles; a function body is
        # checked when a query calls it (its signal may be added after the function is created)
        self.check_signals = True

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
        if isinstance(node.of, A.TupleType):
            raise self.type_error("a tuple type (…) is only a function's result: -> Bag of (T a, U b)", node.of.span)
        if node.name.lower() == "array":   # SA Engine's typed arrays: numeric vectors here (array('f32', v))
            element = node.of.name.lower() if node.of is not None and node.of.of is None else "f64"
            if element not in _ARRAY_ELEMENTS:
                raise self.type_error(f"Array of {node.of.name if node.of else '?'}: the element types are "
                                      + ", ".join(sorted(_ARRAY_ELEMENTS)), node.span)
            return Type("Vector", canonical_builtin(_ARRAY_ELEMENTS[element]))
        if node.name.lower() == "pythonproxy" and node.of is None:
            return canonical_builtin("Object")   # a Python object a foreign function gave
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
