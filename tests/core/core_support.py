"""Helpers shared by the language-core tests: the fixture format, value comparison, store
fingerprints and test clocks.

Fixture files (tests/fixtures/**/*.sql) hold statement → expected result pairs, sqlglot style.
A file is a sequence of *cases* separated by blank lines, run in order against one fresh
`Engine(clock=FakeClock(1000.0), seed=7)` (so a case may use what earlier cases created):

    # title: doubling a bag            <- comment lines start with '#'; `# ordered` / `# unordered`
    select x * 2 from Integer x          <- the statement text: every line up to the first line
      where x in iota(1, 3);                that starts with an expectation marker
    > 2                                  <- one expected row per line, a Python literal
    > 4                                     (tuples for several columns, lists for vectors)
    > 6
    numpy> list(np.sqrt(np.arange(1, 4)))  <- or the expected rows computed by numpy, the oracle
    (empty)                              <- the query gives no rows
    !! TypeError: cannot compare         <- the statement fails with this kind (and message part)
    columns> a, b                        <- Result.columns
    contains> Generate x                 <- some row's text contains this (for explain)

A case without expectations must simply succeed (create, set, insert …). Rows are compared in
order when the result is a vector or a stream, when the statement has `order by`, or under
`# ordered`; otherwise as multisets. Numbers match within a relative 1e-9; numpy arrays match
lists elementwise. A failing one-statement case must leave the store exactly as it was.
"""
from __future__ import annotations

import ast as pyast
import itertools
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import streamql
from streamql import codec
from streamql.clock import Clock, FakeClock
from streamql.errors import QueryError, QueryLimitError
from streamql.values import Bag, Obj, Time, Timeval

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MAX_STREAM_ROWS = 5000

_MARKERS = ("> ", "numpy> ", "!! ", "(empty)", "columns> ", "contains> ")


@dataclass
class Case:
    file: Path
    line: int
    text: str
    title: str = ""
    rows: list | None = None          # expected rows (None: not checked)
    error: tuple[str, str] | None = None  # (kind, message part)
    columns: list[str] | None = None
    contains: list[str] = field(default_factory=list)
    ordered: bool | None = None
    options: set[str] = field(default_factory=set)

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(FIXTURES)}:{self.line}"

    @property
    def expects_parse_error(self) -> bool:
        return self.error is not None and self.error[0] == "ParseError"


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.rglob("*.sql"))


def load_fixture(path: Path) -> list[Case]:
    """The cases of one fixture file."""
    cases: list[Case] = []
    lines = path.read_text(encoding="utf-8").split("\n")
    block: list[tuple[int, str]] = []
    for number, line in enumerate(lines + [""], 1):
        if line.strip() == "":
            if block:
                cases.append(_case(path, block))
                block = []
        else:
            block.append((number, line))
    return cases


def _case(path: Path, block: list[tuple[int, str]]) -> Case:
    title, options, text_lines, expectations = "", set(), [], []
    first_line = block[0][0]
    for number, line in block:
        stripped = line.strip()
        if not text_lines and stripped.startswith("#"):
            comment = stripped[1:].strip()
            if comment.startswith("title:"):
                title = comment[len("title:"):].strip()
            elif comment:
                options.add(comment)
            continue
        if expectations or stripped.startswith(_MARKERS) or stripped == "(empty)":
            expectations.append((number, stripped))
        else:
            text_lines.append(line)
    case = Case(path, first_line, "\n".join(text_lines).strip(), title, options=options)
    if "ordered" in options:
        case.ordered = True
    if "unordered" in options:
        case.ordered = False
    for number, line in expectations:
        if line.startswith("> ") or line == ">":
            case.rows = (case.rows or []) + [_literal(line[2:], path, number)]
        elif line.startswith("numpy> "):
            value = eval(line[len("numpy> "):], {"np": np, "math": math})  # noqa: S307 - test data
            case.rows = (case.rows or []) + list(value)
        elif line == "(empty)":
            case.rows = []
        elif line.startswith("!! "):
            kind, _, part = line[3:].partition(":")
            case.error = (kind.strip(), part.strip())
        elif line.startswith("contains> "):
            case.contains.append(line[len("contains> "):])
        elif line.startswith("columns> "):
            case.columns = [c.strip() for c in line[len("columns> "):].split(",")]
        else:
            raise ValueError(f"{path}:{number}: not an expectation: {line!r}")
    if not case.text:
        raise ValueError(f"{path}:{first_line}: a case without a statement")
    return case


