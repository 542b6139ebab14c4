"""What the shell talks to: a `Session` runs statements and answers catalog questions.

The shell never touches an `Engine` directly, so the same REPL runs on a local engine
(`LocalSession`) and on a federation (`FederationSession` in `shell/federation.py`).

A session's `run(text)` takes the source of ONE statement (with its leading comments) and returns
a result object, or raises `QueryError` with positions relative to `text`. The result offers:

    .kind       'bag' | 'vector' | 'stream' | 'statement' | 'explain' | 'deployment'
    .columns    column names (list[str]); .types: their types (str() gives the name)
    .message    what a statement did ('type T created'), else None
    iteration   rows as they arrive (one column → the value, several → a tuple); for
                'deployment', progress records (see `shell/progress.py`) until it completes
    .close()    cancel: the shell calls it on Ctrl-C, from another thread than the iterating one
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, runtime_checkable

from .. import ast as A
from ..engine import Engine
from ..models import model_info
from ..osql_statements import loads_code
from ..syntax import parse_one
from ..types import BUILTIN_NAMES, BUILTIN_PARENTS, SHORT_FORMS


@runtime_checkable
class ResultLike(Protocol):
    kind: str
    columns: list
    types: list
    message: str | None

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


@dataclass
class Section:
    """One part of `\\describe NAME`'s answer: a title and its lines."""

    title: str
    lines: list[str] = field(default_factory=list)


@runtime_checkable
class Session(Protocol):
    label: str        # shown in the prompt: 'local', or the federation's host
    federated: bool   # whether `\edges`, edge ids and metadata keys make sense

    def run(self, text: str) -> ResultLike:
        """Run one statement; a query's rows arrive as the result is iterated."""

    def functions(self) -> list[dict]:
        """Registry entries: name, signature, kind, doc, topic (one per overload)."""

    def types(self) -> list[str]:
        """Type names: built-in, user types and tables."""

    def signals(self) -> list[str]: ...

    def models(self) -> list[str]: ...

    def flows(self) -> list[str]: ...

    def variables(self) -> list[str]:
        """Session variables, without the colon."""

    def edges(self) -> list[dict]:
        """Federation only: one dict per device with at least 'id' (and metadata, 'online')."""

    def metadata_keys(self) -> list[str]:
        """Federation only: the edge metadata keys (each is also a function of an edge)."""

    def describe(self, name: str) -> list[Section]:
        """What `name` is: function overloads, a type, a table, a model, a signal (empty: unknown)."""

    def close(self) -> None: ...


def match_name(pattern: str | None, name: str) -> bool:
    """`\\functions win*` globs; a plain word matches names containing it (case-insensitively)."""
    if not pattern:
        return True
    pattern, name = pattern.lower(), name.lower()
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


QUERY_NODES = (A.Select, A.ExprStatement, A.Explain)


