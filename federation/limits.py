"""Fair sharing of the federation: per-token request limits, upload slots, token buckets.

- **Requests** (`limits_middleware`): each token has a token bucket (`rate` requests per second,
  up to `burst` at once) and at most `concurrent` requests in flight — an open WebSocket counts
  as one for its lifetime, a streaming `POST /v1/query` until its last row. The numbers come
  from the token's role (`FederationConfig.rate_limits`: read, deploy, admin, device). Over a
  limit: `429 TooManyRequests` with `Retry-After`. The middleware also tracks each request's
  task in `Sessions`, so revoking the token cancels it.
- **Uploads** (`UploadSlots`): at most `max_uploads` bundles are read and checked at once;
  others get 429 at once rather than queueing up their bodies in memory.
- `TokenBucket` is shared with the per-device publish quotas (federation/publish_quota.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from federation.auth import Principal
from federation.config import RoleLimits
from federation.errors import TooManyRequests
from federation.keys import CONFIG, LIMITER, METRICS, PRINCIPAL, SESSIONS, UPLOADS

__all__ = ["TokenBucket", "RequestLimiter", "UploadSlots", "limits_middleware"]


class TokenBucket:
    """`rate` tokens a second, holding at most `capacity`; starts full.

    >>> b = TokenBucket(rate=10, capacity=5, clock=lambda: 0.0)
    >>> b.take(5), b.take(1), b.wait_for(1)
    (True, False, 0.1)
    """

    __slots__ = ("rate", "capacity", "tokens", "stamp", "clock")

    def __init__(self, rate: float, capacity: float, clock=time.monotonic):
        self.rate, self.capacity, self.clock = float(rate), float(capacity), clock
        self.tokens = float(capacity)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: float = 1.0) -> bool:
        """Take `amount` tokens when there are that many; False (nothing taken) otherwise."""
        self._refill()
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def wait_for(self, amount: float = 1.0) -> float:
        """Seconds until `amount` tokens are there (0 when they are now)."""
        self._refill()
        missing = min(amount, self.capacity) - self.tokens
        return round(max(0.0, missing / self.rate), 6)

    @property
    def full(self) -> bool:
        self._refill()
        return self.tokens >= self.capacity


@dataclass
class _TokenState:
    bucket: TokenBucket
    limits: RoleLimits
    running: int = 0


class RequestLimiter:
    """Per-token buckets and in-flight counts (see the module docstring)."""

    MAX_IDLE_STATES = 10_000  # forgotten when idle and refilled, past this many tokens

    def __init__(self, limits: dict[str, RoleLimits], clock=time.monotonic):
        self.limits, self.clock = limits, clock
        self._states: dict[int, _TokenState] = {}
        self.refused = {"rate": 0, "concurrency": 0}

    def _state(self, caller: Principal) -> _TokenState:
        state = self._states.get(caller.token_id)
        if state is None:
            if len(self._states) >= self.MAX_IDLE_STATES:
                self._forget_idle()
            limits = self.limits[caller.role.label]
            state = _TokenState(TokenBucket(limits.rate, limits.burst, self.clock), limits)
            self._states[caller.token_id] = state
        return state

    def _forget_idle(self) -> None:
        for token_id in [t for t, s in self._states.items() if not s.running and s.bucket.full]:
            del self._states[token_id]

    @contextlib.contextmanager
    def admit(self, caller: Principal) -> Iterator[None]:
        """Hold one of the caller's request slots for the block; TooManyRequests when over a limit."""
        state = self._state(caller)
        if state.running >= state.limits.concurrent:
            self.refused["concurrency"] += 1
            raise TooManyRequests(f"this token has {state.running} requests in flight, the most a "
                                  f"{caller.role.label} token may have; retry when one has finished", 1.0)
        if not state.bucket.take():
            self.refused["rate"] += 1
            raise TooManyRequests(f"this token sent more than {state.limits.rate:g} requests a second "
                                  f"(bursts of {state.limits.burst}); slow down", state.bucket.wait_for())
        state.running += 1
        try:
            yield
        finally:
            state.running -= 1


class UploadSlots:
    """At most `size` uploads at once; `acquire()` is a context manager refusing with 429 when full."""

    def __init__(self, size: int):
        self.size, self.busy, self.refused = size, 0, 0

    @contextlib.contextmanager
    def acquire(self) -> Iterator[None]:
        if self.busy >= self.size:
            self.refused += 1
            raise TooManyRequests(f"{self.busy} bundle uploads are being checked, the most at once; retry shortly",
                                  2.0)
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1


@web.middleware
async def limits_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Per-token rate and concurrency (after auth_middleware, which sets the principal)."""
    caller = request.get(PRINCIPAL)
    if caller is None or caller.token_id is None:
        return await handler(request)
    limiter = request.app[LIMITER]
    with limiter.admit(caller):
        sessions = request.app[SESSIONS]
        task = asyncio.current_task()
        sessions.track(caller.token_id, task)
        try:
            return await handler(request)
        finally:
            sessions.untrack(caller.token_id, task)


def setup_limits(app: web.Application) -> None:
    """The limiter and its metrics on an app (called by create_app)."""
    limiter = RequestLimiter(app[CONFIG].rate_limits)
    app[LIMITER] = limiter
    uploads = UploadSlots(app[CONFIG].max_uploads)
    app[UPLOADS] = uploads
    app[METRICS].callback("streamql_http_limited_total", "Requests refused with 429, by the limit they were over.",
                          lambda: {**limiter.refused, "uploads": uploads.refused}, kind="counter", labels=("limit",))
