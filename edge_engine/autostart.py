"""Autostart queries of deployed bundles: which flow their results go to, and running them.

Every statement of a bundle's autostart files is a continuous query the edge runs whether or not
the federation is reachable. Its results are meant for the federation: each batch of rows becomes
one record of the store-and-forward buffer, sent as a `publish` frame of a named **flow**:

- by default the flow is `<bundle>/<file stem>` (`vib-anomaly/scores` for `autostart/scores.sql`),
  and `<bundle>/<file stem>/<n>` for the n-th statement (1-based) of a file holding several;
- a comment directive on the line before the statement names it: `//publish: vibration_alerts`;
- `//publish: none` keeps the results on the edge (a query run for its side effects, such as
  `publish(s, 'flow')` into a local flow that other queries `subscribe` to).

Flows of the engine's own `publish(s, 'name')` stay inside the engine; only autostart results
travel. A query that fails is restarted with exponential backoff (its error goes to the health
frame's errors); after `max_failures` failures in a row it is given up (status `gave up`, in
health) until the next deployment or restart; one that ends is not restarted. Each change of a
query's status is told to `on_status`, so the daemon can send its health at once (a rollout
waits for it: docs/models.md, Rollouts).

With a `CheckpointStore` a query's state is checkpointed and a restart (of the query or of the
daemon) resumes from it, without publishing a row twice (edge_engine/checkpoints.py).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable

import numpy as np

from streamql.batch import IDLE
from streamql.checkpoint import Checkpointing
from streamql.errors import QueryCancelled, QueryError
from streamql.models.bundle import split_statements

from .checkpoints import CheckpointStore, checkpoint_key, emitted_since

__all__ = ["AutostartSpec", "AutostartQuery", "AutostartSet", "autostart_queries", "item_columns",
           "LOCAL_ONLY"]

LOCAL_ONLY = ("none", "off", "local")
_PUBLISH = re.compile(r"^[ \t]*(?://|--)[ \t]*publish[ \t]*:[ \t]*(\S.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE)
_CODE = re.compile(r"(?m)^(?![ \t]*(?://|--)).*\S")
MAX_RECORD_ROWS = 4096
MAX_RECORD_BYTES = 1 << 20     # a record must fit any federation's frame limit


@dataclass(frozen=True)
class AutostartSpec:
    bundle: str
    path: str            # the autostart file in the bundle
    index: int           # 1-based position of the statement in its file
    text: str
    flow: str | None     # None: results stay on the edge
    version: str = ""    # the bundle's version (part of a checkpoint's key)

    @property
    def name(self) -> str:
        return f"{self.bundle}:{self.path}#{self.index}"


def _flow_of(bundle: str, path: str, index: int, several: bool, text: str) -> str | None:
    head = text[:_CODE.search(text).start()] if _CODE.search(text) else text   # comments before the code
    named = _PUBLISH.findall(head)
    if named:
        flow = named[-1].strip().strip("'\"")
        return None if flow.lower() in LOCAL_ONLY else flow[:256]
    stem = PurePosixPath(path).stem
    return f"{bundle}/{stem}/{index}"[:256] if several else f"{bundle}/{stem}"[:256]


def autostart_queries(bundle) -> list[AutostartSpec]:
    """The autostart queries of a bundle with the flow each publishes to (module docstring)."""
    out = []
    for path in bundle.autostart_paths:
        statements = split_statements(bundle.text(path))
        for i, text in enumerate(statements, 1):
            out.append(AutostartSpec(bundle.name, path, i, text,
                                     _flow_of(bundle.name, path, i, len(statements) > 1, text),
                                     str(getattr(bundle, "version", "") or "")))
    return out


# == rows as columns ===========================================================================
def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _wire_column(column):
    """A column the codec and the wire accept: numeric arrays as they are, anything else a list."""
    if isinstance(column, np.ndarray):
        if column.dtype.kind in "biufc" and column.ndim >= 1:
            return column
        return [_plain(v) if not isinstance(v, np.ndarray) or v.dtype.kind in "biufc" else v.tolist()
                for v in (column.tolist() if column.ndim == 1 and column.dtype != object else list(column))]
    return [_plain(v) for v in column]


def item_columns(item, width: int) -> tuple[int, list]:
    """(n, columns) of one stream item of a Result (a Chunk of `$c0…` columns or a single row)."""
    names = [f"$c{i}" for i in range(width)]
    if type(item) is dict:
        return 1, [_wire_column([item[c]]) for c in names]
    n = item.n
    return n, [_wire_column(item[c]) for c in names]


def columns_bytes(cols: list) -> int:
    """About how many bytes the columns take (arrays exactly, lists estimated)."""
    total = 0
    for col in cols:
        if isinstance(col, np.ndarray):
            total += col.nbytes
        else:
            total += 16 * len(col) + sum(len(v) for v in col if isinstance(v, (str, bytes)))
            total += sum(v.nbytes for v in col if isinstance(v, np.ndarray))
    return total


def split_rows(n: int, cols: list, max_rows: int, max_bytes: int):
    """Pieces of at most `max_rows` rows and about `max_bytes` bytes (views for arrays)."""
    per_row = max(1, columns_bytes(cols) // max(n, 1))
    step = max(1, min(max_rows, max_bytes // per_row))
    for start in range(0, n, step):
        stop = min(n, start + step)
        yield stop - start, [c[start:stop] for c in cols]


# == running ===================================================================================
class AutostartQuery:
    """One autostart query in its own thread; each batch of rows goes to `emit(spec, n, cols, names,
    progress=…)`, which returns the record's buffer sequence (or None)."""

    def __init__(self, engine, spec: AutostartSpec, emit: Callable[..., int | None], *,
                 log: logging.Logger, on_error: Callable[[str], None] | None = None,
                 on_status: Callable[["AutostartQuery"], None] | None = None,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 60.0, max_failures: int | None = None,
                 checkpoints: CheckpointStore | None = None, checkpoint_interval_s: float = 5.0, buffer=None,
                 limits: dict | None = None):
        self.engine = engine
        self.limits = limits      # the edge's statement limits (memory_mb): AutostartSet.start
        self.spec = spec
        self.emit = emit
        self.log = log
        self.on_error = on_error
        self.on_status = on_status
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.max_failures = max_failures
        self.checkpoints = checkpoints
        self.checkpoint_interval_s = checkpoint_interval_s
        self.buffer = buffer      # the store-and-forward buffer emit appends to (what was emitted)
        self.key = checkpoint_key(spec.bundle, spec.version, spec.path, spec.index, spec.text)
        self._status = "starting"
        self.rows = 0
        self.restarts = 0
        self.failures = 0         # in a row
        self.last_seq = 0         # buffer sequence of the last record emitted
        self.checkpoint: str | None = None   # restored / fresh / fresh: why; None without checkpoints
        self.last_error: str | None = None
        self.ready = threading.Event()      # its sources are open (or it ended): readings reach it
        self._stop = threading.Event()
        self._result = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"autostart {spec.name}"[:60])

    @property
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        changed, self._status = value != self._status, value
        if changed and self.on_status is not None:
            try:
                self.on_status(self)
            except Exception:  # noqa: BLE001 - telling must never stop the query
                self.log.exception("the autostart status callback failed")

    def start(self) -> "AutostartQuery":
        self._thread.start()
        return self

    def stop(self, graceful: bool = True) -> None:
        """Ask the query to stop: a checkpointed one at its next cut, after saving a checkpoint
        (`graceful`); otherwise at its next batch or idle tick (within ~0.1 s)."""
        self._stop.set()
        result = self._result
        if result is None or result.ctx is None:
            return
        states = result.ctx.states
        if graceful and states is not None and states.on_cut is not None:
            states.stop()
        else:
            result.ctx.cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        delay = self.backoff_initial_s
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self._run_once()
                    self.status = "done"
                    return
                except QueryCancelled:
                    break
                except QueryError as exc:
                    self.last_error = f"{exc.kind}: {exc.message}"
                except Exception as exc:  # noqa: BLE001 - a broken query must not take the daemon down
                    self.last_error = f"{type(exc).__name__}: {exc}"
                self.ready.set()   # it is not reading: nothing to wait for
                if self._stop.is_set():
                    break
                if time.monotonic() - started > 60:
                    delay, self.failures = self.backoff_initial_s, 0   # it had run well for a while: start over
                self.failures += 1
                if self.max_failures is not None and self.failures >= self.max_failures:
                    self._give_up()
                    return
                self.status = "failed"
                message = (f"autostart query {self.spec.name} failed ({self.last_error}); "
                           f"restarting in {delay:.0f} s")
                self.log.warning(message)
                if self.on_error is not None:
                    self.on_error(message)
                if self._stop.wait(delay):
                    break
                delay = min(self.backoff_max_s, delay * 2)
                self.restarts += 1
            self.status = "stopped"
        finally:
            self.ready.set()

    def _give_up(self) -> None:
        message = (f"autostart query {self.spec.name} gave up after {self.failures} failures in a row "
                   f"({self.last_error})")
        self.log.error(message)
        if self.on_error is not None:
            self.on_error(message)
        self.status = "gave up"

    def _checkpointing(self) -> Checkpointing | None:
        if self.checkpoints is None:
            return None
        name = self.spec.name
        checkpointing = Checkpointing(lambda data: self.checkpoints.save(name, data), self.checkpoints.load(name),
                                      self.checkpoint_interval_s, key=self.key)
        checkpointing.extra = lambda: {"rows": self.rows, "seq": self.last_seq}
        return checkpointing

    def _resume(self, checkpointing: Checkpointing | None) -> int:
        """After a checkpoint is restored: how many of the rows coming were published already."""
        if checkpointing is None:
            return 0
        if checkpointing.mismatch is not None:
            self.checkpoint = f"fresh: {checkpointing.mismatch}"
            self.log.warning("autostart query %s starts fresh: %s", self.spec.name, checkpointing.mismatch)
            return 0
        if checkpointing.restore is None:
            self.checkpoint = "fresh"
            return 0
        extra = checkpointing.restored_extra
        self.rows, self.last_seq = int(extra.get("rows", 0)), int(extra.get("seq", 0))
        emitted = emitted_since(self.buffer, self.key, self.last_seq) if self.buffer is not None else None
        again = max(0, emitted - self.rows) if emitted is not None else 0
        self.checkpoint = "restored" if not again else f"restored ({again} rows published after it)"
        return again

    def _run_once(self) -> None:
        checkpointing = self._checkpointing()
        result = self.engine.query(self.spec.text, self.limits, checkpoint=checkpointing)
        self._result = result
        if self._stop.is_set():
            result.close()
            raise QueryCancelled("stopped")
        again = self._resume(checkpointing)
        states = result.ctx.states if result.ctx is not None else None
        self.status = "running"
        names = list(result.columns)
        width = len(names)
        try:
            items = result.items()
            if items is None or result.kind == "vector":
                items = ({"$c0": row} if width == 1 else dict(zip([f"$c{i}" for i in range(width)], row))
                         for row in result)
            ready = self.ready
            for item in items:
                if ready is not None:   # the first item (an idle tick at least) comes once its sources are open
                    ready.set()
                    ready = None
                if self._stop.is_set() and (states is None or states.on_cut is None):
                    raise QueryCancelled("stopped")
                if item is IDLE:
                    continue
                n, cols = item_columns(item, width)
                if again and n:   # published before the restart: counted, not sent again
                    drop = min(again, n)
                    again, n, self.rows = again - drop, n - drop, self.rows + drop
                    cols = [c[drop:] for c in cols]
                if not n:
                    continue
                for piece_n, piece in split_rows(n, cols, MAX_RECORD_ROWS, MAX_RECORD_BYTES):
                    seq = self.emit(self.spec, piece_n, piece, names,
                                    progress={"query": self.key, "rows": self.rows + piece_n})
                    self.rows += piece_n
                    if seq is not None:
                        self.last_seq = seq
                if states is not None:
                    states.request()   # the state after these rows, at the next cut
        finally:
            result.close()

    def describe(self) -> dict:
        out = {"query": self.spec.name, "bundle": self.spec.bundle, "flow": self.spec.flow, "status": self.status,
               "rows": self.rows, "restarts": self.restarts, "error": self.last_error}
        if self.failures:
            out["failures"] = self.failures
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint
        return out


