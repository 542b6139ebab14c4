"""Files as streams: `csv:file_stream` and `json:file_stream`.

Both read only what the engine's files directory allows (streamql/files.py): the path is checked
when the function is called, before anything is opened, and a path outside is refused with the
same message whether or not it exists. A file is read in chunks of rows, the statement checked
between them; a JSON line longer than MAX_LINE_CHARS is an error rather than one huge value."""
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
MAX_LINE_CHARS = 16 << 20


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


def _open(file: Path, path: str):
    """The checked file, opened (errors name the path as the statement gave it)."""
    try:
        return file.open("r", encoding="utf-8", newline="")
    except FileNotFoundError:
        raise QueryRuntimeError(f"no such file: {path}") from None
    except (OSError, ValueError) as exc:
        raise QueryRuntimeError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def csv_file_stream(ctx, path: str) -> StreamValue:
    """Each row of a CSV file as a vector (numbers parsed); rows arrive in batches."""
    file = ctx.files.resolve(path, "csv:file_stream")

    def open_():
        with _open(file, path) as handle:
            rows = []
            try:
                for row in csv.reader(handle):
                    if not row:
                        continue
                    rows.append(make_vector([_number(cell) for cell in row]))
                    if len(rows) >= CHUNK_ROWS:
                        yield _rows_batch(rows)
                        rows = []
                        ctx.check()
            except (csv.Error, UnicodeDecodeError) as exc:
                raise QueryRuntimeError(f"{path}: not CSV text ({exc})") from None
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


def _lines(handle, path: str):
    """The file's lines, refusing one longer than MAX_LINE_CHARS before it is read whole."""
    number = 0
    while True:
        try:
            line = handle.readline(MAX_LINE_CHARS + 1)
        except UnicodeDecodeError as exc:
            raise QueryRuntimeError(f"{path}, line {number + 1}: not UTF-8 text ({exc.reason})") from None
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise QueryRuntimeError(f"{path}, line {number}: longer than {MAX_LINE_CHARS} characters")
        yield number, line


def json_file_stream(ctx, path: str) -> StreamValue:
    """Each line of a JSON-lines file as a value (objects become records, arrays vectors)."""
    file = ctx.files.resolve(path, "json:file_stream")

    def open_():
        with _open(file, path) as handle:
            values = []
            for number, line in _lines(handle, path):
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
