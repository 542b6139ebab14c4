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
