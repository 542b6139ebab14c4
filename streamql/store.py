"""The main-memory database: types, objects, stored and derived functions, SQL tables, session
variables and models; transactional per statement; snapshots to a directory.

Every change goes through a method that records how to undo it, so a statement that fails is
rolled back exactly (`transaction()`). `save(dir)` writes a new snapshot generation beside the
old one and switches the `CURRENT` pointer atomically (temp file, fsync, rename).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from . import ast as A, codec
from .catalog import DerivedFunction, ForeignFunction, ProceduralFunction, StoredFunction, Table, UserType, result_text
from .errors import StoreError
from .types import BUILTIN_NAMES, SHORT_FORMS, Type, TypeLattice
from .values import Obj, hashable

FORMAT_VERSION = 1


class Store:
    def __init__(self):
        self.types: dict[str, UserType] = {}
        self.objects: dict[int, Obj] = {}
        self.extent_by_type: dict[str, dict[int, Obj]] = {}
        self.functions: dict[str, list[StoredFunction | DerivedFunction]] = {}
        self.tables: dict[str, Table] = {}
        self.session: dict[str, Any] = {}
        self.next_oid = 1
        self.lattice = TypeLattice(self._parents)
        self.lock = threading.RLock()
        self._undo: list[Callable[[], None]] | None = None
        self.revision = 0  # bumped on every committed change (snapshots, caches)

    # ---------------------------------------------------------------------- transactions
    @contextlib.contextmanager
    def transaction(self):
        """Apply a statement's changes entirely or not at all."""
        with self.lock:
            if self._undo is not None:  # nested: part of the enclosing transaction
                yield
                return
            self._undo = []
            try:
                yield
            except BaseException:
                undo, self._undo = self._undo, None
                for step in reversed(undo):
                    step()
                raise
            else:
                changed = bool(self._undo)
                self._undo = None
                if changed:
                    self.revision += 1

    @property
    def in_transaction(self) -> bool:
        """A statement's changes are being applied (not yet committed, nor counted in `revision`)."""
        return self._undo is not None

    def _record(self, undo: Callable[[], None]) -> None:
        if self._undo is not None:
            self._undo.append(undo)

    # ------------------------------------------------------------------------------ types
    def _parents(self, name: str) -> tuple[str, ...] | None:
        user = self.types.get(name.lower())
        if user is not None:
            return user.supertypes or ("Object",)
        if name.lower() in self.tables:
            return ("Object",)
        return None

    def user_type(self, name: str) -> UserType | None:
        return self.types.get(name.lower())

    def create_type(self, name: str, supertypes: tuple[str, ...] = ()) -> UserType:
        lower = name.lower()
        if lower in BUILTIN_NAMES or lower in SHORT_FORMS:
            raise StoreError(f"{name} is a built-in type and cannot be created")
        if lower in self.types or lower in self.tables:
            raise StoreError(f"type {name} already exists")
        parents = []
        for parent in supertypes:
            found = self.types.get(parent.lower())
            if found is None:
                if parent.lower() in BUILTIN_NAMES:
                    raise StoreError(f"a user type can only be created under user types, not {parent}")
                raise StoreError(f"unknown supertype {parent}")
            parents.append(found.name)
        user = UserType(name, tuple(parents))
        self.types[lower] = user
        self.extent_by_type[name] = {}
        self._record(lambda: (self.types.pop(lower, None), self.extent_by_type.pop(name, None)))
        return user

    def subtypes(self, name: str) -> list[str]:
        return [t.name for t in self.types.values() if name in self.lattice.ancestors(t.name) and t.name != name]

    def drop_type(self, name: str) -> None:
        user = self.types.get(name.lower())
        if user is None:
            raise StoreError(f"no type named {name}")
        below = [t for t in self.subtypes(user.name)]
        if below:
            raise StoreError(f"type {user.name} has subtypes ({', '.join(below)}): drop them first")
        users = [f.name for fs in self.functions.values() for f in fs
                 if user.name not in user.properties and any(p.type.name == user.name for p in f.params)
                 and f.name not in user.properties]
        if users:
            raise StoreError(f"functions use type {user.name} ({', '.join(sorted(set(users)))}): drop them first")
        for obj in list(self.extent_by_type.get(user.name, {}).values()):
            self.delete_object(obj)
        for prop in user.properties:
            for function in list(self.functions.get(prop.lower(), [])):
                if any(p.type.name == user.name for p in function.params):
                    self.drop_function(function)
        lower = user.name.lower()
        extent = self.extent_by_type.pop(user.name, {})
        del self.types[lower]

        def undo():
            self.types[lower] = user
            self.extent_by_type[user.name] = extent
        self._record(undo)

    def add_property(self, user: UserType, function_name: str) -> None:
        before = user.properties
        user.properties = before + (function_name,)
        self._record(lambda: setattr(user, "properties", before))

    # ---------------------------------------------------------------------------- objects
    def create_object(self, type_name: str) -> Obj:
        user = self.types.get(type_name.lower())
        if user is None:
            raise StoreError(f"no type named {type_name}")
        oid = self.next_oid
        obj = Obj(oid, user.name)
        self.next_oid += 1
        self.objects[oid] = obj
        self.extent_by_type[user.name][oid] = obj

        def undo():
            self.objects.pop(oid, None)
            self.extent_by_type[user.name].pop(oid, None)
            self.next_oid = min(self.next_oid, oid)
        self._record(undo)
        return obj

    def extent(self, type_: Type) -> list:
        """Every object of a type and its subtypes (or every row of a table)."""
        table = self.tables.get(type_.name.lower())
        if table is not None:
            return list(table.rows)
        out = []
        for user in self.types.values():
            if type_.name in self.lattice.ancestors(user.name):
                out.extend(self.extent_by_type.get(user.name, {}).values())
        return out

    def delete_object(self, obj: Obj) -> None:
        if obj.oid not in self.objects:
            return
        for functions in self.functions.values():
            for function in functions:
                if isinstance(function, StoredFunction):
                    for key, value in list(function.values.items()):
                        if obj in key or value == obj:
                            self.unset_stored(function, key)
        del self.objects[obj.oid]
        extent = self.extent_by_type[obj.type_name]
        del extent[obj.oid]

        def undo():
            self.objects[obj.oid] = obj
            extent[obj.oid] = obj
        self._record(undo)

    # -------------------------------------------------------------------------- functions
    def user_functions(self, name: str) -> list:
        return self.functions.get(name.lower(), [])

    def add_function(self, function: StoredFunction | DerivedFunction) -> None:
        lower = function.name.lower()
        existing = self.functions.get(lower, [])
        for other in existing:   # overloads differ in arity or in argument types (a resolvent each)
            if [p.type for p in other.params] == [p.type for p in function.params]:
                raise StoreError(f"function {function.name}({', '.join(str(p.type) for p in function.params)}) "
                                 f"already exists: drop function {function.name} first")
        self.functions[lower] = existing + [function]
        self._record(lambda: self._restore_functions(lower, existing))

    def _restore_functions(self, lower: str, previous: list) -> None:
        if previous:
            self.functions[lower] = previous
        else:
            self.functions.pop(lower, None)

    def drop_function(self, function) -> None:
        lower = function.name.lower()
        existing = self.functions.get(lower, [])
        remaining = [f for f in existing if f is not function]
        if remaining:
            self.functions[lower] = remaining
        else:
            self.functions.pop(lower, None)
        self._record(lambda: self.functions.__setitem__(lower, existing))

    def set_stored(self, function: StoredFunction, args: tuple, value: Any) -> None:
        """Give a stored function a value for some arguments (null removes the value)."""
        key = tuple(hashable(a) for a in args)
        if value is None:
            self.unset_stored(function, key)
            return
        old = function.values.get(key, _MISSING)
        if function.key:
            index = function.inverse if function.inverse is not None else {}
            function.inverse = index
            holder = index.get(hashable(value))
            if holder is not None and holder != key:
                raise StoreError(f"{function.name} is a key: the value {value!r} is already taken")
            if old is not _MISSING:
                index.pop(hashable(old), None)
            index[hashable(value)] = key
        function.values[key] = value

        def undo():
            if function.key and function.inverse is not None:
                function.inverse.pop(hashable(value), None)
                if old is not _MISSING:
                    function.inverse[hashable(old)] = key
            if old is _MISSING:
                function.values.pop(key, None)
            else:
                function.values[key] = old
        self._record(undo)

    def unset_stored(self, function: StoredFunction, key: tuple) -> None:
        if key not in function.values:
            return
        old = function.values.pop(key)
        if function.key and function.inverse is not None:
            function.inverse.pop(hashable(old), None)

        def undo():
            function.values[key] = old
            if function.key and function.inverse is not None:
                function.inverse[hashable(old)] = key
        self._record(undo)

    # ----------------------------------------------------------------------------- tables
    def table(self, name: str) -> Table | None:
        return self.tables.get(name.lower())

    def create_table(self, table: Table) -> None:
        lower = table.name.lower()
        if lower in BUILTIN_NAMES or lower in SHORT_FORMS:
            raise StoreError(f"{table.name} is a built-in type and cannot name a table")
        if lower in self.tables or lower in self.types:
            raise StoreError(f"a table or type named {table.name} already exists")
        self.tables[lower] = table
        self._record(lambda: self.tables.pop(lower, None))

    def drop_table(self, name: str) -> None:
        lower = name.lower()
        table = self.tables.pop(lower, None)
        if table is None:
            raise StoreError(f"no table named {name}")
        self._record(lambda: self.tables.__setitem__(lower, table))

    def insert_row(self, table: Table, row: tuple) -> None:
        for columns in table.unique + ([table.primary_key] if table.primary_key else []):
            positions = [table.column_index(c) for c in columns]
            key = tuple(hashable(row[p]) for p in positions)
            if any(row[p] is None for p in positions):
                continue
            for existing in table.rows:
                if tuple(hashable(existing[p]) for p in positions) == key:
                    raise StoreError(f"table {table.name}: a row with {', '.join(columns)} = "
                                     f"{', '.join(repr(row[p]) for p in positions)} already exists")
        table.rows.append(row)
        self._record(lambda: table.rows.remove(row) if row in table.rows else None)

    def delete_rows(self, table: Table, rows: list[tuple]) -> int:
        doomed = {id(r) for r in rows}
        before = list(table.rows)
        table.rows[:] = [r for r in table.rows if id(r) not in doomed]
        self._record(lambda: table.rows.__setitem__(slice(None), before))
        return len(before) - len(table.rows)

    # -------------------------------------------------------------------- session variables
    def set_session(self, name: str, value: Any) -> None:
        lower = name.lower()
        old = self.session.get(lower, _MISSING)
        self.session[lower] = value
        self._record(lambda: self.session.pop(lower, None) if old is _MISSING else self.session.__setitem__(lower, old))

    # -------------------------------------------------------------------------- snapshots
    def schema_statements(self) -> list[str]:
        """The statements that recreate the schema: types, tables, stored functions (whose
        parameters may be table rows), derived functions (as written, each after those it calls)."""
        statements = []
        for user in _types_in_dependency_order(self.types.values()):
            statement = f"create type {user.name}"
            if user.supertypes:
                statement += " under " + ", ".join(user.supertypes)
            statements.append(statement)
        for table in self.tables.values():
            columns = [f"{c.name} {_type_source(c.type)}" + (" not null" if c.not_null else "") for c in table.columns]
            columns += [f"unique({', '.join(u)})" for u in table.unique]
            if table.primary_key:
                columns.append(f"primary key({', '.join(table.primary_key)})")
            statements.append(f"create table {table.name}({', '.join(columns)})")
        for functions in self.functions.values():
            for function in functions:
                if isinstance(function, StoredFunction):
                    params = ", ".join(f"{_type_source(p.type)} {p.name}" for p in function.params)
                    statements.append(f"create function {function.name}({params}) -> "
                                      f"{result_text(function.result, function.parts)} as stored")
        derived = [f for functions in self.functions.values() for f in functions
                   if isinstance(f, (DerivedFunction, ProceduralFunction, ForeignFunction))]
        for function in _derived_in_call_order(derived):
            statements.append(function.source.strip().rstrip(";"))
        return statements

    def data(self) -> dict:
        stored = []
        for functions in self.functions.values():
            for function in functions:
                if isinstance(function, StoredFunction):
                    stored.append({"name": function.name, "arity": len(function.params), "key": function.key,
                                   "params": [_type_source(p.type) for p in function.params],
                                   "values": [[list(k), v] for k, v in function.values.items()]})
        return {
            "format": FORMAT_VERSION,
            "next_oid": self.next_oid,
            "objects": [[o.oid, o.type_name] for o in self.objects.values()],
            "properties": {t.name: list(t.properties) for t in self.types.values()},
            "stored": stored,
            "tables": {t.name: [list(r) for r in t.rows] for t in self.tables.values()},
            "session": dict(self.session),
        }

    def load_data(self, data: dict) -> None:
        if data.get("format") != FORMAT_VERSION:
            raise StoreError(f"snapshot format {data.get('format')} is not supported (this engine reads {FORMAT_VERSION})")
        for oid, type_name in data["objects"]:
            obj = Obj(int(oid), type_name)
            self.objects[obj.oid] = obj
            self.extent_by_type.setdefault(type_name, {})[obj.oid] = obj
        self.next_oid = int(data["next_oid"])
        for type_name, properties in data.get("properties", {}).items():
            user = self.types.get(type_name.lower())
            if user is not None:
                user.properties = tuple(properties)
        for entry in data["stored"]:
            function = next((f for f in self.functions.get(entry["name"].lower(), [])
                             if isinstance(f, StoredFunction) and len(f.params) == entry["arity"]
                             and ("params" not in entry    # an overload is told apart by its types
                                  or [_type_source(p.type) for p in f.params] == entry["params"])), None)
            if function is None:
                raise StoreError(f"snapshot holds values of an unknown function {entry['name']}")
            function.key = bool(entry.get("key"))
            for key, value in entry["values"]:
                key = tuple(self._resolve(k) for k in key)
                value = self._resolve(value)
                function.values[tuple(hashable(k) for k in key)] = value
                if function.key:
                    function.inverse = function.inverse or {}
                    function.inverse[hashable(value)] = tuple(hashable(k) for k in key)
        for name, rows in data["tables"].items():
            table = self.tables[name.lower()]
            table.rows = [tuple(r) for r in rows]
        self.session.update(data.get("session", {}))

    def _resolve(self, value):
        if isinstance(value, Obj):
            return self.objects.get(value.oid, value)
        return value