def _literal(text: str, path: Path, number: int):
    text = text.strip()
    try:
        return pyast.literal_eval(text.replace("nan", "float('nan')") if "nan" in text else text)
    except (ValueError, SyntaxError):
        try:
            return eval(text, {"nan": math.nan, "inf": math.inf, "np": np})  # noqa: S307 - test data
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{path}:{number}: not a Python literal: {text!r}") from exc


# --------------------------------------------------------------------------- running cases
def new_engine(**options) -> "streamql.Engine":
    options.setdefault("clock", FakeClock(1000.0))
    options.setdefault("seed", 7)
    return streamql.Engine(**options)


def collect(result, limit: int = MAX_STREAM_ROWS) -> list:
    """The rows of a Result (a stream is read up to `limit` rows, then closed)."""
    if result.kind == "statement":
        return []
    try:
        rows = list(itertools.islice(result, limit + 1))
    finally:
        if result.kind == "stream":  # execute() hands back other results already computed
            result.close()
    if len(rows) > limit:
        raise AssertionError(f"more than {limit} rows: an endless stream without a limit?")
    return rows


def run_case(engine, case: Case) -> str | None:
    """Run one case; None when it passed, else a description of the failure."""
    before = store_fingerprint(engine) if case.error else None
    try:
        results = engine.execute(case.text)
        last = results[-1] if results else None
        rows = collect(last) if last is not None else []
    except QueryError as exc:
        if case.error is None:
            return f"unexpected {exc.kind}: {exc}"
        kind, part = case.error
        if exc.kind != kind:
            return f"expected {kind}, got {exc.kind}: {exc}"
        if part and part.lower() not in exc.message.lower():
            return f"expected a message with {part!r}, got: {exc.message}"
        if exc.line is None or exc.column is None:
            return f"{exc.kind} without a position: {exc.message}"
        if _statement_count(case.text) == 1 and store_fingerprint(engine) != before:
            return "the failed statement changed the store"
        return None
    if case.error is not None:
        return f"expected {case.error[0]}, but it ran and gave {rows!r}"
    if case.columns is not None and list(last.columns) != case.columns:
        return f"columns {last.columns}, expected {case.columns}"
    for text in case.contains:
        if not any(text in str(row) for row in rows):
            return f"no row contains {text!r}: {rows!r}"
    if case.rows is not None:
        ordered = case.ordered
        if ordered is None:
            ordered = last.kind in ("vector", "stream") or re.search(r"\border\s+by\b", case.text, re.I) is not None
        problem = compare_rows(rows, case.rows, ordered)
        if problem:
            return problem
    return None


def _statement_count(text: str) -> int:
    try:
        return len(streamql.parse(text))
    except QueryError:
        return 1


def compare_rows(got: list, expected: list, ordered: bool) -> str | None:
    if len(got) != len(expected):
        return f"{len(got)} rows, expected {len(expected)}:\n  got      {got!r}\n  expected {expected!r}"
    if ordered:
        for i, (g, e) in enumerate(zip(got, expected)):
            if not same_value(g, e):
                return f"row {i + 1} is {g!r}, expected {e!r}\n  got      {got!r}\n  expected {expected!r}"
        return None
    remaining = list(expected)
    for g in got:
        match = next((i for i, e in enumerate(remaining) if same_value(g, e)), None)
        if match is None:
            return f"unexpected row {g!r}\n  got      {got!r}\n  expected {expected!r}"
        remaining.pop(match)
    return None


