"""The query service behind `/v1/query`: one statement in, a FleetResult out.

Queries over `Edge e` are planned across the fleet; `deploy`, `rollback` and `undeploy` select
their devices the same way (live conditions such as `signal_value('vibration')@e > 2.5` are asked
of each candidate edge) and hand them to the deployment manager; other statements run on the
federation's own engine (functions, session variables). Errors are raised at once, before any
row is streamed, with their position.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from streamql import ast as A
from streamql.binder import Binder
from streamql.errors import FleetError, QueryError, QueryTypeError
from streamql.syntax import parse_one
from streamql.types import EDGE

from .catalog import DeviceFacts, FleetCatalog, metadata_keys
from .execute import FleetRun
from .explain import explain_fleet
from .plan import FleetPlan, FleetPlanner, has_at

ROLES_FOR_STATEMENTS = {A.Deploy: "deploy", A.Rollback: "deploy", A.Undeploy: "deploy"}


class FleetResult:
    """Columns, then rows as they arrive, then every device's outcome in `status`."""

    def __init__(self, columns: list[str], types: list, kind: str, rows: AsyncIterator | None = None,
                 message: str | None = None, deployment_id: str | None = None, run: FleetRun | None = None):
        self.columns = columns
        self.types = [str(t) for t in types]
        self.kind = kind
        self.message = message
        self.deployment_id = deployment_id
        self._rows = rows
        self._run = run
        self.status: dict = run.status if run is not None else {}

    async def rows(self) -> AsyncIterator[list]:
        if self._rows is None:
            return
        async for row in self._rows:
            yield row

    async def aclose(self) -> None:
        if self._run is not None:
            await self._run.aclose()


