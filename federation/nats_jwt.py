"""NATS JWTs (v2, alg ed25519-nkey) built and checked by hand: the auth callout's wire format.

A JWT is `base64url(header).base64url(claims).base64url(signature)` without padding; the header is
{"typ":"JWT","alg":"ed25519-nkey"}; the signature is the issuer nkey's ed25519 signature of the
first two parts; `jti` is base32(sha512/256(the claims without jti)). The server signs its
authorization requests with its own server nkey (N...), the callout answers with a response signed
by the issuer account key (A...) that carries a user JWT signed by the same key.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from typing import Any

import nkeys
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_PUBLIC_PREFIXES = {"A": nkeys.PREFIX_BYTE_ACCOUNT, "N": nkeys.PREFIX_BYTE_SERVER, "U": nkeys.PREFIX_BYTE_USER,
                    "O": nkeys.PREFIX_BYTE_OPERATOR}


class JwtError(ValueError):
    """A JWT that is malformed, not signed by its issuer, or not what was expected."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_seed(kind: str = "account") -> str:
    """A fresh nkey seed (S...) for an account ("account") or a user ("user")."""
    prefix = {"account": nkeys.PREFIX_BYTE_ACCOUNT, "user": nkeys.PREFIX_BYTE_USER}[kind]
    return nkeys.encode_seed(os.urandom(32), prefix).decode()


def keypair(seed: str) -> nkeys.KeyPair:
    return nkeys.from_seed(seed.encode())


def public_key(seed: str) -> str:
    return keypair(seed).public_key.decode()


def _jti(claims: dict) -> str:
    digest = hashlib.new("sha512_256", json.dumps(claims, separators=(",", ":")).encode()).digest()
    return base64.b32encode(digest).rstrip(b"=").decode()


def encode(claims: dict[str, Any], issuer: nkeys.KeyPair) -> str:
    """Sign claims (iss and iat are set here; jti too) with the issuer's nkey."""
    body = dict(claims, iss=issuer.public_key.decode(), iat=int(time.time()))
    body.pop("jti", None)
    body = {"jti": _jti(body), **body}
    signing_input = _b64(json.dumps(HEADER, separators=(",", ":")).encode()) + "." + \
        _b64(json.dumps(body, separators=(",", ":")).encode())
    return signing_input + "." + _b64(issuer.sign(signing_input.encode()))


def _verify_key(public: str) -> VerifyKey:
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (ValueError, TypeError) as error:
        raise JwtError(f"not an nkey: {public!r}") from error
    if len(raw) != 35 or raw[0] != _PUBLIC_PREFIXES.get(public[:1]):
        raise JwtError(f"not a public nkey: {public!r}")
    if int.from_bytes(raw[33:], "little") != nkeys.crc16(bytearray(raw[:33])):
        raise JwtError(f"nkey checksum mismatch: {public!r}")
    return VerifyKey(raw[1:33])


def expires_at(token: str) -> float | None:
    """A JWT's `exp` read without checking its signature (None when it has none or is malformed):
    the callout drops requests the server has already given up on before spending anything on them."""
    try:
        claims = json.loads(_unb64(token.split(".", 2)[1]))
    except (ValueError, IndexError, TypeError):
        return None
    expires = claims.get("exp") if isinstance(claims, dict) else None
    return float(expires) if isinstance(expires, (int, float)) else None


def decode(token: str, *, issuer_prefix: str | None = None) -> dict[str, Any]:
    """The claims of a JWT whose signature matches its own `iss` (of kind issuer_prefix: "N" a
    server, "A" an account); JwtError otherwise."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError("a JWT has three dot-separated parts")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except ValueError as error:
        raise JwtError(f"malformed JWT: {error}") from error
    if not isinstance(header, dict) or header.get("alg") != HEADER["alg"] or not isinstance(claims, dict):
        raise JwtError("not an ed25519-nkey JWT")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or (issuer_prefix and not issuer.startswith(issuer_prefix)):
        raise JwtError(f"unexpected issuer {issuer!r}")
    try:
        _verify_key(issuer).verify(f"{parts[0]}.{parts[1]}".encode(), signature)
    except BadSignatureError as error:
        raise JwtError("the JWT's signature does not match its issuer") from error
    expires = claims.get("exp")
    if isinstance(expires, (int, float)) and expires < time.time():
        raise JwtError("the JWT has expired")
    return claims
