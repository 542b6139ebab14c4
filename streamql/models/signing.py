"""Ed25519 keys and signatures for bundles (through `cryptography`).

A key pair is two PEM files: `PREFIX.key` (PKCS#8 private key, file mode 0600) and `PREFIX.pub`
(SubjectPublicKeyInfo). A key's id is the first 16 hex digits of the sha256 of its raw 32-byte
public key. What is signed is the bundle's index (the exact bytes of `streamql-bundle.json`,
which holds the sha256 of every file), so one signature covers every file.
"""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any, Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from streamql.errors import ModelError

__all__ = ["key_id", "keygen", "load_private_key", "load_public_key", "load_public_keys",
           "sign_bytes", "verify_bytes"]


def key_id(public_key) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(prefix: str | os.PathLike, overwrite: bool = False) -> tuple[str, str]:
    """Write a new Ed25519 pair to PREFIX.key (0600) and PREFIX.pub; returns both paths."""
    prefix = os.fspath(prefix)
    priv_path, pub_path = prefix + ".key", prefix + ".pub"
    if not overwrite:
        for path in (priv_path, pub_path):
            if os.path.exists(path):
                raise ModelError(f"'{path}' already exists; refusing to overwrite a key")
    parent = os.path.dirname(os.path.abspath(priv_path))
    os.makedirs(parent, exist_ok=True)
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if overwrite else os.O_EXCL)
    fd = os.open(priv_path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # umask or an existing file cannot loosen it
        os.write(fd, pem)
    finally:
        os.close(fd)
    pub = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    Path(pub_path).write_bytes(pub)
    return priv_path, pub_path


def _read(source: Any, what: str) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode()
    try:
        return Path(os.fspath(source)).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"no {what} file '{os.fspath(source)}'") from None
    except (OSError, TypeError) as exc:
        raise ModelError(f"cannot read the {what} '{source}' ({exc})") from None


def load_private_key(source: Any):
    if isinstance(source, ed25519.Ed25519PrivateKey):
        return source
    data = _read(source, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"not a usable private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ModelError("the private key is not an Ed25519 key")
    return key


def load_public_key(source: Any):
    """An Ed25519 public key from a key object, a PEM file path, PEM text or 32 raw bytes."""
    if isinstance(source, ed25519.Ed25519PublicKey):
        return source
    if isinstance(source, ed25519.Ed25519PrivateKey):
        return source.public_key()
    if isinstance(source, (bytes, bytearray)) and len(source) == 32:
        return ed25519.Ed25519PublicKey.from_public_bytes(bytes(source))
    data = _read(source, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, Exception) as exc:  # noqa: BLE001 - any parse failure is the same to the user
        if b"PRIVATE KEY" in data:
            raise ModelError("that is a private key; verification takes the public key (.pub)") from None
        raise ModelError(f"not a usable public key: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ModelError("the public key is not an Ed25519 key")
    return key


def load_public_keys(sources: Any) -> list:
    if sources is None:
        return []
    if isinstance(sources, (str, bytes, bytearray, os.PathLike)) or not isinstance(sources, Iterable):
        sources = [sources]
    return [load_public_key(s) for s in sources]


def sign_bytes(data: bytes, private_key) -> dict:
    """A signature record over `data`: algorithm, key id, base64 signature."""
    key = load_private_key(private_key)
    signature = key.sign(data)
    return {"algorithm": "ed25519", "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(signature).decode("ascii")}


def verify_bytes(data: bytes, record: dict, public_key) -> bool:
    """Whether `record` is a valid Ed25519 signature of `data` by `public_key`."""
    if not isinstance(record, dict) or record.get("algorithm") != "ed25519":
        return False
    try:
        signature = base64.b64decode(str(record.get("signature", "")), validate=True)
        public_key.verify(signature, data)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False
