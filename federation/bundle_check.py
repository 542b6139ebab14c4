"""Checking an uploaded bundle before anything in it is inflated (POST /v1/models).

A packed bundle (streamql/models/bundle.py) is a zip holding an index, `streamql-bundle.json`,
with the sha256 and size of every file, a signature of the index's exact bytes, and the files.
An upload may be a zip bomb, so nothing is inflated on trust:

1. the end-of-central-directory record: member count and directory size bounded, no zip64;
2. the central directory: safe, unique names; stored or deflated, unencrypted; declared sizes
   bounded per member and in total; compression ratio bounded; members not overlapping;
3. the index and the signature inflated with a hard cap (they are small);
4. the signature checked against the trusted keys (unless unsigned bundles are allowed);
5. the signed index must name exactly the members, with the sizes the directory declares;
6. only then each member is inflated, streamed in 64 KiB pieces with a hard cap at its declared
   size (never trusting the declaration alone), and hashed; only the manifest is kept.

Memory stays at the upload plus a piece, whatever the archive claims; time is bounded by the
declared (capped) sizes. `check_bundle` runs in a worker thread.
"""
from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

from federation.errors import Forbidden
from streamql.errors import ModelError
from streamql.models import signing
from streamql.models.bundle import INDEX_NAME, SIGNATURE_NAME, validate_manifest

__all__ = ["BundleLimits", "CheckedBundle", "check_bundle"]

PIECE = 64 << 10
MAX_INDEX_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 64 << 10
MAX_MANIFEST_BYTES = 1 << 20
MAX_NAME_CHARS = 512
RATIO_FLOOR = 1 << 20  # members inflating to less than this are not held to the ratio
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_CD_ENTRY_BUDGET = 2048  # bytes of central directory allowed per member (header, name, extra, comment)


@dataclass(frozen=True)
class BundleLimits:
    max_members: int = 1000
    max_unpacked_bytes: int = 256 << 20
    max_ratio: float = 100.0


@dataclass(frozen=True)
class CheckedBundle:
    """What the federation keeps of a checked upload: the manifest and who signed it."""

    manifest: dict
    index_sha256: str
    signed_by: list[str]
    verified_by: str | None

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])


def check_bundle(data: bytes, trusted_keys: list, *, allow_unsigned: bool = False,
                 limits: BundleLimits = BundleLimits()) -> CheckedBundle:
    """The checked bundle, or ModelError saying what is wrong (see the module docstring).

    `trusted_keys` are public keys (or paths / PEM); with none, `allow_unsigned` must be set.
    """
    _check_end_record(data, limits)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelError(f"not a bundle file: it is not a readable zip archive ({exc})") from None
    with archive:
        members = _members(archive, data, limits)
        if INDEX_NAME not in members:
            raise ModelError(f"not a packed bundle: it has no {INDEX_NAME}")
        if not trusted_keys and not allow_unsigned:  # what is no bundle at all was a 400 before this
            raise Forbidden("this federation accepts only bundles signed by a trusted key, and none is "
                            "configured (start it with --trusted-key PUB)")
        index = _inflate(archive, members[INDEX_NAME], MAX_INDEX_BYTES)
        signatures = _signatures(_inflate(archive, members[SIGNATURE_NAME], MAX_SIGNATURE_BYTES)
                                 if SIGNATURE_NAME in members else None)
        keys = signing.load_public_keys(trusted_keys) if trusted_keys else []
        verified = _trusted_signer(index, signatures, keys) if keys or not allow_unsigned else None
        listed = _index_entries(index, members, limits)
        manifest_bytes = None
        for name, entry in listed.items():
            keep = name == "manifest.json"
            digest, content = _hash_member(archive, members[name], entry["size"], keep)
            if digest != entry["sha256"]:
                raise ModelError(f"the bundle was tampered with: the hash of '{name}' does not match its index")
            if keep:
                manifest_bytes = content
    manifest = _manifest(manifest_bytes, listed)
    return CheckedBundle(manifest, hashlib.sha256(index).hexdigest(),
                         [str(s.get("key_id")) for s in signatures], verified)


