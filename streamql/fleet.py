"""Fleets in the engine: the catalog a fleet statement is bound against, and what the engine asks
of the federation it plans for.

On a federation the built-in type `Edge` has one object per registered device; every metadata key
is a function of the edge (`region(e)`), beside `id(e)`, `meta(e, 'k')`, `online(e)`, `health(e)`,
… (LANGUAGE.md §8). `expr @ e` is bound as a `TAt`: evaluated on edge e, checked against what the
edges announced (their signals with types, functions and models — their *profiles*).

The federation implements `FleetAccess` (registry, selection index, transport); the engine plans
and runs fleet statements through it with its own binder, planner, optimizer and operators:

    result = engine.query("select region(e), count(e) from Edge e group by region(e);", fleet=access)
    rows, status = list(result), result.status          # status: every selected device's outcome
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from . import ast as A
from .bound import BoundQuery, TAt, TCall, TConst, TExpr, TQuery, TVar
from .errors import QueryNameError, QueryTypeError
from .fragments import MODEL_FUNCTIONS, SIGNAL_FUNCTIONS
from .registry import SOURCE, Library, Overload, parse_signature
from .selection import All, Predicate
from .types import EDGE, Type, parse_type
from .values import Bag, EdgeRef, Time

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Functions of one edge whose value the federation knows: usable anywhere, and inside a fragment
# sent as that edge's value (`region(e)`, `capability(e, 'ram_kb')`).
PER_EDGE = {"id", "meta", "capability", "model_version", "online", "last_seen", "health", "signals"}


# ------------------------------------------------------------------------------ what edges are
@dataclass(frozen=True)
class EdgeProfile:
    """What one kind of edge announced: its signals (name, type), functions (signatures), models."""

    signals: tuple[tuple[str, str | None], ...] = ()
    functions: tuple[str, ...] = ()
    models: tuple[str, ...] = ()

    @classmethod
    def of(cls, signals: Iterable = (), functions: Iterable[str] = (), models: Iterable[str] = ()) -> "EdgeProfile":
        pairs = []
        for item in signals or ():
            if isinstance(item, str):
                pairs.append((item, None))
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                kind = item.get("type")
                pairs.append((item["name"], kind if isinstance(kind, str) else None))
        return cls(tuple(sorted(set(pairs))), tuple(sorted(set(functions or ()))), tuple(sorted(set(models or ()))))

    def signal_names(self) -> list[str]:
        return [name for name, _ in self.signals]


@dataclass
class DeviceInfo:
    """What the federation knows of one device when a statement runs."""

    id: str
    metadata: dict = field(default_factory=dict)
    capabilities: dict = field(default_factory=dict)
    online: bool = False
    last_seen: float | None = None
    health: dict | None = None
    models: dict[str, str] = field(default_factory=dict)     # model → version running
    profile: EdgeProfile | None = None                      # None: it never said hello


class FragmentFeed(Protocol):
    """Fragments running on edges, seen from the statement's worker thread."""

    def start(self, request: "FragmentRequest") -> None: ...
    def next(self, timeout: float) -> "FragmentEvent | None": ...   # None: nothing within timeout
    def cancel(self, device: str) -> None: ...
    def close(self) -> None: ...                                     # cancels what still runs


class FleetAccess(Protocol):
    """What the engine asks of a federation (called from the statement's worker thread)."""

    def metadata_keys(self) -> list[str]: ...
    def profiles(self) -> list[EdgeProfile]: ...                     # every distinct one in the fleet
    def select(self, predicate: Predicate) -> list[str]: ...         # ids, by the registry index
    def devices(self, ids: list[str]) -> dict[str, DeviceInfo]: ...
    def open_feed(self, *, watch: bool = False) -> FragmentFeed: ...  # watch: `connected` events too


@dataclass
class FragmentRequest:
    device: str
    source: str
    params: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    kind: str = "bag"
    principal: str | None = None
    deadline_s: float | None = None     # a one-shot fragment: the device timeout, which the edge keeps too


