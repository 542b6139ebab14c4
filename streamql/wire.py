"""The wire protocol between an edge engine and the federation (version 1).

Every frame is one msgpack map (encoded by `streamql.codec`, so values keep their types) with the
protocol version `v`, the frame type `t` and the type's fields. `decode` validates everything a
peer could get wrong or forge — size, encoding, version, type, each field's presence and type —
and raises `ProtocolError` with a machine-readable `code` and a reason, never another exception.
docs/protocol.md is the contract; this module is its executable form.

>>> frame = make("ping", nonce=7)
>>> decode(encode(frame)) == frame
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from . import codec
from .wire_checks import (ANY, BOOL, BYTES, COLUMNS, COUNT, ID, INT, MAP, NUM, POSITIVE, POSNUM, SHA256, STR,
                          Check, ProtocolError, check_fields, is_int, short, list_of, map_of, one_of, opt, struct)

__all__ = [
    "VERSION", "SUPPORTED_VERSIONS", "MAX_FRAME_BYTES", "FRAME_TYPES", "FROM_EDGE",
    "FROM_FEDERATION", "OUTCOMES", "CLOSE_CODES", "ProtocolError", "Frame", "make", "encode",
    "decode", "negotiate", "error_frame", "version_error", "columns_of", "rows_of", "split_columns",
    "CreditWindow", "PublishReceiver",
]

VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest frame either side accepts by default; a sender splits rows and bundle chunks below it."""
DEPLOY_CHUNK_BYTES = 1024 * 1024
"""Bundle bytes per deploy frame that a federation should send (receivers accept up to the frame limit)."""

OUTCOMES = ("ok", "limit", "error", "cancelled")

# WebSocket close codes used by both sides (4000–4999 is the application range).
CLOSE_CODES = {
    "normal": 1000,
    "going_away": 1001,
    "policy": 1008,         # refused by a limit (a hello too large, say); the reason says which
    "too_large": 1009,
    "protocol_error": 4000,
    "unsupported_version": 4001,
    "unauthorized": 4003,
    "replaced": 4009,       # the same edge id connected again; the older connection is closed
}


# retry_s: the edge refused only for want of a free slot; asking again after that long may succeed
ERROR_INFO = struct({"kind": STR, "message": STR}, {"line": opt(INT), "column": opt(INT), "retry_s": opt(POSNUM)})
ACTIVE = map_of(STR)  # model name → active version
# what a query fragment is (its `select stream of …` or not): a one-shot one ends on its own, under
# its time limit, so an edge keeps a few slots for them that streams may not take
FRAGMENT_KINDS = ("stream", "bag", "vector")