class QueryService:
    def __init__(self, engine, registry, index, hub, deployments=None, *, fragment_timeout: float = 30.0,
                 credit: int = 10_000):
        self.engine = engine          # the federation's own streamql Engine (functions, session variables)
        self.registry = registry
        self.index = index
        self.hub = hub
        self.deployments = deployments
        self.fragment_timeout = fragment_timeout
        self.credit = credit

    # --------------------------------------------------------------------------- entry
    async def run(self, text: str, principal: Any = None, *, limits: dict | None = None) -> FleetResult:
        statement = parse_one(text)
        if isinstance(statement, A.Explain):
            return await self._explain(statement.statement, text)
        if isinstance(statement, (A.Deploy, A.Rollback, A.Undeploy)):
            _require(principal, "deploy", statement, text)
            return await self._deployment(statement, text, principal)
        if isinstance(statement, (A.Select, A.ExprStatement)):
            return await self._query(statement, text, limits)
        _require(principal, "deploy", statement, text)
        result = self.engine._execute_statement(statement, text)
        rows = list(result) if result.kind not in ("statement",) else []
        return FleetResult(result.columns, result.types, result.kind, _aiter(rows), message=result.message)

    # ------------------------------------------------------------------------ planning
    def catalog(self, facts: DeviceFacts | None = None) -> FleetCatalog:
        return FleetCatalog(self.engine, facts or DeviceFacts(), metadata_keys(self.index))

    def plan(self, statement: A.Statement, text: str, facts: DeviceFacts | None = None):
        """(catalog, bound query, fleet plan or None for a statement that does not touch the fleet)."""
        catalog = self.catalog(facts)
        select = statement if isinstance(statement, A.Select) else A.Select(
            (A.SelectItem(statement.expr, span=statement.expr.span),), span=statement.span)
        binder = Binder(catalog, text)
        query = binder.bind_query(select, None)
        if not any(v.type == EDGE for v in query.variables.values()):
            return catalog, query, None
        return catalog, query, FleetPlanner(text).plan(select, query)

    def candidates(self, plan: FleetPlan, catalog: FleetCatalog) -> list[str]:
        if plan.selection is not None:
            ids = list(self.index.select(plan.selection))
        else:
            ids = list(self.index.iter_ids())
        if plan.candidates_from is not None:
            from streamql.compiler import compile_expression
            chosen = compile_expression(plan.candidates_from, self.engine.new_context()).row({})
            allowed = {edge.id for edge in chosen}
            ids = [i for i in ids if i in allowed]
        return ids

    def load_facts(self, facts: DeviceFacts, ids: list[str]) -> None:
        facts.devices.update({d.id: d for d in self.registry.get_devices(ids)})
        facts.models.update(self.registry.model_versions(ids))
        facts.online |= set(self.hub.online_ids()) if self.hub is not None else set()
        if self.hub is not None:
            for device in ids:
                announced = self.hub.announced(device)
                if announced:
                    facts.announced[device] = announced

    async def _query(self, statement: A.Statement, text: str, limits: dict | None) -> FleetResult:
        facts = DeviceFacts()
        catalog, query, plan = self.plan(statement, text, facts)
        if plan is None:
            result = self.engine._execute_statement(statement, text)
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(None, list, result)
            rows = [list(r) if isinstance(r, tuple) else [r] for r in rows]
            return FleetResult(result.columns, result.types, result.kind, _aiter(rows))
        ids = self.candidates(plan, catalog)
        self.load_facts(facts, ids)
        run = FleetRun(plan, catalog, self.engine, self.hub, ids, fragment_timeout=self.fragment_timeout,
                       credit=self.credit, limits=limits)
        return FleetResult(plan.columns, plan.types, plan.kind, run.rows(), run=run)

    async def select_devices(self, selection: A.EdgeSelection, text: str) -> tuple[list[str], dict]:
        """The devices a deploy/rollback/undeploy addresses, and why the others were left out."""
        declaration = selection.declaration
        item = A.SelectItem(A.Call("id", (A.Variable(declaration.name),)))
        select = A.Select((item,), (declaration,), selection.where, span=selection.span)
        facts = DeviceFacts()
        catalog, query, plan = self.plan(select, text, facts)
        if plan is None:
            raise QueryTypeError("a deployment selects edges: write `to Edge e where …`", selection.span, text)
        ids = self.candidates(plan, catalog)
        self.load_facts(facts, ids)
        run = FleetRun(plan, catalog, self.engine, self.hub, ids, fragment_timeout=self.fragment_timeout,
                       credit=self.credit)
        chosen = []
        async for row in run.rows():
            if row[0] not in chosen:
                chosen.append(row[0])
        return chosen, run.status

    async def _deployment(self, statement, text: str, principal) -> FleetResult:
        if self.deployments is None:
            raise FleetError("this federation has no deployment manager", statement.span, text)
        devices, status = await self.select_devices(statement.selection, text)
        action = {A.Deploy: "deploy", A.Rollback: "rollback", A.Undeploy: "undeploy"}[type(statement)]
        version = getattr(statement, "version", None)
        try:
            deployment_id = await self.deployments.start(
                action, statement.model, version, devices, selection=statement.selection.sql(),
                requested_by=getattr(principal, "name", None))
        except QueryError as exc:
            raise exc.located(statement.span).with_source(text)
        left_out = {device: s for device, s in status.items() if s.get("outcome") != "answered"}
        message = (f"{action} of {statement.model}{' ' + version if version else ''} started for "
                   f"{len(devices)} device{'s' if len(devices) != 1 else ''}")
        result = FleetResult(["deployment"], ["Charstring"], "deployment", _aiter([[deployment_id]]),
                             message=message, deployment_id=deployment_id)
        result.status = left_out
        return result

    async def _explain(self, statement: A.Statement, text: str) -> FleetResult:
        if isinstance(statement, (A.Deploy, A.Rollback, A.Undeploy)):
            target = A.Select((A.SelectItem(A.Call("id", (A.Variable(statement.selection.declaration.name),))),),
                              (statement.selection.declaration,), statement.selection.where)
        else:
            target = statement
        facts = DeviceFacts()
        catalog, query, plan = self.plan(target, text, facts)
        if plan is None:
            lines = self.engine.explain_text(statement, text).splitlines()
        else:
            ids = self.candidates(plan, catalog)
            self.load_facts(facts, ids)
            lines = explain_fleet(plan, catalog, ids, self.hub, statement).splitlines()
        return FleetResult(["plan"], ["Charstring"], "explain", _aiter([[line] for line in lines]))


def _require(principal, role: str, statement, text: str) -> None:
    """Statements that change things need a token with at least `role` (403 otherwise)."""
    if principal is None:
        return
    allows = getattr(principal, "allows", None)
    if allows is None:
        return
    from federation.auth import Role
    from federation.errors import Forbidden
    if not allows(Role[role.upper()]):
        raise Forbidden(f"this statement needs a token with the {role} role")


def create_query_service(app) -> QueryService:
    """The query service of a federation app (called at startup, once the registry, index, hub
    and deployment manager exist): its own engine holds the federation's functions and session
    variables; the fleet comes from the registry and the hub."""
    import streamql
    from federation.keys import DEPLOYMENTS, HUB, INDEX, REGISTRY
    return QueryService(streamql.Engine(name="federation"), app[REGISTRY], app[INDEX], app[HUB], app[DEPLOYMENTS])


async def _aiter(rows):
    for row in rows:
        yield row
