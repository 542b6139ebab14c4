"""The QueryError hierarchy, source spans and caret excerpts.

Every error a user can cause is a QueryError carrying a kind, a plain-words message and, when it
comes from source text, the line, column and a caret excerpt of that text.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A region of source text: character offsets and 1-based line/column of its start and end."""

    start: int
    end: int
    line: int
    column: int
    end_line: int
    end_column: int

    def merge(self, other: "Span | None") -> "Span":
        if other is None:
            return self
        first, last = (self, other) if self.start <= other.start else (other, self)
        end = self if self.end >= other.end else other
        return Span(first.start, end.end, first.line, first.column, end.end_line, end.end_column)

    @staticmethod
    def at(text: str, offset: int, length: int = 1) -> "Span":
        """The span of `length` characters at `offset` in `text`."""
        offset = max(0, min(offset, len(text)))
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        end = min(len(text), offset + max(length, 0))
        end_line = text.count("\n", 0, end) + 1
        end_column = end - (text.rfind("\n", 0, end) + 1) + 1
        return Span(offset, end, line, column, end_line, end_column)


EXCERPT_WIDTH = 120   # characters of a source line an excerpt shows: a 60 KiB one-line statement
                      # would print its whole line and a caret line as long


def caret_excerpt(source: str, span: Span, context: int = 0) -> str:
    """The source line holding `span` with a caret line underneath it; of a line longer than
    EXCERPT_WIDTH, the part around the caret, its cut ends marked `…`.

    >>> print(caret_excerpt("select 1 +;", Span(10, 11, 1, 11, 1, 12)))
      1 | select 1 +;
        |           ^
    >>> text = "select " + "1+" * 100 + "x+" + "1+" * 100 + ";"     # an error at the x
    >>> top, carets = caret_excerpt(text, Span(207, 208, 1, 208, 1, 209)).splitlines()
    >>> len(top), top[:8], top[-2:], carets.index("^") == top.index("x")
    (128, '  1 | …1', '+…', True)
    """
    lines = source.splitlines() or [""]
    index = min(max(span.line - 1, 0), len(lines) - 1)
    first = max(0, index - context)
    width = len(str(index + 1))
    line_text = lines[index]
    start_col = min(max(span.column - 1, 0), len(line_text))
    low = 0 if len(line_text) <= EXCERPT_WIDTH else max(0, min(start_col - EXCERPT_WIDTH // 2,
                                                               len(line_text) - EXCERPT_WIDTH))
    high = low + EXCERPT_WIDTH

    def shown(text: str) -> str:
        if len(text) <= EXCERPT_WIDTH and low == 0:
            return text
        return ("…" if low > 0 else "") + text[low:high] + ("…" if len(text) > high else "")

    out = []
    for number in range(first, index + 1):
        out.append(f"  {number + 1:>{width}} | {shown(lines[number])}")
    if span.end_line == span.line:
        length = max(1, span.end_column - span.column)
    else:
        length = max(1, len(line_text) - start_col)
    length = max(1, min(length, len(line_text) - start_col, high - start_col))
    prefix = (" " if low > 0 else "") + "".join(ch if ch == "\t" else " " for ch in line_text[low:start_col])
    out.append(f"  {' ' * width} | {prefix}{'^' * length}")
    return "\n".join(out)


class QueryError(Exception):
    """Any error caused by a statement: parse, name, type, run time, limits, validation."""

    kind = "QueryError"

    def __init__(self, message: str, span: Span | None = None, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    @property
    def excerpt(self) -> str | None:
        if self.span is None or self.source is None:
            return None
        return caret_excerpt(self.source, self.span)

    def with_source(self, source: str, base: Span | None = None) -> "QueryError":
        """Attach the source text (once); spans are already absolute offsets in it."""
        if self.source is None:
            self.source = source
        return self

    def located(self, span: Span | None) -> "QueryError":
        """Give the error a position when it has none yet."""
        if self.span is None and span is not None:
            self.span = span
        return self

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "line": self.line, "column": self.column}

    def __str__(self) -> str:
        where = f" at line {self.line}, column {self.column}" if self.span else ""
        text = f"{self.kind}{where}: {self.message}"
        excerpt = self.excerpt
        return f"{text}\n{excerpt}" if excerpt else text


class QueryParseError(QueryError):
    kind = "ParseError"


class QueryNameError(QueryError):
    kind = "NameError"


class QueryTypeError(QueryError):
    kind = "TypeError"


class QueryRuntimeError(QueryError):
    kind = "RuntimeError"


class QueryLimitError(QueryRuntimeError):
    """A query went past one of its limits (rows, time, memory) and was stopped."""

    kind = "LimitError"


class QueryCancelled(QueryRuntimeError):
    kind = "Cancelled"


class QueryValidationError(QueryError):
    """A `validate` check did not hold."""

    kind = "ValidationError"


class ModelError(QueryError):
    """A model could not be loaded, verified, deployed or run."""

    kind = "ModelError"


class StoreError(QueryError):
    """The store refused a change (duplicate key, unknown object, bad snapshot)."""

    kind = "StoreError"


class FleetError(QueryError):
    """A fleet statement cannot run here (no federation) or failed on the federation."""

    kind = "FleetError"


ERRORS_BY_KIND = {cls.kind: cls for cls in (QueryError, QueryParseError, QueryNameError, QueryTypeError,
                                            QueryRuntimeError, QueryLimitError, QueryCancelled, QueryValidationError,
                                            ModelError, StoreError, FleetError)}


def error_from_dict(error: dict, span: Span | None = None, source: str | None = None) -> QueryError:
    """A QueryError of the kind a serialized error names (RuntimeError when unknown)."""
    cls = ERRORS_BY_KIND.get(str(error.get("kind")), QueryRuntimeError)
    return cls(str(error.get("message") or error.get("kind") or "failed"), span, source)