# type → (required fields, optional fields)
SCHEMAS: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "hello": ({
        "edge": ID,
        "software": STR,
        "metadata": MAP,
        "capabilities": struct({}, {
            "ram_kb": opt(COUNT), "flash_kb": opt(COUNT), "cpu": opt(STR),
            "signals": list_of(ANY), "runtimes": map_of(STR), "functions": list_of(STR, 10_000)}),
        "models": ACTIVE,
        "restarts": COUNT,
    }, {
        "versions": list_of(INT, 64),
        "token": STR,
        "resume": struct({"log": STR, "first": COUNT, "last": COUNT},
                         {"count": COUNT, "dropped": COUNT}),
        "time": NUM,
    }),
    "welcome": ({
        "accepted": BOOL,
        "server_time": NUM,
        "heartbeat_s": POSNUM,
        "publish_acked": COUNT,
    }, {
        "reason": STR, "max_frame": POSITIVE, "edge": ID, "session": STR,
    }),
    "health": ({
        "time": NUM,
        "uptime_s": NUM,
        "restarts": COUNT,
    }, {
        "cpu_percent": opt(NUM),
        "memory_kb": opt(COUNT),
        "battery": opt(struct({}, {"percent": opt(NUM), "charging": opt(BOOL), "source": STR})),
        "queues": map_of(COUNT),
        "link": MAP,
        "errors": list_of(struct({"time": NUM, "message": STR}, {"kind": STR}), 100),
        "buffer": struct({}, {"records": COUNT, "bytes": COUNT, "dropped": COUNT}),
        "queries": list_of(ID),
        "models": ACTIVE,
        "loaded": ACTIVE,  # model name → version, as the engine has them loaded
        "autostart": list_of(MAP, 1000),
        "publish": MAP,
        "guard": MAP,
    }),
    "query": ({
        "qid": ID,
        "source": STR,
        "limits": struct({}, {"rows": opt(COUNT), "seconds": opt(POSNUM), "memory_mb": opt(POSNUM)}),
        "credit": COUNT,
    }, {
        "params": MAP, "columns": list_of(STR), "batch_rows": POSITIVE, "principal": ID,
        "kind": one_of(*FRAGMENT_KINDS), "deadline_s": POSNUM,
    }),
    "rows": ({
        "qid": ID, "seq": COUNT, "n": COUNT, "cols": COLUMNS,
    }, {
        "names": list_of(STR), "time": NUM,
    }),
    "credit": ({"qid": ID, "add": COUNT}, {}),
    "end": ({
        "qid": ID, "outcome": one_of(*OUTCOMES), "rows": COUNT,
    }, {
        "error": opt(ERROR_INFO), "seconds": NUM,
    }),
    "cancel": ({"qid": ID}, {"reason": STR}),
    "deploy": ({
        "did": ID, "model": ID, "version": STR, "sha256": SHA256, "size": COUNT,
        "chunk": COUNT, "chunks": POSITIVE, "data": BYTES,
    }, {
        "variants": list_of(STR), "requirements": MAP,
    }),
    "ack": ({"did": ID, "active": ACTIVE}, {"model": STR, "version": opt(STR), "message": STR,
                                            "functions": list_of(STR, 10_000),
                                            "autostart": list_of(STR, 1000), "loaded": ACTIVE}),
    "nack": ({"did": ID, "reason": STR, "active": ACTIVE}, {"code": STR, "model": STR}),
    "rollback": ({"did": ID, "model": ID}, {"version": opt(STR)}),
    "undeploy": ({"did": ID, "model": ID}, {}),
    "publish": ({
        "seq": POSITIVE, "flow": ID, "n": COUNT, "cols": COLUMNS,
    }, {
        "names": list_of(STR), "time": NUM, "dropped": COUNT, "hold": COUNT,
    }),
    "publish_ack": ({"upto": COUNT}, {"log": STR}),
    "error": ({"code": STR, "message": STR}, {"ref": ANY, "supported": list_of(INT, 64), "fatal": BOOL,
                                              "hold": COUNT, "retry_after_s": NUM}),
    "ping": ({"nonce": COUNT}, {"time": NUM}),
    "pong": ({"nonce": COUNT}, {"time": NUM}),
}
FRAME_TYPES = frozenset(SCHEMAS)
FROM_EDGE = frozenset({"hello", "health", "rows", "end", "ack", "nack", "publish", "error", "ping", "pong"})
FROM_FEDERATION = frozenset({"welcome", "query", "credit", "cancel", "deploy", "rollback", "undeploy",
                             "publish_ack", "error", "ping", "pong"})


def _check_semantics(t: str, fields: dict) -> None:
    """Rules across fields that a per-field type check cannot express."""
    if t in ("rows", "publish"):
        n = fields["n"]
        for i, col in enumerate(fields["cols"]):
            if len(col) != n:
                raise ProtocolError("bad_field", f"cols[{i}] has {len(col)} rows, n says {n}", ref=f"cols[{i}]")
        names = fields.get("names")
        if names is not None and len(names) != len(fields["cols"]):
            raise ProtocolError("bad_field", f"{len(names)} names for {len(fields['cols'])} columns", ref="names")
    elif t == "deploy":
        if fields["chunk"] >= fields["chunks"]:
            raise ProtocolError("bad_field", f"chunk {fields['chunk']} of {fields['chunks']} is out of range",
                                ref="chunk")
        if len(fields["data"]) > fields["size"]:
            raise ProtocolError("bad_field", "chunk data larger than the bundle size", ref="data")


# == frames ====================================================================================
@dataclass(frozen=True, eq=False)
class Frame:
    """One validated frame: its type `t`, its fields, and the protocol version `v`."""

    t: str
    fields: dict = field(default_factory=dict)
    v: int = VERSION

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    def to_dict(self) -> dict:
        return {"v": self.v, "t": self.t, **self.fields}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return self.t == other.t and self.v == other.v and _same(self.fields, other.fields)

    def __repr__(self) -> str:
        shown = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v) for k, v in self.fields.items()}
        return f"Frame({self.t!r}, {shown!r}, v={self.v})"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def make(t: str, **fields: Any) -> Frame:
    """A validated frame of type `t` (ProtocolError when a field is missing or mistyped)."""
    frame = Frame(t, fields)
    validate(frame)
    return frame


