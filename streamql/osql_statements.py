"""The statements StreamQL takes from AmosQL / SA Engine's OSQL: `add` and `remove` on bag-valued
stored functions, `delete :p`, `declare Integer :i`, `select … into :v`, and the toploop's
`quit`, `commit` (save the store) and `rollback` (return to the last saved store).

A mixin of the StatementRunner (statements.py), which calls `_<Statement class name>`."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import ast as A
from .catalog import StoredFunction
from .errors import QueryError, QueryNameError, QueryRuntimeError, QueryTypeError
from .result import Result
from .streams import ExecContext
from .registry import Param
from .types import CHARSTRING, Type, value_fits
from .values import Bag, Obj, brief_value, hashable, values_equal


_MISSING = object()
SIGNAL_ROOT = "Signal"
SIGNAL_SETTERS = ("ts_signal_stream", "signal_stream")


class OsqlStatements:
    """add/remove, `_DeleteObject`, `_DeclareVariables`, `_Toploop`, select … into, and signals a
    script defines (`create type ns:signal under Signal`, `set ts_signal_stream(s) = …`)."""

    # ------------------------------------------------------------------- signals of scripts
    def ensure_signal_root(self) -> None:
        """`under Signal` makes the root type on first use: objects with a `name` and the source
        text of their stream (`signal_source`), stored, so they are saved and restored as data."""
        if self.store.user_type(SIGNAL_ROOT) is not None:
            return
        user = self.store.create_type(SIGNAL_ROOT)
        for name in ("name", "signal_source"):
            self.store.add_function(StoredFunction(name, (Param("s", Type(SIGNAL_ROOT)),), CHARSTRING))
            self.store.add_property(user, name)

    def signal_definition(self, stmt: A.SetFunction, source: str) -> A.SetFunction | None:
        """`set ts_signal_stream(s) = <stream>` of a signal object keeps the stream's text in
        signal_source(s); the stream is made anew from it each time the signal is read."""
        if stmt.function.lower() not in SIGNAL_SETTERS or stmt.mode != "set" or len(stmt.args) != 1 \
                or self.store.user_functions(stmt.function) or self.store.user_type(SIGNAL_ROOT) is None:
            return None
        own = {d.name.lower() for d in stmt.declarations}
        if any(isinstance(n, A.Variable) and n.name.lower() in own for n in stmt.value.walk()):
            raise QueryTypeError("a signal's stream is one expression of its own: it cannot use the variables of "
                                 "the set statement", stmt.value.span, source)
        bound = self._binder(source).bind_expr(stmt.value, None)
        if not bound.type.is_stream:
            raise QueryTypeError(f"a signal's stream is a Stream, not {bound.type}", stmt.value.span, source)
        text = source[stmt.value.span.start:stmt.value.span.end] if stmt.value.span else None
        return replace(stmt, function="signal_source", value=A.Literal(text, span=stmt.value.span))

    def script_signal_stream(self, ctx: ExecContext, key, stamped: bool):
        """The stream of a signal a script defined (an object, or its name), or None."""
        from .binder import Binder
        from .syntax import parse
        signal = key if isinstance(key, Obj) else self.script_signal_named(key)
        if signal is None:
            return None
        text = self.store_value(self._signal_function("signal_source"), (signal,))
        if text is None:
            raise QueryRuntimeError(f"signal {self._signal_name(signal)} has no stream: set ts_signal_stream(s) = …")
        expr = parse(text + ";").statements[0].expr
        stream = self.engine.evaluate(Binder(self.engine.catalog, text).bind_expr(expr, None), text, None, ctx)
        return stamped_stream(stream, ctx, stamped, self._signal_name(signal))

    def script_signal_named(self, name: str):
        function = self._signal_function("name")
        if function is None:
            return None
        return next((args[0] for args, value in function.values.items() if value == name), None)

    def script_signal_names(self) -> list[str]:
        function = self._signal_function("name")
        return [v for v in function.values.values() if isinstance(v, str)] if function is not None else []

    def _signal_function(self, name: str):
        return next((f for f in self.store.user_functions(name) if isinstance(f, StoredFunction)
                     and len(f.params) == 1 and f.params[0].type.name == SIGNAL_ROOT), None)

    def _signal_name(self, signal) -> str:
        name = self.store_value(self._signal_function("name"), (signal,))
        return repr(name) if name is not None else str(signal)

    def _add_or_remove(self, function: StoredFunction, stmt: A.SetFunction, rows: list, source: str) -> int:
        """`add f(x) = v` puts v into f(x)'s bag (a value of a single-valued f is replaced);
        `remove f(x) = v` takes one v out (removing the value itself when f is single-valued)."""
        bag_valued = function.result.name == "Bag"
        count = 0
        for row in rows:
            *args, value = row if isinstance(row, tuple) else (row,)
            check_parts(value, function, stmt.value, source)
            key = tuple(args)
            old = self.store_value(function, key)
            if stmt.mode == "add":
                new = Bag(list(old or ()) + [value]) if bag_valued else value
            elif bag_valued:
                items = list(old) if old is not None else []
                hit = next((i for i, item in enumerate(items) if values_equal(item, value)), None)
                if hit is None:
                    continue
                items.pop(hit)
                new = Bag(items) if items else None
            else:
                if old is None or not values_equal(old, value):
                    continue
                new = None
            self._set(function, key, new, stmt, source)
            count += 1
        return count

    def store_value(self, function: StoredFunction, key: tuple):
        return function.values.get(tuple(hashable(a) for a in key))

    def _DeleteObject(self, stmt: A.DeleteObject, source: str, ctx: ExecContext) -> Result:
        value = self.store.session.get(stmt.variable.lower())
        if not isinstance(value, Obj):
            what = "is not set" if stmt.variable.lower() not in self.store.session else "holds no object"
            raise QueryNameError(f"session variable :{stmt.variable} {what}: delete :v deletes the object "
                                 f"a variable holds", stmt.span, source)
        with self.store.transaction():
            self.store.delete_object(value)
        return self._done(f":{stmt.variable} deleted", stmt, source)

    def _DeclareVariables(self, stmt: A.DeclareVariables, source: str, ctx: ExecContext) -> Result:
        binder = self._binder(source)
        for type_expr, _ in stmt.items:
            binder.resolve_type(type_expr)   # an unknown type is an error here, as in OSQL
        return self._done("declared " + ", ".join(f":{name}" for _, name in stmt.items), stmt, source)

    def _Toploop(self, stmt: A.Toploop, source: str, ctx: ExecContext) -> Result:
        engine = self.engine
        if stmt.command == "quit":
            engine.quit_requested = True
            return self._done("quit", stmt, source)
        if engine.store_dir is None:
            raise QueryRuntimeError(f"{stmt.command} needs a store directory: start the engine with one "
                                    f"(Engine(store_dir=…), streamql shell --store DIR)", stmt.span, source)
        if stmt.command == "commit":
            path = engine.save()
            return self._done(f"committed to {path}", stmt, source)
        engine.return_to_saved()
        return self._done("rolled back to the last commit", stmt, source)

    # ------------------------------------------------------------------------- scans
    def _OpenCursor(self, stmt: A.OpenCursor, source: str, ctx: ExecContext) -> Result:
        """OSQL's scan: the query's rows, fetched one at a time (a huge bag is never held)."""
        cursors = self.__dict__.setdefault("cursors", {})
        scanned = stmt.expr.query if isinstance(stmt.expr, A.Subquery) else stmt.expr   # its rows: tuples
        if scanned.span is not None:
            text = source[scanned.span.start:scanned.span.end]
        else:
            from .printer import to_source
            text = to_source(scanned)
        try:
            rows = self.engine.query(text + ";")
        except QueryError as exc:   # placed in the open statement, not in the expression alone
            raise type(exc)(exc.message, stmt.expr.span, source) from None
        old = cursors.pop(stmt.name.lower(), None)
        if old is not None:
            old.close()
        cursors[stmt.name.lower()] = rows
        return self._done(f"cursor :{stmt.name} opened", stmt, source)

    def _FetchCursor(self, stmt: A.FetchCursor, source: str, ctx: ExecContext) -> Result:
        rows = self._cursor(stmt.name, stmt, source)
        row = next(rows, _MISSING)
        if not stmt.into:
            width = len(rows.columns)
            values = () if row is _MISSING else (row,) if width == 1 else row
            items = [] if row is _MISSING else [{f"$c{i}": v for i, v in enumerate(values)}]
            return Result(list(rows.columns), list(rows.types), "bag", iter(items), statement=source)
        if row is _MISSING:   # the end of the scan: the variables keep their values
            return self._done(f"cursor :{stmt.name} has no more rows", stmt, source)
        values = row if isinstance(row, tuple) else (row,)
        if len(values) != len(stmt.into):
            raise QueryTypeError(f"fetch … into takes one variable per value: {len(values)} values, "
                                 f"{len(stmt.into)} variables", stmt.span, source)
        with self.store.transaction():
            for name, value in zip(stmt.into, values):
                self.store.set_session(name, value)
        return self._done("fetched into " + ", ".join(f":{n}" for n in stmt.into), stmt, source)

    def _CloseCursor(self, stmt: A.CloseCursor, source: str, ctx: ExecContext) -> Result:
        self._cursor(stmt.name, stmt, source).close()
        del self.cursors[stmt.name.lower()]
        return self._done(f"cursor :{stmt.name} closed", stmt, source)

    def _cursor(self, name: str, stmt: A.Statement, source: str):
        rows = self.__dict__.get("cursors", {}).get(name.lower())
        if rows is None:
            raise QueryNameError(f"no open cursor :{name}: open it with open :{name} for …", stmt.span, source)
        return rows

    def select_into(self, stmt: A.Select, source: str, ctx: ExecContext) -> Result:
        """`select … into :a, :b from …`: the first row's values go into the variables (as Amos II:
        only the first row when there are several; none set when there is no row)."""
        plain = replace(stmt, into=())
        rows = self._rows_of(plain, source, ctx)
        width = len(stmt.items) if stmt.items is not None else 1
        if width != len(stmt.into):
            raise QueryTypeError(f"select … into takes one variable per selected value: {width} values, "
                                 f"{len(stmt.into)} variables", stmt.span, source)
        if rows:
            values = rows[0] if isinstance(rows[0], tuple) and width > 1 else (rows[0],)
            with self.store.transaction():
                for name, value in zip(stmt.into, values):
                    self.store.set_session(name, value)
        return self._done(f"{min(len(rows), 1)} row into " + ", ".join(":" + n for n in stmt.into), stmt, source)


# ------------------------------------------------------------------------------ loading code
CODE_LOADERS = frozenset({"load_osql", "models:load", "system_models:load"})
MAX_SCRIPT_BYTES = 16 * 1024 * 1024
MAX_LOAD_DEPTH = 16


def loads_code(statement: A.Statement) -> bool:
    """`load_osql(path);` or `models:load(name);`: a statement that runs the statements of files."""
    return isinstance(statement, A.ExprStatement) and isinstance(statement.expr, A.Call) \
        and statement.expr.name.lower() in CODE_LOADERS


class CodeLoading:
    """`load_osql(path)` runs a file's statements; `models:load(name)` a model directory's master.osql
    (the models folder: `models:folder(name)`). Paths go through the engine's files rule, and only
    a script's own statements load code: `Engine.query` — what edges run for fragments and
    federations for queries — refuses to."""

    def load_code(self, stmt: A.ExprStatement, source: str, ctx: ExecContext) -> Result:
        call = stmt.expr
        name = call.name.lower()
        if len(call.args) != 1:
            raise QueryTypeError(f"{call.name} takes one argument, a {'path' if name == 'load_osql' else 'name'}",
                                 call.span, source)
        value = self._value(self._binder(source), call.args[0], source, ctx, expected=CHARSTRING,
                            what=f"the argument of {call.name}")
        try:
            if name == "system_models:load":
                raise QueryRuntimeError(f"SA Engine's system model {value!r} is not part of StreamQL: its native "
                                        f"models (kmeans, dense_network, …) are built in, see docs/models.md")
            if name == "models:load":
                path = self.engine.model_folder(value) / "master.osql"
            else:
                path = value
            count = self.run_file(path, call.name)
        except QueryError as exc:
            if exc.span is None:
                raise exc.located(call.span).with_source(source)
            raise
        return self._done(f"{call.name}({value!r}): {count} statements", stmt, source)

    def run_file(self, path, what: str) -> int:
        """Run every statement of a file (each in its own transaction, as a script); how many."""
        engine = self.engine
        real = engine.resolve_path(str(path))
        loading = engine.loading_files
        if real in loading:
            raise QueryRuntimeError(f"{what}: {path} is already being loaded (a file that loads itself)")
        if len(loading) >= MAX_LOAD_DEPTH:
            raise QueryRuntimeError(f"{what}: files load each other more than {MAX_LOAD_DEPTH} deep")
        try:
            size = real.stat().st_size
            if size > MAX_SCRIPT_BYTES:
                raise QueryRuntimeError(f"{what}: {path} is {size} bytes, over the {MAX_SCRIPT_BYTES} a script may be")
            text = real.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise QueryRuntimeError(f"{what} cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        loading.append(real)
        try:
            results = engine.execute(text)
        except QueryError as exc:
            raise type(exc)(f"in {path}: {exc.message}", exc.span, text) from None
        finally:
            loading.pop()
        for result in results:   # a loaded file's continuous queries are not left unread
            if result.kind == "stream":
                result.close()
        return len(results)


def check_parts(value, function, node: A.Node, source: str) -> None:
    """A tuple result's value: one value per part, each of its part's type."""
    if not function.parts or value is None:
        return
    if isinstance(value, Bag):
        for item in value:
            check_parts(item, function, node, source)
        return
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != len(function.parts):
        raise QueryTypeError(f"{function.name} holds tuples of {len(function.parts)} parts "
                             f"({', '.join(n for n, _ in function.parts)}), not {brief_value(value)}", node.span, source)
    for (name, part_type), part in zip(function.parts, value):
        if part is not None and not value_fits(part, part_type) and not (part_type.name == "Real" and isinstance(part, int)):
            raise QueryTypeError(f"{function.name}'s {name} is {part_type}, not {brief_value(part)}", node.span, source)


def stamped_stream(stream, ctx: ExecContext, stamped: bool, name: str):
    """A script signal's stream as ts_signal_stream gives it (each value with its time: its own,
    or now) or as signal_stream does (the values)."""
    from .batch import IDLE, Batch
    from .streams import StreamValue, close_items
    from .values import Time, Timeval

    def open_():
        items = stream.open()
        try:
            for item in items:
                if item is IDLE:
                    yield item
                elif type(item) is Batch and item.times is None and len(item) and isinstance(item.values[0], Timeval):
                    values = list(item.values)   # a batch of Timevals: their own times
                    if stamped:
                        yield Batch([v.value for v in values], np.array([v.time.seconds for v in values]))
                    else:
                        yield Batch([v.value for v in values])
                elif type(item) is Batch:
                    if stamped:
                        yield item if item.times is not None else Batch(item.values, np.full(len(item.values),
                                                                                              ctx.clock.now()))
                    else:
                        yield Batch(item.values) if item.times is not None else item
                elif isinstance(item, Timeval):
                    yield item if stamped else item.value
                else:
                    yield Timeval(Time(ctx.clock.now()), item) if stamped else item
        finally:
            close_items(items)
    return StreamValue(open_, f"{'ts_' if stamped else ''}signal_stream({name})")
