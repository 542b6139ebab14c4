"""Published records: what the edges' autonomous queries send with `publish` (docs/protocol.md §8),
stored durably, deduplicated across reconnects and federation restarts.

A record is accepted through `wire.PublishReceiver` (a sequence at or below the highest accepted
for that edge's log is a duplicate: dropped, but acknowledged), buffered, and committed in one
SQLite transaction together with the receiver's state; only then may the hub send `publish_ack`.
So a federation that crashes between accepting and committing has not acknowledged those records
and the edge resends them; one that committed remembers their sequence numbers and drops the
resent copies.

    log = PublishLog(path)
    log.hello("wl-1", "6f1c…")            → the last sequence kept: welcome.publish_acked
    log.accept("wl-1", frame)             → True when new (buffered until flush)
    records, acks = log.flush()           → committed records; {edge: (upto, log)} to acknowledge
    log.read(flow="alerts", after=0)      → committed records in order, with their log ids

The file lives beside the registry (`published.sqlite3`), so the registry stays small to back up.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamql import codec, wire

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS published (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        edge TEXT NOT NULL,
        log TEXT,
        seq INTEGER NOT NULL,
        flow TEXT NOT NULL,
        time REAL,
        received REAL NOT NULL,
        n INTEGER NOT NULL,
        dropped INTEGER NOT NULL DEFAULT 0,
        body BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS published_by_flow ON published (flow, id)",
    "CREATE INDEX IF NOT EXISTS published_by_edge ON published (edge, id)",
    "CREATE INDEX IF NOT EXISTS published_by_received ON published (received)",
    """CREATE TABLE IF NOT EXISTS receivers (
        edge TEXT PRIMARY KEY,
        log TEXT,
        last INTEGER NOT NULL,
        missing INTEGER NOT NULL DEFAULT 0
    )""",
)


@dataclass(frozen=True, slots=True)
class PublishedRecord:
    """One publish frame as the federation keeps it; `id` orders the whole log."""

    id: int
    edge: str
    flow: str
    seq: int
    n: int
    names: list[str] | None
    cols: list
    time: float | None
    received: float
    dropped: int = 0  # the edge's overflow count when it sent this record

    def rows(self) -> list:
        """Plain rows: a value per row for one column, tuples for several."""
        return wire.rows_of(self.n, self.cols)

    def to_dict(self) -> dict:
        return {"id": self.id, "edge": self.edge, "flow": self.flow, "seq": self.seq, "n": self.n,
                "names": self.names, "time": self.time, "received": self.received, "dropped": self.dropped,
                "rows": [codec.to_plain(r) for r in self.rows()]}


class PublishLog:
    """The durable log of published records and the deduplication state that goes with it."""

    def __init__(self, path: str | os.PathLike, *, clock: Callable[[], float] = time.time,
                 synchronous: str = "NORMAL"):
        self.path = Path(path)
        self.clock = clock
        self._conn = sqlite3.connect(os.fspath(self.path), isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute(f"PRAGMA synchronous = {synchronous}")  # NORMAL: safe against crashes
        self._conn.execute("PRAGMA busy_timeout = 5000")
        for statement in SCHEMA:
            self._conn.execute(statement)
        state = {"edges": {edge: {"log": log, "last": last, "missing": missing}
                           for edge, log, last, missing in self._conn.execute("SELECT * FROM receivers")}}
        self.receiver = wire.PublishReceiver(state)
        self._pending: list[tuple] = []             # accepted, not yet committed
        self._pending_frames: list[tuple] = []      # (edge, frame fields) matching _pending
        self._touched: set[str] = set()             # edges whose receiver state changed
        self._ack_due: set[str] = set()             # edges that sent records since the last flush
        self.accepted = 0
        self.duplicates = 0

    def close(self) -> None:
        self._conn.close()

    # --- the receiving side ----------------------------------------------------------------------
    def hello(self, edge: str, log: str | None) -> int:
        """An edge connected announcing its log: the last sequence kept (welcome.publish_acked)."""
        before = self.receiver.log(edge)
        upto = self.receiver.hello(edge, log)
        if log is not None and log != before:
            self._touched.add(edge)  # a new log starts again at 0: remember that at the next flush
        return upto

    def accept(self, edge: str, fields: dict) -> bool:
        """A publish frame's fields: True when the record is new (it is committed at the next flush)."""
        self._ack_due.add(edge)
        if not self.receiver.accept(edge, fields["seq"]):
            self.duplicates += 1
            return False
        self._touched.add(edge)
        self._pending.append((edge, self.receiver.log(edge), fields["seq"], fields["flow"], fields.get("time"),
                              self.clock(), fields["n"], fields.get("dropped", 0)))
        self._pending_frames.append((fields.get("names"), fields["cols"]))
        self.accepted += 1
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def last(self, edge: str) -> int:
        return self.receiver.last(edge)

    def missing(self, edge: str) -> int:
        return self.receiver.missing(edge)

    def flush(self) -> tuple[list[PublishedRecord], dict[str, tuple[int, str | None]]]:
        """Commit what was accepted with the receiver's state, in one transaction.

        Returns the committed records (for live subscribers) and, per edge that sent anything
        since the last flush, the `publish_ack` to send: (upto, log). Synchronous on purpose: no
        record can be accepted between the commit and the computation of the acknowledgements.
        """
        if not self._pending and not self._touched and not self._ack_due:
            return [], {}
        pending, frames = self._pending, self._pending_frames
        touched, due = self._touched, self._ack_due
        bodies = [codec.pack({"names": names, "cols": cols}) for names, cols in frames]
        state = [(edge, self.receiver.log(edge), self.receiver.last(edge), self.receiver.missing(edge))
                 for edge in touched]
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            first = None
            if pending:
                # ids never repeat, even after trimming: continue from AUTOINCREMENT's high-water mark
                first = conn.execute("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = "
                                     "'published'), 0), coalesce((SELECT max(id) FROM published), 0))"
                                     ).fetchone()[0] + 1
                conn.executemany(
                    "INSERT INTO published (id, edge, log, seq, flow, time, received, n, dropped, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(first + i, *row, body) for i, (row, body) in enumerate(zip(pending, bodies))])
            if state:
                conn.executemany("INSERT INTO receivers (edge, log, last, missing) VALUES (?, ?, ?, ?) "
                                 "ON CONFLICT (edge) DO UPDATE SET log = excluded.log, last = excluded.last, "
                                 "missing = excluded.missing", state)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._pending, self._pending_frames, self._touched, self._ack_due = [], [], set(), set()
        records = [PublishedRecord(first + i, edge, flow, seq, n, names, cols, t, received, dropped)
                   for i, ((edge, _log, seq, flow, t, received, n, dropped), (names, cols))
                   in enumerate(zip(pending, frames))]
        acks = {edge: (self.receiver.last(edge), self.receiver.log(edge)) for edge in due}
        return records, acks

    # --- reading ---------------------------------------------------------------------------------
    def read(self, *, flow: str | None = None, edge: str | None = None, after: int = 0,
             limit: int = 1000) -> list[PublishedRecord]:
        """Committed records with an id above `after`, oldest first."""
        where, args = _flow_edge_filter(flow, edge)
        sql = ("SELECT id, edge, flow, seq, n, time, received, dropped, body FROM published "
               f"WHERE id > ? AND {where} ORDER BY id LIMIT ?")
        out = []
        for rid, e, f, seq, n, t, received, dropped, body in self._conn.execute(sql, [after, *args, limit]):
            decoded = codec.unpack(body)
            out.append(PublishedRecord(rid, e, f, seq, n, decoded.get("names"), decoded["cols"], t, received,
                                       dropped))
        return out

    def id_before_newest(self, *, flow: str | None = None, edge: str | None = None, n: int = 50) -> int:
        """The id after which the newest `n` records (of a flow, of an edge) are (0 for all)."""
        where, args = _flow_edge_filter(flow, edge)
        row = self._conn.execute(f"SELECT id FROM published WHERE {where} ORDER BY id DESC LIMIT 1 OFFSET ?",
                                 [*args, n]).fetchone()
        return row[0] if row else 0

    def count(self, *, flow: str | None = None, edge: str | None = None) -> int:
        where, args = _flow_edge_filter(flow, edge)
        return self._conn.execute(f"SELECT count(*) FROM published WHERE {where}", args).fetchone()[0]

    def flows(self) -> dict[str, dict[str, Any]]:
        """flow → {records, rows, last_id}."""
        return {flow: {"records": records, "rows": rows or 0, "last_id": last}
                for flow, records, rows, last in self._conn.execute(
                    "SELECT flow, count(*), sum(n), max(id) FROM published GROUP BY flow ORDER BY flow")}

    def trim(self, older_than: float) -> int:
        """Forget records received before `older_than` (the deduplication state stays)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            removed = self._conn.execute("DELETE FROM published WHERE received < ?", (older_than,)).rowcount
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return removed

    def state(self) -> dict:
        return json.loads(json.dumps(self.receiver.state()))


def _flow_edge_filter(flow: str | None, edge: str | None) -> tuple[str, list]:
    """The WHERE condition (with its parameters) picking the records of a flow and/or an edge."""
    where, args = ["1"], []
    for column, value in (("flow", flow), ("edge", edge)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    return " AND ".join(where), args
