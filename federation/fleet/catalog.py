"""The federation's catalog: the built-in `Edge` type with one object per registered device, one
function per metadata key (`region(e)`, `kind(e)`), the fleet functions of LANGUAGE.md §8, and
`expr @ e` bound as a fragment to run on edge e.

Device facts are read from a `DeviceFacts` snapshot taken for each statement, so evaluating
`region(e)` never touches SQLite from a worker thread and one statement sees one registry state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from streamql import ast as A
from streamql.bound import TAt, TExpr, TVar
from streamql.errors import FleetError, QueryNameError, QueryTypeError
from streamql.registry import SOURCE, Library, Overload, Param
from streamql.types import (BOOLEAN, CHARSTRING, EDGE, OBJECT, RECORD, TIME, Type, bag_of)
from streamql.values import Bag, EdgeRef, Time

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class DeviceFacts:
    """What the registry knows about some devices, loaded once per statement."""

    devices: dict[str, Any] = field(default_factory=dict)     # id → federation.records.Device
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → model → ModelVersion
    online: set[str] = field(default_factory=set)              # connected right now (hub)
    announced: dict[str, dict] = field(default_factory=dict)   # id → the device's latest hello

    def device(self, edge: EdgeRef):
        return self.devices.get(edge.id)

    def metadata(self, edge: EdgeRef, key: str):
        device = self.device(edge)
        return None if device is None else device.metadata.get(key)

    def capability(self, edge: EdgeRef, key: str):
        device = self.device(edge)
        return None if device is None else device.capabilities.get(key)

    def signals(self, edge: EdgeRef) -> list[str]:
        hello = self.announced.get(edge.id) or {}
        capabilities = hello.get("capabilities") or {}
        signals = capabilities.get("signals")
        if signals is None:
            device = self.device(edge)
            signals = (device.capabilities.get("signals") if device is not None else None) or []
        return [s if isinstance(s, str) else s.get("name") for s in signals]


class LayeredLibrary:
    """The engine's library with the fleet functions added on top."""

    def __init__(self, base: Library, extra: Library):
        self.base = base
        self.extra = extra

    def overloads(self, name: str) -> list[Overload]:
        extra = self.extra.overloads(name)
        base = self.base.overloads(name)
        return extra + base if extra else base

    def __contains__(self, name: str) -> bool:
        return name in self.extra or name in self.base

    def names(self) -> list[str]:
        return sorted(set(self.extra.names()) | set(self.base.names()))

    def all(self):
        yield from self.extra.all()
        yield from self.base.all()

    def describe(self) -> list[dict]:
        return [o.describe() for o in self.all()]


# Fleet functions whose value for an edge is a plain literal: inside a fragment they are replaced
# by their value for that edge before the fragment is printed.
SUBSTITUTABLE = {"id", "meta", "capability", "model_version", "online", "last_seen", "health"}


def fleet_library(facts: DeviceFacts, metadata_keys: Iterable[str]) -> Library:
    lib = Library()
    d = lambda sig, **kw: lib.define(sig, topic="fleet", **kw)  # noqa: E731
    d("id(Edge e) -> Charstring", scalar=lambda e: e.id, doc="The device id of an edge")
    d("meta(Edge e, Charstring key) -> Object", scalar=facts.metadata, doc="A metadata value of an edge (null when unset)")
    d("capability(Edge e, Charstring key) -> Object", scalar=facts.capability,
      doc="A capability of an edge: ram_kb, flash_kb, cpu, …")
    d("online(Edge e) -> Boolean", scalar=lambda e: e.id in facts.online, volatile=True,
      doc="Whether the edge is connected now")
    d("last_seen(Edge e) -> Time", volatile=True, doc="When the federation last heard from the edge",
      scalar=lambda e: None if (dev := facts.device(e)) is None or dev.last_seen is None else Time(dev.last_seen))
    d("health(Edge e) -> Record", volatile=True, doc="The edge's latest health report",
      scalar=lambda e: None if (dev := facts.device(e)) is None else dict(dev.health or {}))
    d("model_version(Edge e, Charstring model) -> Charstring", volatile=True,
      doc="The version of a model running on the edge (null when none)",
      scalar=lambda e, m: getattr(facts.models.get(e.id, {}).get(m), "version", None))
    d("signals(Edge e) -> Bag of Charstring", scalar=lambda e: Bag(facts.signals(e)), volatile=True,
      doc="The signals an edge announced")
    d("edges_with_signal(Charstring signal) -> Bag of Edge", kind=SOURCE, volatile=True,
      scalar=lambda name: Bag([EdgeRef(i) for i in sorted(facts.devices) if name in facts.signals(EdgeRef(i))]),
      doc="The edges that announced a signal")
    reserved = set(lib.names())
    for key in metadata_keys:
        if not IDENTIFIER.match(key) or key.lower() in reserved:
            continue
        overload = lib.define(f"{key.lower()}(Edge e) -> Object", scalar=_metadata_reader(facts, key),
                              doc=f"The metadata value {key!r} of an edge (null when unset)")
        overload.metadata_key = key
        reserved.add(key.lower())
    for overload in lib.all():
        if overload.name in ("id", "meta", "capability", "online"):
            overload.index_key = overload.name
    return lib


