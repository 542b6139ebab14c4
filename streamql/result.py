"""Results: rows as they arrive, with column names and types; handles of background queries."""
from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from typing import Any, Callable, Iterator

import numpy as np

from .batch import IDLE, Batch
from .errors import QueryCancelled, QueryError, QueryLimitError, QueryRuntimeError
from .physical.chunk import column_values
from .streams import gather

log = logging.getLogger("streamql.engine")


class Result:
    """An iterator of rows. One-column rows are plain values, several columns tuples.

    Closing it (or dropping it) cancels the query and frees its sources.
    """

    def __init__(self, columns: list[str], types: list, kind: str, items: Iterator[Any] | None = None,
                 ctx=None, message: str | None = None, statement: str | None = None, span=None,
                 source: str | None = None):
        self.columns = columns
        self.types = types
        self.kind = kind                 # 'bag' | 'vector' | 'stream' | 'statement' | 'explain'
        self.message = message
        self.statement = statement
        self.status: dict | None = None  # per-device outcome on a federation
        self.plan_reused = False         # its plan came from the engine's statement cache
        self.ctx = ctx
        self._span = span
        self._source = source
        self._items = items
        self._parts = self._row_lists() if items is not None else None
        # iterating flattens the lists of rows in C: no Python frame per row
        self._rows = itertools.chain.from_iterable(self._parts) if items is not None else iter(())
        self._closed = False
        self.rows_delivered = 0

    @property
    def continuous(self) -> bool:
        return self.kind == "stream"

    def __iter__(self):
        return self._rows

    def __next__(self):
        return next(self._rows)

    def items(self) -> Iterator[Any]:
        """The raw stream items (chunks, single rows) instead of rows, for tools that batch."""
        return self._items

    def batches(self, max_rows: int = 512) -> Iterator[list]:
        """The rows in lists: one as soon as `max_rows` are ready or the query waits on an idle
        source, so a service forwarding them never holds rows back. Use it instead of iterating."""
        self._rows = iter(())
        batch: list = []
        for row in self._generate(with_idle=True):
            if row is IDLE:
                if batch:
                    yield batch
                    batch = []
                continue
            batch.append(row)
            if len(batch) >= max_rows:
                yield batch
                batch = []
        if batch:
            yield batch

    def _generate(self, with_idle: bool = False) -> Iterator[Any]:
        """The rows one at a time (and IDLE where the query waits, `with_idle`)."""
        for part in self._row_lists(with_idle):
            if part is IDLE:
                yield IDLE
            else:
                yield from part

    def _row_lists(self, with_idle: bool = False) -> Iterator[Any]:
        """The rows a list at a time, a list per item of the query (IDLE too, `with_idle`)."""
        n = len(self.columns)
        names = [f"$c{i}" for i in range(n)]
        ctx = self.ctx
        check = ctx.check if ctx is not None else (lambda: None)
        max_rows = ctx.limits.rows if ctx is not None else None
        delivered = 0
        items = self._items
        try:
            if self.kind == "vector":
                yield [self._collect_vector(items, names)]
                return
            for item in items:
                check()
                if item is IDLE:
                    if with_idle:
                        yield IDLE
                    continue
                if type(item) is dict:
                    row = item[names[0]] if n == 1 else tuple(item[c] for c in names)
                    delivered += 1
                    if max_rows is not None and delivered > max_rows:
                        raise QueryLimitError(f"the query produced more than its limit of {max_rows} rows")
                    self.rows_delivered = delivered
                    yield [_py(row) if n == 1 else tuple(_py(v) for v in row)]
                else:
                    columns = [column_values(item[c]) for c in names]
                    rows = columns[0] if n == 1 else list(zip(*columns))
                    if max_rows is not None and delivered + len(rows) > max_rows:
                        self.rows_delivered = max_rows
                        yield rows[:max_rows - delivered]
                        raise QueryLimitError(f"the query produced more than its limit of {max_rows} rows")
                    delivered += len(rows)
                    self.rows_delivered = delivered
                    yield rows
        except QueryError as exc:
            if exc.span is None and self._span is not None and not isinstance(exc, (QueryCancelled, QueryLimitError)):
                exc.span = self._span
            if exc.source is None:
                exc.source = self._source
            raise
        except (GeneratorExit, KeyboardInterrupt):
            raise
        except MemoryError:   # a value larger than the machine (range(0, 1e9)): the query's limit, not a bug
            raise QueryLimitError("the query needs more memory than there is", self._span, self._source) from None
        except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a QueryError
            error = QueryRuntimeError(f"internal error while running the query: {type(exc).__name__}: {exc}",
                                      self._span, self._source)
            error.__cause__ = exc
            error.traceback = traceback.format_exc()
            raise error from exc
        finally:
            self._finish()

    def _collect_vector(self, items, names):
        """`select vector of …`: every row in one vector, held within the statement's budget."""
        def parts():
            for item in items:
                if item is IDLE:
                    yield item
                elif type(item) is dict:
                    yield item[names[0]] if len(names) == 1 else [item[c] for c in names]
                elif len(names) == 1:
                    yield Batch(item[names[0]])
                else:
                    yield Batch([list(r) for r in zip(*[column_values(item[c]) for c in names])])
        column = gather(parts(), self.ctx, "the query's vector")
        if isinstance(column, np.ndarray) and column.dtype != object:
            return column
        return list(column.tolist() if isinstance(column, np.ndarray) else column)

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._items, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # closed while running in another thread: it stops at its next check
                pass

    def close(self) -> None:
        """Stop the query and free its sources."""
        if self.ctx is not None:
            self.ctx.cancel.set()
        if self._parts is not None:
            try:
                self._parts.close()
            except ValueError:   # running in another thread: it stops at its next check
                pass
        close = getattr(self._rows, "close", None)  # rows already computed are a plain iterator
        if close is not None:
            try:
                close()
            except ValueError:
                pass
        self._finish()

    def __del__(self):
        try:
            if not self._closed and self.ctx is not None:
                self.ctx.cancel.set()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def fetchall(self) -> list:
        return list(self)

    def __repr__(self) -> str:
        if self.message is not None:
            return f"<Result {self.message}>"
        return f"<Result {self.kind} ({', '.join(self.columns)})>"


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


