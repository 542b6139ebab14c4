"""The OSQL corpus: real statements from Stream Analyze's public OSQL (labs, workshops, models,
documentation) and the Amos II / SA Engine reference, run unchanged on one engine per file.

`python tests/osql/osql_corpus.py [-v]` prints the share that runs and the share of statements
whose source states a result that give it; test_osql_corpus.py holds both above a floor.

A corpus file is OSQL: statements end with `;` (the source's studio form left some out; nothing
else is changed). A comment line `-- expect: X` before a statement's end states its result, X
being a Python literal: one row equal to X; `rows [..]` the multiset of rows; `nothing` no row.
Numbers compare with a relative tolerance of 1e-6; vectors as lists; a tuple row as a list.
"""
from __future__ import annotations

import ast
import itertools
import math
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).parent / "corpus"
ROWS = 5            # rows read from a stream (running means: it produces without an error)
SECONDS = 600.0     # each statement's time limit, on the corpus clock (sleeps are skipped: a minute of
                    # heartbeats passes at once; a statement that computes still runs in real time)
_WORDS = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


@dataclass
class Statement:
    text: str
    line: int
    expect: str | None = None


@dataclass
class Outcome:
    statement: Statement
    ran: bool
    matched: bool | None = None          # None: nothing stated
    error: str = ""
    rows: list = field(default_factory=list)


