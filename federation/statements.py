"""The statement service behind `/v1/query` and `/v1/query/ws`: one statement in, a result out.

Every statement runs in a worker thread of a bounded pool, never on the event loop, parse
included. Queries are planned by the federation's own engine against the fleet (`Engine.query(…,
fleet=HubFleetAccess)`): the engine's binder, planner, optimizer and operators, with `Remote`
nodes reaching the edges. Rows cross to the loop in batches through a bounded channel, so a
client that reads slowly slows the statement down rather than filling memory; a client that
leaves cancels it. `deploy`, `rollback` and `undeploy` select their devices with the same planner
(`select id(e) from Edge e where …`, live conditions asked of each edge) and hand them to the
deployment manager. Other statements (`create function …`) run on the federation's engine and,
when they define something, are kept in the registry, so they survive a restart.

    result = await service.run(text, principal, limits={"seconds": 30})
    await result.first()                  # the first rows, or the statement's error (HTTP waits for it)
    async for item in result.items():     # lists of rows, and status changes of standing streams
        ...
    result.status                         # every selected device's outcome (streamql.fleet_status)
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable

import streamql
from streamql import ast as A
from streamql.fleet import FleetCatalog
from streamql.errors import FleetError, QueryCancelled, QueryError, QueryTypeError, Span
from streamql.streams import Limits
from streamql.syntax import parse_one

from federation.auth import Role
from federation.deployment_control import preflight_lines
from federation.errors import BadRequest, Busy, Forbidden
from federation.fleet_access import HubFleetAccess
from federation.keys import CONFIG, DEPLOYMENTS, HUB, INDEX, REGISTRY
from federation.lanes import FAST_SECONDS, Slot, StatementPool, is_fast, is_stream

log = logging.getLogger("streamql.federation.statements")

DEPLOYMENT_STATEMENTS = (A.Deploy, A.Rollback, A.Undeploy)
QUERY_STATEMENTS = (A.Select, A.ExprStatement)
DEFINITIONS = (A.CreateType, A.CreateFunction, A.CreateTable, A.Drop)
BATCH_ROWS = 512
CHANNEL_BATCHES = 16
STATUS_POLL_S = 0.25
CLOSE_WAIT_S = 2.0          # how long closing a result waits for its worker to notice
FIRST_ROW_WAIT_S = 1.0      # how long a stream's response waits for its first row before it starts
PARSED_KEPT = 256           # parsed statements kept by their text …
PARSED_TEXT = 1024          # … when the text is at most this long
_END = object()
_NOTHING = object()


async def _get(channel: asyncio.Queue, timeout: float | None):
    """The channel's next item, or _NOTHING after `timeout` seconds. Not asyncio.wait_for: on
    Python 3.11 it returns the item instead of raising when the task is cancelled just as the item
    arrives, and the cancel (a WebSocket's `cancel`, a client leaving) would be lost. A cancelled
    get leaves the item in the queue."""
    try:
        async with asyncio.timeout(timeout):
            return await channel.get()
    except TimeoutError:
        return _NOTHING


class StatementAccess:
    """The fleet access of one statement: the federation's, remembering the feeds the statement
    opens, so that cancelling it closes them from the event loop at once — the cancel frames go to
    the edges within a moment of the client leaving, not when a worker thread gets round to
    closing the statement's operators (busy workers, a stream nobody reads)."""

    def __init__(self, access: HubFleetAccess):
        self._access = access
        self._feeds: list = []
        self._lock = threading.Lock()
        self._closed = False

    def __getattr__(self, name: str):
        return getattr(self._access, name)

    def open_feed(self, *, watch: bool = False):
        feed = self._access.open_feed(watch=watch)
        with self._lock:
            closed = self._closed
            if not closed:
                self._feeds.append(feed)
        if closed:
            feed.close()
        return feed

    def close_feeds(self) -> None:
        """Close every feed (thread-safe; each cancels its fragments on the loop)."""
        with self._lock:
            self._closed = True
            feeds, self._feeds = self._feeds, []
        for feed in feeds:
            with contextlib.suppress(Exception):
                feed.close()


class StatementResult:
    """Columns, then rows as they come, then every device's outcome (see the module docstring)."""

    def __init__(self, columns: list[str], types: list, kind: str, *, rows: list | None = None,
                 message: str | None = None, deployment_id: str | None = None, status=None):
        self.columns = list(columns)
        self.types = [str(t) for t in types]
        self.kind = kind
        self.message = message
        self.deployment_id = deployment_id
        self.status = status
        self._ready: list = [rows] if rows else []    # row batches not yet taken
        self._channel: asyncio.Queue | None = None     # row batches from the worker (streaming)
        self._cancel: threading.Event | None = None
        self._task: asyncio.Future | None = None
        self._wake: asyncio.Event | None = None         # set when the statement is stopped
        self._result = None
        self._finished = True                          # nothing more will come
        self._stopped: str | None = None               # why the federation stopped it (shutting down)
        self.access: StatementAccess | None = None     # its feeds, closed at once when it is cancelled

    @classmethod
    def streaming(cls, result, pool: StatementPool, slot: Slot | None = None,
                  access: StatementAccess | None = None, *, batches=None,
                  ready: list | None = None) -> "StatementResult":
        """Rows of an engine Result, a batch at a time in a worker thread; `slot` (the caller's, in
        the pool) is released when the statement ends. Between batches no thread is held: a batch
        waits in the bounded channel until the client takes it (federation/lanes.py). `batches`
        and `ready`: the result's batch iterator already started, and the batches taken from it."""
        out = cls(result.columns, result.types, result.kind, status=result.status)
        out.access = access
        out._finished = False
        out._ready = [_row_lists(batch) for batch in ready or ()]
        channel: asyncio.Queue = asyncio.Queue(CHANNEL_BATCHES)
        cancel = threading.Event()
        out._channel, out._cancel = channel, cancel
        out._wake = asyncio.Event()
        stream = slot is not None and slot.lane is pool.streams
        batches = result.batches(BATCH_ROWS) if batches is None else batches

        def step():
            if cancel.is_set():
                raise QueryCancelled("the client went away")
            batch = next(batches, _END)
            if batch is _END:
                _merged(result.status)
                return _END
            return _row_lists(batch)

        async def put(item) -> bool:
            """Into the channel, unless the statement is stopped meanwhile (False)."""
            if not channel.full():
                channel.put_nowait(item)
                return True
            putting = asyncio.ensure_future(channel.put(item))
            woken = asyncio.ensure_future(out._wake.wait())
            try:
                await asyncio.wait({putting, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                if not putting.done():
                    putting.cancel()
            return putting.done() and not putting.cancelled()

        async def produce() -> None:
            try:
                while True:
                    item = await pool.submit(step, stream=stream)
                    if not await put(item) or item is _END:
                        break
            except asyncio.CancelledError:
                raise
            except QueryCancelled:
                if not cancel.is_set():
                    await put(QueryCancelled("the statement was cancelled"))
            except BaseException as exc:  # noqa: BLE001 - handed to the reader
                if not cancel.is_set():
                    await put(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pool.submit(result.close, stream=stream)

        out._result = result
        out._task = asyncio.ensure_future(produce())
        pool.running.add(out)

        def done(_task) -> None:
            pool.running.discard(out)
            if slot is not None:
                slot.release()
        out._task.add_done_callback(done)
        return out

    async def first(self) -> None:
        """Wait for the first rows (or the end); raise the statement's error if it fails first. A
        stream may take its time to give a first row (a slow sensor): for a stream the wait ends
        after FIRST_ROW_WAIT_S, once its fragments have had the time to start or fail."""
        if self._finished or self._ready:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_ROW_WAIT_S if self.kind == "stream" else None
        while True:
            wait = STATUS_POLL_S if deadline is None else min(STATUS_POLL_S, deadline - loop.time())
            if wait <= 0:
                return
            item = await _get(self._channel, wait)
            if self._stopped is not None:    # the federation is stopping: no first row will come
                self._finished = True        # before any answer: 503 as for a statement still waiting
                raise Busy(f"{self._stopped}; try again shortly")   # for a slot — not the client's fault
            if item is not _NOTHING:
                break
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        if item is _END:
            self._finished = True
        else:
            self._ready.append(item)

    async def items(self) -> AsyncIterator[list | dict]:
        """Lists of rows; for a stream on the fleet also {"status_change": …} as devices come and go."""
        version = 0
        watch = self.status is not None and self.kind == "stream"
        while self._ready:
            yield self._ready.pop(0)
        while not self._finished:
            item = await _get(self._channel, STATUS_POLL_S)
            if self._stopped is not None:
                self._finished = True
                raise QueryCancelled(self._stopped)
            if watch:
                changes, version = self.status.changes(version)
                for change in changes:
                    yield {"status_change": change}
            if item is _NOTHING:
                continue
            if item is _END:
                self._finished = True
                break
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            yield item

    async def rows(self) -> AsyncIterator[list]:
        async for item in self.items():
            if isinstance(item, list):
                for row in item:
                    yield row

    def status_dict(self, detail: bool | None = None) -> dict:
        if self.status is None:
            return {}
        return self.status.to_dict(detail) if hasattr(self.status, "to_dict") else dict(self.status)

    def stop(self, reason: str) -> None:
        """Stop the statement now, from the event loop (the federation is shutting down): its
        reader ends within a moment: with QueryCancelled(reason) after its first rows, Busy
        (503) before them."""
        self._stopped = reason
        self._cancel_now()

    def _cancel_now(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        if self._wake is not None:
            self._wake.set()
        if self._result is not None and self._result.ctx is not None:
            self._result.ctx.cancel.set()
        if self.access is not None:
            self.access.close_feeds()

    async def aclose(self) -> None:
        """Stop the statement (the client went away or was done)."""
        self._cancel_now()
        if self._task is not None and not self._task.done() and self._stopped is None:
            # (when the federation stops it, nothing waits: the process is ending)
            # the worker notices within a second; one stuck inside a long call is left to finish
            # (its slot is released when it does), so closing never holds up the caller for long
            await asyncio.wait({self._task}, timeout=CLOSE_WAIT_S)


class QueryService:
    def __init__(self, engine, registry, index, hub, deployments=None, *, workers: int = 32,
                 device_timeout: float = 10.0, credit: int = 10_000, default_limits: dict | None = None,
                 role_limits: Callable[[str | None], dict] | None = None, max_tokens: int | None = None):
        self.engine = engine          # the federation's own Engine: its functions and session variables
        self.registry = registry
        self.index = index
        self.hub = hub
        self.deployments = deployments
        self.device_timeout = device_timeout
        self.default_limits = {k: v for k, v in (default_limits or {}).items() if v is not None}
        self.role_limits = role_limits    # role → its limits, defaults and ceilings (FederationConfig.query_limits)
        self.pool = StatementPool(workers)
        self.access = HubFleetAccess(_loop(), registry, index, hub, credit=credit)
        self._restored = False
        self._parsed: dict[str, A.Statement] = {}     # short texts parsed lately (PARSED_KEPT)
        self.max_tokens = max_tokens  # statements of more tokens are refused unparsed

    async def restore(self) -> None:
        """Replay the definitions kept in the registry (once, at start)."""
        if self._restored:
            return
        self._restored = True
        for text in self.registry.definitions():
            try:
                await self.pool.call(self.engine.execute, text)
            except QueryError as exc:
                log.warning("a kept definition no longer runs (%s): %s", exc.message, text[:200])

    # ------------------------------------------------------------------------------ entry
    def _parse_one(self, text: str) -> A.Statement:
        return parse_one(text, max_tokens=self.max_tokens)

    async def parsed(self, text: str) -> A.Statement:
        """The statement of a text, parsed in a worker — or kept from a moment ago: an HTTP request
        has its text parsed to check it, then again to run it, and many clients send the same
        short statements; each parse is a hop to a worker and back through the event loop, which
        on a busy loop waits its turn. (Trees are immutable; errors are not kept.)"""
        statement = self._parsed.get(text)
        if statement is None:
            statement = await self.pool.parse(self._parse_one, text)
            if len(text) <= PARSED_TEXT:
                self._parsed[text] = statement
                if len(self._parsed) > PARSED_KEPT:
                    del self._parsed[next(iter(self._parsed))]    # the oldest
        return statement

    async def run(self, text: str, principal: Any = None, *, limits: dict | None = None,
                  device_timeout: float | None = None, still_wanted=None) -> StatementResult:
        """`still_wanted()` False while the statement waits for a slot (its client left): lanes.ClientLeft."""
        statement = await self.parsed(text)
        if isinstance(statement, A.Explain):
            return await self._explain(statement.statement, text)
        if isinstance(statement, DEPLOYMENT_STATEMENTS):
            _require(principal, "deploy")
            return await self._deployment(statement, text, principal)
        if isinstance(statement, QUERY_STATEMENTS):
            timeout = self.device_timeout if device_timeout is None else device_timeout
            name = principal_name(principal)
            limits = self.limits_for(principal, limits)
            stream = is_stream(statement)
            fast = self.is_fast(statement, text)
            slot = await self.pool.acquire(name, stream=stream, local=fast, still_wanted=still_wanted)
            if slot.fast:
                limits = fast_limits(limits)
            access = StatementAccess(self.access)

            def query():
                return self.engine.query(text, limits, fleet=access, principal=name, device_timeout=timeout,
                                         parsed=statement)
            batches = ready = None
            try:
                if fast:
                    # cheap, no fleet, no stream: planned, run and closed in one worker hop, not one
                    # hop per batch and one to close — on a busy loop every hop waits its turn
                    done = await self.pool.submit(self.pool.watch.timed, _at_once, query)
                    if isinstance(done, StatementResult):
                        slot.release()
                        return done
                    result, batches, ready = done
                else:
                    result = await self.pool.submit(query, stream=stream)
            except BaseException:
                access.close_feeds()
                slot.release()
                raise
            # it releases the slot when it ends
            return StatementResult.streaming(result, self.pool, slot, access, batches=batches, ready=ready)
        if isinstance(statement, A.Toploop):   # quit/commit/rollback belong to a shell's own engine
            raise QueryTypeError(f"{statement.command} is a statement of a shell or script on its own engine, "
                                 "not of a federation", statement.span, text)
        _require(principal, "deploy")
        name = principal_name(principal)
        limits = self.limits_for(principal, limits)
        slot = await self.pool.acquire(name, local=self.is_fast(statement, text), still_wanted=still_wanted)
        try:
            return await self.pool.submit(self._statement, statement, text,
                                          fast_limits(limits) if slot.fast else limits)
        finally:
            slot.release()

    def is_fast(self, statement: A.Statement, text: str) -> bool:
        """May take the fast lane (federation/lanes.py): calls only cheap built-ins, never a user's
        function (the store's: its body may query the fleet) nor a fleet function."""
        library, users = self.engine.library, self.engine.store.functions

        def builtins(name: str) -> list:
            return [] if name in users else library.overloads(name)
        return is_fast(statement, text, builtins)

    def limits_for(self, principal: Any, requested: dict | None) -> dict:
        """A statement's limits: what the request asks for, where it asks for less than its role's
        limits (the defaults and ceilings the operator configured); the rest the role's."""
        role = getattr(getattr(principal, "role", None), "name", None)
        ceiling = Limits.of(self.role_limits(role.lower() if role else None) if self.role_limits is not None
                            else self.default_limits)
        effective = ceiling.given(requested).at_most(ceiling).to_dict()
        return {k: v for k, v in effective.items() if v is not None}

    def _statement(self, statement: A.Statement, text: str, limits: dict | None = None) -> StatementResult:
        result = self.engine.run(text, limits=limits, parsed=statement)
        rows = [list(r) if isinstance(r, tuple) else [r] for r in result] if result.kind != "statement" else []
        if isinstance(statement, DEFINITIONS):
            span = statement.span
            self.access._on_loop(lambda: self.registry.add_definition(
                text[span.start:span.end] + ";" if span is not None else statement.sql() + ";"))
        return StatementResult(result.columns, result.types, result.kind, rows=rows, message=result.message)

    async def select_devices(self, selection: A.EdgeSelection, text: str) -> tuple[list[str], Any]:
        """The devices a deploy/rollback/undeploy addresses, and the status of the others."""
        declaration = selection.declaration
        select = A.Select((A.SelectItem(A.Call("id", (A.Variable(declaration.name),))),), (declaration,),
                          selection.where, span=selection.span)
        query_text = _selection_query(select, selection, text)

        def run():
            result = self.engine.query(query_text, fleet=self.access, device_timeout=self.device_timeout)
            # in id order, whatever order the devices answered in: the rollout's waves follow it
            return sorted(set(result)), result.status
        try:
            return await self.pool.call(run, who="deployments")
        except QueryError as exc:
            raise _relocated(exc, selection, text) from None

    async def _deployment(self, statement, text: str, principal) -> StatementResult:
        if self.deployments is None:
            raise FleetError("this federation has no deployment manager", statement.span, text)
        devices, status = await self.select_devices(statement.selection, text)
        action = {A.Deploy: "deploy", A.Rollback: "rollback", A.Undeploy: "undeploy"}[type(statement)]
        version = getattr(statement, "version", None)
        try:
            deployment_id = await self.deployments.start(
                action, statement.model, version, devices, selection=statement.selection.sql(),
                requested_by=principal_name(principal), rollout=statement.rollout)
        except QueryError as exc:
            raise exc.located(statement.span).with_source(text)
        message = (f"{action} of {statement.model}{' ' + version if version else ''} started for "
                   f"{len(devices)} device{'s' if len(devices) != 1 else ''}") if devices else (
            f"{action} of {statement.model}{' ' + version if version else ''}: the selection matched no device; "
            "nothing selected, nothing sent")
        return StatementResult(["deployment"], ["Charstring"], "deployment", rows=[[deployment_id]],
                               message=message, deployment_id=deployment_id, status=status)

    async def preflight(self, text: str, principal: Any = None) -> dict:
        """What a deploy, rollback or undeploy statement would do now, without starting it."""
        statement = await self.pool.quick(self._parse_one, text)
        if isinstance(statement, A.Explain):
            statement = statement.statement
        if not isinstance(statement, DEPLOYMENT_STATEMENTS):
            raise BadRequest("a preflight is of a deploy, rollback or undeploy statement")
        _require(principal, "deploy")
        if self.deployments is None:
            raise FleetError("this federation has no deployment manager", statement.span, text)
        return await self._preflight(statement, text)

    async def _preflight(self, statement, text: str) -> dict:
        devices, _ = await self.select_devices(statement.selection, text)
        action = {A.Deploy: "deploy", A.Rollback: "rollback", A.Undeploy: "undeploy"}[type(statement)]
        try:
            return self.deployments.preflight(action, statement.model, getattr(statement, "version", None), devices)
        except QueryError as exc:
            raise exc.located(statement.span).with_source(text)

    async def _explain(self, statement: A.Statement, text: str) -> StatementResult:
        if isinstance(statement, DEPLOYMENT_STATEMENTS):
            selection = statement.selection
            select = A.Select((A.SelectItem(A.Call("id", (A.Variable(selection.declaration.name),))),),
                              (selection.declaration,), selection.where, span=selection.span)
            target_text = _selection_query(select, selection, text)
            try:
                plan = await self.pool.quick(lambda: self.engine.explain(target_text, fleet=self.access))
            except QueryError as exc:
                raise _relocated(exc, selection, text) from None
            if self.deployments is not None:   # and what it would do now
                plan += "\n" + "\n".join(preflight_lines(await self._preflight(statement, text)))
        else:
            plan = await self.pool.quick(lambda: self.engine.explain_text(statement, text, fleet=self.access))
        return StatementResult(["plan"], ["Charstring"], "explain", rows=[[line] for line in plan.splitlines()])

    async def list_functions(self) -> list[dict]:
        return await self.pool.quick(self.functions)

    def functions(self) -> list[dict]:
        """Every function a statement may call here (in a worker: the edges' are read off the loop)."""
        catalog = FleetCatalog(self.engine.catalog, self.engine.library, self.access)
        out = self.engine.functions()
        names = {(d["name"], d["signature"]) for d in out}
        for overload in list(catalog.library.fleet.all()) + list(catalog.edge_functions().all()):
            described = overload.describe()
            if (described["name"], described["signature"]) not in names:
                out.append(described)
        return out

    def stop_all(self) -> None:
        """The federation is shutting down: every running statement stops (its client is told)."""
        self.pool.stop_all("the federation is shutting down")

    async def aclose(self) -> None:
        self.pool.stop_all("the federation is shutting down")
        self.pool.shutdown()


AT_ONCE_BATCHES = 2          # a cheap statement with more rows than this streams as any other


def _at_once(query: Callable[[], Any]) -> "StatementResult | tuple":
    """A cheap statement run to its end in this worker: a complete StatementResult; or, when it has
    more than AT_ONCE_BATCHES batches (or fails after its first), (result, its batches, the ones
    already taken) for StatementResult.streaming to go on with."""
    result = query()
    batches = result.batches(BATCH_ROWS)
    ready: list = []
    try:
        for _ in range(AT_ONCE_BATCHES):
            batch = next(batches, _END)
            if batch is _END:
                _merged(result.status)
                result.close()
                return StatementResult(result.columns, result.types, result.kind, status=result.status,
                                       rows=[row for taken in ready for row in _row_lists(taken)])
            ready.append(batch)
    except Exception as exc:
        if not ready:
            result.close()
            raise
        batches = _raising(exc)     # the rows before the error go out first, then the error
    return result, batches, ready


def _raising(exc: BaseException):
    raise exc
    yield  # noqa: unreachable - makes this a generator


def _row_lists(batch: list) -> list:
    return [list(row) if isinstance(row, tuple) else [row] for row in batch]


def fast_limits(limits: dict) -> dict:
    """A statement in the fast lane runs at most FAST_SECONDS (federation/lanes.py)."""
    seconds = limits.get("seconds")
    return {**limits, "seconds": FAST_SECONDS if seconds is None else min(seconds, FAST_SECONDS)}


def _merged(status) -> None:
    """The time from the last fragment's end to the last row: the merge at the federation."""
    ended = getattr(status, "fan_out_ended", None)
    if ended is not None:
        status.timings["merge"] = time.perf_counter() - ended


def _loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:   # made outside the loop (tests): the loop that will run it
        return asyncio.get_event_loop_policy().get_event_loop()


def _selection_query(select: A.Select, selection: A.EdgeSelection, text: str) -> str:
    """The selection of a deployment as a query of its own: the user's where clause, verbatim
    where possible (so positions map back by an offset)."""
    where = selection.where
    declaration = selection.declaration
    if where is not None and where.span is not None:
        head = f"select id({declaration.name}) from Edge {declaration.name} where "
        return head + text[where.span.start:where.span.end] + ";"
    return select.sql() + ";"


def _relocated(exc: QueryError, selection: A.EdgeSelection, text: str) -> QueryError:
    """An error found in a deployment's selection query, at its place in the user's statement."""
    where = selection.where
    if exc.span is not None and where is not None and where.span is not None:
        head = len(f"select id({selection.declaration.name}) from Edge {selection.declaration.name} where ")
        offset = where.span.start - head + exc.span.start
        exc.span = Span.at(text, offset, exc.span.end - exc.span.start)
    exc.source = text
    return exc


def principal_name(principal) -> str | None:
    """Who runs a statement, as edges see it (their query slots are shared out per principal)."""
    if principal is None:
        return None
    token = getattr(principal, "token_id", None)
    return f"token-{token}" if token is not None else getattr(getattr(principal, "role", None), "label", None)


def _require(principal, role: str) -> None:
    """Statements that change things need a token with at least `role` (403 otherwise)."""
    if principal is None:
        return
    allows = getattr(principal, "allows", None)
    if allows is None:
        return
    if not allows(Role[role.upper()]):
        raise Forbidden(f"this statement needs a token with the {role} role")


def create_query_service(app) -> QueryService:
    """The query service of a federation app (made at start-up, once the registry, index, hub and
    deployment manager exist)."""
    config = app[CONFIG]
    # no files unless the operator says; nothing runs without limits (a deployment's selection included)
    engine = streamql.Engine(name="federation", files=config.files_dir,
                             limits={"memory_mb": config.query_memory_mb, "seconds": config.query_seconds})
    return QueryService(engine, app[REGISTRY], app[INDEX], app[HUB], app[DEPLOYMENTS],
                        workers=config.statement_workers, device_timeout=config.device_timeout_s,
                        default_limits={"memory_mb": config.query_memory_mb, "seconds": config.query_seconds},
                        role_limits=config.query_limits, max_tokens=config.max_statement_tokens)

