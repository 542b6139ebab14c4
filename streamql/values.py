"""Run-time values beyond Python's own.

Integer → int, Real → float, Charstring → str, Boolean → bool, null → None, Record → dict,
numeric Vector → numpy.ndarray (1-D, or 2-D for a vector of equal-length numeric vectors),
other Vector → list. The classes here cover what Python lacks: points in time, timestamped
values, bags, store objects and function references; `make_vector` decides how a list of values
is held (an array when numeric).
"""
from __future__ import annotations

import datetime as _dt
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


@dataclass(frozen=True, slots=True, order=True)
class Time:
    """A point in time: seconds since the Unix epoch, UTC."""

    seconds: float

    @classmethod
    def parse(cls, text: str) -> "Time":
        """Parse ISO 8601 (`2024-03-07T23:10:17.9Z`, a date alone, or with an offset)."""
        raw = text.strip()
        if raw.endswith(("Z", "z")):
            raw = raw[:-1] + "+00:00"
        try:
            moment = _dt.datetime.fromisoformat(raw)
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 time: {text!r}") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_dt.timezone.utc)
        return cls((moment - _EPOCH).total_seconds())

    def iso(self) -> str:
        moment = _EPOCH + _dt.timedelta(seconds=self.seconds)
        # not strftime: its %Y gives '999', not '0999', for years before 1000 on glibc
        text = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
                f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}")
        fraction = round(self.seconds - math.floor(self.seconds), 6)
        if fraction and fraction < 1:
            text += f"{fraction:.6f}"[1:].rstrip("0")
        return text + "Z"

    def __add__(self, other: Any) -> "Time":
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return Time(self.seconds + other)
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other: Any):
        if isinstance(other, Time):
            return self.seconds - other.seconds
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return Time(self.seconds - other)
        return NotImplemented

    def __str__(self) -> str:
        return f"|{self.iso()}|"

    __repr__ = __str__


@dataclass(frozen=True, slots=True)
class Timeval:
    """A timestamped value, as `ts(t, v)` makes and `time(tv)`, `value(tv)` take apart."""

    time: Time
    value: Any

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timeval) and self.time == other.time and values_equal(self.value, other.value)

    def __hash__(self) -> int:
        return hash((self.time, _hashable(self.value)))

    def __repr__(self) -> str:
        return f"ts({self.time}, {format_value(self.value)})"


class Bag:
    """An unordered collection that may hold duplicates; equal to another with the same elements."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any] = ()):
        self.items = list(items)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bag):
            return NotImplemented
        if len(self.items) != len(other.items):
            return False
        return Counter(map(_hashable, self.items)) == Counter(map(_hashable, other.items))

    def __hash__(self) -> int:
        return hash(frozenset(Counter(map(_hashable, self.items)).items()))

    def __repr__(self) -> str:
        return "bag(" + ", ".join(format_value(v) for v in self.items) + ")"


@dataclass(frozen=True, slots=True)
class Obj:
    """An object of the store: identity is its number; its type name is kept for printing."""

    oid: int
    type_name: str

    def __repr__(self) -> str:
        return f"#[OID {self.oid} {self.type_name}]"


@dataclass(frozen=True, slots=True)
class EdgeRef:
    """An edge (device) of a federation, identified by its device id."""

    id: str

    def __repr__(self) -> str:
        return f"#[Edge {self.id}]"


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A reference to a function by name, written `#'mean'`."""

    name: str

    def __repr__(self) -> str:
        return f"#'{self.name}'"


def _hashable(value: Any) -> Any:
    """A hashable stand-in for a value, equal for equal values (arrays by content)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.shape, tuple(value.ravel().tolist()))
    if isinstance(value, list):
        return ("list", tuple(_hashable(v) for v in value))
    if isinstance(value, dict):
        return ("record", tuple(sorted((k, _hashable(v)) for k, v in value.items())))
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1 = 1.0 holds, so they must hash alike
    if isinstance(value, np.generic):
        return _hashable(value.item())
    materialize = getattr(value, "materialize", None)  # a bag computed on demand
    if materialize is not None:
        return materialize()
    return value


hashable = _hashable


def values_equal(a: Any, b: Any) -> bool:
    """Exact equality as the language defines it: `1 = 1.0`, vectors elementwise into one Boolean."""
    if a is None or b is None:
        return False
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            a_arr, b_arr = np.asarray(a), np.asarray(b)
        except Exception:
            return False
        if a_arr.shape != b_arr.shape:
            return False
        if a_arr.dtype == object or b_arr.dtype == object:
            return all(values_equal(x, y) for x, y in zip(a_arr.ravel(), b_arr.ravel()))
        return bool(np.array_equal(a_arr, b_arr))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


def format_value(value: Any) -> str:
    """A value as the language would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_real(float(value))
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}": {format_value(v)}' for k, v in value.items()) + "}"
    if isinstance(value, bytes):
        return f"binary('{value.hex().upper()}')"
    return repr(value)


def brief_value(value: Any, items: int = 8, chars: int = 80) -> str:
    """A value as format_value writes it, cut short for an error message: at most `items` elements
    of a collection and `chars` characters of a string (a message naming a vector of millions must
    not take longer, or more memory, than the statement that failed)."""
    if isinstance(value, str) and len(value) > chars:
        return format_value(value[:chars]) + f"… ({len(value)} characters)"
    if isinstance(value, bytes) and len(value) > chars // 2:
        return f"binary('{value[:chars // 2].hex().upper()}…') ({len(value)} bytes)"
    if isinstance(value, (np.ndarray, list, tuple)) and len(value) > items:
        shown = ", ".join(brief_value(v, items, chars) for v in value[:items])
        return f"[{shown}, … ({len(value)} elements)]"
    if isinstance(value, (np.ndarray, list, tuple)):
        return "[" + ", ".join(brief_value(v, items, chars) for v in value) + "]"
    if isinstance(value, dict) and len(value) > items:
        shown = ", ".join(f'"{k}": {brief_value(v, items, chars)}' for k, v in list(value.items())[:items])
        return "{" + shown + f", … ({len(value)} fields)}}"
    return format_value(value)


def format_real(x: float) -> str:
    """A float printed so that it reads back exactly (repr), with `nan`/`inf` spelled out."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = repr(x)
    return text


def as_numeric_array(values: list) -> np.ndarray | None:
    """A list of numbers (or of equal-length numeric arrays) as an array; None when not numeric."""
    if not values:
        return np.empty(0)
    first = values[0]
    if isinstance(first, bool) or first is None:
        if all(isinstance(v, bool) for v in values):
            return np.array(values, dtype=bool)
        return None
    if isinstance(first, (int, float, np.integer, np.floating)):
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
            if all(isinstance(v, (int, np.integer)) for v in values):
                try:
                    return np.array(values, dtype=np.int64)
                except OverflowError:
                    return None
            return np.array(values, dtype=np.float64)
        return None
    if isinstance(first, np.ndarray) and first.dtype != object:
        shape = first.shape
        if all(isinstance(v, np.ndarray) and v.shape == shape and v.dtype != object for v in values):
            if len(shape) >= 31:  # numpy holds at most 64 dimensions; deep nests stay lists
                return None
            return np.stack(values)
    return None


def make_vector(items: list):
    """A vector value: a numpy array when all elements are numbers (or equal-length numeric
    vectors), else a list."""
    if not items:
        return np.empty(0)
    converted = as_numeric_array(items)
    if converted is not None and converted.dtype != bool:
        return converted
    return list(items)
