"""A tolerant scanner built from the grammar's own terminals: highlighting, splitting, completion.

The parser's lexer stops at the first bad character; a shell must colour and split text that is
still being typed (an unclosed string, half a block comment). So this scanner takes every terminal
pattern from `streamql.syntax.parser().terminals`, picks the longest match at each position (ties:
the higher priority, then a literal over a regex, as Lark does), turns names that spell a keyword
into that keyword, and turns what no terminal matches into a token that runs to the end of the
construct it starts (`'abc` to the end of the text) or one error character.

    >>> [(t.type, t.text) for t in scan("select 'a;b';") if t.type != "WHITESPACE"]
    [('SELECT', 'select'), ('STRING', "'a;b'"), ('SEMICOLON', ';')]
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from ..syntax import parser
from ..types import BUILTIN_NAMES, SHORT_FORMS

TRIVIA = frozenset({"WHITESPACE", "LINE_COMMENT", "BLOCK_COMMENT"})
# Terminals that have no regex match: what the scanner makes of text no terminal takes.
UNCLOSED_STRING = "UNCLOSED_STRING"
UNCLOSED_COMMENT = "UNCLOSED_COMMENT"
UNCLOSED_TIME = "UNCLOSED_TIME"
ERROR = "ERROR"

_DIRECTIVE = re.compile(r"^(?://|--)[ \t]*[A-Za-z_]+[ \t]*:")


@dataclass(frozen=True, slots=True)
class Token:
    type: str    # the grammar's terminal name (SELECT, NAME, STRING, AT, …) or one of the above
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def trivia(self) -> bool:
        return self.type in TRIVIA


@dataclass(frozen=True)
class _Terminals:
    keywords: dict[str, str]                  # lowercase keyword → terminal name
    patterns: tuple[tuple[str, re.Pattern, int, bool], ...]  # name, regex, priority, is literal


@lru_cache(maxsize=1)
def terminals() -> _Terminals:
    """The grammar's terminals, compiled once: keywords apart, every other pattern in order."""
    keywords, patterns = {}, []
    for terminal in parser().terminals:
        pattern = terminal.pattern
        literal = pattern.type == "str"
        if literal and pattern.value.isalpha():
            keywords[pattern.value.lower()] = terminal.name
            continue
        flags = re.IGNORECASE if "i" in pattern.flags else 0
        patterns.append((terminal.name, re.compile(pattern.to_regexp(), flags), terminal.priority, literal))
    return _Terminals(keywords, tuple(patterns))


def keyword_set() -> frozenset[str]:
    return frozenset(terminals().keywords)


def next_token(text: str, pos: int) -> Token:
    """The token starting at `pos` (which must be < len(text))."""
    table = terminals()
    best = None  # (length, priority, literal, name)
    for name, regex, priority, literal in table.patterns:
        match = regex.match(text, pos)
        if match is None or match.end() == pos:
            continue
        key = (match.end() - pos, priority, literal)
        if best is None or key > best[0]:
            best = (key, name)
    if best is not None and not (text.startswith("/*", pos) and best[1] != "BLOCK_COMMENT"):
        length, name = best[0][0], best[1]
        value = text[pos:pos + length]
        if name == "NAME":
            name = table.keywords.get(value.lower(), name)
        return Token(name, value, pos)
    return _unmatched(text, pos)


def _unmatched(text: str, pos: int) -> Token:
    char = text[pos]
    if char in "'\"":
        return Token(UNCLOSED_STRING, text[pos:], pos)
    if text.startswith("/*", pos):
        return Token(UNCLOSED_COMMENT, text[pos:], pos)
    if char == "|" or text.startswith("#'", pos):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        return Token(UNCLOSED_TIME if char == "|" else ERROR, text[pos:end], pos)
    return Token(ERROR, char, pos)


def scan(text: str, pos: int = 0) -> Iterator[Token]:
    """Every token of `text` from `pos`, whitespace and comments included; never fails."""
    while pos < len(text):
        token = next_token(text, pos)
        yield token
        pos = token.end


