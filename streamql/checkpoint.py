"""A running query's state: its operators' snapshots, taken at a consistent cut, and restored.

Every stateful operator of a query (a window, a deadband, a limit, a source's position) is a
small object with `snapshot()` and `restore(state)` (physical/stateful.py). When a query runs
with a `QueryState` (its context's `states`), each operator registers there as it opens, under
a key made of its kind and its rank among operators of that kind (`count_window#0`): a plan
compiles the same way every time, so the same query text gives the same keys, and a restored
operator finds its state by key.

**The cut.** A snapshot is taken only where every operator is between inputs: when a source
is about to read its next item (`QueryState.cut`). A pull-based pipeline asks its source for
more only after every stage has passed on all it made of the previous items, and the consumer
has taken them; so the operators' states, the sources' positions and what the consumer has
received agree. The inputs of `merge` and `pivot` are read in threads of their own
(physical/merging.py): at a snapshot the query's thread pauses them at their own cuts first
(`pause_inputs`). A source read from any other thread has no such point: the query is then
marked not checkpointable (`QueryState.consistent`), and no snapshot is offered.

A snapshot is a plain value (dicts, lists, numbers, numpy arrays) encoded with the codec, never
pickle: `encode(snapshot)` / `decode(bytes)`; `FORMAT` numbers the layout, and a checkpoint of
another format, or of another query text (`query_key`), is not restored (the query starts fresh).
"""
from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Callable

from . import codec
from .errors import QueryCancelled

__all__ = ["FORMAT", "QueryState", "Checkpointing", "encode", "decode", "query_key", "CheckpointMismatch"]

FORMAT = 1
"""The layout of a snapshot; a checkpoint of another format is not restored."""


class CheckpointMismatch(ValueError):
    """A checkpoint that is not this query's (another text, format or bundle version)."""