@dataclass
class FragmentEvent:
    """`rows` (n rows in `columns`, column-major), `end` (outcome ok | limit | error | cancelled |
    offline | dropped, with the edge's error), or `connected` (a device came online)."""

    device: str
    kind: str
    n: int = 0
    columns: list | None = None
    outcome: str | None = None
    error: dict | None = None


# ------------------------------------------------------------------------------ device facts
class FleetFacts:
    """DeviceInfo of the devices one statement touches, loaded from the federation once each."""

    def __init__(self, access: FleetAccess):
        self.access = access
        self._devices: dict[str, DeviceInfo] = {}
        self._lock = threading.Lock()

    def load(self, ids: list[str]) -> dict[str, DeviceInfo]:
        missing = [i for i in ids if i not in self._devices]
        if missing:
            found = self.access.devices(missing)
            with self._lock:
                for device in missing:
                    self._devices[device] = found.get(device) or DeviceInfo(device)
        return {i: self._devices[i] for i in ids}

    def get(self, edge: EdgeRef) -> DeviceInfo:
        device = self._devices.get(edge.id)
        return device if device is not None else self.load([edge.id])[edge.id]


def fleet_library(facts: FleetFacts, metadata_keys: Iterable[str]) -> Library:
    lib = Library()
    d = lambda sig, **kw: lib.define(sig, topic="fleet", **kw)  # noqa: E731
    d("id(Edge e) -> Charstring", scalar=lambda e: e.id, doc="The device id of an edge")
    d("meta(Edge e, Charstring key) -> Object", scalar=lambda e, k: facts.get(e).metadata.get(k),
      doc="A metadata value of an edge (null when unset)")
    d("capability(Edge e, Charstring key) -> Object", scalar=lambda e, k: facts.get(e).capabilities.get(k),
      doc="A capability of an edge: ram_kb, flash_kb, cpu, …")
    d("online(Edge e) -> Boolean", scalar=lambda e: facts.get(e).online, volatile=True,
      doc="Whether the edge is connected now")
    d("last_seen(Edge e) -> Time", volatile=True, doc="When the federation last heard from the edge",
      scalar=lambda e: None if (t := facts.get(e).last_seen) is None else Time(t))
    d("health(Edge e) -> Record", volatile=True, doc="The edge's latest health report",
      scalar=lambda e: None if (h := facts.get(e).health) is None else dict(h))
    d("model_version(Edge e, Charstring model) -> Charstring", volatile=True,
      doc="The version of a model running on the edge (null when none)",
      scalar=lambda e, m: facts.get(e).models.get(m))
    d("signals(Edge e) -> Bag of Charstring", volatile=True, doc="The signals an edge announced",
      scalar=lambda e: Bag((facts.get(e).profile or EdgeProfile()).signal_names()))
    d("edges_with_signal(Charstring signal) -> Bag of Edge", kind=SOURCE, volatile=True,
      scalar=lambda name: _edges_with_signal(facts, name), doc="The edges that announced a signal")
    reserved = set(lib.names())
    for key in metadata_keys:
        if not IDENTIFIER.match(key) or key.lower() in reserved:
            continue
        overload = lib.define(f"{key.lower()}(Edge e) -> Object", scalar=_metadata_reader(facts, key), topic="fleet",
                              doc=f"The metadata value {key!r} of an edge (null when unset)")
        overload.metadata_key = key
        reserved.add(key.lower())
    return lib


def _metadata_reader(facts: FleetFacts, key: str):
    return lambda e: facts.get(e).metadata.get(key)


def _edges_with_signal(facts: FleetFacts, name: str) -> Bag:
    ids = facts.access.select(All())
    devices = facts.load(ids)
    return Bag([EdgeRef(i) for i in sorted(ids) if name in (devices[i].profile or EdgeProfile()).signal_names()])


