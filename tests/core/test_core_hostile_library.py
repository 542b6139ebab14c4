"""Every library function that takes a size or a path, called with hostile arguments (10^12, -1,
2^63 - 1, paths outside the files directory, `..`, a symlink out) under `memory_mb` 16, in a child
process whose address space is capped (hostile_runner.py): each call ends with a clear QueryError
— LimitError for sizes, RuntimeError for paths — or answers quickly where the size costs nothing;
never a MemoryError, a kill or a hang.

Which functions take a size or a path is read from the registry: an Integer parameter, a
parameter named `path`, a `sized` function (it builds a value whose size its arguments choose),
or a source or stream function with a number (a period, a window). A new one without a hostile
case here, or a reason in NOT_SIZES, fails `test_every_function_taking_a_size_or_a_path_has_a_case`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import streamql

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
TRILLION = "1000000000000"
INT64_MAX = "9223372036854775807"
V8MB = "set :v = zeros(1000000);"      # 8 MB: within the 16 MB budget, three of them are not

# arithmetic on one value: an Integer operand is a number, not a size (the Object overloads of these
# operators, which numpy may broadcast, have cases below)
NOT_SIZES = {"neg": "negation of one number", "index": "picks one element (out of range: an error)",
             "mod": "a remainder of two numbers", "matrix_row": "picks one row (out of range: an error)",
             "matrix_column": "picks one column (out of range: an error)"}

LIMIT, RUNTIME, OK = "LimitError", "RuntimeError", "ok"

# name → (functions it covers, script, the outcomes it may end with)
CASES: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    # --- bags and streams that count
    "iota counted": (("iota",), f"select count(iota(1, {TRILLION}));", (LIMIT,)),          # the time limit
    "iota held": (("iota",), f"select vectorof(iota(1, {TRILLION}));", (LIMIT,)),
    "iota sorted": (("iota",), f"select x from Integer x where x in iota(-{INT64_MAX}, 1) order by x;", (LIMIT,)),
    "iota in a check": (("iota",), f"validate 'v' check iota(-{INT64_MAX}, 3) => bag(1);", (LIMIT,)),
    "iota to the top": (("iota",), f"select count(iota(1, {INT64_MAX}));", (RUNTIME,)),
    "iota member": (("iota",), f"select 5 in iota(1, {TRILLION});", (LIMIT,)),
    "range(n) counted": (("range",), f"select count(range({TRILLION}));", (LIMIT,)),   # OSQL's bag 1..n
    "substring past the end": (("substring",), f"select substring('abc', 0, {INT64_MAX});", (RUNTIME,)),
    "binary of the largest integer": (("binary",), f"select hex(binary({INT64_MAX}));", (OK,)),   # 8 bytes
    "binary of a huge vector": (("binary",), f"select dim(binary(vectorof(iota(1, {TRILLION}))));", (LIMIT,)),
    "hex of the smallest integer": (("hex",), f"select hex(-{INT64_MAX} - 1);", (OK,)),
    "set_byte past the end": (("set_byte",), f"select set_byte(binary('00'), {INT64_MAX}, 1);", (RUNTIME,)),
    "siota collected": (("siota",), f"select vectorof(siota(1, {TRILLION}));", (LIMIT,)),
    "siota dropped": (("siota",), f"select stream of x from Integer x where x in siota(-1, {TRILLION}) and x < 0;",
                      (LIMIT,)),
    "diota": (("diota",), f"select vectorof(diota(0, -1, {TRILLION}));", (LIMIT,)),
    "heartbeat": (("heartbeat",), "select vectorof(heartbeat(0.000000001));", (LIMIT,)),
    "heartbeat of no period": (("heartbeat",), "select vectorof(heartbeat(-1));", (RUNTIME,)),
    "simstream": (("simstream",), "select vectorof(simstream(0.000000001));", (LIMIT,)),
    # --- vectors built from a size
    "zeros": (("zeros",), f"select zeros({TRILLION});", (LIMIT,)),
    "zeros of the top": (("zeros",), f"select dim(zeros({INT64_MAX}));", (LIMIT,)),
    "zeros negative": (("zeros",), "select zeros(-1);", (RUNTIME,)),
    "zeros over rows": (("zeros",), "select zeros(1000000) from Integer i where i in iota(1, 100000);", (LIMIT,)),
    "ones": (("ones",), f"select ones({TRILLION});", (LIMIT,)),
    "ones negative": (("ones",), "select ones(-1);", (RUNTIME,)),
    "range": (("range",), f"select range(1, {TRILLION});", (LIMIT,)),
    "range of reals": (("range",), "select range(0.5, 1e300);", (LIMIT,)),
    "range end to end": (("range",), f"select dim(range(-{INT64_MAX}, {INT64_MAX}));", (LIMIT,)),
    "range per row": (("range", "+"), "select range(1, 100000) + i from Integer i where i in iota(1, 100000);",
                      (LIMIT,)),
    "cast to text": (("cast",), V8MB + " select cast(:v as Charstring) = 'x';", (LIMIT,)),
    "cast to a vector": (("cast",), V8MB + " set :w = :v; set :x = :v; select dim(cast(:v as Vector of Real));",
                         (OK, LIMIT)),
    "concat": (("concat",), V8MB + " select dim(concat(:v, :v, :v));", (LIMIT,)),
    "flatten": (("flatten",), V8MB + " select dim(flatten([[1], :v, :v, :v]));", (LIMIT,)),
    "vector literal": (("vector",), V8MB + " select dim([:v, :v, :v]);", (LIMIT,)),
    "vector literal per row": (("vector",), V8MB + " select dim([:v, i]) from Integer i where i in iota(1, 10);",
                               (OK, LIMIT)),
    "vectorof": (("vectorof",), f"select vectorof(siota(1, {TRILLION}));", (LIMIT,)),
    # --- joined strings and run-time arithmetic that numpy broadcasts
    "strings doubled": (("+",), "set :s = 'abcdefghijklmnop';" + " set :s = :s + :s;" * 24, (LIMIT,)),
    **{f"{op} broadcast": ((op,), "set :col = transpose([range(1, 4000)]); set :row = range(1, 4000); "
                                  f"select dim(cast(:col as Object) {op} cast(:row as Object));", (LIMIT,))
       for op in ("+", "-", "*", "/", "%", "^")},
    "integer overflow": (("+", "-", "*"), f"select {INT64_MAX} + 1;", (RUNTIME,)),
    # --- windows and stream transforms
    "winagg size": (("winagg",), f"select stream of w from Vector w where w in winagg(siota(1, 10), {TRILLION}, 1);",
                    (LIMIT,)),
    "winagg stride": (("winagg",), f"select stream of w from Vector w where w in winagg(siota(1, 10), 2, {TRILLION});",
                      (OK,)),
    "winagg negative": (("winagg",), "select stream of w from Vector w where w in winagg(siota(1, 10), -1, 1);",
                        (RUNTIME,)),
    "winagg as a value": (("winagg",), f"select stream of dim(w) from Vector w where w in "
                                       f"winagg(siota(1, {TRILLION}), 10000000, 10000000);", (LIMIT,)),
    "twinagg": (("twinagg",), "select stream of w from Timeval w where w in twinagg((select stream of ts(x, x) "
                              f"from Integer x where x in siota(1, {TRILLION})), 1e12, 1e12);", (LIMIT,)),
    "first_n": (("first_n",), f"select vectorof(first_n(siota(1, 10), {TRILLION}));", (OK,)),
    "first_n negative": (("first_n",), "select stream of x from Integer x where x in first_n(siota(1, 10), -1);",
                         (RUNTIME,)),
    "skip": (("skip",), f"select stream of x from Integer x where x in skip(siota(1, {TRILLION}), {TRILLION});",
             (LIMIT,)),                                                      # skipping for ever: the time limit
    "sample_every": (("sample_every",), f"select stream of x from Integer x where x in "
                                        f"sample_every(siota(1, 10), {TRILLION});", (OK,)),
    "sample_every zero": (("sample_every",), "select stream of x from Integer x where x in "
                                             "sample_every(siota(1, 10), 0);", (RUNTIME,)),
    "zscore window": (("zscore",), f"select stream of z from Real z where z in zscore(siota(1, 10), {TRILLION});",
                      (LIMIT,)),
    "zscore of a million": (("zscore",), f"select stream of z from Real z where z in "
                                         f"zscore(siota(1, {TRILLION}), 1000000);", (LIMIT,)),   # work: time
    "drift": (("drift",), f"select stream of d from Real d where d in drift(siota(1, 10), 0, 1, {TRILLION});",
              (LIMIT,)),
    "timeout": (("timeout",), f"select vectorof(timeout(siota(1, {TRILLION}), 1e12));", (LIMIT,)),
    "deadband": (("deadband",), f"select stream of x from Integer x where x in deadband(siota(1, {TRILLION}), 1e300);",
                 (LIMIT,)),
    # --- sizes that only pick
    "slice": (("slice",), f"select slice([1, 2, 3], -{INT64_MAX}, {TRILLION});", (OK,)),
    "roundto": (("roundto",), f"select roundto(1.5, {TRILLION}), roundto([1.5], -{INT64_MAX});", (OK, RUNTIME)),
    # --- long work inside one call
    "reduce": (("reduce",), "select reduce(#'max_of', range(1, 1000000), 0);", (LIMIT,)),
    "like": (("like",), "select '" + "a" * 20000 + "' like '" + "%a" * 40 + "%b';", (OK,)),
    "count of a subquery": (("count",), f"select count(select x from Integer x where x in iota(1, {TRILLION}));",
                            (LIMIT,)),
    "median": (("median",), f"select median(iota(1, {TRILLION}));", (LIMIT,)),
    # --- paths
    **{f"{fn} {label}": ((fn,), f"select vectorof({fn}('{path}'));", (RUNTIME,))
       for fn in ("csv:file_stream", "json:file_stream")
       for label, path in (("absolute", "/etc/passwd"), ("dot-dot", "../outside.csv"),
                           ("symlink", "link-out.csv"), ("empty", ""), ("dir-escape", "sub/../../outside.csv"))},
    "create model absolute": (("create model",), "create model m from '/etc/passwd';", (RUNTIME,)),
    "create model symlink": (("create model",), "create model m from 'link-out.csv';", (RUNTIME,)),
    **{f"load_osql {label}": (("load_osql",), f"load_osql('{path}');", (RUNTIME,))
       for label, path in (("absolute", "/etc/passwd"), ("dot-dot", "../outside.csv"), ("symlink", "link-out.csv"),
                           ("dir-escape", "sub/../../outside.csv"), ("a directory", "sub"))},
    "models:load outside": (("models:load",), "models:load('..');", (RUNTIME,)),
}


def takes_a_size_or_a_path(overload) -> bool:
    return (overload.sized or any(str(p.type) == "Integer" or p.name == "path" for p in overload.params)
            or (overload.kind in ("source", "stream") and any(str(p.type) in ("Number", "Real")
                                                               for p in overload.params)))


def test_every_function_taking_a_size_or_a_path_has_a_case():
    library = streamql.Engine().library
    needed = {o.name for o in library.all() if takes_a_size_or_a_path(o)}
    assert needed >= {"zeros", "iota", "csv:file_stream", "winagg", "vector", "concat"}   # the walk finds them
    covered = {fn for functions, _, _ in CASES.values() for fn in functions}
    missing = needed - covered - set(NOT_SIZES)
    assert not missing, f"functions taking a size or a path without a hostile case: {sorted(missing)}"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("hostile")
    files = work / "files"
    (files / "sub").mkdir(parents=True)
    (files / "inside.csv").write_text("1,2\n")
    (work / "outside.csv").write_text("secret,1\n")
    (files / "link-out.csv").symlink_to(work / "outside.csv")
    cases = work / "cases.json"
    cases.write_text(json.dumps({name: script for name, (_, script, _) in CASES.items()}))
    target = work / "report.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    try:
        completed = subprocess.run([sys.executable, str(HERE / "hostile_runner.py"), str(cases), str(files),
                                    str(target)], capture_output=True, text=True, timeout=600, cwd=files, env=env)
    except subprocess.TimeoutExpired:
        done = json.loads(target.read_text()) if target.exists() else {}
        pytest.fail(f"the runner hung after {len(done)} cases; the next: {list(CASES)[len(done)]}")
    done = json.loads(target.read_text()) if target.exists() else {}
    assert completed.returncode == 0, (f"the runner died ({completed.returncode}) after {len(done)} cases, the next: "
                                       f"{list(CASES)[len(done)] if len(done) < len(CASES) else '-'}\n"
                                       f"{completed.stderr[-3000:]}")
    return done


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_call_ends_with_a_clear_error(report, name):
    _, script, allowed = CASES[name]
    outcome = report[name]
    assert outcome["kind"] in allowed, f"{name}: {outcome}"
    assert outcome["seconds"] < 20, f"{name} took {outcome['seconds']} s"
    if outcome["kind"] == LIMIT:
        assert "limit" in outcome["message"], outcome
    if "file_stream" in name or "create model" in name:     # refused before anything is opened
        assert "secret" not in outcome["message"]
        assert "inside" in outcome["message"] or "path" in outcome["message"], outcome