# ------------------------------------------------------------------ splitting into statements
@dataclass(frozen=True, slots=True)
class Piece:
    """One unit of input: a statement up to its `;`, or a meta-command line (`\\output csv`)."""

    kind: str        # 'statement' | 'meta'
    text: str        # the statement with its leading comments (directives), or the command line
    start: int       # offset of `text` in the whole input
    complete: bool   # a statement has its closing ';' (a meta-command is always complete)

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def split(text: str) -> list[Piece]:
    """Cut input into statements at each `;` outside strings and comments, and meta-command
    lines that start with a backslash where a statement would start. Trailing trivia (spaces,
    comments) after the last piece is dropped; an unfinished statement comes last, incomplete."""
    pieces: list[Piece] = []
    start = pos = depth = 0
    significant = False
    while pos < len(text):
        if not significant:
            line_start = text.rfind("\n", 0, pos) + 1
            if text[pos] == "\\" and not text[line_start:pos].strip():
                end = text.find("\n", pos)
                end = len(text) if end < 0 else end
                pieces.append(Piece("meta", text[pos:end].strip(), pos, True))
                start = pos = end
                continue
        token = next_token(text, pos)
        pos = token.end
        if token.trivia:
            continue
        significant = True
        word = token.text.lower()
        if token.type == "LBRACE" or word in ("begin", "case"):
            depth += 1   # a procedure's body { s1; s2; } or begin … end is one statement
        elif (token.type == "RBRACE" or word == "end") and depth > 0:
            depth -= 1
        elif token.type == "SEMICOLON" and depth == 0:
            pieces.append(Piece("statement", text[start:pos], start, True))
            start, significant = pos, False
    if significant:
        pieces.append(Piece("statement", text[start:], start, False))
    return pieces


def is_complete(text: str) -> bool:
    """Whether the shell should run `text` now: it holds something, every statement has its `;`."""
    pieces = split(text)
    return bool(pieces) and pieces[-1].complete


# --------------------------------------------------------------------------------- categories
_CATEGORY = {
    "NUMBER": "number", "STRING": "string", UNCLOSED_STRING: "string", "TIME_LITERAL": "time",
    UNCLOSED_TIME: "time", "FUNCTION_REF": "funcref", "SESSION_VARIABLE": "variable",
    "LINE_COMMENT": "comment", "BLOCK_COMMENT": "comment", UNCLOSED_COMMENT: "comment",
    "AT": "at", "QUALIFIED_NAME": "function", "WHITESPACE": "", ERROR: "error",
    "SEMICOLON": "punctuation", "COMMA": "punctuation", "LPAR": "punctuation", "RPAR": "punctuation",
    "LSQB": "punctuation", "RSQB": "punctuation", "LBRACE": "punctuation", "RBRACE": "punctuation",
    "DOT": "punctuation", "COLON": "punctuation",
}
_CONSTANTS = {"TRUE", "FALSE", "NULL"}
TYPE_NAMES = frozenset(set(BUILTIN_NAMES) | set(SHORT_FORMS))


def categorize(tokens: list[Token]) -> list[tuple[str, Token]]:
    """A highlighting category per token: keyword, constant, function, type, name, number, string,
    time, funcref, variable, comment, directive, at, operator, punctuation, error or '' (space)."""
    keywords = set(terminals().keywords.values())
    out = []
    for i, token in enumerate(tokens):
        kind = token.type
        if kind in _CONSTANTS:
            category = "constant"
        elif kind in keywords:
            category = "keyword"
        elif kind == "NAME":
            following = next((t for t in tokens[i + 1:] if not t.trivia), None)
            if following is not None and following.type == "LPAR":
                category = "function"
            elif token.text.lower() in TYPE_NAMES:
                category = "type"
            else:
                category = "name"
        elif kind == "LINE_COMMENT" and _DIRECTIVE.match(token.text):
            category = "directive"
        else:
            category = _CATEGORY.get(kind, "operator")
        out.append((category, token))
    return out