# --- the archive's structure, before anything is inflated -----------------------------------
def _check_end_record(data: bytes, limits: BundleLimits) -> None:
    """Member count and directory size from the end record: zipfile would build an object per
    directory entry whatever the count says, so a directory too large is refused before."""
    at = data.rfind(_EOCD_SIGNATURE, max(0, len(data) - _EOCD.size - 0xFFFF))
    if at < 0 or len(data) - at < _EOCD.size:
        raise ModelError("not a bundle file: it is not a zip archive (pack a bundle directory with"
                         " 'streamql model pack')")
    _, disk, cd_disk, _, entries, cd_size, cd_offset, _ = _EOCD.unpack_from(data, at)
    if at >= 20 and data[at - 20:at - 16] == _ZIP64_LOCATOR or 0xFFFF in (entries, disk, cd_disk) \
            or 0xFFFFFFFF in (cd_size, cd_offset):
        raise ModelError("the bundle is a zip64 archive; bundles larger than 4 GiB or with more than 65535 "
                         "files are not accepted")
    if disk or cd_disk:
        raise ModelError("the bundle is a multi-volume zip archive; it is not accepted")
    if entries > limits.max_members:
        raise ModelError(f"the bundle holds {entries} files; at most {limits.max_members} are accepted")
    if cd_size > max(limits.max_members, 1) * _CD_ENTRY_BUDGET or cd_offset + cd_size > at:
        raise ModelError("the bundle's zip directory is larger than its files can need; refusing it")


def _safe_name(name: str) -> bool:
    if not name or len(name) > MAX_NAME_CHARS or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    return all(p not in ("", ".", "..") for p in name.split("/"))


def _members(archive: zipfile.ZipFile, data: bytes, limits: BundleLimits) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise ModelError(f"the bundle holds {len(infos)} files; at most {limits.max_members} are accepted")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if name.endswith("/"):
            continue  # a directory entry holds nothing
        if not _safe_name(name):
            raise ModelError(f"the bundle holds an unsafe path '{name[:100]}'")
        if name in members:
            raise ModelError(f"the bundle holds '{name}' twice")
        if info.flag_bits & 0x1:
            raise ModelError(f"'{name}' in the bundle is encrypted; bundles are not")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelError(f"'{name}' in the bundle uses compression method {info.compress_type}; "
                             "only stored and deflated files are accepted")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise ModelError(f"the bundle is damaged: stored file '{name}' declares two sizes")
        if info.file_size > limits.max_unpacked_bytes:
            raise ModelError(f"'{name}' in the bundle unpacks to {info.file_size} bytes; at most "
                             f"{limits.max_unpacked_bytes} are accepted")
        total += info.file_size
        if total > limits.max_unpacked_bytes:
            raise ModelError(f"the bundle unpacks to more than {limits.max_unpacked_bytes} bytes; refusing it")
        if info.file_size > RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ModelError(f"'{name}' in the bundle is compressed {info.file_size / max(info.compress_size, 1):.0f}"
                             f" to 1; more than {limits.max_ratio:g} to 1 is refused as a zip bomb")
        members[name] = info
    _check_layout(members, data)
    return members


def _check_layout(members: dict[str, zipfile.ZipInfo], data: bytes) -> None:
    """Members lie one after another before the directory: no two share compressed bytes (the
    overlapping-files bomb makes a kilobyte of deflate count as thousands of files)."""
    end_of_previous = 0
    for info in sorted(members.values(), key=lambda i: i.header_offset):
        start = info.header_offset
        if start < end_of_previous:
            raise ModelError(f"the bundle's files overlap ('{info.filename}'); refusing it as a zip bomb")
        end_of_previous = start + 30 + len(info.orig_filename.encode("utf-8", "surrogateescape")) + info.compress_size
        if end_of_previous > len(data):
            raise ModelError(f"the bundle is damaged: '{info.filename}' extends past the end of the file")


