"""The tree → AST methods for what StreamQL takes from AmosQL / SA Engine's OSQL: instances bound
to variables, add/remove, delete :p, declare, the toploop, foreign and procedural bodies, and
SA's matrix indexing `a[i, *]`. A mixin of ToAst (transformer.py)."""
from __future__ import annotations

from lark import Token

from .. import ast as A
from .spans import _Instance, _span, _unquote


class OsqlForms:
    """Handlers of the OSQL grammar rules."""

    def local_instance(self, children):
        return _Instance(str(children[0]), (), children, local=True)

    def foreign_body(self, children):
        return A.ForeignBody(_unquote(children[1]), span=_span(children))

    def procedure_body(self, children):
        return children[0]

    def block(self, children):
        return A.Block(tuple(c for c in children if isinstance(c, A.Node)), span=_span(children))

    def set_local(self, children):
        return A.SetLocal(str(children[1]), children[2], span=_span(children))

    def declare_local(self, children):
        types = [c for c in children if isinstance(c, A.TypeExpr)]
        names = [str(c) for c in children if isinstance(c, Token) and c.type == "NAME_VALUE"]
        return A.DeclareLocal(tuple(zip(types, names)), span=_span(children))

    def return_stmt(self, children):
        return A.Return(children[1], span=_span(children))

    def for_each(self, children):
        declarations = tuple(c for c in children if isinstance(c, A.Declaration))
        where = next((c for c in children[2:-1] if isinstance(c, A.Expr)), None)
        return A.ForEach(declarations, where, children[-1], span=_span(children))

    def if_stmt(self, children):
        _, condition, _, then, _, otherwise = children
        return A.If(condition, then, otherwise, span=_span(children))

    def proc_call(self, children):
        name = children[0]
        args = tuple(c for c in children[1:] if isinstance(c, A.Expr))
        return A.ProcCall(A.Call(str(name), args, span=_span(children)), span=_span(children))

    def index_row(self, children):   # SA Engine's a[i, *]: row i of a matrix
        target, _, index = children[0], children[1], children[2]
        return A.Call("matrix_row", (target, index), span=_span(children))

    def index_column(self, children):   # a[*, j]: column j
        return A.Call("matrix_column", (children[0], children[3]), span=_span(children))

    def bare_instance(self, children):
        return _Instance(children[0].value[1:], (), children)

    def add_function(self, children):
        _, name, _, args, _, value, from_, where = children
        return A.SetFunction(str(name), args or (), value, from_ or (), where, "add", span=_span(children))

    def remove_function(self, children):
        _, name, _, args, _, value, from_, where = children
        return A.SetFunction(str(name), args or (), value, from_ or (), where, "remove", span=_span(children))

    def delete_object(self, children):
        return A.DeleteObject(children[1].value[1:], span=_span(children))

    def declare_variables(self, children):
        types = [c for c in children if isinstance(c, A.TypeExpr)]
        names = [c.value[1:] for c in children if isinstance(c, Token) and c.type == "SESSION_VARIABLE"]
        return A.DeclareVariables(tuple(zip(types, names)), span=_span(children))

    def open_cursor(self, children):
        return A.OpenCursor(children[1].value[1:], children[3], span=_span(children))

    def fetch_cursor(self, children):
        names = [c.value[1:] for c in children if isinstance(c, Token) and c.type == "SESSION_VARIABLE"]
        return A.FetchCursor(names[0], tuple(names[1:]), span=_span(children))

    def close_cursor(self, children):
        return A.CloseCursor(children[1].value[1:], span=_span(children))

    def toploop(self, children):
        return A.Toploop(children[0].value.lower(), span=_span(children))
