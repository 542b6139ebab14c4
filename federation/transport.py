"""What the federation needs of the carrier between it and the edges: the `EdgeTransport`
protocol. Two implementations satisfy it: the embedded WebSocket hub (federation/hub.py,
`EdgeHub`) and the NATS transport (federation/nats_hub.py, `NatsHub`). The fleet planner
(federation/fleet_access.py), the deployer and the flow routes see only this surface.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from federation.hub import RowBatch, Subscription
    from federation.publish import PublishLog
    from streamql import wire


@runtime_checkable
class EdgeTransport(Protocol):
    """Edges as the federation reaches them (see federation/hub.py's docstring for the semantics)."""

    publish_log: "PublishLog"

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    def is_online(self, edge_id: str) -> bool: ...
    def online_ids(self) -> set[str]: ...
    def announced(self, edge_id: str) -> dict | None: ...
    def announced_ids(self) -> list[str]: ...

    def fragment(self, edge_id: str, source: str, *, limits: dict | None = None, credit: int = 10_000,
                 params: dict | None = None, columns: list[str] | None = None, batch_rows: int | None = None,
                 principal: str | None = None, kind: str | None = None, deadline_s: float | None = None,
                 follow_s: float | None = None, most_credit: int | None = None) -> AsyncIterator["RowBatch"]: ...
    def subscribe(self, flow: str | None = None, *, edges: Iterable[str] | None = None,
                  maxsize: int = 10_000) -> "Subscription": ...
    async def send(self, edge_id: str, frame: "wire.Frame | bytes") -> None: ...

    def add_observer(self, observer: Any) -> None: ...
    def remove_observer(self, observer: Any) -> None: ...
    def spawn(self, coro: Any, name: str | None = None) -> Any: ...
