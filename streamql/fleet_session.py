"""One fleet statement's link to its federation, while it runs.

The engine makes a `FleetSession` for each statement it runs with a `FleetAccess` (a federation):
the Remote operators reach the federation through it, every selected device's outcome collects in
its `status`, and it knows the statement's text, so that what an edge reports at a position of
its fragment is reported at the user's.

Before a fragment ships, it is checked for each kind of edge (profile) among the selected ones:
the statement is bound again against only what that profile announced. Edges where it cannot run
are `skipped` with the reason; when it can run on none, the first reason is the statement's error,
at its position in the user's text — and nothing is sent.
"""
from __future__ import annotations


from . import ast as A
from .binder import Binder
from .errors import QueryError, error_from_dict
from .fleet import DeviceInfo, EdgeProfile, FleetAccess, FleetCatalog, FragmentRequest
from .fleet_status import FleetStatus
from .fragments import Fragment
from .selection import All, Predicate

DEFAULT_DEVICE_TIMEOUT = 10.0


class FleetSession:
    def __init__(self, engine, access: FleetAccess, catalog: FleetCatalog, statement: A.Statement,
                 source: str, *, principal: str | None = None, device_timeout: float | None = DEFAULT_DEVICE_TIMEOUT,
                 fragment_limits: dict | None = None):
        self.engine = engine
        self.access = access
        self.catalog = catalog
        self.statement = statement
        self.source = source
        self.principal = principal
        self.device_timeout = device_timeout
        self.fragment_limits = {k: v for k, v in (fragment_limits or {}).items() if v is not None}
        self.status = FleetStatus()
        self._profile_errors: dict[EdgeProfile, QueryError | None] = {}
        self._failures: dict[str, QueryError] = {}

    # ----------------------------------------------------------------------------- devices
    def select(self, index: Predicate | None) -> list[str]:
        return list(self.access.select(index if index is not None else All()))

    def devices(self, ids: list[str], fresh: bool = False) -> dict[str, DeviceInfo]:
        if fresh:
            found = self.access.devices(list(ids))
            self.catalog.facts._devices.update(found)
            return {i: found.get(i) or DeviceInfo(i) for i in ids}
        return self.catalog.facts.load(list(ids))

    def open_feed(self, watch: bool = False):
        return self.access.open_feed(watch=watch)

    def request(self, device: str, fragment: Fragment, params: dict) -> FragmentRequest:
        # a one-shot fragment carries the device timeout: past it nobody waits for its answer, so
        # the edge stops it itself even when the federation's cancel comes late or not at all
        deadline = self.device_timeout if fragment.kind != "stream" else None
        return FragmentRequest(device, fragment.text, params, dict(self.fragment_limits), fragment.kind, self.principal,
                               deadline)

    # ----------------------------------------------------------------------------- checks
    def check(self, fragment: Fragment, devices: dict[str, DeviceInfo]) -> list[str]:
        """The devices the fragment can run on; the others are reported `skipped`, and when it
        can run on none the first reason is raised (nothing has been sent)."""
        runnable, first = [], None
        for device, info in devices.items():
            if info.profile is None:
                runnable.append(device)  # never said hello: offline, reported as such
                continue
            error = self._profile_error(info.profile)
            if error is None:
                runnable.append(device)
                continue
            first = first or error
            self.status.set(device, "skipped", error.message, error=error.to_dict())
        if not runnable and first is not None:
            raise first
        return runnable

    def _profile_error(self, profile: EdgeProfile) -> QueryError | None:
        if profile not in self._profile_errors:
            catalog = FleetCatalog(self.catalog.base, self.engine.library, self.access, self.catalog.facts,
                                   only=profile)
            try:
                query = Binder(catalog, self.source).bind_statement_query(self.statement)
                catalog.check(query, self.source)
                self._profile_errors[profile] = None
            except QueryError as exc:
                exc.source = exc.source or self.source
                self._profile_errors[profile] = exc
        return self._profile_errors[profile]

    # ----------------------------------------------------------------------------- errors
    def edge_error(self, device: str, fragment: Fragment, error: dict) -> QueryError:
        """An edge's error about its fragment, positioned in the user's text."""
        exc = error_from_dict(error, fragment.user_span(error.get("line"), error.get("column")), self.source)
        self._failures[device] = exc
        return exc

    def failure(self) -> QueryError | None:
        """When no selected device answered and some failed, the first failure as the statement's
        error (the answer would be empty, and its emptiness a lie)."""
        counts = self.status.counts()
        if counts.get("answered") or not counts.get("failed"):
            return None
        device, outcome = self.status.first_failure()
        first = self._failures.get(device) or error_from_dict(outcome.error or {"message": outcome.reason})
        others = counts["failed"] - 1
        where = f"on {device}" + (f" and {others} other device{'s' if others != 1 else ''}" if others else "")
        return type(first)(f"{first.message} ({where})", first.span, self.source)
