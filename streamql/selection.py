"""Selection predicates over the registered devices.

The fleet-query planner translates the metadata conjuncts of a statement into these, e.g.
`region(e) in ('US', 'EU')` → `In(meta('region'), ('US', 'EU'))` and
`capability(e, 'ram_kb') > 512` → `Compare(capability('ram_kb'), '>', 512)`; the selection index
(`federation.index`) answers them for the whole fleet, `matches` for one device.

Semantics (OSQL/SQL): a key without a value (absent or JSON null) yields no row, so every
comparison with it is false; values compare only with values of the same kind: numbers with numbers
(`1 = 1.0` holds; bools are not numbers), strings with strings (by code point), booleans and
JSON lists/records only for (in)equality. `Like` is SQL `LIKE` on strings, case-sensitive,
`%` any run, `_` one character, a backslash escapes the next character. `Not` is the complement:
`Not(Eq(k, v))` holds for a device without `k`, whereas `Compare(k, '!=', v)` does not.
Ordering comparisons of numbers are done in float64.

>>> str(And((In(meta('region'), ('US', 'EU')), Compare(capability('ram_kb'), '>', 512))))
"meta(e, 'region') in ('US', 'EU') and capability(e, 'ram_kb') > 512"
"""
from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

Key = tuple[str, ...]
ID: Key = ("id",)
ONLINE: Key = ("online",)
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")


def meta(name: str) -> Key:
    return ("meta", name)


def capability(name: str) -> Key:
    return ("capability", name)


def check_key(key: Key) -> Key:
    key = tuple(key)
    if key in (ID, ONLINE):
        return key
    if len(key) == 2 and key[0] in ("meta", "capability") and isinstance(key[1], str) and key[1]:
        return key
    raise ValueError(f"not a selection key: {key!r}")


# --- values -------------------------------------------------------------------------------------
NUMBER, STRING, BOOLEAN, JSON = "n", "s", "b", "j"


def normalize(value: Any) -> tuple[str, Any] | None:
    """(kind, comparable) of a metadata value, or None when it counts as missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return (BOOLEAN, value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return None
        return (NUMBER, value)
    if isinstance(value, str):
        return (STRING, value)
    return (JSON, json.dumps(value, sort_keys=True, separators=(",", ":"), default=str))


def as_float(number: int | float) -> float:
    """float64 of a number; integers past the float range become ±inf instead of raising."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def compare_normalized(left: tuple[str, Any] | None, op: str, right: tuple[str, Any] | None) -> bool:
    """`left op right` on normalized values: false when either is missing or kinds differ."""
    if left is None or right is None or left[0] != right[0]:
        return False
    a, b = left[1], right[1]
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if left[0] not in (NUMBER, STRING):
        return False
    if left[0] == NUMBER:
        a, b = as_float(a), as_float(b)
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    raise ValueError(f"unknown comparison operator {op!r}")


@functools.lru_cache(maxsize=1024)
def like_pattern(pattern: str, escapes: bool = True) -> tuple[tuple[str, ...], ...]:
    """An SQL LIKE pattern as its segments between `%`s, each a tuple of characters where `None`
    is `_` (any one character); with `escapes`, a backslash makes the next character literal."""
    segments: list[tuple] = []
    current: list = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if escapes and ch == "\\" and i + 1 < len(pattern):
            current.append(pattern[i + 1])
            i += 2
            continue
        if ch == "%":
            segments.append(tuple(current))
            current = []
        else:
            current.append(None if ch == "_" else ch)
        i += 1
    segments.append(tuple(current))
    return tuple(segments)


def like_match(text: str, pattern: str, escapes: bool = True) -> bool:
    """Whether `text` matches the LIKE `pattern`, in time linear in len(text) × len(pattern).
    (A regular expression of the pattern backtracks: `%a%a%a%a%a%a%a%a%b` against a few thousand
    `a`s runs for hours inside one call nothing can interrupt.) The first segment must match at
    the start, the last at the end, and each one between at its leftmost place after the previous
    — the leftmost place never loses a match that a later one would find."""
    segments = like_pattern(pattern, escapes)
    if len(segments) == 1:
        return len(text) == len(segments[0]) and _segment_at(text, 0, segments[0])
    first, *middle, last = segments
    end = len(text) - len(last)
    if end < len(first) or not _segment_at(text, 0, first) or not _segment_at(text, end, last):
        return False
    position = len(first)
    for segment in middle:
        found = _find_segment(text, segment, position, end)
        if found < 0:
            return False
        position = found + len(segment)
    return True


def _segment_at(text: str, start: int, segment: tuple) -> bool:
    return all(ch is None or text[start + k] == ch for k, ch in enumerate(segment))


def _find_segment(text: str, segment: tuple, start: int, end: int) -> int:
    """The leftmost place at or after `start` where `segment` fits before `end`, or -1."""
    if None not in segment:
        return text.find("".join(segment), start, end)
    found = _segment_regex(segment).search(text, start, end)   # fixed length: no backtracking
    return found.start() if found else -1


@functools.lru_cache(maxsize=256)
def _segment_regex(segment: tuple) -> re.Pattern[str]:
    return re.compile("".join("." if ch is None else re.escape(ch) for ch in segment), re.DOTALL)