def query_key(text: str, *parts: str) -> str:
    """What a checkpoint belongs to: the query text (and e.g. bundle and version), hashed."""
    digest = hashlib.sha256()
    for part in (*parts, text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def encode(snapshot: dict) -> bytes:
    return codec.pack(snapshot)


def decode(data: bytes) -> dict:
    value = codec.unpack(data)
    if not isinstance(value, dict):
        raise codec.CodecError("a checkpoint is a record")
    return value


class QueryState:
    """The operators of one running query that hold state, by key, and the cuts between inputs.

    `restore` is a snapshot taken earlier (`snapshot()`), whose operators get their state back as
    they register. `on_cut(state)` is called at a cut when `due()` says so (or when `request()`ed);
    it runs in the query's thread, between inputs."""

    def __init__(self, restore: dict | None = None, on_cut: Callable[["QueryState"], None] | None = None,
                 interval_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._operators: dict[str, Any] = {}
        self._ranks: dict[str, int] = {}
        self._restore = dict(restore.get("operators", {})) if restore else {}
        self.restored_keys: list[str] = []      # keys whose state was given back (tests and health)
        self.on_cut = on_cut
        self.interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self._requested = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.consistent = True
        self.opaque = 0          # > 0 while a loop that is no operator reads (a bag collected whole)
        self.cuts = 0            # cuts seen (sources about to read)
        self.snapshots = 0       # cuts at which on_cut ran
        self._lock = threading.Lock()
        self._local = threading.local()        # an input thread's key prefix (merge#0/1/)
        self._inputs: set[threading.Thread] = set()   # threads reading merge/pivot inputs
        self._paused: set[threading.Thread] = set()
        self._pausing = False
        self._pause = threading.Condition(self._lock)

    # -- operators ----------------------------------------------------------------------------
    def register(self, kind: str, logic) -> str:
        """Keep `logic` (which has snapshot/restore) under the next key of its kind; give it back
        its state when the snapshot being restored has one for that key."""
        prefix = getattr(self._local, "prefix", "")
        with self._lock:
            rank = self._ranks.get(prefix + kind, 0)
            self._ranks[prefix + kind] = rank + 1
            key = f"{prefix}{kind}#{rank}"
            self._operators[key] = logic
            state = self._restore.pop(key, None)
        if state is not None:
            logic.restore(state)
            self.restored_keys.append(key)
        return key

    def unregister(self, key: str) -> None:
        with self._lock:
            self._operators.pop(key, None)

    @property
    def operators(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._operators)

    def snapshot(self) -> dict:
        """Every registered operator's state (call only at a cut)."""
        return {"format": FORMAT, "operators": {key: logic.snapshot() for key, logic in self.operators.items()}}

    # -- input threads (merge, pivot) ---------------------------------------------------------
    def add_input(self, thread: threading.Thread) -> None:
        """`thread` will read an input of a merge: its cuts are pause points, not the query's."""
        with self._lock:
            self._inputs.add(thread)

    def remove_input(self, thread: threading.Thread) -> None:
        with self._pause:
            self._inputs.discard(thread)
            self._pause.notify_all()

    def enter_input(self, prefix: str) -> None:
        """In an input thread: the operators it opens are keyed under `prefix`."""
        self._local.prefix = prefix

    def leave_input(self) -> None:
        """In an input thread that ends: no snapshot waits for it any longer."""
        self.remove_input(threading.current_thread())

    def _paused_at_cut(self) -> None:
        """An input thread at a cut: wait here while the query's thread takes a snapshot."""
        with self._pause:
            if not self._pausing:
                return
            thread = threading.current_thread()
            self._paused.add(thread)
            self._pause.notify_all()
            while self._pausing:
                self._pause.wait()
            self._paused.discard(thread)

    def pause_inputs(self, timeout: float = 5.0) -> bool:
        """Have every input thread stop at its next cut; False (and none stays paused) when one
        does not get there in `timeout` seconds (a source with no cut: no snapshot this time)."""
        deadline = time.monotonic() + timeout
        with self._pause:
            self._pausing = True
            while not self._inputs <= self._paused:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._pausing = False
                    self._pause.notify_all()
                    return False
                self._pause.wait(left)
            return True

    def resume_inputs(self) -> None:
        with self._pause:
            self._pausing = False
            self._pause.notify_all()

    # -- cuts ---------------------------------------------------------------------------------
    def request(self) -> None:
        """Have the next cut call on_cut whatever the interval (a graceful stop)."""
        self._requested = True

    def stop(self) -> None:
        """A graceful stop: at the next cut, call on_cut, then end the query (QueryCancelled)."""
        self._requested = self._stopping = True

    def due(self) -> bool:
        if self._requested:
            return True
        return self.interval_s is not None and self._clock() - self._last >= self.interval_s

    def cut(self) -> None:
        """A source is about to read: every operator is between inputs (module docstring)."""
        thread = threading.current_thread()
        if thread in self._inputs:
            self._paused_at_cut()
            return
        if self._thread is None:
            self._thread = thread
        elif thread is not self._thread:
            self.consistent = False   # a source read in another thread: no consistent cut exists
            return
        if self.opaque:
            return   # a source read inside a loop whose state no operator keeps: not a cut
        self.cuts += 1
        if self.on_cut is not None and self.consistent and self.due():
            if self._inputs and not self.pause_inputs():
                return   # an input is busy between its cuts: at a later cut
            try:
                self._requested = False
                self._last = self._clock()
                self.snapshots += 1
                self.on_cut(self)
            finally:
                if self._inputs:
                    self.resume_inputs()
        if self._stopping:
            raise QueryCancelled("the query was stopped after its checkpoint")


class Checkpointing:
    """What `Engine.start(…, checkpoint=…)` takes: `save(data: bytes)` is called with an encoded
    checkpoint every `interval_s` seconds (at the next cut) and when the query is stopped with
    `handle.cancel()`; `restore`, a checkpoint saved earlier for the same query text, resumes
    its state (a checkpoint of another text or format raises CheckpointMismatch, or with
    `fresh_on_mismatch` is ignored and noted in `mismatch`)."""

    def __init__(self, save: Callable[[bytes], None], restore: bytes | None = None, interval_s: float = 10.0,
                 key: str = "", fresh_on_mismatch: bool = True):
        self.save = save
        self.restore = restore
        self.interval_s = interval_s
        self.key = key
        self.fresh_on_mismatch = fresh_on_mismatch
        self.mismatch: str | None = None
        self.extra: Callable[[], dict] | None = None   # more to save beside the operators (a sink's count)
        self.restored_extra: dict = {}

    def state_for(self, text: str) -> QueryState:
        """The QueryState a query with this text runs with."""
        key = self.key or query_key(text)
        snapshot = None
        if self.restore is not None:
            try:
                snapshot = check_checkpoint(decode(self.restore), key)
            except (CheckpointMismatch, codec.CodecError) as exc:
                if not self.fresh_on_mismatch:
                    raise CheckpointMismatch(str(exc)) from exc
                self.mismatch = str(exc)
        if snapshot is not None:
            self.restored_extra = snapshot.get("extra") or {}

        def on_cut(states: QueryState) -> None:
            snap = states.snapshot()
            snap["key"] = key
            if self.extra is not None:
                snap["extra"] = self.extra()
            self.save(encode(snap))
        return QueryState(snapshot, on_cut, self.interval_s)


def check_checkpoint(snapshot: dict, key: str) -> dict:
    """`snapshot` when it belongs to `key` in this FORMAT, else CheckpointMismatch saying why."""
    if snapshot.get("format") != FORMAT:
        raise CheckpointMismatch(f"the checkpoint has format {snapshot.get('format')!r}, this engine reads {FORMAT}")
    if snapshot.get("key") != key:
        raise CheckpointMismatch("the checkpoint was taken of another query (its text, bundle or version differ)")
    return snapshot
