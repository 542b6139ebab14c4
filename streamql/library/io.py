"""Files as streams: `csv:file_stream` and `json:file_stream`."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..batch import Batch
from ..errors import QueryRuntimeError
from ..registry import SOURCE, Library
from ..streams import StreamValue
from ..values import make_vector

CHUNK_ROWS = 4096


def _number(text: str):
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        return float(stripped)
    except ValueError:
        return stripped


def _open(path: str):
    file = Path(path)
    if not file.exists():
        raise QueryRuntimeError(f"no such file: {path}")
    return file.open("r", encoding="utf-8", newline="")


def csv_file_stream(ctx, path: str) -> StreamValue:
    """Each row of a CSV file as a vector (numbers parsed); rows arrive in batches."""
    def open_():
        with _open(path) as handle:
            rows = []
            for row in csv.reader(handle):
                if not row:
                    continue
                rows.append(make_vector([_number(cell) for cell in row]))
                if len(rows) >= CHUNK_ROWS:
                    yield _rows_batch(rows)
                    rows = []
                    ctx.check()
            if rows:
                yield _rows_batch(rows)
    return StreamValue(open_, f"csv:file_stream('{path}')")


def _rows_batch(rows: list) -> Batch:
    if all(isinstance(r, np.ndarray) and r.dtype != object for r in rows) and len({r.shape for r in rows}) == 1:
        return Batch(np.stack(rows))
    return Batch(rows)


def _json_value(value):
    if isinstance(value, list):
        return make_vector([_json_value(v) for v in value])
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def json_file_stream(ctx, path: str) -> StreamValue:
    """Each line of a JSON-lines file as a value (objects become records, arrays vectors)."""
    def open_():
        with _open(path) as handle:
            values = []
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    values.append(_json_value(json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise QueryRuntimeError(f"{path}, line {number}: not JSON ({exc.msg})") from None
                except RecursionError:
                    raise QueryRuntimeError(f"{path}, line {number}: the value is nested too deeply") from None
                if len(values) >= CHUNK_ROWS:
                    yield Batch(values)
                    values = []
                    ctx.check()
            if values:
                yield Batch(values)
    return StreamValue(open_, f"json:file_stream('{path}')")


def register(lib: Library) -> None:
    src = dict(kind=SOURCE, volatile=True, topic="io", needs_context=True)
    lib.define("csv:file_stream(Charstring path) -> Stream of Vector", scalar=csv_file_stream,
               doc="The rows of a CSV file as vectors (numbers parsed)", **src)
    lib.define("json:file_stream(Charstring path) -> Stream of Object", scalar=json_file_stream,
               doc="The values of a JSON-lines file, one per line", **src)
