"""What each token has open right now, so that revoking a token takes effect at once.

    sessions = app[SESSIONS]
    handle = sessions.open(principal.token_id, closer, label="query ws")   # closer(reason) -> awaitable
    ...
    sessions.close(handle)                                                 # the socket ended
    await sessions.revoke(token_id, "the token was revoked")               # close them all, cancel requests

Two kinds of things are kept per token id: WebSockets (the `/v1/query/ws` sessions and an edge's
device connection), each with a `closer` that closes it with code 4003 and a reason; and the
tasks of requests in flight (tracked by the limits middleware), which are cancelled, so a
streaming `POST /v1/query` of a revoked token stops too. Tokens revoked by another process
(`streamql federation token revoke`) are noticed by `sweep`, run every couple of seconds.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("streamql.federation.sessions")

REVOKED_CLOSE_CODE = 4003  # wire.CLOSE_CODES["unauthorized"]; the same for the query WebSocket
CLOSE_TIMEOUT_S = 3.0
SWEEP_INTERVAL_S = 2.0

Closer = Callable[[str], Awaitable[None]]


@dataclass
class _Open:
    sockets: dict[int, tuple[str, Closer]] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)

    def empty(self) -> bool:
        return not self.sockets and not self.tasks


class Sessions:
    """Open WebSockets and requests in flight, per token id (see the module docstring)."""

    def __init__(self) -> None:
        self._by_token: dict[int, _Open] = {}
        self._where: dict[int, int] = {}  # socket handle → token id
        self._handles = itertools.count(1)
        self._jobs: set[asyncio.Task] = set()
        self.revocations = 0
        # called with (token id, reason) on every announced revocation: the NATS auth service
        # tells the other federation nodes (federation/nats_auth.py), which revoke unannounced
        self.revocation_listeners: list[Callable[[int, str], None]] = []

    # --- bookkeeping ---------------------------------------------------------------------------
    def open(self, token_id: int | None, closer: Closer, *, label: str = "websocket") -> int | None:
        """Remember an open socket of a token; the handle to `close` it with (None without a token)."""
        if token_id is None:
            return None
        handle = next(self._handles)
        self._by_token.setdefault(token_id, _Open()).sockets[handle] = (label, closer)
        self._where[handle] = token_id
        return handle

    def close(self, handle: int | None) -> None:
        token_id = self._where.pop(handle, None) if handle is not None else None
        if token_id is None:
            return
        entry = self._by_token.get(token_id)
        if entry is not None:
            entry.sockets.pop(handle, None)
            if entry.empty():
                del self._by_token[token_id]

    def track(self, token_id: int | None, task: asyncio.Task | None) -> None:
        if token_id is not None and task is not None:
            self._by_token.setdefault(token_id, _Open()).tasks.add(task)

    def untrack(self, token_id: int | None, task: asyncio.Task | None) -> None:
        entry = self._by_token.get(token_id) if token_id is not None else None
        if entry is not None:
            entry.tasks.discard(task)
            if entry.empty():
                del self._by_token[token_id]

    def token_ids(self) -> list[int]:
        return list(self._by_token)

    def count(self, token_id: int) -> dict[str, int]:
        entry = self._by_token.get(token_id)
        return {"sockets": len(entry.sockets) if entry else 0, "requests": len(entry.tasks) if entry else 0}

    # --- revoking ------------------------------------------------------------------------------
    async def revoke(self, token_id: int, reason: str = "the token was revoked", *, announce: bool = True) -> int:
        """Close every socket of the token (4003 and `reason`) and cancel its requests in flight,
        except the one calling (a token revoking itself still gets its answer); how many there were.
        `announce` tells the revocation listeners (other nodes); what they relay is not announced.

        The close frames go out now; waiting for peers to answer them (a peer that never reads
        would make the revoking request wait) and cancelling what remains happen in the background.
        """
        if announce:
            for listener in self.revocation_listeners:
                listener(token_id, reason)
        entry = self._by_token.get(token_id)
        if entry is None:
            return 0
        self.revocations += 1
        closers = list(entry.sockets.values())
        me = asyncio.current_task()
        tasks = [t for t in entry.tasks if t is not me and not t.done()]
        if closers:
            log.info("token %s revoked: closing %d open sockets", token_id, len(closers))
        job = asyncio.ensure_future(self._end(closers, tasks, reason))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        await asyncio.sleep(0)  # the close frames are written before the caller answers
        return len(closers) + len(tasks)

    async def _end(self, closers: list[tuple[str, Closer]], tasks: list[asyncio.Task], reason: str) -> None:
        results = await asyncio.gather(*(asyncio.wait_for(_quietly(closer, reason), CLOSE_TIMEOUT_S)
                                         for _, closer in closers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.TimeoutError):
                log.debug("closing a socket of a revoked token: %r", result)
        for task in tasks:  # what the closed sockets did not end by themselves
            if not task.done():
                task.cancel()

    async def sweep(self, revoked_among: Callable[[list[int]], set[int]]) -> None:
        """Revoke what another process revoked: `revoked_among(ids)` says which ids are revoked."""
        ids = self.token_ids()
        if not ids:
            return
        for token_id in revoked_among(ids):
            await self.revoke(token_id, "the token was revoked")

    async def run_sweeps(self, revoked_among: Callable[[list[int]], set[int]],
                         interval: float = SWEEP_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep(revoked_among)
            except Exception:  # a locked registry must not end the sweeps for good
                log.exception("checking open sessions for revoked tokens failed")


async def _quietly(closer: Closer, reason: str) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await closer(reason)


def ws_closer(ws) -> Closer:
    """The closer of an aiohttp WebSocketResponse: close 4003 with the reason."""
    async def close(reason: str) -> None:
        await ws.close(code=REVOKED_CLOSE_CODE, message=reason.encode()[:120])
    return close