def validate(frame: Frame) -> Frame:
    if frame.v not in SUPPORTED_VERSIONS:
        raise ProtocolError("unsupported_version", f"protocol version {frame.v!r} is not supported "
                            f"(supported: {list(SUPPORTED_VERSIONS)})", version=frame.v)
    schema = SCHEMAS.get(frame.t)
    if schema is None:
        raise ProtocolError("unknown_type", f"unknown frame type {short(frame.t)}", ref=frame.t)
    required, optional = schema
    check_fields(frame.fields, required, optional, "")
    _check_semantics(frame.t, frame.fields)
    return frame


def encode(frame: Frame | Mapping[str, Any], *, max_size: int = MAX_FRAME_BYTES) -> bytes:
    """The bytes of a frame (validated first); ProtocolError when invalid or too large."""
    if not isinstance(frame, Frame):
        frame = dict(frame)
        frame = Frame(frame.pop("t", None), {k: v for k, v in frame.items() if k != "v"},
                      frame.get("v", VERSION))
    validate(frame)
    try:
        data = codec.pack(frame.to_dict())
    except codec.CodecError as exc:
        raise ProtocolError("bad_field", f"a field cannot be encoded: {exc}", ref=frame.t) from None
    if len(data) > max_size:
        raise ProtocolError("too_large", f"{frame.t} frame of {len(data)} bytes exceeds the limit of "
                            f"{max_size}; split it", ref=frame.t)
    return data