def is_per_edge_call(expr: TExpr, edge: str) -> bool:
    """`region(e)`, `meta(e, 'k')`, …: a value of edge `edge` the federation knows (further
    arguments constant)."""
    if not isinstance(expr, TCall) or not expr.args or expr.fn.topic != "fleet":
        return False
    if not (getattr(expr.fn, "metadata_key", None) or expr.fn.name in PER_EDGE):
        return False
    first = expr.args[0]
    return isinstance(first, TVar) and first.name == edge and all(isinstance(a, TConst) for a in expr.args[1:])


# ------------------------------------------------------------------------------ the catalog
class _LayeredLibrary:
    """The engine's library, with the fleet functions on top, and inside `@ e` the functions the
    edges announced."""

    def __init__(self, catalog: "FleetCatalog", base: Library, fleet: Library):
        self.catalog, self.base, self.fleet = catalog, base, fleet

    def overloads(self, name: str) -> list[Overload]:
        out = self.fleet.overloads(name)
        if self.catalog.edge_depth:
            out = out + self.catalog.edge_functions().overloads(name)
        base = self.base.overloads(name)
        return out + base if out else base

    def __contains__(self, name: str) -> bool:
        return bool(self.overloads(name))

    def names(self) -> list[str]:
        names = set(self.fleet.names()) | set(self.base.names())
        if self.catalog.edge_depth:
            names |= set(self.catalog.edge_functions().names())
        return sorted(names)

    def all(self):
        yield from self.fleet.all()
        yield from self.base.all()

    def describe(self) -> list[dict]:
        return [o.describe() for o in self.all()]


class FleetCatalog:
    """What fleet statements are bound against: the federation engine's own catalog, the `Edge`
    type, the fleet functions, and inside `@ e` the edges' signals and functions — all of them,
    or those of one profile (`only`) when a statement is checked for one kind of edge."""

    def __init__(self, base, library: Library, access: FleetAccess, facts: FleetFacts | None = None,
                 only: EdgeProfile | None = None):
        self.base = base
        self.access = access
        self.facts = facts or FleetFacts(access)
        self.only = only
        self.lattice = base.lattice
        self.library = _LayeredLibrary(self, library, fleet_library(self.facts, access.metadata_keys()))
        self.edge_depth = 0
        self._profiles: list[EdgeProfile] | None = None
        self._edge_functions: Library | None = None

    # -- delegated to the federation's own engine
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

    def has_extent(self, type_: Type) -> bool:
        return type_ == EDGE or self.base.has_extent(type_)

    def model(self, name):
        return None   # models live on the edges: predict's result is typed there

    # -- what the edges announced
    def profiles(self) -> list[EdgeProfile]:
        if self._profiles is None:
            self._profiles = [self.only] if self.only is not None else list(self.access.profiles())
        return self._profiles

    def signal_type(self, name: str) -> Type | None:
        if not self.edge_depth:
            return self.base.signal_type(name)
        kinds = {kind for profile in self.profiles() for signal, kind in profile.signals if signal == name}
        if len(kinds) != 1 or None in kinds:
            return None    # unknown here, or the edges disagree: Object, checked on each edge
        try:
            return parse_type(kinds.pop())
        except Exception:  # noqa: BLE001 - a type this engine does not know: Object
            return None

    def edge_functions(self) -> Library:
        if self._edge_functions is None:
            lib = Library()
            for signature in sorted({s for p in self.profiles() for s in p.functions}):
                try:
                    name, params, result = parse_signature(signature)
                except Exception:  # noqa: BLE001 - an announcement this engine cannot read
                    continue
                lib.add(Overload(name, params, result, topic="edge", volatile=True,
                                 doc="A function the edges announced (it runs there)"))
            self._edge_functions = lib
        return self._edge_functions

    def bind_at_edge(self, binder, node: A.AtEdge, scope) -> TExpr:
        edge = binder.bind_expr(node.edge, scope)
        if not (isinstance(edge, TVar) and edge.type == EDGE):
            raise QueryTypeError("the right of @ must be an Edge variable (… @ e with e declared Edge e)",
                                 node.edge.span, binder.source)
        self.edge_depth += 1
        try:
            inner = binder.bind_expr(node.expr, scope)
        finally:
            self.edge_depth -= 1
        return TAt(inner.type, expr=inner, edge=edge, source=node.expr.sql(), node=node.expr, span=node.span)

    # -- checks the binder cannot make
    def check(self, query: BoundQuery, source: str | None) -> None:
        """Signals and models are read on edges: outside `@ e` such a read is a mistake (the
        federation has none), inside it the name must be one some edge announced."""
        signals = {n for p in self.profiles() for n in p.signal_names()}
        models = {m for p in self.profiles() for m in p.models}
        for expr, at_edge in _expressions(query, False):
            if not isinstance(expr, TCall) or not expr.args:
                continue
            name = expr.fn.name
            first = expr.args[0]
            literal = first.value if isinstance(first, TConst) and isinstance(first.value, str) else None
            if name in SIGNAL_FUNCTIONS and expr.fn.topic != "fleet":
                if not at_edge:
                    if literal is not None and self.base.signal_type(literal) is None \
                            and literal not in _local_signals(self.base):
                        raise QueryNameError(f"{name}('{literal}') reads a signal of the federation, which has "
                                             f"none: did you mean {name}('{literal}')@e, read on each edge?",
                                             expr.span, source)
                    continue
                if literal is not None and literal not in signals:
                    raise QueryNameError(f"{self._whose('signal')} '{literal}'" + _known("signals", signals, literal),
                                         first.span, source)
            elif name in MODEL_FUNCTIONS and at_edge and literal is not None and literal not in models:
                raise QueryNameError(f"{self._whose('model')} '{literal}'" + _known("models", models, literal),
                                     first.span, source)

    def _whose(self, what: str) -> str:
        return f"this edge has no {what}" if self.only is not None else f"no edge has a {what}"