def same_value(got: Any, expected: Any, rel: float = 1e-9) -> bool:
    """Whether a result value matches an expected one (numbers within rel; arrays as lists)."""
    if isinstance(got, np.generic):
        got = got.item()
    if expected is None or got is None:
        return expected is None and got is None
    if isinstance(expected, bool) or isinstance(got, bool):
        return isinstance(got, (bool, np.bool_)) and isinstance(expected, bool) and bool(got) == expected
    if isinstance(expected, (int, float)):
        if not isinstance(got, (int, float)):
            return False
        if isinstance(expected, int) and isinstance(got, int):
            return got == expected
        if math.isnan(expected):
            return isinstance(got, float) and math.isnan(got)
        return got == expected or math.isclose(got, expected, rel_tol=rel, abs_tol=1e-12)
    if isinstance(expected, str):
        return isinstance(got, str) and got == expected
    if isinstance(expected, tuple):
        return isinstance(got, tuple) and len(got) == len(expected) and all(
            same_value(g, e, rel) for g, e in zip(got, expected))
    if isinstance(expected, (list, np.ndarray)):
        if isinstance(got, Bag):
            return compare_rows(list(got.items), list(expected), ordered=False) is None
        if not isinstance(got, (list, np.ndarray)):
            return False
        if len(got) != len(expected):
            return False
        return all(same_value(g, e, rel) for g, e in zip(list(got), list(expected)))
    if isinstance(expected, dict):
        return isinstance(got, dict) and got.keys() == expected.keys() and all(
            same_value(got[k], expected[k], rel) for k in expected)
    return got == expected


# --------------------------------------------------------------------------- the store
def store_fingerprint(engine) -> tuple:
    """Everything a statement may change: schema, data (canonically ordered), models."""
    store = engine.store
    with store.lock:
        schema = sorted(store.schema_statements())
        data = store.data()
        types = sorted((t.name, tuple(t.supertypes), tuple(sorted(t.properties))) for t in store.types.values())
        functions = sorted((name, len(fs), tuple(sorted(repr(getattr(f, "signature", f.name)) for f in fs)))
                           for name, fs in store.functions.items())
        tables = sorted((t.name, tuple(c.name for c in t.columns)) for t in store.tables.values())
        models = sorted((m.name, m.version) for m in _models(engine))
    canonical = {
        "format": data["format"],
        "next_oid": data["next_oid"],
        "objects": sorted(map(tuple, data["objects"])),
        "properties": {k: sorted(v) for k, v in data["properties"].items()},
        "stored": sorted((s["name"], s["arity"], s["key"], sorted(codec.pack(v) for v in s["values"]))
                         for s in data["stored"]),
        "tables": {k: sorted(codec.pack(r) for r in rows) for k, rows in data["tables"].items()},
        "session": sorted((k, codec.pack(v)) for k, v in data["session"].items()),
    }
    return (tuple(schema), tuple(types), tuple(functions), tuple(tables), tuple(models),
            codec.pack(_sorted_dict(canonical)))


def _sorted_dict(value):
    if isinstance(value, dict):
        return {k: _sorted_dict(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted_dict(v) for v in value]
    return value


def _models(engine):
    try:
        return list(engine.models.entries()) if hasattr(engine.models, "entries") else [
            engine.models.find(n) for n in engine.models.names()]
    except Exception:  # noqa: BLE001 - a registry without listing: no models to compare
        return []


# --------------------------------------------------------------------------- clocks
class SkippingClock(Clock):
    """Real time plus every sleep skipped: `heartbeat(0.5)` runs at once, and a query's time
    limit still sees real seconds pass. Past `deadline` (real monotonic seconds) every clock call
    raises a QueryLimitError, so a runaway clock-driven source stops even if nothing checks its
    limits."""

    def __init__(self, start: float = 1_000_000.0):
        self._origin = time.monotonic()
        self._start = start
        self._skipped = 0.0
        self._lock = threading.Lock()
        self.deadline: float | None = None

    def _guard(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise QueryLimitError("the test's time budget for this statement ran out")

    def now(self) -> float:
        self._guard()
        return self._start + (time.monotonic() - self._origin) + self._skipped

    def monotonic(self) -> float:
        return self.now()

    def sleep(self, seconds: float) -> None:
        self._guard()
        if seconds > 0:
            with self._lock:
                self._skipped += seconds

    def wait(self, condition, seconds: float) -> None:
        self._guard()
        condition.wait(min(seconds, 0.005))
        self.sleep(seconds)


def obj_names(rows) -> list:
    return sorted(r.oid if isinstance(r, Obj) else r for r in rows)


__all__ = ["Case", "FIXTURES", "FakeClock", "SkippingClock", "Time", "Timeval", "collect", "compare_rows",
           "fixture_files", "load_fixture", "new_engine", "run_case", "same_value", "store_fingerprint"]
