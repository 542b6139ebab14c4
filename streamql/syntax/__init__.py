"""The parser: the only user of Lark. Loads the grammar once (cached) and turns text into the AST.

`parse(text)` returns a `Script`; `parse_one(text)` a single statement; `parse_expression(text)`
one expression. Errors are `QueryParseError`s with the line, column and a caret excerpt, worded
for people ("expected an expression after '+'"), not as parser states (messages.py). The grammar
and the parser are in grammar.py, the tree → AST transformer in transformer.py.
"""
from __future__ import annotations

import re
from dataclasses import replace

from lark.exceptions import UnexpectedInput

from .. import ast as A
from ..errors import QueryError, QueryParseError, Span
from .grammar import _fast_parse, grammar_text, keywords, parser
from .messages import parse_error
from .transformer import ToAst

__all__ = ["parse", "parse_one", "parse_expression", "statement_texts", "parser", "keywords", "grammar_text",
           "ToAst", "MAX_NESTING", "MAX_DEPTH"]

_DIRECTIVE = re.compile(r"^[ \t]*(?://|--)[ \t]*([A-Za-z_]+[ \t]*:.*?)[ \t]*$", re.MULTILINE)


MAX_NESTING = 64   # brackets inside brackets: far beyond what a person writes
MAX_DEPTH = 200    # levels of the tree (a sum of 200 terms): the binder and printer recurse this deep,
                   # which fits Python's default recursion limit with room for the caller's own frames


def _check_nesting(text: str) -> None:
    """Refuse absurdly deep nesting before it reaches the recursive parts (cheap: one scan)."""
    depth = 0
    quote = None
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise QueryParseError(f"the statement is nested more than {MAX_NESTING} brackets deep",
                                      Span.at(text, i, 1), text)
        elif ch in ")]}":
            depth -= 1
        elif ch == "-" and text.startswith("--", i) or ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        i += 1


def _check_depth(text: str, statement: A.Statement) -> None:
    """The tree's depth, measured without recursion; too deep is a parse error at that node."""
    stack = [(statement, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise QueryParseError(f"the statement is nested more than {MAX_DEPTH} levels deep (split a long "
                                  "expression into functions)", node.span or statement.span, text)
        for child in node.children():
            stack.append((child, depth + 1))


def parse(text: str) -> A.Script:
    """Parse a script of `;`-separated statements into a `Script` (the last `;` may be left out)."""
    _check_nesting(text)
    try:
        statements = _fast_parse().parse(text)
        statements = tuple(parser().parse(text) if statements is None else statements)
    except UnexpectedInput as exc:
        raise parse_error(text, exc) from None
    except QueryError as exc:
        exc.source = text
        raise
    except RecursionError:
        raise QueryParseError("the statement is nested too deeply", Span.at(text, 0, len(text)), text) from None
    for statement in statements:
        _check_depth(text, statement)
    return A.Script(_attach_directives(text, statements), span=Span.at(text, 0, len(text)))


def _attach_directives(text: str, statements: tuple) -> tuple:
    """Keep comment directives (`//plot: Line plot`) with the statement that follows them."""
    if "//" not in text and "--" not in text:
        return statements
    out, previous_end = [], 0
    for statement in statements:
        start = statement.span.start if statement.span else previous_end
        gap = text[previous_end:start]
        directives = tuple(m.group(1) for m in _DIRECTIVE.finditer(gap))
        out.append(replace(statement, directives=directives) if directives else statement)
        previous_end = statement.span.end if statement.span else start
    return tuple(out)


def parse_one(text: str) -> A.Statement:
    """Parse exactly one statement."""
    script = parse(text)
    if len(script) != 1:
        raise QueryParseError(f"expected one statement, found {len(script)}",
                              script[1].span if len(script) > 1 else Span.at(text, 0, len(text)), text)
    return script[0]


def parse_expression(text: str) -> A.Expr:
    """Parse one expression (as a bare expression statement)."""
    statement = parse_one(text)
    if not isinstance(statement, A.ExprStatement):
        raise QueryParseError("expected an expression", statement.span, text)
    return statement.expr


def statement_texts(text: str) -> list[tuple[A.Statement, str]]:
    """Each statement of a script with its own source text."""
    script = parse(text)
    return [(s, text[s.span.start:s.span.end] if s.span else s.sql()) for s in script]
