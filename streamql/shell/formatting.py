"""Printing rows as they arrive: an aligned table, CSV or JSON lines.

A printer gets `begin(columns, types, kind)`, then `row(values)` for each row, then `end()`. A
table of a bag waits for a few rows (or a moment) to align its columns, then streams the rest at
those widths; a table of a stream prints its header at once and every row as it comes.
"""
from __future__ import annotations

import csv
import io
import json
import time
from typing import Any, Callable, TextIO

import numpy as np

from ..codec import to_plain
from ..values import Time, Timeval, format_real, format_value

FORMATS = ("table", "csv", "json")
MAX_CELL = 60           # a table cell longer than this is cut with '…'
VECTOR_HEAD = 8         # a long vector shows its first and last elements


# ------------------------------------------------------------------------------ value text
def cell_text(value: Any, *, full: bool = False) -> str:
    """A value as a table cell: strings bare, everything else as the language writes it."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is float:
        return format_real(value)
    if isinstance(value, str):
        text = value
    elif isinstance(value, Time):
        text = value.iso()
    elif isinstance(value, Timeval):
        text = f"{cell_text(value.time)} {cell_text(value.value, full=full)}"
    elif isinstance(value, np.ndarray) and not full and value.ndim == 1 and value.size > 2 * VECTOR_HEAD:
        head = ", ".join(format_value(v) for v in value[:VECTOR_HEAD - 2])
        tail = ", ".join(format_value(v) for v in value[-2:])
        text = f"[{head}, …, {tail}] ({value.size})"
    elif isinstance(value, list) and not full and len(value) > 2 * VECTOR_HEAD:
        head = ", ".join(format_value(v) for v in value[:VECTOR_HEAD - 2])
        text = f"[{head}, …] ({len(value)})"
    else:
        text = format_value(value)
    text = text.replace("\n", "\\n")
    if not full and len(text) > MAX_CELL:
        text = text[:MAX_CELL - 1] + "…"
    return text


def csv_text(value: Any) -> str:
    """A value as a CSV field: null empty, strings bare, times ISO, vectors as JSON lists."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return format_value(value)
    if isinstance(value, Time):
        return value.iso()
    plain = to_plain(value)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False, separators=(",", ":"))


def json_value(value: Any) -> Any:
    try:
        return to_plain(value)
    except Exception:  # noqa: BLE001 - an odd value still prints
        return format_value(value)


def _numeric(type_name: str) -> bool:
    return type_name in ("Integer", "Real", "Number")


_TYPE_WIDTH = {"Integer": 6, "Real": 18, "Number": 18, "Boolean": 5, "Time": 27, "Charstring": 12}


# --------------------------------------------------------------------------------- printers
class Printer:
    """Base: writes to `out`; `rows` counts what was printed."""

    def __init__(self, out: TextIO):
        self.out = out
        self.rows = 0
        self.columns: list[str] = []

    def begin(self, columns: list[str], types: list, kind: str) -> None:
        self.columns = list(columns)
        self.types = [str(t) for t in types] + [""] * (len(columns) - len(types))
        self.kind = kind

    def row(self, values: tuple) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Called while waiting for rows: a buffering printer may decide to flush."""

    def end(self, interrupted: bool = False) -> None:
        pass

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


class TablePrinter(Printer):
    """psql-style aligned table. Bags and vectors buffer up to `buffer_rows` rows or
    `buffer_seconds` to size the columns; streams print each row at once."""

    def __init__(self, out: TextIO, buffer_rows: int = 500, buffer_seconds: float = 0.5,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(out)
        self.buffer_rows = buffer_rows
        self.buffer_seconds = buffer_seconds
        self.clock = clock
        self._pending: list[list[str]] | None = None
        self._widths: list[int] = []
        self._numeric: list[bool] = []
        self._started = 0.0

    def begin(self, columns, types, kind) -> None:
        super().begin(columns, types, kind)
        self._numeric = [_numeric(t) for t in self.types]
        self._started = self.clock()
        if kind == "stream":
            self._widths = [max(len(c), _TYPE_WIDTH.get(t, 10)) for c, t in zip(self.columns, self.types)]
            self._header()
        else:
            self._pending = []

    def row(self, values: tuple) -> None:
        cells = [cell_text(v, full=self.kind == "vector") for v in values]
        self.rows += 1
        if self._pending is not None:
            self._pending.append(cells)
            if len(self._pending) >= self.buffer_rows or (self.rows % 64 == 0 and self._waited()):
                self._flush()
            return
        self._write(self._line(cells) + "\n")

    def _waited(self) -> bool:
        return self.clock() - self._started >= self.buffer_seconds

    def tick(self) -> None:
        if self._pending and self._waited():
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending or [], None
        self._widths = [len(c) for c in self.columns]
        for cells in pending:
            self._widths = [max(w, len(c)) for w, c in zip(self._widths, cells)]
        self._header()
        if pending:
            self._write("".join(self._line(cells) + "\n" for cells in pending))

    def _header(self) -> None:
        head = " | ".join(c.center(w) if len(self.columns) > 1 else c.ljust(w)
                          for c, w in zip(self.columns, self._widths))
        rule = "-+-".join("-" * w for w in self._widths)
        self._write(f" {head.rstrip()}\n-{rule}-\n")

    def _line(self, cells: list[str]) -> str:
        parts = []
        for cell, width, numeric in zip(cells, self._widths, self._numeric):
            parts.append(cell.rjust(width) if numeric else cell.ljust(width))
        return (" " + " | ".join(parts)).rstrip()

    def end(self, interrupted: bool = False) -> None:
        if self._pending is not None:
            self._flush()
        if not interrupted:  # the shell says how many rows came before the interrupt
            self._write(f"({self.rows} row{'' if self.rows == 1 else 's'})\n")


class CsvPrinter(Printer):
    def begin(self, columns, types, kind) -> None:
        super().begin(columns, types, kind)
        self._emit(self.columns)

    def row(self, values: tuple) -> None:
        self.rows += 1
        self._emit([csv_text(v) for v in values])

    def _emit(self, fields: list[str]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(fields)
        self._write(buffer.getvalue())


class JsonPrinter(Printer):
    """JSON lines: one object per row keyed by column name (repeated names get a suffix)."""

    def begin(self, columns, types, kind) -> None:
        super().begin(columns, types, kind)
        seen: dict[str, int] = {}
        keys = []
        for name in self.columns:
            count = seen.get(name, 0)
            seen[name] = count + 1
            keys.append(name if count == 0 else f"{name}_{count + 1}")
        self._keys = keys

    def row(self, values: tuple) -> None:
        self.rows += 1
        record = {k: json_value(v) for k, v in zip(self._keys, values)}
        self._write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def make_printer(kind: str, out: TextIO) -> Printer:
    if kind == "csv":
        return CsvPrinter(out)
    if kind == "json":
        return JsonPrinter(out)
    return TablePrinter(out)


def as_tuple(row: Any, width: int) -> tuple:
    """A row as a tuple of its columns (one-column rows come as the bare value)."""
    if width == 1:
        return (row,)
    return tuple(row) if isinstance(row, (tuple, list)) else (row,)
