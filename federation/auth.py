"""Tokens, roles and principals; provisioning of devices.

A token is `sqf_` + `secrets.token_urlsafe(32)`; only its sha256 is stored. Roles are ordered
read < deploy < admin; a device token belongs to one device and only acts as that device (it can
open the edge WebSocket, nothing else). The first start of a federation creates an admin token,
written once to `admin.token` (mode 0600) in the data directory.
"""
from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.errors import BadRequest, Forbidden, Unauthorized
from federation.registry import Device, Registry, TokenRecord

TOKEN_PREFIX = "sqf_"
ADMIN_TOKEN_FILE = "admin.token"
_TOKEN_SHAPE = re.compile(r"sqf_[A-Za-z0-9_-]{20,100}")
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_KEY = re.compile(r"[^\s\x00-\x1f]{1,128}")


class Role(enum.IntEnum):
    """What a token may do; higher includes lower. DEVICE is outside the order (see Principal)."""

    DEVICE = 0
    READ = 1
    DEPLOY = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> "Role":
        try:
            return cls[name.upper()]
        except (KeyError, AttributeError):
            raise BadRequest(f"unknown role {name!r}: use read, deploy or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a role, or a device (role DEVICE and its id)."""

    role: Role
    device_id: str | None = None
    token_id: int | None = None

    @property
    def is_device(self) -> bool:
        return self.role is Role.DEVICE

    def allows(self, required: Role) -> bool:
        """Whether this principal may use a route needing `required`; devices only device routes."""
        if required is Role.DEVICE:
            return self.is_device
        return not self.is_device and self.role >= required

    def may_act_as(self, device_id: str) -> bool:
        """A device token speaks only for its own device (compared in constant time)."""
        return self.is_device and self.device_id is not None and hmac.compare_digest(
            self.device_id.encode(), str(device_id).encode())

    @property
    def name(self) -> str:
        return f"device:{self.device_id}" if self.is_device else f"{self.role.label}#{self.token_id}"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(registry: Registry, token: str | None) -> Principal:
    """The principal of a token; Unauthorized when it is missing, malformed, unknown or revoked."""
    digest = token_digest(token)
    return principal_of(registry.token_by_hash(digest), digest)


def token_digest(token: str | None) -> str:
    """The stored hash of a well-formed token; Unauthorized for a missing or malformed one."""
    if not token:
        raise Unauthorized("this request needs an Authorization: Bearer <token> header")
    if not _TOKEN_SHAPE.fullmatch(token):
        raise Unauthorized("the token is not a StreamQL federation token")
    return hash_token(token)


def principal_of(found: tuple[TokenRecord, str] | None, digest: str) -> Principal:
    """The principal of a token looked up by its hash (`registry.token_by_hash(digest)`, or one row
    of a batch lookup); Unauthorized when unknown or revoked."""
    # the lookup is by hash, so timing reveals nothing of the token; compare anyway before trusting
    if found is None or not hmac.compare_digest(found[1], digest):
        raise Unauthorized("unknown token")
    record = found[0]
    if record.revoked is not None:
        raise Unauthorized("the token has been revoked")
    return Principal(Role[record.role.upper()], record.device_id, record.id)


def require(principal: Principal, required: Role) -> None:
    if not principal.allows(required):
        if principal.is_device:
            raise Forbidden("a device token can only be used by its device's edge connection")
        raise Forbidden(f"this needs a {required.label} token; this one is {principal.role.label}")


def create_token(registry: Registry, role: Role | str, *, label: str = "", device_id: str | None = None) -> tuple[TokenRecord, str]:
    """A new token (returned once, never stored) for a role, or for one device."""
    role = Role.parse(role) if isinstance(role, str) else role
    if (role is Role.DEVICE) != (device_id is not None):
        raise BadRequest("a device token needs a device id, and only a device token has one")
    token = new_token()
    record = registry.add_token(hash_token(token), role.label, label=label, device_id=device_id)
    return record, token


@dataclass(frozen=True, slots=True)
class Provisioned:
    device: Device
    token: str


def _check_attributes(what: str, values: Any) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise BadRequest(f"{what} must be an object of key → value")
    for key, value in values.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise BadRequest(f"{what} key {key!r} must be 1 to 128 characters without spaces")
        if isinstance(value, float) and value != value:
            raise BadRequest(f"{what} value of {key!r} is not a number")
    return dict(values)


def check_device_id(device_id: Any) -> str:
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise BadRequest("a device id is 1 to 128 letters, digits or . _ : @ - and starts with a letter or digit")
    return device_id


def provision(registry: Registry, device_id: Any, metadata: Any = None, capabilities: Any = None) -> Provisioned:
    """Register a device and create its token (returned only here, once)."""
    device_id = check_device_id(device_id)
    metadata = _check_attributes("metadata", metadata)
    capabilities = _check_attributes("capabilities", capabilities)
    token = new_token()
    device = registry.add_device(device_id, metadata, capabilities, token_hash=hash_token(token))
    return Provisioned(device, token)


def provision_many(registry: Registry, devices: Iterable[tuple[Any, Any, Any]]) -> list[tuple[str, str]]:
    """Register many (id, metadata, capabilities) in one transaction; [(id, token)] in order."""
    rows, out = [], []
    for device_id, metadata, capabilities in devices:
        device_id = check_device_id(device_id)
        token = new_token()
        rows.append((device_id, _check_attributes("metadata", metadata),
                     _check_attributes("capabilities", capabilities), hash_token(token)))
        out.append((device_id, token))
    registry.add_devices(rows)
    return out


def bootstrap_admin(registry: Registry, data_dir: str | os.PathLike) -> str | None:
    """At first start, create an admin token and write it to `admin.token` (0600); else None."""
    if registry.has_active_token("admin"):
        return None
    path = Path(data_dir) / ADMIN_TOKEN_FILE
    record, token = create_token(registry, Role.ADMIN, label="bootstrap")
    try:
        with contextlib.suppress(FileNotFoundError):  # a stale file from an earlier registry
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    except BaseException:
        registry.revoke_token(record.id)
        raise
    return token

