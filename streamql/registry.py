"""The library's declarations: the one introspectable registry of built-in functions.

It sits low, beside `types`, so that the binder, the catalog and the optimizer can read what a
function is without loading any implementation; the implementations (streamql/library/) are
registered into it. Each function has one or more overloads, each with a typed signature, a doc line, its volatility,
how it lifts (over streams; elementwise over vectors), a scalar implementation (one value per
argument) and optionally a batch implementation (columns in, column out). Aggregates also carry
their split into a partial aggregate on each edge and a merge on the federation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .types import Type, parse_type

# Kinds of function: how a call is planned.
SCALAR = "scalar"        # values in, a value out; lifts over streams (map) unless it takes a stream
AGGREGATE = "aggregate"  # a bag (or the rows of a group) in, one value out; never lifts over a stream
STREAM = "stream"        # takes a stream (and scalars) and returns a stream: windows, transforms
SOURCE = "source"        # returns a stream or bag from scalars: always volatile, never folded

_SIGNATURE = re.compile(r"^\s*([^\s(]+)\s*\((.*)\)\s*->\s*(.+?)\s*$")


@dataclass(frozen=True)
class Param:
    name: str
    type: Type
    variadic: bool = False


@dataclass(frozen=True)
class AggregateSplit:
    """How an aggregate is computed across edges: `partial` on each edge's rows gives a tuple,
    `merge` combines tuples, `final` turns the merged tuple into the answer. `parts` names the
    tuple's fields (avg → sum, count; stdev → n, mean, M2) and `edge_aggregates` the aggregate
    that computes each part in an edge's fragment (avg → sum, count; stdev → count, avg, m2)."""

    parts: tuple[str, ...]
    partial: Callable[[Any], tuple]
    merge: Callable[[tuple, tuple], tuple]
    final: Callable[[tuple], Any]
    edge_aggregates: tuple[str, ...] = ()

    def merged(self, partials) -> Any:
        """The final value from the partial tuples of the parts (one per edge, or per group on an
        edge). Partials of no rows (a count or n of 0) add nothing: their means are null."""
        merged = None
        for parts in partials:
            parts = tuple(p.item() if hasattr(p, "item") and not hasattr(p, "__len__") else p for p in parts)
            if self._no_rows(parts):
                continue
            merged = parts if merged is None else self.merge(merged, parts)
        if merged is None:
            merged = tuple(0 if p in ("count", "n", "sum") else (0.0 if p == "M2" else None) for p in self.parts)
        return self.final(merged)

    def _no_rows(self, parts: tuple) -> bool:
        for name in ("n", "count"):
            if name in self.parts and (len(self.parts) > 1 or name == "n"):
                return not parts[self.parts.index(name)]
        return False


@dataclass(eq=False)
class Overload:
    name: str
    params: tuple[Param, ...]
    result: Type
    kind: str = SCALAR
    doc: str = ""
    topic: str = "general"
    volatile: bool = False
    elementwise: bool = False      # acts elementwise on numeric vectors (math functions)
    lifts: bool = True             # maps over a stream argument when no overload takes the stream
    null_propagating: bool = True  # a null argument gives null without calling the implementation
    needs_context: bool = False    # the implementations take the execution context first
    # builds a value whose size its arguments choose (zeros(n), concat, a vector literal): takes the
    # context first, like needs_context, to check the size against the statement's memory budget
    # before allocating; constant folding runs it under a small budget of its own
    sized: bool = False
    batch_scalars: bool = False    # the batch implementation accepts constants as plain scalars
    scalar: Callable | None = None
    batch: Callable | None = None  # (*columns, n=...) -> column; constants may arrive as scalars
    split: AggregateSplit | None = None
    check_args: Callable | None = None  # (binder, arg_exprs, arg_types) -> None: extra static checks
    result_type: Callable | None = None  # (arg_types, arg_exprs) -> Type: a result finer than `result`
    catalog_type: Callable | None = None  # (catalog, arg_exprs) -> Type | None: a result the catalog knows
    examples: tuple[str, ...] = ()

    @property
    def signature(self) -> str:
        params = ", ".join(f"{p.type}{'...' if p.variadic else ''} {p.name}".replace("?", "")
                           for p in self.params)
        return f"{self.name}({params}) -> {str(self.result).replace('?', '')}"

    @property
    def variadic(self) -> bool:
        return bool(self.params) and self.params[-1].variadic

    def accepts_arity(self, n: int) -> bool:
        if self.variadic:
            return n >= len(self.params) - 1
        return n == len(self.params)

    def param_types(self, n: int) -> list[Type]:
        if not self.variadic:
            return [p.type for p in self.params]
        fixed = [p.type for p in self.params[:-1]]
        return fixed + [self.params[-1].type] * (n - len(fixed))

    def describe(self) -> dict:
        return {"name": self.name, "signature": self.signature, "kind": self.kind, "doc": self.doc,
                "topic": self.topic, "volatile": self.volatile, "elementwise": self.elementwise,
                "aggregate_split": list(self.split.parts) if self.split else None}


def parse_signature(text: str) -> tuple[str, tuple[Param, ...], Type]:
    """`name(Type a, Stream of T s, Number... xs) -> Result` into its parts."""
    match = _SIGNATURE.match(text)
    if not match:
        raise ValueError(f"bad signature: {text}")
    name, params_text, result_text = match.groups()
    params = []
    for part in _split_params(params_text):
        words = part.split()
        variadic = False
        for i in (-1, -2):
            if words[i].endswith("..."):
                words[i] = words[i][:-3]
                variadic = True
        params.append(Param(words[-1], parse_type(" ".join(words[:-1])), variadic))
    return name.lower(), tuple(params), parse_type(result_text)


def _split_params(text: str) -> list[str]:
    text = text.strip()
    return [p.strip() for p in text.split(",")] if text else []


class Library:
    """Built-in functions by lowercase name; each name has one or more overloads."""

    def __init__(self):
        self._functions: dict[str, list[Overload]] = {}

    def add(self, overload: Overload) -> Overload:
        self._functions.setdefault(overload.name, []).append(overload)
        return overload

    def define(self, signature: str, *, scalar: Callable | None = None, **options) -> Overload:
        name, params, result = parse_signature(signature)
        if options.get("sized"):
            options["needs_context"] = True
        return self.add(Overload(name, params, result, scalar=scalar, **options))

    def function(self, signature: str, **options):
        """Decorator: register the decorated callable as the scalar implementation."""
        def register(fn: Callable) -> Callable:
            doc = options.pop("doc", None) or (fn.__doc__ or "").strip().split("\n")[0]
            self.define(signature, scalar=fn, doc=doc, **options)
            return fn
        return register

    def overloads(self, name: str) -> list[Overload]:
        return self._functions.get(name.lower(), [])

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._functions

    def names(self) -> list[str]:
        return sorted(self._functions)

    def all(self) -> Iterable[Overload]:
        for name in sorted(self._functions):
            yield from self._functions[name]

    def describe(self) -> list[dict]:
        return [o.describe() for o in self.all()]