def _local_signals(base) -> set[str]:
    engine = getattr(base, "engine", None)
    return set(engine.signals.names()) if engine is not None else set()


def _known(what: str, names: set[str], wanted: str) -> str:
    if not names:
        return f" (the edges announced no {what})"
    close = sorted(names, key=lambda n: _distance(n.lower(), wanted.lower()))[:1]
    hint = f"; did you mean '{close[0]}'?" if close and _distance(close[0].lower(), wanted.lower()) <= 3 else ""
    listed = ", ".join(sorted(names)[:12]) + (", …" if len(names) > 12 else "")
    return f"{hint} ({what}: {listed})"


def _distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _expressions(query: BoundQuery, at_edge: bool):
    """Every typed node of a query (nested queries included) with whether it is inside `@ e`."""
    roots = []
    for conjunct in query.conjuncts:
        roots.append(conjunct.test)
        if conjunct.source is not None:
            roots.append(conjunct.source)
    roots += [e for _, e in query.items] + list(query.group_by) + [a.arg for a in query.aggregates if a.arg is not None]
    roots += [e for e, _ in query.order_by]
    if query.having is not None:
        roots.append(query.having)
    for root in roots:
        yield from _walk(root, at_edge)


def _walk(expr: TExpr, at_edge: bool):
    yield expr, at_edge
    if isinstance(expr, TQuery):
        yield from _expressions(expr.query, at_edge)
        return
    if isinstance(expr, TAt):
        yield from _walk(expr.expr, True)
        return
    for child in expr.children():
        yield from _walk(child, at_edge)


def uses_fleet(query: BoundQuery) -> bool:
    """Whether a bound query ranges over edges or evaluates something on one."""
    if any(v.type == EDGE for v in query.variables.values()):
        return True
    return any(isinstance(expr, TAt) for expr, _ in _expressions(query, False))


__all__ = ["DeviceInfo", "EdgeProfile", "FleetAccess", "FleetCatalog", "FleetFacts", "FragmentEvent",
           "FragmentFeed", "FragmentRequest", "is_per_edge_call", "uses_fleet"]