def like(value: Any, pattern: str) -> bool:
    return isinstance(value, str) and like_match(value, pattern)


# --- rendering ----------------------------------------------------------------------------------
def render_key(key: Key) -> str:
    if key == ID:
        return "id(e)"
    if key == ONLINE:
        return "online(e)"
    return f"{key[0]}(e, {render_value(key[1])})"


def render_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value, sort_keys=True)


# --- predicates ---------------------------------------------------------------------------------
Lookup = Callable[[Key], Any]


class Predicate:
    """A condition on one device; `matches` evaluates it given a key → value lookup."""

    precedence: ClassVar[int] = 4  # or=1, and=2, not=3, atoms=4: parenthesise looser children

    def matches(self, lookup: Lookup) -> bool:
        raise NotImplementedError

    def _child(self, p: "Predicate") -> str:
        return f"({p})" if p.precedence < self.precedence else str(p)


@dataclass(frozen=True, slots=True)
class All(Predicate):
    def matches(self, lookup: Lookup) -> bool:
        return True

    def __str__(self) -> str:
        return "true"


@dataclass(frozen=True, slots=True)
class Eq(Predicate):
    key: Key
    value: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", check_key(self.key))

    def matches(self, lookup: Lookup) -> bool:
        return compare_normalized(normalize(lookup(self.key)), "=", normalize(self.value))

    def __str__(self) -> str:
        return f"{render_key(self.key)} = {render_value(self.value)}"


@dataclass(frozen=True, slots=True)
class In(Predicate):
    key: Key
    values: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", check_key(self.key))
        object.__setattr__(self, "values", tuple(self.values))

    def matches(self, lookup: Lookup) -> bool:
        have = normalize(lookup(self.key))
        return any(compare_normalized(have, "=", normalize(v)) for v in self.values)

    def __str__(self) -> str:
        return f"{render_key(self.key)} in ({', '.join(render_value(v) for v in self.values)})"


@dataclass(frozen=True, slots=True)
class Compare(Predicate):
    key: Key
    op: str
    value: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", check_key(self.key))
        op = "!=" if self.op == "<>" else self.op
        if op not in OPERATORS:
            raise ValueError(f"unknown comparison operator {self.op!r}")
        object.__setattr__(self, "op", op)

    def matches(self, lookup: Lookup) -> bool:
        return compare_normalized(normalize(lookup(self.key)), self.op, normalize(self.value))

    def __str__(self) -> str:
        return f"{render_key(self.key)} {self.op} {render_value(self.value)}"


@dataclass(frozen=True, slots=True)
class Like(Predicate):
    key: Key
    pattern: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", check_key(self.key))

    def matches(self, lookup: Lookup) -> bool:
        return like(lookup(self.key), self.pattern)

    def __str__(self) -> str:
        return f"{render_key(self.key)} like {render_value(self.pattern)}"


@dataclass(frozen=True, slots=True)
class IsNull(Predicate):
    key: Key

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", check_key(self.key))

    def matches(self, lookup: Lookup) -> bool:
        return normalize(lookup(self.key)) is None

    def __str__(self) -> str:
        return f"{render_key(self.key)} is null"


@dataclass(frozen=True, slots=True)
class Not(Predicate):
    predicate: Predicate
    precedence: ClassVar[int] = 3

    def matches(self, lookup: Lookup) -> bool:
        return not self.predicate.matches(lookup)

    def __str__(self) -> str:
        inner = self.predicate
        if isinstance(inner, IsNull):
            return f"{render_key(inner.key)} is not null"
        return f"not {self._child(inner)}"


@dataclass(frozen=True, slots=True)
class And(Predicate):
    predicates: tuple[Predicate, ...]
    precedence: ClassVar[int] = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "predicates", tuple(self.predicates))

    def matches(self, lookup: Lookup) -> bool:
        return all(p.matches(lookup) for p in self.predicates)

    def __str__(self) -> str:
        return " and ".join(self._child(p) for p in self.predicates) if self.predicates else "true"


@dataclass(frozen=True, slots=True)
class Or(Predicate):
    predicates: tuple[Predicate, ...]
    precedence: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "predicates", tuple(self.predicates))

    def matches(self, lookup: Lookup) -> bool:
        return any(p.matches(lookup) for p in self.predicates)

    def __str__(self) -> str:
        return " or ".join(self._child(p) for p in self.predicates) if self.predicates else "false"


def conjunction(predicates: Iterable[Predicate]) -> Predicate:
    """And of the given predicates, flattening nested Ands; All() when there are none."""
    flat: list[Predicate] = []
    for p in predicates:
        if isinstance(p, And):
            flat.extend(p.predicates)
        elif not isinstance(p, All):
            flat.append(p)
    if not flat:
        return All()
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def device_lookup(device_id: str, metadata: dict, capabilities: dict, online: bool) -> Lookup:
    """The key → value lookup of one device, for `Predicate.matches`."""

    def lookup(key: Key) -> Any:
        if key == ID:
            return device_id
        if key == ONLINE:
            return bool(online)
        return (metadata if key[0] == "meta" else capabilities).get(key[1])

    return lookup
