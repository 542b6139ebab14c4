"""The selection index: every device's metadata and capabilities as columns of value codes.

Devices are row numbers. Each key (`('meta', name)` or `('capability', name)`) is a column: an
int32 array of codes into the key's dictionary of distinct values (0 = missing) and, once a number
appears under the key, a float64 array (NaN where there is no number) for ordering comparisons.
A predicate becomes a boolean mask over the rows: equality and `in` look their values up in the
dictionary and compare codes (a few) or gather a per-code truth table (`np.take(lut, codes)`);
`like` and string comparisons evaluate the dictionary once, never the rows. `np.flatnonzero` of the mask gives the rows.

The index is kept in sync with the registry as its listener (`device_changed`, `device_removed`,
`online_changed`, `reset`); it never writes anything itself.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np

from streamql.selection import (
    ID,
    NUMBER,
    ONLINE,
    STRING,
    All,
    And,
    Compare,
    Eq,
    In,
    IsNull,
    Key,
    Like,
    Not,
    Or,
    Predicate,
    as_float,
    compare_normalized,
    like,
    normalize,
)

_INITIAL_CAPACITY = 1024
MAX_CACHED_TABLES = 64   # per column: truth tables of recent `like` and string comparisons


class IndexedDevice(Protocol):
    id: str
    metadata: dict
    capabilities: dict
    online: bool


class _Column:
    """One key: value codes per row, the dictionary of distinct values, numbers per row."""

    __slots__ = ("codes", "values", "lookup", "numbers", "luts")

    def __init__(self, capacity: int):
        self.codes = np.zeros(capacity, dtype=np.int32)
        self.values: list[tuple[str, Any] | None] = [None]  # code → normalized value
        self.lookup: dict[tuple[str, Any], int] = {}
        self.numbers: np.ndarray | None = None
        self.luts: dict[Any, np.ndarray] = {}   # truth tables by the test they answer (values only grow)

    def code_of(self, normalized: tuple[str, Any]) -> int:
        code = self.lookup.get(normalized)
        if code is None:
            code = len(self.values)
            self.values.append(normalized)
            self.lookup[normalized] = code
        return code

    def set(self, row: int, normalized: tuple[str, Any] | None) -> None:
        if normalized is None:
            self.clear(row)
            return
        self.codes[row] = self.code_of(normalized)
        if normalized[0] == NUMBER:
            if self.numbers is None:
                self.numbers = np.full(len(self.codes), np.nan)
            self.numbers[row] = as_float(normalized[1])
        elif self.numbers is not None:
            self.numbers[row] = np.nan

    def clear(self, row: int) -> None:
        self.codes[row] = 0
        if self.numbers is not None:
            self.numbers[row] = np.nan

    def grow(self, capacity: int) -> None:
        codes = np.zeros(capacity, dtype=np.int32)
        codes[: len(self.codes)] = self.codes
        self.codes = codes
        if self.numbers is not None:
            numbers = np.full(capacity, np.nan)
            numbers[: len(self.numbers)] = self.numbers
            self.numbers = numbers

    def truth_table(self, test: Callable[[tuple[str, Any]], bool], key: Any = None) -> np.ndarray:
        """lut[code] = test(value of code); lut[0] (missing) is always False. With a `key` naming
        the test, the table is kept and only extended over values added since (codes never change
        meaning): a `like` over a thousand sites costs its thousand matches once, not per selection."""
        try:
            cached = self.luts.get(key) if key is not None else None
        except TypeError:   # an unhashable value (a list compared): computed each time
            key = cached = None
        done = 1 if cached is None else len(cached)
        if done == len(self.values):
            return cached
        lut = np.zeros(len(self.values), dtype=bool)
        if cached is not None:
            lut[:done] = cached
        for code in range(done, len(self.values)):
            lut[code] = test(self.values[code])
        if key is not None:
            if len(self.luts) >= MAX_CACHED_TABLES:
                self.luts.clear()
            self.luts[key] = lut
        return lut


class SelectionIndex:
    """Answers selection predicates over all registered devices with numpy masks."""

    def __init__(self) -> None:
        self.before_select: Callable[[], None] | None = None  # e.g. pick up other processes' writes
        self._clear()

    def _clear(self) -> None:
        self._capacity = _INITIAL_CAPACITY
        self._rows = 0  # high-water mark: rows in use or freed
        self._free: list[int] = []
        self._row_of: dict[str, int] = {}
        self._ids = np.empty(self._capacity, dtype=object)
        self._alive = np.zeros(self._capacity, dtype=bool)
        self._online = np.zeros(self._capacity, dtype=bool)
        self._row_keys: list[tuple[Key, ...]] = []
        self._columns: dict[Key, _Column] = {}

    # --- size and keys ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._row_of

    def keys(self) -> list[Key]:
        """Every metadata/capability key some device has or had."""
        return sorted(self._columns)

    def online_count(self) -> int:
        return int(np.count_nonzero(self._online[: self._rows] & self._alive[: self._rows]))

    def distinct_values(self, key: Key) -> list[Any]:
        """The distinct values present under `key` (for completion and EXPLAIN)."""
        column = self._columns.get(tuple(key))
        if column is None:
            return []
        present = np.unique(column.codes[: self._rows][self._alive[: self._rows]])
        return [column.values[c][1] for c in present.tolist() if c != 0]

    # --- keeping in sync (the registry's listener interface) ------------------------------------
    def reset(self, devices: Iterable[IndexedDevice]) -> None:
        """Forget everything and index `devices` (at start, or after another process wrote)."""
        self._clear()
        for device in devices:
            self.device_changed(device)

    def device_changed(self, device: IndexedDevice) -> None:
        row = self._row_of.get(device.id)
        if row is None:
            row = self._new_row(device.id)
        else:
            for key in self._row_keys[row]:
                self._columns[key].clear(row)
        keys = []
        for kind, values in (("meta", device.metadata), ("capability", device.capabilities)):
            for name, value in (values or {}).items():
                normalized = normalize(value)
                if normalized is None:
                    continue
                key = (kind, name)
                column = self._columns.get(key)
                if column is None:
                    column = self._columns[key] = _Column(self._capacity)
                column.set(row, normalized)
                keys.append(key)
        self._row_keys[row] = tuple(keys)
        self._online[row] = bool(device.online)

    def device_removed(self, device_id: str) -> None:
        row = self._row_of.pop(device_id, None)
        if row is None:
            return
        for key in self._row_keys[row]:
            self._columns[key].clear(row)
        self._row_keys[row] = ()
        self._alive[row] = False
        self._online[row] = False
        self._ids[row] = None
        self._free.append(row)

    def online_changed(self, device_ids: Iterable[str], online: bool) -> None:
        rows = [self._row_of[i] for i in device_ids if i in self._row_of]
        self._online[rows] = bool(online)

    def _new_row(self, device_id: str) -> int:
        if self._free:
            row = self._free.pop()
        else:
            if self._rows == self._capacity:
                self._grow(self._capacity * 2)
            row = self._rows
            self._rows += 1
            self._row_keys.append(())
        self._row_of[device_id] = row
        self._ids[row] = device_id
        self._alive[row] = True
        return row

    def _grow(self, capacity: int) -> None:
        def grown(array: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full(capacity, fill, dtype=array.dtype)
            out[: len(array)] = array
            return out

        self._ids = grown(self._ids, None)
        self._alive = grown(self._alive, False)
        self._online = grown(self._online, False)
        for column in self._columns.values():
            column.grow(capacity)
        self._capacity = capacity

    # --- answering ---------------------------------------------------------------------------------
    def select(self, predicate: Predicate) -> list[str]:
        """Ids of the devices satisfying `predicate`, in registration order (rows reused)."""
        rows = self.select_rows(predicate)  # first: it may reset the arrays (before_select)
        return self._ids[rows].tolist()

    def select_rows(self, predicate: Predicate) -> np.ndarray:
        if self.before_select is not None:
            self.before_select()
        mask = self.mask(predicate)
        mask &= self._alive[: self._rows]
        return np.flatnonzero(mask)

    def count(self, predicate: Predicate) -> int:
        return int(len(self.select_rows(predicate)))

    def explain(self, predicate: Predicate) -> str:
        return f"select edges where {predicate}  -- {self.count(predicate)} of {len(self)} devices"

    def iter_ids(self) -> Iterator[str]:
        return iter(self._row_of)

    def mask(self, predicate: Predicate) -> np.ndarray:
        """A fresh boolean array over rows [0, high-water) — dead rows not yet masked out."""
        n = self._rows
        match predicate:
            case All():
                return np.ones(n, dtype=bool)
            case And(predicates=ps):
                if not ps:
                    return np.ones(n, dtype=bool)
                out = self.mask(ps[0])
                for p in ps[1:]:
                    out &= self.mask(p)
                return out
            case Or(predicates=ps):
                if not ps:
                    return np.zeros(n, dtype=bool)
                out = self.mask(ps[0])
                for p in ps[1:]:
                    out |= self.mask(p)
                return out
            case Not(predicate=p):
                return ~self.mask(p)
            case Eq(key=key, value=value):
                return self._in(key, (value,))
            case In(key=key, values=values):
                return self._in(key, values)
            case Compare(key=key, op="=", value=value):
                return self._in(key, (value,))
            case Compare(key=key, op=op, value=value):
                return self._compare(key, op, value)
            case Like(key=key, pattern=pattern):
                if key == ID:
                    return self._by_id(lambda i: like(i, pattern))
                if key == ONLINE:
                    return np.zeros(n, dtype=bool)
                column = self._columns.get(key)
                if column is None:
                    return np.zeros(n, dtype=bool)
                lut = column.truth_table(lambda v: v[0] == STRING and like(v[1], pattern), key=("like", pattern))
                return np.take(lut, column.codes[:n])
            case IsNull(key=key):
                if key in (ID, ONLINE):
                    return np.zeros(n, dtype=bool)
                column = self._columns.get(key)
                return np.ones(n, dtype=bool) if column is None else column.codes[:n] == 0
        raise TypeError(f"not a selection predicate: {predicate!r}")

    def _in(self, key: Key, values: Iterable[Any]) -> np.ndarray:
        n = self._rows
        wanted = {v for v in (normalize(x) for x in values) if v is not None}
        out = np.zeros(n, dtype=bool)
        if not wanted:
            return out
        if key == ID:
            rows = [self._row_of[v[1]] for v in wanted if v[0] == STRING and v[1] in self._row_of]
            out[rows] = True
            return out
        if key == ONLINE:
            for kind, value in wanted:
                if kind == "b":
                    out |= self._online[:n] == value
            return out
        column = self._columns.get(key)
        if column is None:
            return out
        codes = [c for c in (column.lookup.get(v) for v in wanted) if c is not None]
        if not codes:
            return out
        column_codes = column.codes[:n]
        if len(codes) <= 4:  # a few equalities beat a gather through a truth table
            out = column_codes == codes[0]
            for code in codes[1:]:
                out |= column_codes == code
            return out
        lut = np.zeros(len(column.values), dtype=bool)
        lut[codes] = True
        return np.take(lut, column_codes)

    def _compare(self, key: Key, op: str, value: Any) -> np.ndarray:
        n = self._rows
        right = normalize(value)
        if right is None:
            return np.zeros(n, dtype=bool)
        if key == ID:
            return self._by_id(lambda i: compare_normalized((STRING, i), op, right))
        if key == ONLINE:
            return self._online[:n] != right[1] if op == "!=" and right[0] == "b" else np.zeros(n, dtype=bool)
        column = self._columns.get(key)
        if column is None:
            return np.zeros(n, dtype=bool)
        if right[0] == NUMBER and op != "!=":
            if column.numbers is None or math.isnan(as_float(right[1])):
                return np.zeros(n, dtype=bool)
            numbers, bound = column.numbers[:n], as_float(right[1])
            if op == "<":
                return numbers < bound
            if op == "<=":
                return numbers <= bound
            if op == ">":
                return numbers > bound
            return numbers >= bound
        lut = column.truth_table(lambda v: compare_normalized(v, op, right), key=(op, right))
        return np.take(lut, column.codes[:n])

    def _by_id(self, test: Callable[[str], bool]) -> np.ndarray:
        out = np.zeros(self._rows, dtype=bool)
        rows = [row for device_id, row in self._row_of.items() if test(device_id)]
        out[rows] = True
        return out
