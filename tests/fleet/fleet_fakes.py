"""A fake hub for fleet-planner tests: every device is a local Engine with simulated signals,
and `fragment` runs the fragment source there, yielding row batches like the real hub."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

import streamql
from streamql.physical.chunk import column_values


@dataclass
class RowBatch:
    names: list
    n: int
    cols: list


class FakeHub:
    def __init__(self, engines: dict[str, streamql.Engine], offline: set[str] = frozenset(),
                 failing: dict[str, str] | None = None, slow: set[str] = frozenset()):
        self.engines = engines
        self.offline = set(offline)
        self.failing = dict(failing or {})
        self.slow = set(slow)
        self.sources: dict[str, list[str]] = {}

    def is_online(self, edge_id: str) -> bool:
        return edge_id in self.engines and edge_id not in self.offline

    def online_ids(self) -> set[str]:
        return {e for e in self.engines if e not in self.offline}

    def announced(self, edge_id: str):
        engine = self.engines.get(edge_id)
        if engine is None:
            return None
        return {"capabilities": {"signals": engine.signals.names()}}

    async def fragment(self, edge_id, source, *, limits=None, credit=10_000):
        from federation.fleet.execute import EdgeOffline, FragmentError
        self.sources.setdefault(edge_id, []).append(source)
        if edge_id in self.offline:
            raise EdgeOffline(edge_id)
        if edge_id in self.failing:
            raise FragmentError("error", {"kind": "RuntimeError", "message": self.failing[edge_id]})
        if edge_id in self.slow:
            await asyncio.sleep(3600)
        engine = self.engines[edge_id]
        try:
            result = engine.query(source)
        except streamql.QueryError as exc:
            raise FragmentError("error", exc.to_dict()) from None
        width = len(result.columns)
        try:
            for item in result.items():
                await asyncio.sleep(0)
                if type(item) is dict:
                    yield RowBatch(result.columns, 1, [[item[f"$c{i}"]] for i in range(width)])
                elif hasattr(item, "n"):
                    yield RowBatch(result.columns, item.n, [item[f"$c{i}"] for i in range(width)])
        finally:
            result.close()