# --- inflating, always capped ----------------------------------------------------------------
def _pieces(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int):
    """The member's bytes in pieces; ModelError past `cap` bytes or when it is damaged."""
    size = 0
    try:
        with archive.open(info) as member:
            while True:
                piece = member.read(PIECE)
                if not piece:
                    break
                size += len(piece)
                if size > cap:
                    raise ModelError(f"'{info.filename}' in the bundle inflates to more than it declares; "
                                     "refusing it as a zip bomb")
                yield piece
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ModelError(f"the bundle is damaged: '{info.filename}' cannot be read ({exc})") from None
    if size != info.file_size:
        raise ModelError(f"the bundle is damaged: '{info.filename}' has the wrong size")


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    if info.file_size > cap:
        raise ModelError(f"the bundle's {info.filename} declares {info.file_size} bytes; at most {cap} are accepted")
    return b"".join(_pieces(archive, info, info.file_size))


def _hash_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, keep: bool) -> tuple[str, bytes | None]:
    digest = hashlib.sha256()
    kept = [] if keep else None
    for piece in _pieces(archive, info, size):
        digest.update(piece)
        if kept is not None:
            kept.append(piece)
    return digest.hexdigest(), b"".join(kept) if kept is not None else None


# --- trust and the index -----------------------------------------------------------------------
def _signatures(raw: bytes | None) -> list[dict]:
    if raw is None:
        return []
    try:
        found = json.loads(raw.decode("utf-8"))["signatures"]
        if not isinstance(found, list) or not all(isinstance(s, dict) for s in found) or len(found) > 64:
            raise ValueError
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        raise ModelError(f"the bundle's {SIGNATURE_NAME} is damaged") from None
    return found


def _trusted_signer(index: bytes, signatures: list[dict], keys: list) -> str:
    """The id of a trusted key with a valid signature of the index (ModelError otherwise)."""
    if not signatures:
        raise ModelError("the bundle is not signed, and only signed bundles are accepted here")
    by_id = {signing.key_id(k): k for k in keys}
    named = [s for s in signatures if s.get("key_id") in by_id]
    for record in named:
        if signing.verify_bytes(index, record, by_id[record["key_id"]]):
            return str(record["key_id"])
    if named:
        raise ModelError("the bundle has a signature that does not match its content: it was tampered with "
                         "after signing")
    for record in signatures[:8]:  # a key id is only a hint: a forged one must not pass
        for key in keys:
            if signing.verify_bytes(index, record, key):
                return signing.key_id(key)
    ids = ", ".join(str(s.get("key_id"))[:32] for s in signatures[:8])
    raise ModelError(f"the bundle is signed by key {ids}, which is not trusted here")


def _index_entries(index: bytes, members: dict[str, zipfile.ZipInfo], limits: BundleLimits) -> dict[str, dict]:
    """The index's files, which must be exactly the members with the sizes the directory declares."""
    try:
        parsed = json.loads(index.decode("utf-8"))
        listed = parsed["files"]
        if parsed.get("format") != "streamql-bundle" or not isinstance(listed, dict):
            raise ValueError("not a bundle index")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise ModelError(f"the bundle's {INDEX_NAME} is damaged") from None
    files = set(members) - {INDEX_NAME, SIGNATURE_NAME}
    extra, missing = sorted(files - set(listed)), sorted(set(listed) - files)
    if extra:
        raise ModelError(f"the bundle was tampered with: '{extra[0]}' is not in its index")
    if missing:
        raise ModelError(f"the bundle was tampered with: '{missing[0]}' is missing")
    total = 0
    for name, entry in listed.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or not isinstance(entry.get("sha256"), str):
            raise ModelError(f"the bundle's {INDEX_NAME} is damaged at '{name}'")
        if size != members[name].file_size:
            raise ModelError(f"the bundle was tampered with: '{name}' is {members[name].file_size} bytes in the "
                             f"archive and {size} in its index")
        total += size
    if total > limits.max_unpacked_bytes:
        raise ModelError(f"the bundle unpacks to more than {limits.max_unpacked_bytes} bytes; refusing it")
    return listed


def _manifest(raw: bytes | None, listed: dict[str, Any]) -> dict:
    if raw is None:
        raise ModelError("the bundle has no manifest.json")
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ModelError(f"the bundle's manifest.json is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelError(f"manifest.json is not valid JSON ({exc})") from None
    return validate_manifest(manifest, dict.fromkeys(listed, b""))