def decode(data: bytes | bytearray | memoryview, *, max_size: int = MAX_FRAME_BYTES,
           accept: Iterable[str] | None = None) -> Frame:
    """The frame in `data`, validated; ProtocolError (never another exception) when it is not one.

    `accept` limits the frame types this side may receive (`FROM_EDGE` on the federation,
    `FROM_FEDERATION` on an edge): others raise code `unexpected_type`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("malformed", f"a frame must be binary, got {type(data).__name__}")
    if len(data) > max_size:
        raise ProtocolError("too_large", f"frame of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        document = codec.unpack(data)
    except codec.CodecError as exc:
        raise ProtocolError("malformed", str(exc)) from None
    if not isinstance(document, dict):
        raise ProtocolError("malformed", f"a frame must be a map, got {type(document).__name__}")
    version, t = document.get("v"), document.get("t")
    if not is_int(version):
        raise ProtocolError("malformed", "the frame has no integer protocol version 'v'")
    if not isinstance(t, str):
        raise ProtocolError("malformed", "the frame has no string type 't'", version=version)
    if not all(isinstance(k, str) for k in document):
        raise ProtocolError("malformed", "frame keys must be strings", ref=t)
    fields = {k: v for k, v in document.items() if k not in ("v", "t")}
    frame = Frame(t, fields, version)
    validate(frame)
    if accept is not None and t not in accept:
        raise ProtocolError("unexpected_type", f"a {t} frame is not expected here", ref=t)
    return frame


# == negotiation and errors ====================================================================
def negotiate(offered: Iterable[int]) -> int | None:
    """The highest version both sides speak, or None (then: error frame naming ours, and close)."""
    common = set(SUPPORTED_VERSIONS) & {v for v in offered if is_int(v)}
    return max(common) if common else None


def error_frame(error: ProtocolError | str, message: str | None = None, ref: Any = None,
                fatal: bool | None = None) -> Frame:
    """An error frame answering a ProtocolError (or a code and message)."""
    if isinstance(error, ProtocolError):
        code, message, ref = error.code, error.reason, error.ref if ref is None else ref
        if fatal is None:
            fatal = code in ("unsupported_version", "too_large")
    else:
        code = error
    fields: dict[str, Any] = {"code": code, "message": message or code}
    if ref is not None:
        fields["ref"] = ref if isinstance(ref, (str, int)) else str(ref)
    if code == "unsupported_version":
        fields["supported"] = list(SUPPORTED_VERSIONS)
    if fatal is not None:
        fields["fatal"] = fatal
    return make("error", **fields)


def version_error(version: Any) -> bytes:
    """The bytes to send a peer that spoke `version`: a v1 error frame naming what we support."""
    return encode(make("error", code="unsupported_version", fatal=True,
                       message=f"protocol version {short(version)} is not supported; "
                               f"this side speaks {list(SUPPORTED_VERSIONS)}",
                       supported=list(SUPPORTED_VERSIONS)))


# == row batches ===============================================================================
def columns_of(rows: list, width: int) -> tuple[int, list]:
    """Rows → (n, columns) for a rows/publish frame.

    A row of one column is the value itself; of several, a tuple. A column of Integers becomes an
    int64 array, of Reals float64, of Booleans bool, of equal-shaped numeric arrays one stacked
    array (2-D for vectors); anything else stays a list, so every value keeps its exact type.
    """
    n = len(rows)
    if width == 1:
        return n, [_column(list(rows))]
    for row in rows:
        if not isinstance(row, (tuple, list)) or len(row) != width:
            raise ValueError(f"a row of {width} columns must be a tuple of {width} values, got {row!r}")
    return n, [_column([row[i] for row in rows]) for i in range(width)]


def _column(values: list):
    if not values:
        return []
    first = type(values[0])
    if first is float and all(type(v) is float for v in values):
        return np.array(values, dtype=np.float64)
    if first is bool and all(type(v) is bool for v in values):
        return np.array(values, dtype=np.bool_)
    if first is int and all(type(v) is int for v in values):
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return values
    if first is np.ndarray and all(type(v) is np.ndarray for v in values):
        shape, dtype = values[0].shape, values[0].dtype
        if dtype != object and all(v.shape == shape and v.dtype == dtype for v in values):
            return np.stack(values)
    return values


def rows_of(n: int, cols: list) -> list:
    """(n, columns) → rows: plain values for one column, tuples for several (inverse of columns_of)."""
    if not cols:
        return [()] * n
    lists = [_unstack(c) for c in cols]
    if len(lists) == 1:
        return lists[0]
    return list(zip(*lists))


def _unstack(col) -> list:
    if isinstance(col, np.ndarray):
        if col.ndim == 1:
            return col.tolist() if col.dtype != object else list(col)
        return list(col)  # rows of a 2-D array: one vector each
    return list(col)


def split_columns(n: int, cols: list, max_rows: int) -> Iterable[tuple[int, list]]:
    """A batch cut into pieces of at most `max_rows` rows (views, no copies for arrays)."""
    for start in range(0, n, max(1, max_rows)):
        stop = min(n, start + max_rows)
        yield stop - start, [c[start:stop] for c in cols]


# == backpressure ==============================================================================
class CreditWindow:
    """Rows a query may still send: starts at the query's credit, grows with credit frames.

    >>> w = CreditWindow(100); w.take(250), w.take(5)
    (100, 0)
    >>> w.add(50); w.take(20), w.available
    (20, 30)
    """

    def __init__(self, initial: int = 0):
        self.available = max(0, int(initial))
        self.sent = 0

    def add(self, rows: int) -> None:
        self.available += max(0, int(rows))

    def take(self, wanted: int) -> int:
        """How many of `wanted` rows may go now (that many are consumed from the window)."""
        granted = min(self.available, max(0, wanted))
        self.available -= granted
        self.sent += granted
        return granted


# == publish deduplication (federation side) ===================================================
class PublishReceiver:
    """The receiving side of publish: which sequence numbers of which edge log were seen.

    The edge numbers every record of its store-and-forward log (identified by `log`, a random id
    made when the log is created) 1, 2, 3, …; records arrive in order, and again after a
    reconnect when their ack was lost. `accept` says whether a record is new (deliver it) or a
    duplicate (drop it, but still acknowledge). Persist `state()` with what the records produced,
    so that deduplication survives a federation restart.

    >>> r = PublishReceiver(); r.hello("e1", "log-a")
    0
    >>> [r.accept("e1", s) for s in (1, 2, 2, 5, 3)], r.last("e1"), r.missing("e1")
    ([True, True, False, True, False], 5, 2)
    """

    def __init__(self, state: Mapping[str, Any] | None = None):
        self._logs: dict[str, str] = {}       # edge → current log id
        self._last: dict[str, int] = {}       # edge → highest sequence accepted in that log
        self._missing: dict[str, int] = {}    # edge → sequence numbers skipped (dropped at the edge)
        self.duplicates = 0
        if state:
            for edge, entry in state.get("edges", {}).items():
                self._logs[edge] = entry["log"]
                self._last[edge] = int(entry["last"])
                self._missing[edge] = int(entry.get("missing", 0))

    def hello(self, edge: str, log: str | None) -> int:
        """An edge connected with `log`; returns what to send as `welcome.publish_acked`.

        A log this receiver has not seen for the edge (a new device, a wiped store) starts at 0.
        """
        if log is None:
            return self._last.get(edge, 0)
        if self._logs.get(edge) != log:
            self._logs[edge] = log
            self._last[edge] = 0
            self._missing[edge] = 0
        return self._last[edge]

    def accept(self, edge: str, seq: int) -> bool:
        """True when record `seq` of the edge's current log is new; False for a duplicate."""
        last = self._last.get(edge, 0)
        if seq <= last:
            self.duplicates += 1
            return False
        if seq > last + 1:
            self._missing[edge] = self._missing.get(edge, 0) + (seq - last - 1)
        self._last[edge] = seq
        return True

    def last(self, edge: str) -> int:
        """The highest sequence accepted: what to send as `publish_ack.upto`."""
        return self._last.get(edge, 0)

    def missing(self, edge: str) -> int:
        """Sequence numbers skipped so far (records the edge dropped on overflow before sending)."""
        return self._missing.get(edge, 0)

    def log(self, edge: str) -> str | None:
        return self._logs.get(edge)

    def forget(self, edge: str) -> None:
        for table in (self._logs, self._last, self._missing):
            table.pop(edge, None)

    def state(self) -> dict:
        """JSON-able state for persistence; `PublishReceiver(state)` restores it."""
        return {"edges": {edge: {"log": self._logs.get(edge), "last": self._last.get(edge, 0),
                                 "missing": self._missing.get(edge, 0)}
                          for edge in set(self._logs) | set(self._last)}}


