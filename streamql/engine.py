"""The engine: the facade over store, signals, library, compiler and executor.

    engine = streamql.Engine()
    engine.execute("create function f(Number x) -> Number as x * 2;")
    sorted(engine.query("select f(x) from Number x where x in iota(1, 3);"))   # [2, 4, 6]
"""
from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

import numpy as np

from . import ast as A
from .bound import TExpr
from .catalog import Table, UserType
from .checkpoint import Checkpointing, QueryState
from .clock import SYSTEM_CLOCK, Clock
from .compiler import compile_expression, compile_statement, physical_plan
from .errors import QueryError, QueryLimitError, QueryRuntimeError, QueryTypeError, Span
from .explain import describe_plan
from .files import ANYWHERE, FileAccess
from .fleet import FleetAccess, FleetCatalog
from .fleet_session import DEFAULT_DEVICE_TIMEOUT, FleetSession
from .library import Library, default_library
from .models import ModelRegistry
from .optimizer import optimize as optimize_plan
from .result import QueryHandle, Result
from .signals import LiveSignal, Signal, SignalRegistry, make_signal
from .statement_cache import MAX_CACHED_TEXT, UNCACHEABLE, StatementCache, frozen_value
from .osql_statements import loads_code
from .statements import StatementRunner
from .store import Store, read_snapshot, write_snapshot
from .streams import ExecContext, LazyBag, Limits
from .syntax import parse, parse_one
from .types import CHARSTRING, Type, parse_type

QUERY_STATEMENTS = (A.Select, A.ExprStatement)



class FlowRegistry:
    """Named flows: `publish(s, 'name')` pushes into one, `subscribe('name')` reads it."""

    def __init__(self, clock: Clock):
        self._hubs: dict[str, LiveSignal] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def hub(self, name: str) -> LiveSignal:
        with self._lock:
            hub = self._hubs.get(name)
            if hub is None:
                hub = self._hubs[name] = LiveSignal(name, clock=self.clock)
            return hub

    def names(self) -> list[str]:
        return sorted(self._hubs)


class LocalCatalog:
    """The catalog of a local engine: its store, library and signals."""

    def __init__(self, engine: "Engine"):
        self.engine = engine
        self.library = engine.library
        self.lattice = engine.store.lattice

    def user_type(self, name: str) -> UserType | None:
        return self.engine.store.user_type(name)

    def table(self, name: str) -> Table | None:
        return self.engine.store.table(name)

    def user_functions(self, name: str):
        return self.engine.store.user_functions(name)

    def user_function_names(self) -> list[str]:
        return sorted(self.engine.store.functions)

    def session_variable(self, name: str):
        return self.engine.store.session[name.lower()]

    def signal_type(self, name: str) -> Type | None:
        return self.engine._signal_types.get(name)

    def signal_names(self) -> list[str]:
        return self.engine.signals.names() + self.engine._statements.script_signal_names()

    def model(self, name: str):
        return self.engine.models.find(name)

    def has_extent(self, type_: Type) -> bool:
        if type_.arg is not None:
            return False
        store = self.engine.store
        return type_.name.lower() in store.types or type_.name.lower() in store.tables


