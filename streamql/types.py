"""The type lattice: built-in and user types, subtyping, unification of generic signatures.

    Object ─┬─ Number ─┬─ Integer
            │          └─ Real
            ├─ Charstring, Boolean, Record, Time, Timeval of T
            ├─ Vector of T, Bag of T, Stream of T
            ├─ Model, Edge, Function
            └─ user types (create type … under …) and table rows

`Object` is the type of values known only at run time: it is accepted wherever a narrower type is
expected, and a run-time check narrows it. Integer is accepted where Real is expected (promotion).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .streams import LazyBag, StreamValue
from .values import Bag, EdgeRef, FunctionRef, Obj, Time, Timeval

# Type constructors with one element type.
CONSTRUCTORS = ("Vector", "Bag", "Stream", "Timeval")


@dataclass(frozen=True, slots=True)
class Type:
    """A type: a name, and for the constructors (Vector, Bag, Stream, Timeval) an element type."""

    name: str
    arg: "Type | None" = None

    def __str__(self) -> str:
        if self.arg is None or (self.name in CONSTRUCTORS and self.arg == OBJECT and self.name != "Timeval"):
            return self.name
        return f"{self.name} of {self.arg}"

    __repr__ = __str__

    @property
    def element(self) -> "Type":
        """The element type of a constructor type (Object when unstated)."""
        return self.arg if self.arg is not None else OBJECT

    @property
    def is_stream(self) -> bool:
        return self.name == "Stream"

    @property
    def is_bag(self) -> bool:
        return self.name == "Bag"

    @property
    def is_vector(self) -> bool:
        return self.name == "Vector"

    @property
    def is_collection(self) -> bool:
        return self.name in ("Vector", "Bag", "Stream")

    @property
    def is_variable(self) -> bool:
        return self.name.startswith("?")

    @property
    def is_numeric(self) -> bool:
        return self.name in ("Number", "Integer", "Real")

    def contains_variable(self) -> bool:
        return self.is_variable or (self.arg is not None and self.arg.contains_variable())


OBJECT = Type("Object")
NUMBER = Type("Number")
INTEGER = Type("Integer")
REAL = Type("Real")
CHARSTRING = Type("Charstring")
BOOLEAN = Type("Boolean")
RECORD = Type("Record")
TIME = Type("Time")
MODEL = Type("Model")
EDGE = Type("Edge")
FUNCTION = Type("Function")
BINARY = Type("Binary")     # raw bytes (SA Engine's Binary)
NULL = Type("Null")  # the type of `null`: fits everywhere


def vector_of(t: Type) -> Type:
    return Type("Vector", t)


def bag_of(t: Type) -> Type:
    return Type("Bag", t)


def stream_of(t: Type) -> Type:
    return Type("Stream", t)


def timeval_of(t: Type) -> Type:
    return Type("Timeval", t)


def typevar(name: str) -> Type:
    return Type("?" + name)


BUILTIN_PARENTS: dict[str, tuple[str, ...]] = {
    "Object": (), "Number": ("Object",), "Integer": ("Number",), "Real": ("Number",),
    "Charstring": ("Object",), "Boolean": ("Object",), "Record": ("Object",), "Time": ("Object",),
    "Timeval": ("Object",), "Vector": ("Object",), "Bag": ("Object",), "Stream": ("Object",),
    "Model": ("Object",), "Edge": ("Object",), "Function": ("Object",), "Binary": ("Object",), "Null": (),
}
BUILTIN_NAMES = {name.lower(): name for name in BUILTIN_PARENTS if name != "Null"}


def _builtin_ancestors(name: str) -> list[str]:
    order, todo = [], [name]
    while todo:
        current = todo.pop(0)
        if current not in order:
            order.append(current)
            todo.extend(BUILTIN_PARENTS[current])
    return order


_BUILTIN_ANCESTORS = {name: _builtin_ancestors(name) for name in BUILTIN_PARENTS}

# Short forms of LANGUAGE.md §3.
SHORT_FORMS = {
    "matrix": vector_of(vector_of(NUMBER)),
    "function": FUNCTION,
    "string": CHARSTRING,
    "int": INTEGER,
    "float": REAL,
    "double": REAL,
    "bool": BOOLEAN,
}


class TypeLattice:
    """Subtyping over built-in types and the user types a catalog knows.

    `parents(name)` gives the direct supertypes of a user type (names as canonical spellings).
    """

    def __init__(self, user_parents: Callable[[str], tuple[str, ...] | None] = lambda name: None):
        self._user_parents = user_parents

    def parents(self, name: str) -> tuple[str, ...]:
        if name in BUILTIN_PARENTS:
            return BUILTIN_PARENTS[name]
        found = self._user_parents(name)
        return found if found is not None else ("Object",)

    def ancestors(self, name: str) -> list[str]:
        builtin = _BUILTIN_ANCESTORS.get(name)
        if builtin is not None:
            return builtin
        seen, order, todo = set(), [], [name]
        while todo:
            current = todo.pop(0)
            if current in seen:
                continue
            seen.add(current)
            order.append(current)
            todo.extend(self.parents(current))
        return order

    def is_subtype(self, a: Type, b: Type) -> bool:
        """a ≤ b, strictly (no promotion, no narrowing)."""
        if b == OBJECT or a == NULL or a == b:
            return True
        if a.name in CONSTRUCTORS or b.name in CONSTRUCTORS:
            if a.name != b.name:
                return False
            return self.is_subtype(a.element, b.element)
        return b.name in self.ancestors(a.name)

    def fit(self, actual: Type, expected: Type) -> int | None:
        """How well a value of type `actual` fits where `expected` is wanted: 0 exactly or as a
        subtype, 1 by Integer→Real promotion, 2 by run-time narrowing of Object; None: no fit."""
        if self.is_subtype(actual, expected):
            return 0
        if actual.name in CONSTRUCTORS and actual.name == expected.name:
            return self.fit(actual.element, expected.element)
        if actual == INTEGER and expected == REAL:
            return 1
        if actual == OBJECT:
            return 2
        if actual == NUMBER and expected in (INTEGER, REAL):
            return 2  # a Number is known only at run time to be an Integer or a Real
        if actual.name in CONSTRUCTORS and expected.name in CONSTRUCTORS and actual.element == OBJECT:
            return None
        return None

    def compatible(self, a: Type, b: Type) -> bool:
        """Whether values of a and b may be compared or combined (either could fit the other)."""
        if a == OBJECT or b == OBJECT or a == NULL or b == NULL:
            return True
        if a.is_numeric and b.is_numeric:
            return True
        if a.name in CONSTRUCTORS or b.name in CONSTRUCTORS:
            return a.name == b.name and self.compatible(a.element, b.element)
        return self.is_subtype(a, b) or self.is_subtype(b, a)

    def join(self, a: Type, b: Type) -> Type:
        """The least common supertype (as used for `case` branches and vector literals)."""
        if a == NULL:
            return b
        if b == NULL:
            return a
        if self.is_subtype(a, b):
            return b
        if self.is_subtype(b, a):
            return a
        if a.is_numeric and b.is_numeric:
            return REAL if {a, b} <= {INTEGER, REAL} else NUMBER
        if a.name in CONSTRUCTORS and a.name == b.name:
            return Type(a.name, self.join(a.element, b.element))
        for ancestor in self.ancestors(a.name):
            if ancestor in self.ancestors(b.name):
                return Type(ancestor)
        return OBJECT

    # -- generic signatures -------------------------------------------------------------------
    def unify(self, param: Type, actual: Type, bindings: dict[str, Type]) -> int | None:
        """Match an argument against a parameter that may hold type variables (`?T`).

        Returns the fit cost and extends `bindings`, or None when it does not fit."""
        if param.is_variable:
            bound = bindings.get(param.name)
            if bound is None:
                bindings[param.name] = actual
                return 0
            if self.is_subtype(actual, bound):
                return 0
            if self.is_subtype(bound, actual) or self.compatible(bound, actual):
                bindings[param.name] = self.join(bound, actual)
                return 1
            return None
        if param.arg is not None and param.arg.contains_variable():
            if actual.name == param.name:
                return self.unify(param.arg, actual.element, bindings)
            if actual == OBJECT or actual == NULL:
                self.unify(param.arg, OBJECT, bindings)
                return 2
            return None
        if param.name in CONSTRUCTORS and param.arg is None:
            if actual.name == param.name:
                return 0
            return 2 if actual in (OBJECT, NULL) else None
        return self.fit(actual, param)


def substitute(t: Type, bindings: dict[str, Type]) -> Type:
    """Replace type variables by what they were bound to (Object when unbound)."""
    if t.is_variable:
        return bindings.get(t.name, OBJECT)
    if t.arg is not None:
        return Type(t.name, substitute(t.arg, bindings))
    return t


def parse_type(text: str, resolve: Callable[[str], Type | None] | None = None) -> Type:
    """A type from its written form (`Vector of Real`, `Stream of T` with T a variable when one
    capital letter)."""
    words = text.split()
    if not words:
        raise ValueError("empty type")
    return _parse_words(words, resolve)


def _parse_words(words: list[str], resolve) -> Type:
    head = words[0]
    rest = words[1:]
    if rest and rest[0].lower() == "of":
        inner = _parse_words(rest[1:], resolve)
        base = canonical_builtin(head)
        if base is None or base.name not in CONSTRUCTORS:
            raise ValueError(f"{head} takes no 'of'")
        return Type(base.name, inner)
    if rest:
        raise ValueError(f"unexpected {' '.join(rest)!r} in a type")
    if len(head) == 1 and head.isupper():
        return typevar(head)
    found = canonical_builtin(head)
    if found is not None:
        return found
    if resolve is not None:
        user = resolve(head)
        if user is not None:
            return user
    raise ValueError(f"unknown type {head}")


def canonical_builtin(name: str) -> Type | None:
    """The built-in type a (case-insensitive) name means, short forms included."""
    lower = name.lower()
    if lower in SHORT_FORMS:
        return SHORT_FORMS[lower]
    canonical = BUILTIN_NAMES.get(lower)
    if canonical is None:
        return None
    if canonical in CONSTRUCTORS:
        return Type(canonical, OBJECT) if canonical != "Timeval" else Type("Timeval", OBJECT)
    return Type(canonical)


def type_of_value(value) -> Type:
    """The most specific type of a run-time value (for session variables and literals)."""
    if value is None:
        return NULL
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return BOOLEAN
    if isinstance(value, (int, np.integer)):
        return INTEGER
    if isinstance(value, (float, np.floating)):
        return REAL
    if isinstance(value, str):
        return CHARSTRING
    if isinstance(value, bytes):
        return BINARY
    if isinstance(value, Time):
        return TIME
    if isinstance(value, Timeval):
        return timeval_of(type_of_value(value.value))
    if isinstance(value, np.ndarray):
        if value.dtype == bool:
            element = BOOLEAN
        elif np.issubdtype(value.dtype, np.integer):
            element = INTEGER
        elif np.issubdtype(value.dtype, np.floating):
            element = REAL
        else:
            element = OBJECT
        for _ in range(value.ndim - 1):
            element = vector_of(element)
        return vector_of(element)
    if isinstance(value, list):
        return vector_of(_element_type(value))
    if isinstance(value, Bag):
        return bag_of(_element_type(value.items))
    if isinstance(value, dict):
        return RECORD
    if isinstance(value, Obj):
        return Type(value.type_name)
    if isinstance(value, EdgeRef):
        return EDGE
    if isinstance(value, FunctionRef):
        return FUNCTION
    return OBJECT


def value_fits(value, target: Type) -> bool:
    """Whether a run-time value is of `target` (a value of a type known only at run time is
    checked with this where it is narrowed)."""
    name = target.name
    if name == "Object":
        return True
    if name in ("Number", "Real"):
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if name == "Integer":
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if name == "Boolean":
        return isinstance(value, (bool, np.bool_))
    if name == "Charstring":
        return isinstance(value, str)
    if name == "Vector":
        if isinstance(value, np.ndarray):
            return value.dtype == object or column_fits(value, target.element)
        return isinstance(value, list) and all(v is None or value_fits(v, target.element) for v in value)
    if name == "Record":
        return isinstance(value, dict)
    if name == "Binary":
        return isinstance(value, bytes)
    if name == "Time":
        return isinstance(value, Time)
    if name == "Timeval":
        return isinstance(value, Timeval)
    if name == "Stream":
        return isinstance(value, StreamValue)
    if name == "Bag":
        return isinstance(value, (Bag, LazyBag))
    return True


def column_fits(column: np.ndarray, target: Type) -> bool:
    """Whether a plain numpy column (1-D of scalars, 2-D of vectors, …) holds values of target."""
    depth, scalar = 0, target
    while scalar.name == "Vector":
        depth += 1
        scalar = scalar.element
    if scalar.name == "Object":
        return column.ndim >= depth + 1
    if column.ndim != depth + 1:
        return False
    kind = column.dtype.kind
    if scalar.name in ("Number", "Real"):
        return kind in "iuf"
    if scalar.name == "Integer":
        return kind in "iu"
    if scalar.name == "Boolean":
        return kind == "b"
    return False


_PLAIN = {int: "Integer", float: "Real", str: "Charstring", bool: "Boolean"}


def _element_type(items: list) -> Type:
    """The join of the elements' types; a collection of one plain Python type (millions of
    numbers in a session variable) is typed without visiting every element twice."""
    kinds = set(map(type, items))
    if len(kinds) == 1 and next(iter(kinds)) in _PLAIN:
        return Type(_PLAIN[next(iter(kinds))])
    seen: dict = {}
    for v in items:
        t = type_of_value(v)
        seen.setdefault(t, None)
    return _join_all(list(seen))


def _join_all(types: list[Type]) -> Type:
    lattice = TypeLattice()
    result = NULL
    for t in types:
        result = lattice.join(result, t)
    return OBJECT if result == NULL else result