GRACEFUL_STOP_S = 2.0   # how long a checkpointed query may take to reach its next cut when stopped


class QueryHandle:
    """A query running in the background: watch it, wait for it, cancel it.

    `status` is running, done, cancelled, limit or failed; on a failure (a run-time error, a limit,
    the sink raising) `error` holds the QueryError and `on_error(error)` is called in the query's
    thread — or, without it, the error is logged (logger `streamql.engine`), never dropped."""

    def __init__(self, query_id: int, text: str, result: Result, sink: Callable | None,
                 on_exit: Callable[["QueryHandle"], None] | None = None, name: str | None = None,
                 batch_sink: bool = False, on_error: Callable[[QueryError], None] | None = None):
        self.id = query_id
        self.name = name or f"q{query_id}"
        self.text = text
        self.result = result
        self.sink = sink
        self.on_error = on_error
        self.status = "running"
        self.error: QueryError | None = None
        self.rows = 0
        self.started = time.time()
        self.finished: float | None = None
        self._on_exit = on_exit
        self._done = threading.Event()
        self._batch_sink = batch_sink
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"streamql-query-{query_id}")

    @property
    def columns(self) -> list[str]:
        return self.result.columns

    def start(self) -> "QueryHandle":
        self._thread.start()
        return self

    def _run(self) -> None:
        sink = self.sink
        try:
            for row in self.result:
                self.rows += 1
                if sink is not None:
                    sink(row)
            self.status = "done"
        except QueryCancelled:
            self.status = "cancelled"
        except QueryLimitError as exc:
            self.status = "limit"
            self.error = exc
        except QueryError as exc:
            self.status = "failed"
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - a sink's failure stops only this query
            self.status = "failed"
            self.error = QueryRuntimeError(f"the result sink failed: {type(exc).__name__}: {exc}")
        finally:
            self.finished = time.time()
            self.result._finish()
            if self.error is not None:
                self._report(self.error)
            self._done.set()
            if self._on_exit is not None:
                self._on_exit(self)

    def _report(self, error: QueryError) -> None:
        if self.on_error is None:
            log.warning("background query %s %s: %s", self.name, self.status, error)
            return
        try:
            self.on_error(error)
        except Exception:  # noqa: BLE001 - a failing callback must not hide the failure it reports
            log.exception("the on_error callback of background query %s failed (on: %s)", self.name, error)

    def cancel(self, wait: float | None = 5.0) -> None:
        """Stop the query. One that keeps checkpoints stops at its next cut (between two inputs),
        after saving one, when that comes within a couple of seconds."""
        states = getattr(self.result.ctx, "states", None)
        if states is not None and states.on_cut is not None and self.running:
            states.stop()
            if self._done.wait(min(wait or GRACEFUL_STOP_S, GRACEFUL_STOP_S)):
                return
        if self.result.ctx is not None:
            self.result.ctx.cancel.set()
        if wait:
            self._done.wait(wait)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def describe(self) -> dict:
        return {"id": self.id, "name": self.name, "query": self.text, "status": self.status, "rows": self.rows,
                "started": self.started, "finished": self.finished,
                "error": self.error.to_dict() if self.error else None}

    def __repr__(self) -> str:
        return f"<QueryHandle {self.name} {self.status} rows={self.rows}>"