class Engine:
    """An in-memory StreamQL engine: a store, signals, models and a query executor.

    `files` is the directory statements may read files from (`csv:file_stream`, `create model …
    from 'file'`; streamql/files.py): by default any file this process can read, as befits a
    program's own engine; `None` for none. An engine that runs other people's statements (the
    federation's, an edge's) sets it. Relative paths resolve against `base_dir`, else the files
    directory, else the working directory. `limits` ({"rows", "seconds", "memory_mb"}) are the
    defaults of every statement it runs that gives none of its own (by default none: a statement
    may still build no single value over streams.MAX_VALUE_BYTES)."""

    def __init__(self, store_dir: str | os.PathLike | None = None, *, clock: Clock | None = None,
                 seed: int | None = None, library: Library | None = None, trusted_keys: Iterable | None = None,
                 optimize: bool = True, base_dir: str | os.PathLike | None = None, name: str | None = None,
                 files: str | os.PathLike | None = ANYWHERE, limits: dict | Limits | None = None,
                 models_dir: str | os.PathLike | None = None, foreign: Iterable[str] = (),
                 statement_cache: StatementCache | None = None):
        self.name = name or "local"
        self.clock = clock or SYSTEM_CLOCK
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.library = library or default_library()
        self._default_library = library is None   # the same functions as every engine's default one
        # compiled statements kept (streamql/statement_cache.py), maybe shared with other engines
        self.statement_cache = statement_cache
        self.store = Store()
        self.signals = SignalRegistry()
        self.flows = FlowRegistry(self.clock)
        self.models = ModelRegistry(clock=self.clock.now)
        # None: bundles need no signature; keys given: only bundles signed by one of them load
        self.trusted_keys = list(trusted_keys) if trusted_keys is not None else None
        self.catalog = LocalCatalog(self)
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.files = FileAccess(files, base=self.base_dir)
        self.default_limits = Limits.of(limits)
        self.optimize_enabled = optimize
        self._statements = StatementRunner(self)
        self._signal_types: dict[str, Type] = {}
        self._handles: dict[int, QueryHandle] = {}
        self._handle_ids = itertools.count(1)
        self._handles_lock = threading.Lock()
        self.last_created: list = []
        # SA Engine's models folder (`models:folder('m')`, `models:load('m')`): by default models/
        # beside the engine's files; reading it still goes through the files rule
        self.models_dir = Path(models_dir) if models_dir is not None else None
        # the Python functions `as foreign 'py:…'` may name (fnmatch patterns): the operator's, never a client's
        self.foreign_allowed: list[str] = list(foreign)
        self.foreign_registered: dict[str, Callable] = {}
        self.loading_files: list[Path] = []   # files being loaded now (load_osql inside load_osql)
        self.quit_requested = False   # set by the toploop statement `quit` (the shell and scripts stop)
        self.bundles: dict[str, Any] = {}
        if self.store_dir is not None:
            self._restore()

    # ------------------------------------------------------------------------- the API
    def execute(self, script: str, limits: dict | Limits | None = None) -> list[Result]:
        """Run every statement of a script, in order; one Result each, each under `limits`
        (over the engine's defaults).

        Bag and vector query results are computed before the next statement runs; a continuous
        query's Result is returned unstarted (iterate it to run it)."""
        results = []
        for statement in parse(script):
            result = self._execute_statement(statement, script, self.default_limits.given(limits))
            if result.kind in ("bag", "vector", "explain"):
                rows = list(result)
                materialized = Result(result.columns, result.types, result.kind, items=None,
                                      statement=result.statement)
                materialized._rows = iter(rows)
                materialized.rows = rows
                result = materialized
            results.append(result)
        return results

    def query(self, text: str, limits: dict | Limits | None = None, *, fleet: FleetAccess | None = None,
              principal: str | None = None, device_timeout: float | None = DEFAULT_DEVICE_TIMEOUT,
              checkpoint: Checkpointing | QueryState | None = None, parsed: A.Statement | None = None) -> Result:
        """Compile one query now (a bad query raises here) and return its rows as an iterator.
        `limits` ({"rows", "seconds", "memory_mb"}) stop it with a QueryLimitError when exceeded
        (rows: more rows than that raise too).

        With `fleet` (a federation's FleetAccess) the query is planned across its edges: `Edge e`
        ranges over its devices, `… @ e` runs on them, and `result.status` has every selected
        device's outcome. Each device's fragment runs under the same memory and time limits, as
        `principal`, and a bag fragment not answered within `device_timeout` seconds is reported
        timed out.

        With `checkpoint` (see `start`) the query's operators keep their state where it can be
        snapshotted, and resume from the checkpoint it holds. `parsed` is `text`'s statement when
        the caller parsed it already (a server checks a text before it runs it)."""
        statement = self._parse_one(text) if parsed is None else parsed
        if loads_code(statement):
            raise QueryTypeError(f"{statement.expr.name} runs files as a statement of a script (execute, the shell, "
                                 "streamql run), not as a query", statement.span, text)
        if not isinstance(statement, QUERY_STATEMENTS + (A.Explain,)):
            raise QueryTypeError("query() takes a query (select … or an expression); use execute() for other "
                                 "statements", statement.span, text)
        fleet_options = None if fleet is None else {"access": fleet, "principal": principal,
                                                    "device_timeout": device_timeout}
        if checkpoint is not None and isinstance(statement, QUERY_STATEMENTS):
            limits = self.default_limits.given(limits)
            return self._guarded(statement, text, lambda: self._query_result(
                statement, text, limits, fleet_options, checkpoint=checkpoint))
        return self._execute_statement(statement, text, self.default_limits.given(limits), fleet_options)

    def run(self, text: str, limits: dict | Limits | None = None, *, parsed: A.Statement | None = None) -> Result:
        """Run one statement of any kind under `limits` (over the engine's defaults); a query's
        rows are computed lazily as they are read. `parsed`: as for `query`."""
        return self._execute_statement(parse_one(text) if parsed is None else parsed, text,
                                       self.default_limits.given(limits))

    def aquery(self, text: str, limits: dict | Limits | None = None) -> AsyncIterator:
        """`async for row in engine.aquery(…)`: the query runs in a worker thread."""
        return _AsyncRows(self.query(text, limits))

    def start(self, text: str, sink: Callable[[Any], None] | None = None, limits: dict | Limits | None = None,
              name: str | None = None, on_error: Callable[[QueryError], None] | None = None,
              checkpoint: Checkpointing | None = None) -> QueryHandle:
        """Run a query in the background; the handle watches and cancels it.

        A statement that does not compile raises its QueryError here, before anything runs — a
        signal this engine does not have (`signal_stream('nope')`) included. A failure while it
        runs (a run-time error, a limit, `sink` raising) ends it: the handle's `status` becomes
        failed (or limit), its `error` the QueryError, and `on_error(error)` is called from the
        query's thread; without `on_error` the failure is logged (logger `streamql.engine`).

        With `checkpoint` (a `streamql.checkpoint.Checkpointing`) the query's state — windows,
        watermarks, aggregates, deadband and the like, and its sources' positions — is saved with
        `checkpoint.save(bytes)` every `checkpoint.interval_s` seconds and when `handle.cancel()`
        stops it, each time between two inputs; `checkpoint.restore`, bytes saved earlier for the
        same text, resumes from there (docs/checkpoints.md)."""
        statement = parse_one(text)
        if not isinstance(statement, QUERY_STATEMENTS):
            raise QueryTypeError("start() runs a query", statement.span, text)
        limits = self.default_limits.given(limits)
        result = self._guarded(statement, text,
                               lambda: self._query_result(statement, text, limits, checkpoint=checkpoint))
        query_id = next(self._handle_ids)
        handle = QueryHandle(query_id, text, result, sink, on_exit=self._forget, name=name, on_error=on_error)
        with self._handles_lock:
            self._handles[query_id] = handle
        return handle.start()

    def queries(self) -> list[QueryHandle]:
        """The background queries still running."""
        with self._handles_lock:
            return list(self._handles.values())

    def _forget(self, handle: QueryHandle) -> None:
        with self._handles_lock:
            self._handles.pop(handle.id, None)

    def add_signal(self, name: str, source: Any, type: str | Type | None = None, timestamps: bool = False,
                   period: float | None = None) -> Signal:
        """Make a sensor available as `signal_stream(name)`: a list or numpy array (replayed in
        batches), an iterator (one reading at a time), a callable (polled), or a Signal."""
        type_name = str(type) if type is not None else None
        signal = make_signal(name, source, type_name=type_name, timestamps=timestamps, period=period)
        if isinstance(signal, LiveSignal) and signal.clock is SYSTEM_CLOCK and self.clock is not SYSTEM_CLOCK:
            signal.clock = self.clock
        self.signals.add(signal)
        if type is not None:
            self._signal_types[name] = type if isinstance(type, Type) else parse_type(str(type))
        else:
            self._signal_types.pop(name, None)
        return signal

    def remove_signal(self, name: str) -> None:
        self.signals.remove(name)
        self._signal_types.pop(name, None)

    def functions(self) -> list[dict]:
        """Every function: the library's overloads and the user's functions."""
        out = self.library.describe()
        for functions in self.store.functions.values():
            for function in functions:
                out.append({"name": function.name, "signature": function.signature,
                            "kind": "stored" if hasattr(function, "values") else "derived", "doc": "",
                            "topic": "user", "volatile": False, "elementwise": False, "aggregate_split": None})
        return out

    def function_signatures(self) -> list[str]:
        """The user functions as signatures, `name(Type param, …) -> Result` (what an edge
        announces, so that fleet statements calling them are checked before they ship)."""
        out = []
        for functions in self.store.functions.values():
            for function in functions:
                params = ", ".join(f"{p.type} {p.name}" for p in function.params)
                out.append(f"{function.name}({params}) -> {function.result}")
        return sorted(out)

    def save(self, store_dir: str | os.PathLike | None = None) -> Path:
        """Snapshot the store (schema, objects, values, session variables, models) atomically."""
        target = Path(store_dir) if store_dir is not None else self.store_dir
        if target is None:
            raise QueryRuntimeError("save() needs a directory: Engine(store_dir=…) or save(dir)")
        with self.store.lock:
            schema = self.store.schema_statements()
            data = self.store.data()
            models = self.models.dump() if len(self.models) else None
        return write_snapshot(target, schema, data, models)

    def close(self) -> None:
        """Cancel background queries."""
        for handle in self.queries():
            handle.cancel(wait=1.0)

    def register_foreign(self, name: str, function: Callable) -> None:
        """Let `create function … as foreign 'py:<name>'` call `function` (the embedding program's own)."""
        if not callable(function):
            raise TypeError(f"register_foreign needs a callable, not {function!r}")
        self.foreign_registered[name] = function

    def model_folder(self, name: str) -> Path:
        """The directory of the model `name` in the models folder (SA Engine's models:folder)."""
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise QueryRuntimeError(f"a model's name is one folder name, not {name!r}")
        base = self.models_dir
        if base is None:
            base = Path(self.base_dir or (self.files.root if self.files.root not in (None, ANYWHERE) else Path.cwd()))
            base = base / "models"
        return base / name

    def resolve_path(self, path: str) -> Path:
        """The real path of a file a statement names, when this engine's files directory allows it."""
        return self.files.resolve(path, "reading a file")

    def explain(self, text: str, *, fleet: FleetAccess | None = None) -> str:
        statement = parse_one(text)
        if isinstance(statement, A.Explain):
            statement = statement.statement
        return self.explain_text(statement, text, fleet=fleet)

    def explain_text(self, statement: A.Statement, source: str, *, fleet: FleetAccess | None = None) -> str:
        catalog = FleetCatalog(self.catalog, self.library, fleet) if fleet is not None else None
        plan = self._compile(statement, source, catalog)
        return describe_plan(plan, fleet)

    # --------------------------------------------------------------------- internals
    def _execute_statement(self, statement: A.Statement, source: str, limits: Limits | None = None,
                           fleet: dict | None = None) -> Result:
        def run() -> Result:
            if fleet is None and loads_code(statement):
                return self._statements.load_code(statement, source, self.new_context(limits))
            if isinstance(statement, A.Select) and statement.into:
                return self._statements.select_into(statement, source, self.new_context(limits))
            if isinstance(statement, QUERY_STATEMENTS):
                return self._query_result(statement, source, limits or Limits(), fleet)
            if isinstance(statement, A.Explain) and fleet is not None:
                text = self.explain_text(statement.statement, source, fleet=fleet["access"])
                lines = text.splitlines()
                return Result(["plan"], [CHARSTRING], "explain", items=iter([{"$c0": line} for line in lines]))
            return self._statements.run(statement, source, limits)
        return self._guarded(statement, source, run)

    def _guarded(self, statement: A.Statement, source: str, work: Callable[[], Any]):
        """Run a statement's compilation or execution so that only QueryErrors come out."""
        try:
            return work()
        except QueryError as exc:
            if exc.source is None:
                exc.source = source
            if exc.span is None:
                exc.span = statement.span
            raise
        except RecursionError:
            raise QueryRuntimeError("the statement is nested too deeply", statement.span, source) from None
        except MemoryError:
            raise QueryLimitError("the statement needs more memory than there is", statement.span, source) from None
        except Exception as exc:  # noqa: BLE001 - nothing but QueryErrors reaches users
            error = QueryRuntimeError(f"internal error: {type(exc).__name__}: {exc}", statement.span, source)
            error.traceback = traceback.format_exc()
            raise error from exc

    def _compile(self, statement: A.Statement, source: str, catalog=None):
        return self._compiled(statement, source, catalog)[0]

    def _compiled(self, statement: A.Statement, source: str, catalog=None) -> tuple[Any, bool]:
        """(the statement's plan, whether it came from the statement cache)."""
        key = self._plan_key(statement, source) if catalog is None else None
        if key is not None:
            return self.statement_cache.get_or_make(key, lambda: compile_statement(
                self.catalog, statement, source, self._optimizer()))
        plan = compile_statement(catalog or self.catalog, statement, source, self._optimizer())
        if isinstance(catalog, FleetCatalog):
            catalog.check(plan.query, source)
        return plan, False

    def _parse_one(self, text: str) -> A.Statement:
        """parse_one, through the statement cache when there is one (an AST is immutable: shared)."""
        if self.statement_cache is None or len(text) > MAX_CACHED_TEXT:
            return parse_one(text)
        return self.statement_cache.get_or_make(("parse", text), lambda: parse_one(text))[0]

    def _plan_key(self, statement: A.Statement, source: str):
        """The statement cache's key for this statement's plan in this engine now, or None (no
        cache, a long text, a session value not comparable by value). What binding and planning
        read from the engine is in it (streamql/statement_cache.py says why each part)."""
        span = statement.span
        if self.statement_cache is None or span is None or len(source) > MAX_CACHED_TEXT:
            return None
        store = self.store
        if store.in_transaction:    # changes not yet counted in its revision: compile afresh
            return None
        definitions = (store, store.revision) if store.types or store.functions or store.tables else None
        session = frozen_value(store.session) if store.session else None
        if session is UNCACHEABLE:
            return None
        signals = tuple(sorted((name, str(self._signal_types.get(name))) for name in self.catalog.signal_names()))
        models = (self.models, self.models.revision) if len(self.models) else None
        library = None if self._default_library else self.library
        return ("plan", source, span.start, span.end, definitions, session, signals, models, library,
                self.optimize_enabled)

    def _optimizer(self):
        """The optimizer pipeline, or None when this engine runs plans as planned."""
        return optimize_plan if self.optimize_enabled else None

    def new_context(self, limits: Limits | None = None) -> ExecContext:
        return ExecContext(self, clock=self.clock, rng=self._rng, limits=limits)

    def _query_result(self, statement: A.Statement, source: str, limits: Limits, fleet: dict | None = None,
                      ctx: ExecContext | None = None, checkpoint: Checkpointing | QueryState | None = None) -> Result:
        catalog = FleetCatalog(self.catalog, self.library, fleet["access"]) if fleet is not None else None
        started = time.perf_counter()
        plan, reused = self._compiled(statement, source, catalog)
        ctx = ctx if ctx is not None else self.new_context(limits)
        if checkpoint is not None:
            text = _statement_text(statement, source)
            ctx.states = checkpoint if isinstance(checkpoint, QueryState) else checkpoint.state_for(text)
        if catalog is not None:
            ctx.fleet = FleetSession(self, fleet["access"], catalog, statement, source,
                                     principal=fleet.get("principal"), device_timeout=fleet.get("device_timeout"),
                                     fragment_limits={"seconds": limits.seconds, "memory_mb": limits.memory_mb})
        items = physical_plan(plan, ctx).run({})
        result = Result(plan.columns, plan.types, plan.kind, items=items, ctx=ctx,
                        statement=_statement_text(statement, source), span=statement.span, source=source)
        result.plan_reused = reused
        if catalog is not None:
            result.status = ctx.fleet.status
            result.status.timings["plan"] = time.perf_counter() - started   # parse excluded: done before
        return result

    def _run_select(self, select: A.Select, source: str, ctx: ExecContext | None = None) -> list:
        """The rows of a statement's select (`set f(x) = … where …`, `delete`), in its context."""
        result = self._query_result(select, source, ctx.limits if ctx is not None else self.default_limits, ctx=ctx)
        return list(result)

    def evaluate(self, expr: TExpr, source: str, span: Span | None = None, ctx: ExecContext | None = None) -> Any:
        """The value of a closed typed expression, in `ctx` (a statement's context; by default a
        new one under the engine's default limits)."""
        ctx = ctx if ctx is not None else self.new_context(self.default_limits)
        compiled = compile_expression(expr, ctx, source, self._optimizer())
        try:
            value = compiled.row({})
        except QueryError as exc:
            raise exc.located(span).with_source(source)
        return _materialized(value)

    def return_to_saved(self) -> None:
        """OSQL's `rollback`: the store as last saved (committed) in the store directory."""
        with self.store.lock:
            self.store = Store()
            self.catalog = LocalCatalog(self)
            self._statements = StatementRunner(self)
            self._restore()

    def _restore(self) -> None:
        snapshot = read_snapshot(self.store_dir)
        if snapshot is None:
            return
        schema_texts, data, models = snapshot
        self._statements.restoring = True   # a foreign target no longer allowed must not stop the store opening
        try:
            for text in schema_texts:
                for statement in parse(text):
                    self._statements.run(statement, text)
        finally:
            self._statements.restoring = False
        self.store.load_data(data)
        if models is not None:
            meta, payloads = models
            self.models.load(meta, payloads)
        self.store.revision = 0


def _materialized(value: Any) -> Any:
    """A value with every lazy bag in it computed (a value kept in the store must not hold a query)."""
    if isinstance(value, LazyBag):
        return value.materialize()
    if isinstance(value, list) and any(isinstance(v, (LazyBag, list)) for v in value):
        return [_materialized(v) for v in value]
    return value


def _statement_text(statement: A.Statement, source: str) -> str:
    span = statement.span
    return source[span.start:span.end] if span is not None else statement.sql()


class _AsyncRows:
    """Async iteration over a Result, pulling from a worker thread one batch at a time."""

    def __init__(self, result: Result):
        self.result = result
        self._pending: list = []
        self._items = None
        self._done = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(None, self._next_rows)
            if rows is None:
                self._done = True
                raise StopAsyncIteration
            self._pending = rows
        return self._pending.pop(0)

    def _next_rows(self, limit: int = 4096):
        rows = []
        try:
            rows.append(next(self.result))
        except StopIteration:
            return None
        return rows

    async def aclose(self):
        self.result.close()
