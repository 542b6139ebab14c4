"""The statement service behind `/v1/query` and `/v1/query/ws`: one statement in, a result out.

Every statement runs in a worker thread of a bounded pool, never on the event loop, parse
included. Queries are planned by the federation's own engine against the fleet (`Engine.query(…,
fleet=HubFleetAccess)`): the engine's binder, planner, optimizer and operators, with `Remote`
nodes reaching the edges. Rows cross to the loop in batches through a bounded channel, so a
client that reads slowly slows the statement down rather than filling memory; a client that
leaves cancels it (the result: federation/statement_result.py). `deploy`, `rollback` and `undeploy` select their devices with the same planner
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

import logging
from typing import Any, Callable

import streamql
from streamql import ast as A
from streamql.fleet import FleetCatalog
from streamql.errors import FleetError, QueryError, QueryTypeError, Span
from streamql.streams import Limits
from streamql.syntax import parse_one

from federation.auth import Role
from federation.deployment_control import preflight_lines
from federation.errors import BadRequest, Forbidden
from federation.fleet_access import HubFleetAccess
from federation.keys import CONFIG, DEPLOYMENTS, HUB, INDEX, REGISTRY
from federation.lanes import FAST_SECONDS, StatementPool, is_fast, is_stream
from federation.statement_result import StatementAccess, StatementResult, run_at_once, running_loop

log = logging.getLogger("streamql.federation.statements")

DEPLOYMENT_STATEMENTS = (A.Deploy, A.Rollback, A.Undeploy)
QUERY_STATEMENTS = (A.Select, A.ExprStatement)
DEFINITIONS = (A.CreateType, A.CreateFunction, A.CreateTable, A.Drop)
PARSED_KEPT = 256           # parsed statements kept by their text …
PARSED_TEXT = 1024          # … when the text is at most this long
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
        self.access = HubFleetAccess(running_loop(), registry, index, hub, credit=credit)
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
                    done = await self.pool.submit(self.pool.watch.timed, run_at_once, query)
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


def fast_limits(limits: dict) -> dict:
    """A statement in the fast lane runs at most FAST_SECONDS (federation/lanes.py)."""
    seconds = limits.get("seconds")
    return {**limits, "seconds": FAST_SECONDS if seconds is None else min(seconds, FAST_SECONDS)}


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

