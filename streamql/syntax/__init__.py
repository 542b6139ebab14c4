"""The parser: the only user of Lark. Loads the grammar once (cached) and turns text into the AST.

`parse(text)` returns a `Script`; `parse_one(text)` a single statement; `parse_expression(text)`
one expression. Errors are `QueryParseError`s with the line, column and a caret excerpt, worded
for people ("expected an expression after '+'"), not as parser states (messages.py). The grammar
and the parser are in grammar.py, the tree → AST transformer in transformer.py.
"""
from __future__ import annotations

import re
from dataclasses import replace
from itertools import islice

from lark.exceptions import UnexpectedInput

from .. import ast as A
from ..errors import QueryError, QueryParseError, Span
from .grammar import _fast_parse, grammar_text, keywords, parser
from .messages import parse_error
from .transformer import ToAst

__all__ = ["parse", "parse_one", "parse_expression", "statement_texts", "parser", "keywords", "grammar_text",
           "ToAst", "MAX_NESTING", "MAX_DEPTH", "check_token_count"]

_DIRECTIVE = re.compile(r"^[ \t]*(?://|--)[ \t]*([A-Za-z_]+[ \t]*:.*?)[ \t]*$", re.MULTILINE)


MAX_NESTING = 64   # brackets inside brackets: far beyond what a person writes
MAX_DEPTH = 200    # levels of the tree (a sum of 200 terms): the binder and printer recurse this deep,
                   # which fits Python's default recursion limit with room for the caller's own frames


# what the nesting check looks at: brackets, and the comments and strings it skips whole
_NESTING_PIECE = re.compile(r"""(?:--|//)[^\n]*|/\*.*?(?:\*/|\Z)|'[^']*'?|"[^"]*"?|[()\[\]{}]""", re.DOTALL)


def _check_nesting(text: str) -> None:
    """Refuse absurdly deep nesting before it reaches the recursive parts (cheap: one scan, in
    the regex engine but for the brackets)."""
    depth = 0
    for piece in _NESTING_PIECE.finditer(text):
        ch = piece.group()
        if ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise QueryParseError(f"the statement is nested more than {MAX_NESTING} brackets deep",
                                      Span.at(text, piece.start(), 1), text)
        elif ch in ")]}":
            depth -= 1


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


# one token of the lexer, near enough, matched in C: a comment, string, time literal, number, name
# (a `ns:name` one), session variable, two-character operator, or any other one character
_ROUGH_TOKEN = re.compile(r"""(?:--|//)[^\n]*|/\*.*?\*/|'[^']*(?:''[^']*)*'?|"[^"]*(?:""[^"]*)*"?"""
                          r"|#'[^'\n]*'?|\|[^|\n]*\|"
                          r"|(?:\d+\.\d+|\.\d+|\d+)(?:[eE][+-]?\d+)?|:?[A-Za-z_]\w*(?::[A-Za-z_]\w*)?"
                          r"|!=|<>|<=|>=|=>|->|\.[*/^]|\S", re.DOTALL)


def check_token_count(text: str, limit: int | None) -> None:
    """Refuse a statement of more than `limit` tokens before parsing it: the parser takes about
    15 µs a token, so a 64 KiB `1+1+…` or `in (…)` list costs a second of a server's CPU. The
    count runs in C, and stops at the cap (a few ms for 64 KiB); comments count as one token each,
    like whitespace they are cheap to skip, so the count errs high by at most one a comment."""
    if limit is None or len(text) <= limit:
        return
    found = next(islice(_ROUGH_TOKEN.finditer(text), limit, None), None)   # the first past it, or None
    if found is None:
        return
    raise QueryParseError(f"the statement has more than {limit} tokens (names, numbers, strings, symbols); "
                          "split it, or read long data from a file or a stream",
                          Span.at(text, found.start(), found.end() - found.start()), text)


def parse(text: str, max_tokens: int | None = None) -> A.Script:
    """Parse a script of `;`-separated statements into a `Script` (the last `;` may be left out);
    with `max_tokens`, a text of more tokens than that is refused before it is parsed."""
    check_token_count(text, max_tokens)
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


def parse_one(text: str, max_tokens: int | None = None) -> A.Statement:
    """Parse exactly one statement (of at most `max_tokens` tokens, when given)."""
    script = parse(text, max_tokens)
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
