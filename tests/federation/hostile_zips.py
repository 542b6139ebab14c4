"""Hostile bundle archives for the upload tests, written byte by byte (zipfile would refuse to).

A deflate stream of zeros made of identical full-flush blocks costs a kilobyte per inflated MiB
and takes milliseconds to build, so a 1 MiB upload that inflates to a GiB is cheap to make.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zlib

from streamql.models import signing
from streamql.models.bundle import INDEX_NAME, SIGNATURE_NAME

MIB = 1 << 20


def zeros_deflated(mib: int) -> bytes:
    """A raw deflate stream inflating to `mib` MiB of zeros (about 1 KiB per MiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * mib + b"\x03\x00"  # an empty final block ends the stream


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def write_zip(members: list[dict]) -> bytes:
    """Members {name, data (as stored), size (declared inflated), method 0|8, crc?, flags?, offset_of?}:
    `offset_of` makes a member's directory entry point at another member's local header (the
    overlapping-files bomb)."""
    out, central, offsets = bytearray(), bytearray(), {}
    for m in members:
        name = m["name"].encode()
        crc = m.get("crc", 0)
        if "offset_of" in m:
            offset = offsets[m["offset_of"]]
        else:
            offset = len(out)
            out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, m.get("flags", 0), m["method"], 0, 0x21, crc,
                               len(m["data"]),
                               m["size"], len(name), 0) + name + m["data"]
        offsets[m["name"]] = offset
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, m.get("flags", 0), m["method"], 0, 0x21, crc,
                               len(m["data"]), m["size"], len(name), 0, 0, 0, 0, 0, offset) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def stored(name: str, data: bytes) -> dict:
    return {"name": name, "data": data, "size": len(data), "method": 0, "crc": zlib.crc32(data)}


def index_for(files: dict[str, tuple[int, str]]) -> bytes:
    """A bundle index naming files {path: (declared size, sha256)}."""
    entries = {p: {"sha256": digest, "size": size} for p, (size, digest) in sorted(files.items())}
    return (json.dumps({"format": "streamql-bundle", "format_version": 1, "name": "bomb", "version": "1.0.0",
                        "files": entries}, sort_keys=True, separators=(",", ":")) + "\n").encode()


def signed_bomb(private_key, *, inflated_mib: int = 1024, declared: int | None = None) -> bytes:
    """A bundle whose one data file inflates to `inflated_mib` MiB, with an index (and, when
    `private_key` is given, a signature) declaring `declared` bytes for it (default: the truth)."""
    bomb = zeros_deflated(inflated_mib)
    size = inflated_mib * MIB if declared is None else declared
    manifest = json.dumps({"format_version": 1, "name": "bomb", "version": "1.0.0", "models": []}).encode()
    index = index_for({"manifest.json": (len(manifest), hashlib.sha256(manifest).hexdigest()),
                       "data/zeros.bin": (size, "0" * 64)})
    members = [stored(INDEX_NAME, index), stored("manifest.json", manifest),
               {"name": "data/zeros.bin", "data": bomb, "size": size, "method": 8}]
    if private_key is not None:
        signature = json.dumps({"signatures": [signing.sign_bytes(index, private_key)]}).encode()
        members.append(stored(SIGNATURE_NAME, signature))
    return write_zip(members)


def overlapping_bomb(copies: int = 2000, mib: int = 1) -> bytes:
    """`copies` directory entries sharing one member's compressed bytes (each inflating to `mib` MiB)."""
    data = zeros_deflated(mib)
    members = [{"name": "f0", "data": data, "size": mib * MIB, "method": 8}]
    members += [{"name": f"f{i}", "data": data, "size": mib * MIB, "method": 8, "offset_of": "f0"}
                for i in range(1, copies)]
    return write_zip(members)
