"""A fake statement service with the interface of federation/statements.py, for route tests."""
from __future__ import annotations

import asyncio
import math

import numpy as np

from streamql.engine import Engine
from streamql.errors import QueryNameError, QueryRuntimeError, Span
from streamql.fleet_status import FleetStatus
from streamql.values import Time

ROWS = "select x from Integer x where x in iota(1, 3);"
WIDE = "select id(e), w, t from Edge e;"
STREAM = "select stream of x from Real x where x in simstream(0.01);"
FAILING = "select 1 / 0;"
UNKNOWN = "select nosuch(1);"
DEPLOY = "deploy model 'vib' version '1.0.0' to Edge e where region(e) = 'US';"
SLOW_FIRST = "select stream of 1;"
MANY = "select x from Integer x where x in iota(1, 100000);"
SLOW_PLAN = "select stream of 2;"     # planning waits for FakeService.planned (reaching devices)


class FakeResult:
    def __init__(self, columns, types, kind, rows, *, status=None, message=None, deployment_id=None, fail_after=None,
                 endless=False, gate: asyncio.Event | None = None):
        self.columns, self.types, self.kind = columns, types, kind
        self.message, self.deployment_id = message, deployment_id
        self._rows, self._fail_after, self._endless, self._gate = rows, fail_after, endless, gate
        self.status: dict = {}
        self._final_status = status or {}
        self.closed = False
        self.produced = 0

    async def rows(self):
        for i, row in enumerate(self._rows):
            if self._fail_after is not None and i == self._fail_after:
                self.status = {"e1": {"outcome": "failed", "rows": i, "reason": "division by zero"}}
                raise QueryRuntimeError("division by zero", Span(9, 10, 1, 10, 1, 11))
            if self._gate is not None and i == 1:
                await self._gate.wait()
            self.produced += 1
            yield row
        while self._endless:
            await asyncio.sleep(0.01)
            self.produced += 1
            yield [float(self.produced)]
        self.status = self._final_status

    def status_dict(self, detail=None) -> dict:
        """The status as the real service sends it (streamql.fleet_status)."""
        status = FleetStatus()
        for device, outcome in self.status.items():
            status.set(device, outcome["outcome"], outcome["reason"])
            status.devices[device].rows = outcome["rows"]
        return status.to_dict(detail) if self.status else {}

    async def aclose(self):
        self.closed = True


class FakeService:
    def __init__(self):
        self.results: list[FakeResult] = []
        self.gate = asyncio.Event()
        self.planned = asyncio.Event()
        self.calls: list[tuple] = []

    async def list_functions(self) -> list[dict]:
        return Engine().functions()

    async def run(self, text: str, principal, *, limits: dict | None = None):
        self.calls.append((text, principal, limits))
        if text == SLOW_PLAN:
            await self.planned.wait()
        if text == UNKNOWN:
            raise QueryNameError("unknown function nosuch", Span(7, 13, 1, 8, 1, 14), text)
        if text == ROWS:
            result = FakeResult(["x"], ["Integer"], "bag", [[1], [2], [3]],
                                status={"e1": {"outcome": "answered", "rows": 3, "reason": None}})
        elif text == WIDE:
            result = FakeResult(["id(e)", "w", "t"], ["Charstring", "Vector of Real", "Time"], "bag", [
                ["wl-1", np.array([1.0, math.nan, 2.5]), Time(0.5)],
                ["wl-2", np.array([0.0, 1.0, 2.0], dtype=np.float32), None]],
                status={"wl-1": {"outcome": "answered", "rows": 1, "reason": None},
                        "wl-2": {"outcome": "answered", "rows": 1, "reason": None},
                        "wl-3": {"outcome": "offline", "rows": 0, "reason": "not connected"}})
        elif text == STREAM:
            result = FakeResult(["x"], ["Real"], "stream", [], endless=True)
        elif text == FAILING:
            result = FakeResult(["1 / 0"], ["Real"], "bag", [[1.0], [2.0], [3.0]], fail_after=2)
        elif text == DEPLOY:
            result = FakeResult(["deployment"], ["Charstring"], "deployment", [["7"]], message="deploy started",
                                deployment_id="7")
        elif text == SLOW_FIRST:
            result = FakeResult(["1"], ["Integer"], "stream", [[1], [2]], gate=self.gate)
        elif text == MANY:
            result = FakeResult(["x"], ["Integer"], "bag", ([i] for i in range(100_000)))
        else:
            result = FakeResult(["v"], ["Charstring"], "bag", [[text]])
        self.results.append(result)
        return result