_MISSING = object()


def _type_source(t: Type) -> str:
    text = str(t)
    return text


def _derived_in_call_order(functions: list) -> list:
    """Derived functions, each after the derived functions its body calls (a function may call
    one that was dropped and created again after it)."""
    names = {f.name.lower() for f in functions}
    calls = {}
    for function in functions:
        body = getattr(function, "body", None)   # a foreign function has none: it calls no other
        called = {n.name.lower() for n in body.walk() if isinstance(n, A.Call)} if isinstance(body, A.Node) else set()
        calls[id(function)] = (called & names) - {function.name.lower()}
    ordered, done, pending = [], set(), list(functions)
    while pending:
        ready = [f for f in pending if calls[id(f)] <= done]
        if not ready:  # pragma: no cover - bodies are checked when created, so calls cannot cycle
            ordered.extend(pending)
            break
        for function in ready:
            pending.remove(function)
            ordered.append(function)
        done |= {f.name.lower() for f in ready if not any(p.name.lower() == f.name.lower() for p in pending)}
    return ordered


def _types_in_dependency_order(types) -> list[UserType]:
    done: set[str] = set()
    ordered = []
    pending = list(types)
    while pending:
        progressed = False
        for user in list(pending):
            if all(parent in done for parent in user.supertypes):
                ordered.append(user)
                done.add(user.name)
                pending.remove(user)
                progressed = True
        if not progressed:  # pragma: no cover - cycles cannot be created
            ordered.extend(pending)
            break
    return ordered


