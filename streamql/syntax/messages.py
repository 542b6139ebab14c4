"""Parse errors worded for people ("expected an expression after '+'"), not as parser states."""
from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..errors import QueryParseError, Span
from .spans import token_span


_FRIENDLY = {
    "SEMICOLON": "';'", "$END": "end of input", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['",
    "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='",
    "DOT": "'.'", "AT": "'@'", "STAR": "'*'", "ARROW": "'->'", "NAME": "a name",
    "NUMBER": "a number", "STRING": "a string", "TIME_LITERAL": "a time", "COMPARE_OP": "a comparison",
    "ADD_OP": "'+' or '-'", "MUL_OP": "an operator", "POW_OP": "'^'", "SESSION_VARIABLE": "a session variable",
    "QUALIFIED_NAME": "a name", "FUNCTION_REF": "a function reference", "MINUS": "'-'", "PLUS": "'+'",
    "__ANON_0": "'=>'", "MORETHAN": "'>'", "LESSTHAN": "'<'",
}
_EXPRESSION_START = {"NUMBER", "STRING", "NAME", "LPAR", "MINUS", "LSQB", "SESSION_VARIABLE"}


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "end of input"
    text = token.value
    return f"'{text}'" if len(text) < 40 else f"'{text[:37]}…'"


def _describe_expected(expected: set[str]) -> str:
    if _EXPRESSION_START <= expected or {"NUMBER", "NAME", "LPAR"} <= expected:
        return "an expression"
    names = []
    for name in sorted(expected):
        if name in _FRIENDLY:
            names.append(_FRIENDLY[name])
        elif name.isupper() and name.isalpha():
            names.append(name.lower())
        else:
            names.append(name.lower())
    names = sorted(set(names))
    if len(names) > 6:
        names = names[:6] + ["…"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def parse_error(text: str, exc: UnexpectedInput) -> QueryParseError:
    offset = getattr(exc, "pos_in_stream", None) or 0
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            span = Span.at(text, len(text.rstrip()), 1) if text.strip() else Span.at(text, 0, 0)
            message = f"the statement ends too early: expected {_describe_expected(set(exc.expected))}"
        else:
            span = token_span(token)
            expected = set(exc.expected)
            message = f"unexpected {_describe_token(token)}: expected {_describe_expected(expected)}"
            starts = token.type in _STATEMENT_START or (token.type == "NAME" and token.value.upper() in _STATEMENT_START)
            if "SEMICOLON" in expected and starts:
                message = f"missing ';' before {_describe_token(token)}"
            elif token.type == "SEMICOLON":
                message = f"the statement ends too early at ';': expected {_describe_expected(expected)}"
            elif re.match(r"(in\s+\S+\s+)?(waves?|percent)\b", text[token.start_pos:], re.I):  # `in 3 waves`
                message += " (rollout options follow the selection: over 3 waves abort above 10 percent)"
    elif isinstance(exc, UnexpectedCharacters):
        span = Span.at(text, offset, 1)
        char = text[offset] if offset < len(text) else ""
        if char in "'\"":
            message = "a string is not closed: add the closing quote"
        elif char == "|":
            message = "a time literal is not closed: write it as |2024-03-07T23:10:17Z|"
        else:
            message = f"unexpected character {char!r}"
    else:  # pragma: no cover - other UnexpectedInput kinds do not occur with LALR
        span = Span.at(text, offset, 1)
        message = str(exc).splitlines()[0]
    return QueryParseError(message, span, text)


_STATEMENT_START = {"SELECT", "CREATE", "SET", "DELETE", "DROP", "INSERT", "EXPLAIN", "VALIDATE",
                    "DEPLOY", "ROLLBACK", "UNDEPLOY"}
