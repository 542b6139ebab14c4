"""Errors of the federation service.

They are `QueryError`s so that one middleware renders every domain error the same way
(`{"error": {"kind", "message", "line", "column"}}`); `http_status` says which 4xx it becomes.
"""
from __future__ import annotations

from streamql.errors import QueryError


class FederationError(QueryError):
    """A request the federation refuses; never a bug of the service itself."""

    kind = "FederationError"
    http_status = 400


class BadRequest(FederationError):
    kind = "BadRequest"
    http_status = 400


class Unauthorized(FederationError):
    kind = "Unauthorized"
    http_status = 401


class Forbidden(FederationError):
    kind = "Forbidden"
    http_status = 403


class NotFound(FederationError):
    kind = "NotFound"
    http_status = 404


class Conflict(FederationError):
    kind = "Conflict"
    http_status = 409


class PayloadTooLarge(FederationError):
    kind = "PayloadTooLarge"
    http_status = 413


class NotImplementedYet(FederationError):
    """A documented route whose handler has not been written yet."""

    kind = "NotImplemented"
    http_status = 501


class RequestTimeout(FederationError):
    """A request body that did not arrive in time (the connection is closed after the answer)."""

    kind = "RequestTimeout"
    http_status = 408


class TooManyRequests(FederationError):
    """Over a rate, concurrency or capacity limit; `retry_after` (seconds) becomes Retry-After."""

    kind = "TooManyRequests"
    http_status = 429

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after + 0.999))


class Busy(FederationError):
    """Every worker the federation runs statements in is taken: try again shortly."""

    kind = "Busy"
    http_status = 503

    def __init__(self, message: str, retry_after: float = 2.0):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after + 0.999))