# == examples ==================================================================================
def examples() -> dict[str, dict]:
    """One valid field set per frame type: for docs and for contract tests of either side."""
    return {
        "hello": {"edge": "wl-1", "software": "streamql 0.1.0", "versions": [1],
                  "metadata": {"kind": "wheel loader", "region": "US"},
                  "capabilities": {"ram_kb": 524288, "flash_kb": 4194304, "cpu": "cortex-a53",
                                   "signals": [{"name": "vibration", "type": "Real", "rate_hz": 1000.0}],
                                   "runtimes": {"python": "3.11.7", "numpy": "2.4.6"}},
                  "models": {"vib-anomaly": "1.2.0"}, "restarts": 3,
                  "resume": {"log": "6f1c0e2a9b3d4c5e", "first": 41, "last": 57, "count": 17,
                             "dropped": 0}},
        "welcome": {"accepted": True, "server_time": 1709853017.9, "heartbeat_s": 5.0,
                    "publish_acked": 40},
        "health": {"time": 1709853017.9, "uptime_s": 3600.5, "restarts": 3, "cpu_percent": 4.2,
                   "memory_kb": 61234, "battery": {"percent": 87.0, "charging": False, "source": "sysfs"},
                   "queues": {"buffer": 17, "q-1": 0}, "link": {"rtt_ms": 12.5, "reconnects": 2},
                   "errors": [{"time": 1709853000.0, "kind": "ProtocolError", "message": "bad frame"}],
                   "buffer": {"records": 17, "bytes": 20480, "dropped": 0}, "queries": ["q-1"]},
        "query": {"qid": "q-1", "source": "select signal_value('vibration');",
                  "limits": {"rows": 1000, "seconds": 60.0, "memory_mb": 64.0}, "credit": 4096,
                  "batch_rows": 1024},
        "rows": {"qid": "q-1", "seq": 0, "n": 2, "cols": [np.array([0.5, 0.7]), ["a", "b"]],
                 "names": ["v", "s"]},
        "credit": {"qid": "q-1", "add": 4096},
        "end": {"qid": "q-1", "outcome": "error", "rows": 0,
                "error": {"kind": "NameError", "message": "no signal vibration", "line": 1, "column": 21}},
        "cancel": {"qid": "q-1", "reason": "client went away"},
        "deploy": {"did": "d-9", "model": "vib-anomaly", "version": "1.2.0",
                   "sha256": "0" * 64, "size": 3, "chunk": 0, "chunks": 1, "data": b"abc",
                   "variants": ["int8"]},
        "ack": {"did": "d-9", "model": "vib-anomaly", "version": "1.2.0",
                "active": {"vib-anomaly": "1.2.0"}, "autostart": ["vib-anomaly:autostart/alerts.sql#1"],
                "loaded": {"vib_anomaly": "1.2.0"}},
        "nack": {"did": "d-9", "code": "requirements", "reason": "needs ram_kb 1048576, has 524288",
                 "active": {"vib-anomaly": "1.1.0"}},
        "rollback": {"did": "d-10", "model": "vib-anomaly"},
        "undeploy": {"did": "d-11", "model": "vib-anomaly"},
        "publish": {"seq": 41, "flow": "alerts", "n": 1, "cols": [np.array([2.7])], "time": 1709853017.9},
        "publish_ack": {"upto": 41},
        "error": {"code": "unknown_type", "message": "unknown frame type 'zzz'", "ref": "zzz"},
        "ping": {"nonce": 7, "time": 1709853017.9},
        "pong": {"nonce": 7, "time": 1709853017.9},
    }