def split_statements(text: str) -> list[Statement]:
    """Statements at `;` outside strings, comments, brackets, `begin … end` and `case … end`."""
    out: list[Statement] = []
    start, depth, i, n = 0, 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            j = i + 1
            while j < n and not (text[j] == c and text[j - 1] != "\\"):
                j += 1
            i = j + 1
            continue
        if text.startswith(("//", "--"), i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c.isalpha() or c == "_":
            word = _WORDS.match(text, i).group(0)
            if word.lower() in ("begin", "case"):
                depth += 1
            elif word.lower() == "end":
                depth -= 1
            i += len(word)
            continue
        elif c == ";" and depth <= 0:
            _add(out, text, start, i + 1)
            start, depth = i + 1, 0
        i += 1
    _add(out, text, start, n)
    return out


def _add(out: list[Statement], text: str, start: int, end: int) -> None:
    """One chunk: `-- expect:` lines before its code state the previous statement's result."""
    lines = text[start:end].split("\n")
    line = text.count("\n", 0, start) + 1
    kept: list[str] = []
    for raw in lines:
        if raw.strip().startswith("-- expect:") and out and not _code("\n".join(kept)).strip():
            out[-1].expect = raw.strip()[len("-- expect:"):].strip()
            raw = ""
        kept.append(raw)
    chunk = "\n".join(kept)
    if not _code(chunk).strip(" \n\t;"):
        return
    skipped = len(chunk) - len(chunk.lstrip())
    out.append(Statement(chunk.strip(), line + chunk.count("\n", 0, skipped)))


def _code(chunk: str) -> str:
    return "\n".join(line for line in chunk.splitlines() if not line.strip().startswith(("//", "--")))


# ----------------------------------------------------------------------------- the environment
class _SkippingClock:
    """Real time with every sleep skipped: `heartbeat(1) limit 10` runs at once."""

    def __init__(self):
        from streamql.clock import Clock
        self._base = Clock()
        self._skipped = 0.0
        self._lock = threading.Lock()

    def now(self):
        return self._base.now() + self._skipped

    def monotonic(self):
        return self._base.monotonic() + self._skipped

    def sleep(self, seconds):
        if seconds > 0:
            with self._lock:
                self._skipped += seconds

    def sleep_until_set(self, seconds, event):
        self.sleep(seconds)
        return event.is_set()

    def wait(self, condition, seconds):
        condition.wait(min(seconds, 0.01))


def new_engine(workdir: Path, name: str = "store"):
    """An engine as an SA Engine board presents itself: its signals, a models folder, the
    corpus' Python modules on the foreign-function allow-list."""
    import streamql
    from streamql.clock import Clock

    class Skipping(_SkippingClock, Clock):
        pass

    py = CORPUS / "py"
    if str(py) not in sys.path:
        sys.path.insert(0, str(py))
    options = dict(clock=Skipping(), seed=1, base_dir=workdir, files=workdir, store_dir=workdir / name)
    try:
        engine = streamql.Engine(models_dir=CORPUS / "models", foreign=["fuel_efficiency.*"], **options)
    except TypeError:
        engine = streamql.Engine(**options)
    rng = np.random.default_rng(0)
    engine.add_signal("accelerometer", [list(v) for v in rng.normal(0, 3, size=(3000, 3))])
    engine.add_signal("gyroscope", [list(v) for v in rng.normal(0, 1, size=(3000, 3))])
    engine.add_signal("temperature", list(20 + rng.normal(0, 0.1, size=3000)))
    engine.add_signal("humidity", list(40 + rng.normal(0, 1, size=3000)))
    engine.add_signal("pressure", list(1000 + rng.normal(0, 1, size=3000)))
    return engine


# ----------------------------------------------------------------------------- running
def run_statement(engine, statement: Statement) -> Outcome:
    import streamql
    from streamql import ast as A
    from streamql.osql_statements import loads_code
    outcome = Outcome(statement, ran=False)
    try:
        parsed = streamql.parse(statement.text)
        rows: list = []
        for item in parsed:
            if isinstance(item, (A.Select, A.ExprStatement)) and not loads_code(item):
                result = engine.query(statement.text, limits={"seconds": SECONDS})
                try:
                    rows = list(itertools.islice(result, ROWS if result.kind == "stream" else 10_000))
                finally:
                    close = getattr(result, "close", None)
                    if close:
                        close()
            else:
                for result in engine.execute(statement.text, limits={"seconds": SECONDS}):
                    if result.kind == "stream":
                        rows = list(itertools.islice(result, ROWS))
                        result.close()
                    elif result.kind in ("bag", "vector"):
                        rows = list(result)
        outcome.ran, outcome.rows = True, rows
    except streamql.QueryError as exc:
        outcome.error = f"{exc.kind} at {exc.line}:{exc.column}: {str(exc.message).splitlines()[0][:160]}"
        return outcome
    except Exception as exc:  # noqa: BLE001 - an escape is a failure of its own, reported
        outcome.error = f"ESCAPED {type(exc).__name__}: {exc}"[:200]
        return outcome
    if statement.expect is not None:
        outcome.matched = matches(rows, statement.expect)
    return outcome


def matches(rows: list, expect: str) -> bool:
    got = [_plain(row) for row in rows]
    if expect == "nothing":
        return got == []
    if expect.startswith("rows "):
        wanted = ast.literal_eval(expect[5:])
        if len(wanted) != len(got):
            return False
        remaining = list(got)
        for item in wanted:
            hit = next((k for k, value in enumerate(remaining) if _same(value, item)), None)
            if hit is None:
                return False
            remaining.pop(hit)
        return True
    wanted = ast.literal_eval(expect.replace("true", "True").replace("false", "False")) \
        if expect in ("true", "false") else ast.literal_eval(expect)
    return len(got) == 1 and _same(got[0], wanted)


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same(a, b) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def run_corpus(workdir: Path) -> list[Outcome]:
    outcomes = []
    for path in sorted(CORPUS.glob("*.osql")):
        engine = new_engine(workdir, path.stem)
        try:
            for statement in split_statements(path.read_text()):
                outcome = run_statement(engine, statement)
                outcome.file = path.name
                outcomes.append(outcome)
        finally:
            engine.close()
    return outcomes


def shares(outcomes: list[Outcome]) -> tuple[float, float, int, int]:
    ran = sum(o.ran for o in outcomes) / len(outcomes)
    stated = [o for o in outcomes if o.statement.expect is not None]
    right = sum(bool(o.matched) for o in stated) / len(stated)
    return ran, right, len(outcomes), len(stated)


if __name__ == "__main__":
    import tempfile
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        outcomes = run_corpus(Path(tmp))
        ran, right, total, stated = shares(outcomes)
        for o in outcomes:
            if not o.ran or o.matched is False:
                first = o.statement.text.splitlines()[0][:70]
                why = o.error or f"gave {[_plain(r) for r in o.rows][:4]!r:.120} not {o.statement.expect[:60]}"
                print(f"{o.file}:{o.statement.line}: {first}\n      {why}")
        print(f"runs: {ran:.0%} of {total}; stated results given: {right:.0%} of {stated}"
              f" ({time.monotonic() - started:.1f} s)")