class LocalSession:
    """A session on an in-process `streamql.Engine`."""

    label = "local"
    federated = False

    def __init__(self, engine=None, *, store_dir: str | None = None):
        if engine is None:
            engine = Engine(store_dir=store_dir)
        self.engine = engine

    # ------------------------------------------------------------------------ statements
    def run(self, text: str):
        statement = parse_one(text)
        if isinstance(statement, QUERY_NODES) and not loads_code(statement):
            return self.engine.query(text)
        return self.engine.execute(text)[0]

    # ------------------------------------------------------------------------- catalog
    def functions(self) -> list[dict]:
        return self.engine.functions()

    def types(self) -> list[str]:
        store = self.engine.store
        names = [name for name in BUILTIN_NAMES.values()]
        names += [t.name for t in store.types.values()]
        names += [t.name for t in store.tables.values()]
        return names

    def signals(self) -> list[str]:
        return self.engine.signals.names()

    def models(self) -> list[str]:
        return self.engine.models.names()

    def flows(self) -> list[str]:
        flows = getattr(self.engine, "flows", None)
        return flows.names() if flows is not None else []

    def variables(self) -> list[str]:
        return sorted(self.engine.store.session)

    def edges(self) -> list[dict]:
        return []

    def metadata_keys(self) -> list[str]:
        return []

    def describe(self, name: str) -> list[Section]:
        sections = []
        sections += self._describe_functions(name)
        sections += self._describe_type(name)
        sections += self._describe_table(name)
        sections += self._describe_model(name)
        sections += self._describe_signal(name)
        return sections

    def _describe_functions(self, name: str) -> list[Section]:
        lower = name.lower()
        overloads = [f for f in self.functions() if f["name"].lower() == lower]
        if not overloads:
            return []
        lines = []
        for f in overloads:
            flags = [f.get("kind") or ""]
            if f.get("volatile"):
                flags.append("volatile")
            if f.get("elementwise"):
                flags.append("elementwise")
            if f.get("aggregate_split"):
                flags.append("splits into " + ", ".join(f["aggregate_split"]))
            lines.append(f"{f['signature']}    [{', '.join(x for x in flags if x)}]")
            if f.get("doc"):
                lines.append(f"    {f['doc']}")
        title = "function" if len(overloads) == 1 else f"function ({len(overloads)} overloads)"
        return [Section(title, lines)]

    def _describe_type(self, name: str) -> list[Section]:
        store = self.engine.store
        user = store.user_type(name)
        if user is not None:
            lattice = store.lattice
            lines = [f"type {user.name}"]
            ancestors = [a for a in lattice.ancestors(user.name.lower()) if a.lower() != user.name.lower()]
            lines.append("supertypes: " + (", ".join(ancestors) if ancestors else "Object"))
            subtypes = store.subtypes(user.name.lower()) if hasattr(store, "subtypes") else []
            subtypes = [s for s in subtypes if s.lower() != user.name.lower()]
            if subtypes:
                lines.append("subtypes: " + ", ".join(subtypes))
            properties = []
            for prop in user.properties:
                for function in store.user_functions(prop):
                    properties.append(f"  {function.signature}{'  (key)' if getattr(function, 'key', False) else ''}")
            lines.append("properties:" if properties else "properties: none")
            lines += properties
            try:
                count = len(store.extent(user.type))
                lines.append(f"objects: {count}")
            except Exception:  # noqa: BLE001 - the count is a courtesy
                pass
            return [Section("type", lines)]
        canonical = BUILTIN_NAMES.get(name.lower())
        if canonical is not None:
            lines = [f"built-in type {canonical}"]
            lines.append("supertypes: " + (", ".join(_ancestors(canonical)) or "none (the root)"))
            subs = sorted(n for n, ps in BUILTIN_PARENTS.items() if canonical in ps)
            if subs:
                lines.append("subtypes: " + ", ".join(subs))
            return [Section("type", lines)]
        if name.lower() in SHORT_FORMS:
            return [Section("type", [f"{name} is short for {SHORT_FORMS[name.lower()]}"])]
        return []

    def _describe_table(self, name: str) -> list[Section]:
        table = self.engine.store.table(name)
        if table is None:
            return []
        lines = [f"table {table.name} ({len(table.rows)} rows)"]
        for column in table.columns:
            lines.append(f"  {column.name} {column.type}{' not null' if column.not_null else ''}")
        for unique in table.unique:
            lines.append(f"  unique({', '.join(unique)})")
        if table.primary_key:
            lines.append(f"  primary key({', '.join(table.primary_key)})")
        return [Section("table", lines)]

    def _describe_model(self, name: str) -> list[Section]:
        entry = self.engine.models.find(name)
        if entry is None:
            return []
        info = model_info(entry)
        return [Section("model", _record_lines(info))]

    def _describe_signal(self, name: str) -> list[Section]:
        signal = self.engine.signals.get(name)
        if signal is None:
            return []
        return [Section("signal", _record_lines(signal.describe()))]

    def close(self) -> None:
        self.engine.close()


def _ancestors(name: str) -> list[str]:
    out, todo = [], list(BUILTIN_PARENTS.get(name, ()))
    while todo:
        current = todo.pop(0)
        if current not in out:
            out.append(current)
            todo.extend(BUILTIN_PARENTS.get(current, ()))
    return out


def _record_lines(record: dict, indent: str = "") -> list[str]:
    lines = []
    for key, value in record.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines += _record_lines(value, indent + "  ")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{indent}{key}:")
            for item in value:
                lines.append(f"{indent}  - " + ", ".join(f"{k}={v}" for k, v in item.items()))
        else:
            lines.append(f"{indent}{key}: {value}")
    return lines