# ------------------------------------------------------------------------ snapshot files
def write_snapshot(directory: str | Path, schema: list[str], data: dict, models: tuple[dict, dict[str, bytes]] | None,
                   keep: int = 2) -> Path:
    """Write a new snapshot generation and switch to it atomically; returns its path."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    current = read_current(root)
    generation = (int(current.name.split("-")[1]) + 1) if current is not None else 1
    target = root / f"snapshot-{generation:06d}"
    staging = root / f".staging-{generation:06d}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    _write(staging / "schema.sql", ("".join(s + ";\n" for s in schema)).encode())
    _write(staging / "data.msgpack", codec.pack(data))
    model_files = []
    if models is not None:
        meta, payloads = models
        (staging / "models").mkdir()
        _write(staging / "models" / "meta.json", json.dumps(meta, sort_keys=True).encode())
        for index, (key, payload) in enumerate(sorted(payloads.items())):
            filename = f"{index:04d}.bin"
            _write(staging / "models" / filename, payload)
            model_files.append([key, filename])
        _write(staging / "models" / "files.json", json.dumps(model_files).encode())
    manifest = {"format": FORMAT_VERSION, "created": time.time(), "generation": generation,
                "statements": len(schema), "objects": len(data.get("objects", [])),
                "models": len(model_files)}
    _write(staging / "manifest.json", json.dumps(manifest, indent=2).encode())
    _fsync_dir(staging)
    if target.exists():  # left by a save interrupted before CURRENT pointed at it: never current
        shutil.rmtree(target)
    os.replace(staging, target)
    _fsync_dir(root)
    pointer = root / "CURRENT.tmp"
    _write(pointer, target.name.encode())
    os.replace(pointer, root / "CURRENT")
    _fsync_dir(root)
    generations = sorted(p for p in root.glob("snapshot-*") if p.is_dir())
    for old in generations[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_current(root: Path) -> Path | None:
    pointer = root / "CURRENT"
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    path = root / name
    return path if (path / "manifest.json").exists() else None


def read_snapshot(directory: str | Path) -> tuple[list[str], dict, tuple[dict, dict[str, bytes]] | None] | None:
    root = Path(directory)
    current = read_current(root)
    if current is None:
        return None
    manifest = json.loads((current / "manifest.json").read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise StoreError(f"snapshot {current} has format {manifest.get('format')}; this engine reads {FORMAT_VERSION}")
    schema_text = (current / "schema.sql").read_text()
    data = codec.unpack((current / "data.msgpack").read_bytes())
    models = None
    if (current / "models" / "meta.json").exists():
        meta = json.loads((current / "models" / "meta.json").read_text())
        files = json.loads((current / "models" / "files.json").read_text())
        payloads = {key: (current / "models" / filename).read_bytes() for key, filename in files}
        models = (meta, payloads)
    return [schema_text], data, models


def _write(path: Path, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