def _metadata_reader(facts: DeviceFacts, key: str):
    return lambda e: facts.metadata(e, key)


class FleetCatalog:
    """The federation engine's catalog plus the fleet: what fleet statements are bound against."""

    def __init__(self, engine, facts: DeviceFacts, metadata_keys: Iterable[str]):
        self.engine = engine
        self.base = engine.catalog
        self.facts = facts
        self.library = LayeredLibrary(engine.library, fleet_library(facts, metadata_keys))
        self.lattice = self.base.lattice

    def user_type(self, name):
        return self.base.user_type(name)

    def table(self, name):
        return self.base.table(name)

    def user_functions(self, name):
        return self.base.user_functions(name)

    def user_function_names(self):
        return self.base.user_function_names()

    def session_variable(self, name):
        return self.base.session_variable(name)

    def signal_type(self, name):
        return None  # an edge's signals are checked by the edge

    def model(self, name):
        return None

    def has_extent(self, type_: Type) -> bool:
        return type_ == EDGE or self.base.has_extent(type_)

    def bind_at_edge(self, binder, node: A.AtEdge, scope) -> TExpr:
        edge = binder.bind_expr(node.edge, scope)
        if not (isinstance(edge, TVar) and edge.type == EDGE):
            raise QueryTypeError("the right of @ must be an Edge variable (… @ e with e declared Edge e)",
                                 node.edge.span, binder.source)
        try:
            inner = binder.bind_expr(node.expr, scope)
        except QueryNameError as exc:
            if not exc.message.startswith("unknown function"):
                raise
            # A function the edge has (a deployed bundle defines it) but the federation does not:
            # the edge checks it; here it is a value known only at run time.
            inner = TEdgeOnly(OBJECT, node=node.expr, names=_variables(node.expr, scope), span=node.expr.span)
        return TAt(inner.type, expr=inner, edge=edge, source=node.expr.sql(), node=node.expr, span=node.span)


@dataclass(frozen=True, eq=False)
class TEdgeOnly(TExpr):
    """An expression only an edge can check (it uses functions the edge alone has)."""

    node: Any = None
    names: frozenset = frozenset()

    def _compute_free(self) -> frozenset[str]:
        return self.names

    def _own_volatility(self) -> bool:
        return True

    def describe(self) -> str:
        return self.node.sql()


def _variables(node: A.Node, scope) -> frozenset:
    """The query variables an AST reads, by their internal names."""
    out = set()
    for sub in node.walk():
        if isinstance(sub, A.Variable):
            found, _ = scope.lookup(sub.name.lower())
            if found is not None and hasattr(found, "name") and not isinstance(found, TExpr):
                out.add(found.name)
    return frozenset(out)


def metadata_keys(index) -> list[str]:
    """The metadata keys the selection index has seen."""
    return sorted(key[1] for key in index.keys() if key[0] == "meta")


def require_federation(what: str, span, source):
    return FleetError(f"{what} needs a federation", span, source)
