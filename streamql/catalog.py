"""What the binder needs to know about names: the catalog interface and its entries.

The store implements it for a local engine; a federation wraps it to add the `Edge` type and
one function per metadata key. Everything here is description, not data: the store owns values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from . import ast as A
from .registry import Library, Param
from .types import Type, TypeLattice


def result_text(result: Type, parts: tuple) -> str:
    """A declared result as written: `Bag of (Person spouse, Integer year)` for a tuple result."""
    if not parts:
        return str(result)
    return "Bag of (" + ", ".join(f"{t} {n}" for n, t in parts) + ")"


@dataclass
class UserType:
    name: str                       # as created
    supertypes: tuple[str, ...]     # canonical names
    properties: tuple[str, ...] = ()  # names of the stored functions its property list created

    @property
    def type(self) -> Type:
        return Type(self.name)


@dataclass(eq=False)
class StoredFunction:
    """`create function f(T x) -> R as stored` (or a property): a table from arguments to a value."""

    name: str
    params: tuple[Param, ...]
    result: Type
    key: bool = False               # values are unique (a `key` property): lookups by value are exact
    values: dict = field(default_factory=dict)  # args tuple → value (owned by the store)
    inverse: dict | None = None     # value → args tuple, for key functions
    parts: tuple = ()               # a tuple result's (name, Type) parts; each value is a vector of them

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(f'{p.type} {p.name}' for p in self.params)}) -> {result_text(self.result, self.parts)} as stored"


@dataclass(eq=False)
class DerivedFunction:
    """`create function f(T x) -> R as <expr | select>`: inlined where it is called."""

    name: str
    params: tuple[Param, ...]
    result: Type
    body: A.Node                    # an Expr or a Select
    source: str                     # the whole `create function …` statement
    parts: tuple = ()               # a tuple result's (name, Type) parts

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(f'{p.type} {p.name}' for p in self.params)}) -> {result_text(self.result, self.parts)}"


@dataclass(eq=False)
class ProceduralFunction:
    """`create function f(T x) -> R as { … }` (or `for each …`): statements run when it is
    called, for their effects on the store; its results are what `return` gives."""

    name: str
    params: tuple[Param, ...]
    result: Type
    body: A.Node                    # a Block or a ForEach
    source: str                     # the whole `create function …` statement
    parts: tuple = ()               # a tuple result's (name, Type) parts

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(f'{p.type} {p.name}' for p in self.params)}) -> {result_text(self.result, self.parts)} (procedural)"


@dataclass(eq=False)
class ForeignFunction:
    """`create function f(T x) -> R as foreign 'py:pkg.mod.fn'`: a Python callable, resolved only
    against the operator's allow-list (Engine(foreign=[…])) or registered by the embedding program."""

    name: str
    params: tuple[Param, ...]
    result: Type
    target: str
    callable: Any = field(repr=False, default=None)
    source: str = ""
    parts: tuple = ()               # a tuple result's (name, Type) parts

    @property
    def signature(self) -> str:
        return (f"{self.name}({', '.join(f'{p.type} {p.name}' for p in self.params)}) -> {result_text(self.result, self.parts)} "
                f"as foreign {self.target!r}")


@dataclass
class TableColumn:
    name: str
    type: Type
    not_null: bool = False


@dataclass
class Table:
    """An SQL table: rows are tuples in column order."""

    name: str
    columns: list[TableColumn]
    unique: list[tuple[str, ...]] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()
    rows: list[tuple] = field(default_factory=list)

    def column_index(self, name: str) -> int | None:
        lower = name.lower()
        for i, column in enumerate(self.columns):
            if column.name.lower() == lower:
                return i
        return None

    @property
    def type(self) -> Type:
        return Type(self.name)


class Catalog(Protocol):
    """What the binder asks. A federation's catalog may also have `bind_at_edge(binder, node,
    scope)`, which binds `expr @ e`; without it, `@` is an error that asks for a federation."""

    library: Library
    lattice: TypeLattice

    def user_type(self, name: str) -> UserType | None:
        """A user type by case-insensitive name."""

    def table(self, name: str) -> Table | None:
        """An SQL table by case-insensitive name."""

    def user_functions(self, name: str) -> list[StoredFunction | DerivedFunction]:
        """Stored and derived functions by case-insensitive name."""

    def user_function_names(self) -> list[str]:
        """Every stored and derived function's name (for suggestions)."""

    def session_variable(self, name: str) -> Any:
        """The value of `:name`; KeyError when unset."""

    def signal_type(self, name: str) -> Type | None:
        """The declared value type of a signal, when known."""

    def signal_names(self) -> list[str] | None:
        """The signals there are now (optional: None, or no such method, when the catalog cannot
        tell — a federation's edges check their own)."""

    def model(self, name: str):
        """A model by name (its registry entry), or None."""

    def has_extent(self, type_: Type) -> bool:
        """Whether the objects of a type can be enumerated (user types, tables, Edge on a federation)."""