class AutostartSet:
    """The autostart queries of one engine's bundles, started and stopped together."""

    def __init__(self, queries: list[AutostartQuery]):
        self.queries = queries

    @classmethod
    def start(cls, engine, specs: list[AutostartSpec], emit, *, log: logging.Logger,
              on_error: Callable[[str], None] | None = None, on_status: Callable | None = None,
              **backoff: Any) -> "AutostartSet":
        """`backoff` may hold `limits`: the edge's memory budget for each query (`{"memory_mb":
        …}`; its `seconds` and `rows` are a fragment's, not a standing query's)."""
        return cls([AutostartQuery(engine, spec, emit, log=log, on_error=on_error, on_status=on_status,
                                   **backoff).start() for spec in specs])

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every query: gracefully (a checkpoint at its next cut) for most of `timeout`, then
        at once."""
        for query in self.queries:
            query.stop()
        deadline = time.monotonic() + timeout * 0.75
        for query in self.queries:
            query.join(max(0.0, deadline - time.monotonic()))
        late = [query for query in self.queries if not query.join(0)]
        for query in late:
            query.stop(graceful=False)
        deadline = time.monotonic() + timeout * 0.25
        for query in late:
            query.join(max(0.0, deadline - time.monotonic()))

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Wait until every query has opened its sources (or ended)."""
        deadline = time.monotonic() + timeout
        return all(query.ready.wait(max(0.0, deadline - time.monotonic())) for query in self.queries)

    def describe(self) -> list[dict]:
        return [q.describe() for q in self.queries]
