"""Source positions of tree pieces: a node's span runs from its first positioned child to its
last (tokens, nodes, and the pieces of an `instances` item)."""
from __future__ import annotations

from lark import Token

from .. import ast as A
from ..errors import Span


class _Instance:
    """One `instances` item: an optional (session or local) variable and the property values."""

    __slots__ = ("variable", "values", "children", "local")

    def __init__(self, variable, values, children, local=False):
        self.variable, self.values, self.children, self.local = variable, values, children, local


def _edges(item, last: bool):
    """The first (or last) positioned piece of a child: a token, a node's span, or inside a tuple."""
    if item is None:
        return None
    if isinstance(item, Token):
        return item
    if isinstance(item, _Instance):
        return _edges(item.children, last)
    if isinstance(item, A.Node):
        return item.span
    if isinstance(item, (tuple, list)):
        for sub in (reversed(item) if last else item):
            found = _edges(sub, last)
            if found is not None:
                return found
    return None


def _span(children) -> Span | None:
    """The span from the first to the last positioned child."""
    first = last = None
    for child in children:
        first = _edges(child, False)
        if first is not None:
            break
    for child in reversed(children):
        last = _edges(child, True)
        if last is not None:
            break
    if first is None or last is None:
        return None
    if isinstance(first, Token):
        start, line, column = first.start_pos, first.line, first.column
    else:
        start, line, column = first.start, first.line, first.column
    if isinstance(last, Token):
        end, end_line, end_column = last.end_pos, last.end_line, last.end_column
    else:
        end, end_line, end_column = last.end, last.end_line, last.end_column
    return Span(start, end, line, column, end_line, end_column)


def token_span(token: Token) -> Span:
    return Span(token.start_pos, token.end_pos, token.line, token.column, token.end_line, token.end_column)


def _unquote(token: str) -> str:
    quote = token[0]
    return token[1:-1].replace(quote * 2, quote)


