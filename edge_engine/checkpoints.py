"""Checkpoints of autostart queries in the edge store, and what a restart resumes from them.

A running autostart query's state (its operators' snapshots and its sources' positions:
streamql.checkpoint) is saved into `<store>/checkpoints/<query>.ckpt`, one file per query,
replaced atomically (write a temporary file, fsync when the buffer does, rename): a kill leaves
the old checkpoint or the new one. It is saved every `interval_s`, after every record the query
emits (at its next cut), and when the daemon stops it gracefully.

A checkpoint is keyed by bundle, version, the query's file and position, its text's hash and the
snapshot format (`checkpoint_key`): after a deployment changes any of them, the query starts
fresh and its health says why (`checkpoint: "fresh: …"`).

**Exactly once.** Each record a query appends to the store-and-forward buffer carries, in the
buffer only, how many rows the query had emitted with it (`progress`). The checkpoint holds the
count at its cut and the buffer sequence of the query's last record then. After a kill, the
rows emitted after the checkpoint (found in records after that sequence, still in the buffer's
last segments even when acknowledged) are the first the restored query produces again: they are
counted, not emitted again. With a replayed source (CSV) those are the very same rows, so the
federation sees every window once and in order; with a live sensor the restored query's first
windows stand for those already published, and the windows that follow are whole.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from streamql import checkpoint
from streamql.checkpoint import CheckpointMismatch

from .store import atomic_write

__all__ = ["CheckpointStore", "checkpoint_key", "source_positions", "emitted_since"]

SUFFIX = ".ckpt"


def checkpoint_key(bundle: str, version: str, path: str, index: int, text: str) -> str:
    """What a checkpoint belongs to: a query of a bundle version (its text hashed)."""
    return checkpoint.query_key(text, bundle, version, path, str(index))


class CheckpointStore:
    """One file per autostart query under `<store>/checkpoints`, each replaced atomically."""

    def __init__(self, root: str | Path, *, sync: bool = False, log: logging.Logger | None = None):
        self.directory = Path(root) / "checkpoints"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self.log = log or logging.getLogger("streamql.edge.checkpoints")
        self.saved = 0
        for stale in self.directory.glob(".*.tmp"):   # a write cut by a crash: never renamed
            stale.unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:24]
        return self.directory / f"{digest}{SUFFIX}"

    def load(self, name: str) -> bytes | None:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            return None

    def save(self, name: str, data: bytes) -> None:
        atomic_write(self.path(name), data, sync=self.sync)
        self.saved += 1

    def discard(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def snapshot(self, name: str, key: str) -> dict | None:
        """The decoded checkpoint of query `name` when it is one of `key`, else None."""
        data = self.load(name)
        if data is None:
            return None
        try:
            return checkpoint.check_checkpoint(checkpoint.decode(data), key)
        except (CheckpointMismatch, ValueError):
            return None


def source_positions(snapshot: dict | None) -> dict[str, int]:
    """The position in each signal a checkpoint's query had reached (its smallest, when it read
    a signal twice)."""
    out: dict[str, int] = {}
    if not snapshot:
        return out
    for key, state in (snapshot.get("operators") or {}).items():
        if key.startswith("source#") and isinstance(state, dict) and "signal" in state:
            name, readings = state["signal"], int(state.get("readings", 0))
            out[name] = min(out.get(name, readings), readings)
    return out


def emitted_since(buffer, key: str, after_seq: int) -> int | None:
    """The largest row count a record of query `key` after buffer sequence `after_seq` carries
    (records on disk, acknowledged or not), or None when there is none."""
    best = None
    for _, record in buffer.records_after(after_seq):
        progress = record.get("progress") if isinstance(record, dict) else None
        if isinstance(progress, dict) and progress.get("query") == key:
            rows = int(progress.get("rows", 0))
            best = rows if best is None else max(best, rows)
    return best
