"""Runs bad statements against engines under a row, time and memory budget, and reports what
escaped: `python fuzz_runner.py statements.json report.json` (used by test_core_bad_input.py in a
child process, so that a runaway statement cannot take the test session or the machine with it).

For each statement it checks that every failure is a QueryError with a line and a column (a
query stopped by its own limits is not a failure), that nothing else escapes, and that a failed
statement leaves the store exactly as it was. A statement still running when its budget is spent
is stopped by raising an exception inside its thread, and reported as `overran`.
"""
from __future__ import annotations

import ctypes
import itertools
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

ROWS = 30                 # rows read from a query
QUERY_SECONDS = 0.25      # the engine's own time limit for a query
BUDGET = 2.0              # wall seconds before the harness stops a statement itself
FRESH_EVERY = 300         # statements per engine (successful statements change the store)
MAX_OVERRUNS = 8          # after this many statements that ignored their budget, stop (each costs seconds)

BASE_SCHEMA = """
create type Equipment properties (name Charstring key, kind Charstring, region Charstring);
create type Truck under Equipment properties (payload Real);
create Equipment (name, kind, region) instances ('wl-1', 'wheel loader', 'US'), ('d-7', 'dumper', 'EU');
create Truck (name, kind, region, payload) instances ('t-1', 'truck', 'AU', 12.5);
create function owner(Equipment e) -> Charstring as stored;
set owner(e) = 'acme' from Equipment e where name(e) = 'wl-1';
create function fahrenheit(Number c) -> Real as c * 9 / 5 + 32;
create function evens(Integer n) -> Bag of Integer as select x from Integer x where x in iota(1, n) and x % 2 = 0;
create table Reading(id Integer, site Charstring, value Real, unique(id));
insert into Reading values (1, 'north', 0.7), (2, 'south', 1.9), (3, null, null);
set :limits = [0.5, 2.5];
set :n = 3;
set :config = {"rate": 10, "name": 'x'};
"""


class Budget(BaseException):
    """Raised inside a statement's thread when it overran its budget (not an Exception, so the
    engine's own handlers do not turn it into a QueryError)."""


def _interrupt(thread: threading.Thread) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Budget))


def new_engine(workdir: Path):
    import numpy as np
    import streamql
    from streamql.signals import LiveSignal
    from core_support import SkippingClock
    clock = SkippingClock()
    engine = streamql.Engine(clock=clock, seed=1, base_dir=workdir)
    engine.execute(BASE_SCHEMA)
    engine.add_signal("s", np.random.default_rng(0).normal(size=2000))
    engine.add_signal("ints", np.arange(100, dtype=np.int64))
    engine.add_signal("words", ["a", "b", "c"])
    engine.add_signal("pairs", [(1.0, 1.5), (2.0, 2.5)], timestamps=True)
    engine.add_signal("live", LiveSignal("live"))
    engine.add_signal("poll", lambda: 1.0)
    (workdir / "data.csv").write_text("1,2,3\n4,5,6\n")
    (workdir / "data.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    return engine, clock


def run_one(engine, text: str) -> dict:
    """Run one statement to completion within its budget; what happened, as a dict."""
    import streamql
    from streamql import ast as A
    outcome: dict = {"status": "ok"}

    def work():
        try:
            try:
                script = streamql.parse(text)
            except streamql.QueryError as exc:
                outcome.update(_error(exc))
                return
            if len(script) == 1 and isinstance(script[0], (A.Select, A.ExprStatement)):
                handle = engine.start(text, limits={"rows": ROWS, "seconds": QUERY_SECONDS})
                if not handle.wait(BUDGET):
                    handle.cancel(wait=0.5)
                    outcome.update({"status": "overran", "how": "a query went on past its limits"
                                    + (" and cancel()" if handle.running else " until cancelled")})
                    if handle.running:
                        _interrupt(handle._thread)
                        handle.wait(2.0)
                    return
                if handle.status == "failed":
                    outcome.update(_error(handle.error))
                return
            for statement_result in engine.execute(text):
                if statement_result.kind == "stream":
                    list(itertools.islice(statement_result, ROWS))
                    statement_result.close()
        except streamql.QueryError as exc:
            outcome.update(_error(exc))
        except Budget:
            outcome.update({"status": "overran", "how": "stopped by the harness"})
        except BaseException as exc:  # noqa: BLE001 - exactly what the test looks for
            outcome.update({"status": "escaped", "type": type(exc).__name__, "message": str(exc)[:300],
                            "traceback": traceback.format_exc()[-2000:]})

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(BUDGET + 1.0)
    if thread.is_alive():
        _interrupt(thread)
        thread.join(2.0)
        if outcome["status"] == "ok":
            outcome.update({"status": "overran", "how": "stopped by the harness"})
        if thread.is_alive():
            outcome.update({"status": "hung", "how": "could not be stopped"})
    return outcome


def _error(exc) -> dict:
    cause = getattr(exc, "__cause__", None)
    return {"status": "error", "kind": exc.kind, "line": exc.line, "column": exc.column,
            "message": str(exc.message)[:300],
            "internal": "internal error" in str(exc.message),
            "cause": type(cause).__name__ if cause is not None else None,
            "traceback": getattr(exc, "traceback", None)}


def run_all(statements: list[str], workdir: Path, log=None) -> list[dict]:
    from core_support import store_fingerprint
    reports = []
    engine = clock = None
    for index, text in enumerate(statements):
        if index % FRESH_EVERY == 0:
            if engine is not None:
                engine.close()
            engine, clock = new_engine(workdir)
        if log is not None:
            log.write(json.dumps({"index": index, "text": text[:2000]}) + "\n")
            log.flush()
        before = store_fingerprint(engine)
        clock.deadline = time.monotonic() + BUDGET
        started = time.monotonic()
        outcome = run_one(engine, text)
        clock.deadline = None
        outcome["seconds"] = round(time.monotonic() - started, 4)
        outcome["threads"] = threading.active_count()
        problems = []
        status = outcome["status"]
        if status == "escaped":
            problems.append(f"{outcome['type']} escaped: {outcome['message']}")
        elif status == "error":
            if outcome["kind"] not in ("LimitError", "Cancelled") and (outcome["line"] is None or outcome["column"] is None):
                problems.append(f"{outcome['kind']} without a position: {outcome['message']}")
            if outcome["internal"]:
                problems.append(f"internal error ({outcome['cause']}): {outcome['message']}")
        elif status in ("overran", "hung"):
            problems.append(f"{status}: {outcome['how']}")
        if status != "ok" and status != "hung":
            try:
                after = store_fingerprint(engine)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"the store cannot be read after the statement: {exc!r}")
            else:
                if after != before:
                    problems.append("the failed statement changed the store")
        outcome["problems"] = problems
        outcome["text"] = text
        reports.append(outcome)
        if status == "hung":
            break  # the engine may hold its locks: stop here, the report says where
        if sum(1 for r in reports if r["status"] == "overran") >= MAX_OVERRUNS:
            break  # enough examples of one bug; the run would take too long
    if engine is not None:
        engine.close()
    return reports


def main() -> int:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        import resource
        limit = 6 * 1024 ** 3   # a runaway statement must not take the machine's memory
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    statements = json.loads(source.read_text())
    workdir = target.parent / "work"
    workdir.mkdir(exist_ok=True)
    os.chdir(workdir)
    with open(target.with_suffix(".progress"), "w") as log:
        reports = run_all(statements, workdir, log)
    target.write_text(json.dumps(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
