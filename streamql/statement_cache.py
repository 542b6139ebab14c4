"""Compiled statements kept for the next time: the parse of a text, and its checked, optimized plan.

    cache = StatementCache(512)
    a, b = Engine(statement_cache=cache), Engine(statement_cache=cache)
    a.query("select signal_value('battery');")   # parsed, bound, planned, optimized
    b.query("select signal_value('battery');")   # the same plan, if b's catalog is a's in every way that counts

An edge answers the same few fleet statements again and again, and a simulator process has
dozens of edges that get the same statement at once; compiling one costs a millisecond or two of
CPU (parse about a third), on a device whose CPU is the bottleneck. What is kept is immutable:
the AST (frozen nodes) and the logical plan (its nodes are never changed once planned; every run
builds its own operators and state from it, `physical_plan`), so two runs of one plan share
nothing that runs.

**The key** is the text (and the statement's place in it) with everything that binding and
planning read from the engine, so that a change is seen at once (a key that no longer matches is
a miss, and the LRU forgets the old entry):

- the store's definitions: an engine with no types, functions or tables says so (and can share
  plans with another such engine); otherwise its store itself and its revision, bumped by every
  committed change (a redefinition, a stored value) — never shared across engines;
- the session variables, by value (a fragment's per-edge parameters are bound as constants);
- the signals' names and declared types (`signal_value('x')` is typed, and checked to exist);
- the models: none, or the engine's registry and its revision (`predict` is typed by the model);
- the library (the default one, or the engine's own object) and whether the optimizer runs.

No statement limit changes a plan (folding has a fixed budget of its own), so limits are not in
the key: each run gets its own context with its own limits. A session value that cannot be
compared by value (an object, a large array) makes the statement uncached, and so does an open
transaction (its changes are not counted in the revision until it commits). Texts over
`MAX_CACHED_TEXT` characters are not kept (the hostile 64 KiB statements would fill it).
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable

import numpy as np

__all__ = ["StatementCache", "frozen_value", "MAX_CACHED_TEXT", "UNCACHEABLE"]

MAX_CACHED_TEXT = 4096
MAX_FROZEN_ARRAY = 4096     # elements: a larger session array makes the statement uncached
UNCACHEABLE = object()      # what `frozen_value` returns for a value it cannot compare by value


class StatementCache:
    """A bounded LRU of parses and plans, safe to share between threads and engines (of one
    interpreter with its global lock: hits read without a lock of their own)."""

    def __init__(self, size: int = 512):
        if size < 1:
            raise ValueError("a statement cache holds at least one entry")
        self.size = size
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> tuple[Any, bool]:
        """(the value kept for `key`, or `make()`'s, kept now; whether it was kept before). `make`
        runs without the lock (two threads may both make it; one is kept). An exception from
        `make` is not cached: the next call compiles again (and raises again)."""
        # a hit takes no lock: each OrderedDict call is one step under the interpreter's lock (the
        # keys compare without Python code), and a soak's samples showed hundreds of fragment
        # threads queueing on this lock when every hit took it; the counts are approximate
        entries = self._entries
        value = entries.get(key, _ABSENT)
        if value is not _ABSENT:
            try:
                entries.move_to_end(key)
            except KeyError:    # forgotten by another thread meanwhile: still a right value
                pass
            self.hits += 1
            return value, True
        self.misses += 1
        value = make()
        with self._lock:
            entries[key] = value
            while len(entries) > self.size:
                entries.popitem(last=False)
        return value, False

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_ABSENT = object()


def frozen_value(value: Any) -> Any:
    """A hashable stand-in for `value` that is equal exactly when the values are (with their
    types: 1, 1.0 and True bind to different constants), or UNCACHEABLE."""
    if value is None or isinstance(value, (str, bytes, bool, int, float, complex)):
        return (type(value).__name__, value)
    if isinstance(value, np.generic):
        return ("np", value.dtype.str, value.item())
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.size > MAX_FROZEN_ARRAY:
            return UNCACHEABLE
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        parts = tuple(frozen_value(v) for v in value)
        return UNCACHEABLE if any(p is UNCACHEABLE for p in parts) else (type(value).__name__, parts)
    if isinstance(value, dict):
        parts = tuple((frozen_value(k), frozen_value(v)) for k, v in value.items())
        if any(k is UNCACHEABLE or v is UNCACHEABLE for k, v in parts):
            return UNCACHEABLE
        return ("dict", tuple(sorted(parts, key=repr)))
    return UNCACHEABLE
