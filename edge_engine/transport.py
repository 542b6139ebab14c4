"""What the edge daemon needs of its link to the federation: `EdgeLink` (the loop that keeps a
session up) and `LinkConnection` (one session: sending frames). Two implementations: the
WebSocket link (edge_engine/link.py) and the NATS link (edge_engine/nats_link.py). Both drive a
`LinkHandler` (edge_engine/link.py): hello(), connected(conn, welcome), handle(conn, frame),
health(), disconnected(conn).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from streamql import wire


@runtime_checkable
class LinkConnection(Protocol):
    closed: bool
    welcome: "wire.Frame | None"

    async def send(self, frame: "wire.Frame") -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@runtime_checkable
class EdgeLink(Protocol):
    connection: LinkConnection | None
    connected: asyncio.Event          # set while a session is up
    last_error: str | None

    async def run(self) -> None: ...
    async def stop(self) -> None: ...
