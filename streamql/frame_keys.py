"""The leading small fields of an encoded frame, read without decoding the rest: a carrier that
routes frames (the NATS transport: rows by `qid`, acks by `did`, records by `seq`) needs only
these, and a rows or deploy frame may hold megabytes it need not unpack to route.

    peek(data) → {"t": "rows", "qid": "q1-7", ...}   (keys it could read; {} for garbage)
"""
from __future__ import annotations

from typing import Any

import msgpack

ROUTING_KEYS = frozenset({"v", "t", "qid", "did", "seq", "ref", "model", "version", "sha256", "size", "chunk",
                          "chunks"})


def peek(data: bytes | bytearray | memoryview, keys: frozenset = ROUTING_KEYS, stop_at: str | None = None) -> dict:
    """The routing fields of a frame (wire.encode writes v and t first, then the fields in order)."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) + 16)
    unpacker.feed(data)
    out: dict[str, Any] = {}
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == stop_at:
                break
            if key in keys:
                out[key] = unpacker.unpack()
            else:
                unpacker.skip()
    except Exception:  # noqa: BLE001 - hostile or truncated bytes: what was read so far
        pass
    return out
