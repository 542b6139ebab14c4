"""Bad input: at least 10,000 random and mutated statements (hypothesis), each under a small row
and time budget. Every failure must be a QueryError with a line and a column, nothing else may
escape, and a statement that fails must leave the store unchanged.

Hypothesis generates the statements here; fuzz_runner.py runs them in a child process with a
memory cap and a harness that stops any statement still running after its budget, so that no
statement can hang the session or exhaust the machine. A smaller in-process run keeps
hypothesis' shrinking for the statements that fail early (parse, name and type errors)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import streamql
from streamql.syntax import keywords

from core_support import fixture_files, load_fixture, new_engine, store_fingerprint

HERE = Path(__file__).resolve().parent
TOTAL = 10_000

# --------------------------------------------------------------------------- the corpus
TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|\|[^|\n]*\||\#'[^'\n]*'|:[A-Za-z_]\w*|\d+\.\d+(?:[eE][+-]?\d+)?
                     |\.\d+|\d+(?:[eE][+-]?\d+)?|[A-Za-z_]\w*(?::[A-Za-z_]\w*)?|->|=>|!=|<>|<=|>=|\.\*|\./|\.\^|\S""",
                   re.VERBOSE)


def _corpus() -> list[str]:
    statements = []
    for path in fixture_files():
        for case in load_fixture(path):
            try:
                for _, text in streamql.syntax.statement_texts(case.text):
                    statements.append(text)
            except streamql.QueryError:
                statements.append(case.text)
    # real OSQL (tests/osql/corpus: SA Engine's labs, models and manual), statement by statement
    for path in sorted((HERE.parent / "osql" / "corpus").glob("*.osql")):
        for chunk in re.split(r";[ \t]*\n", path.read_text(encoding="utf-8")):
            code = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith(("//", "--")))
            if code.strip() and not re.search(r"\d{7}", code):   # a 10-million bag kept in a session
                statements.append(code.strip() + ";")                     # variable would slow every check
    return sorted(set(statements))


CORPUS = _corpus()
KEYWORDS = keywords()
PUNCTUATION = ["(", ")", "[", "]", "{", "}", ",", ";", ":", ".", "@", "*", "+", "-", "/", "%", "^", ".*", "./",
               ".^", "=", "!=", "<>", "<", "<=", ">", ">=", "->", "=>", "'", '"', "|", "#'", "--", "/*", "*/"]
LITERALS = ["0", "1", "-1", "2.5", ".5", "1e308", "1e-308", "'x'", "''", '"y"', "true", "false", "null",
            "[1, 2]", "[]", "[[1], [2, 3]]", "['a', 1]", '{"k": 1}', "{}", "|2024-01-01T00:00:00Z|", "|bad|",
            "#'mean'", "#'nothing'", ":limits", ":n", ":unset", "cast('nan' as Real)"]
HUGE = ["9223372036854775807", "-9223372036854775808", "9223372036854775808", "99999999999999999999999999",
        "1e999", "-1e999", "4294967296", "1000000000"]
NAMES = ["x", "e", "t", "w", "r", "Equipment", "Truck", "Reading", "name", "kind", "owner", "payload",
         "fahrenheit", "evens", "Integer", "Real", "Number", "Object", "Vector", "Stream", "Bag", "Charstring",
         "Boolean", "Record", "Time", "Timeval", "Edge", "Model", "iota", "siota", "heartbeat", "winagg",
         "twinagg", "signal_stream", "ts_signal_stream", "sqrt", "count", "sum", "avg", "vectorof", "first_n",
         "merge", "pivot", "publish", "subscribe", "csv:file_stream", "json:file_stream", "apply", "reduce",
         "predict", "models", "frand", "now", "'s'", "'ints'", "'live'", "'words'", "'pairs'", "'poll'",
         "'data.csv'", "'data.jsonl'",
         # OSQL's names and forms (issue 13)
         "load_osql", "models:load", "models:folder", "system_models:load", "in", "some", "notany", "print",
         "sleep", "doc", "apropos", "substring", "streamof", "single_value", "isa", "euclid", "instances", ":p",
         "vselect", "add", "remove", "declare", "quit", "commit", "rollback", "into", "key", "Person"]
VOCABULARY = KEYWORDS + PUNCTUATION + LITERALS + HUGE + NAMES

IDENTIFIER_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"
ODD_CHARACTERS = list("()[]{},;:.'\"|#@*+-/%^=<>!$?\\`~&0123456789 \n\t") + ["é", "∑", "\x00", "\u2028", "😀"]
NESTINGS = ["paren", "call", "vector", "negate", "not", "subquery", "plus"]
WRONG_TYPE_FUNCTIONS = ["sqrt", "iota", "winagg", "twinagg", "first_n", "range", "dim", "percentile", "like", "power",
                        "atan2", "max_of", "concat", "ts", "apply", "reduce", "deadband", "zscore", "array", "predict",
                        "signal_stream", "csv:file_stream", "timeout", "merge", "pivot", "bag", "vector", "roundto",
                        "load_osql", "models:folder", "in", "some", "notany", "sleep", "substring", "max", "min",
                        "streamof", "single_value", "isa", "minkowski", "vavg", "doc"]
WRONG_TYPE_ARGUMENTS = LITERALS + HUGE + ["siota(1, 3)", "iota(1, 3)", "heartbeat(0.1)", "e", "x"]


def tokens_of(text: str) -> list[str]:
    return TOKEN.findall(text)


def identifier(rnd) -> str:
    return rnd.choice(IDENTIFIER_CHARS[:53]) + "".join(rnd.choice(IDENTIFIER_CHARS) for _ in range(rnd.randrange(12)))


def word(rnd) -> str:
    return identifier(rnd) if rnd.random() < 0.2 else rnd.choice(VOCABULARY)


def mutate(rnd, text: str) -> str:
    """One random mutation of a statement: tokens or characters deleted, inserted, swapped or
    replaced; wrong types, huge numbers, random names, deep nesting; truncation; run-ons."""
    tokens = tokens_of(text) or ["select"]
    n = len(tokens)
    i, j = rnd.randrange(n), rnd.randrange(n)
    numbers = [k for k, t in enumerate(tokens) if re.fullmatch(r"\d[\d.eE+-]*|\.\d+", t)]
    literals = [k for k, t in enumerate(tokens) if t[0] in "'\"|#:" or re.fullmatch(r"\d[\d.eE+-]*|true|false|null", t, re.I)]
    names = [k for k, t in enumerate(tokens) if re.fullmatch(r"[A-Za-z_]\w*", t)]
    p = rnd.randrange(len(text) + 1)
    operations = ["delete", "insert", "replace", "swap", "duplicate", "truncate", "char-delete", "char-insert",
                  "char-replace", "run-on"]
    operations += ["huge"] * bool(numbers) + ["wrong-type"] * bool(literals) + ["rename", "nest"] * bool(names)
    operation = rnd.choice(operations)
    if operation == "delete":
        tokens = tokens[:i] + tokens[i + 1:]
    elif operation == "insert":
        tokens = tokens[:i] + [word(rnd)] + tokens[i:]
    elif operation == "replace":
        tokens[i] = word(rnd)
    elif operation == "swap":
        tokens[i], tokens[j] = tokens[j], tokens[i]
    elif operation == "duplicate":
        tokens = tokens[:max(i, j)] + tokens[min(i, j):]
    elif operation == "truncate":
        tokens = tokens[:i]
    elif operation == "char-delete":
        return text[:p] + text[p + 1:]
    elif operation == "char-insert":
        return text[:p] + rnd.choice(ODD_CHARACTERS) + text[p:]
    elif operation == "char-replace":
        return text[:p] + rnd.choice(ODD_CHARACTERS) + text[p + 1:]
    elif operation == "run-on":
        return text.rstrip(";") + " " + rnd.choice(CORPUS)
    elif operation == "huge":
        tokens[rnd.choice(numbers)] = rnd.choice(HUGE)
    elif operation == "wrong-type":
        tokens[rnd.choice(literals)] = rnd.choice(LITERALS)
    elif operation == "rename":
        tokens[rnd.choice(names)] = identifier(rnd) if rnd.random() < 0.5 else rnd.choice(NAMES)
    elif operation == "nest":
        k = rnd.choice(numbers + names)
        tokens[k] = nested(tokens[k], rnd.choice([20, 100, 400, 3000]), rnd.choice(NESTINGS))
    return " ".join(tokens)


def nested(token: str, depth: int, kind: str) -> str:
    if kind == "paren":
        return "(" * depth + token + ")" * depth
    if kind == "call":
        return "sqrt(" * depth + token + ")" * depth
    if kind == "vector":
        return "[" * depth + token + "]" * depth
    if kind == "negate":
        return "-(" * depth + token + ")" * depth
    if kind == "not":
        return "not " * depth + token
    if kind == "plus":
        return " + ".join([token] * depth)
    depth = min(depth, 60)
    return "(select " * depth + token + ")" * depth


def make_statement(kind: str, seed: int) -> str:
    """A bad statement of a kind, made from a seed that hypothesis draws."""
    import random
    rnd = random.Random(seed)
    if kind == "mutated":
        text = rnd.choice(CORPUS)
        for _ in range(rnd.randint(1, 3)):
            text = mutate(rnd, text)
        return text
    if kind == "soup":
        return " ".join(word(rnd) for _ in range(rnd.randint(1, 25)))
    if kind == "text":
        return "".join(rnd.choice(ODD_CHARACTERS + list(IDENTIFIER_CHARS)) for _ in range(rnd.randrange(80)))
    if kind == "wrong-types":
        return (f"select {rnd.choice(WRONG_TYPE_FUNCTIONS)}({rnd.choice(WRONG_TYPE_ARGUMENTS)}, "
                f"{rnd.choice(WRONG_TYPE_ARGUMENTS)});")
    raise ValueError(kind)


KINDS = ["mutated"] * 6 + ["soup", "text", "wrong-types"]
STATEMENTS = st.builds(make_statement, st.sampled_from(KINDS), st.integers(0, 2 ** 32))


def generate(count: int, batch: int = 100) -> list[str]:
    """`count` statements (deterministic: derandomized). Hypothesis draws a seed per batch of
    statements (its overhead per example would cost more than running them, and seeds it draws
    one by one repeat); each statement then comes from make_statement."""
    import random
    out: list[str] = []

    @settings(max_examples=count // batch + 1, derandomize=True, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 2 ** 64))
    def collect(seed):
        rnd = random.Random(seed)
        out.extend(make_statement(rnd.choice(KINDS), rnd.getrandbits(64)) for _ in range(batch))

    collect()
    return out[:count]


# --------------------------------------------------------------------------- the big run
@pytest.fixture(scope="module")
def fuzz_report(tmp_path_factory):
    statements = generate(TOTAL)
    while len(statements) < TOTAL:  # hypothesis may stop early when it has seen everything it can make
        statements += generate(TOTAL - len(statements) + 100)
    directory = tmp_path_factory.mktemp("fuzz")
    source, target = directory / "statements.json", directory / "report.json"
    source.write_text(json.dumps(statements))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), str(HERE), os.environ.get("PYTHONPATH", "")]))
    try:
        completed = subprocess.run([sys.executable, str(HERE / "fuzz_runner.py"), str(source), str(target)],
                                   env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        progress = target.with_suffix(".progress").read_text().splitlines()
        pytest.fail(f"the fuzz run did not finish; the last statement it started: {progress[-1] if progress else '?'}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    reports = json.loads(target.read_text())
    return statements, reports


def _summary(problems: list[dict], limit: int = 25) -> str:
    lines = []
    seen = set()
    for report in problems:
        key = report["problems"][0][:60]
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"- {report['problems']}\n    {report['text'][:300]!r}")
        if len(lines) >= limit:
            break
    return f"{len(problems)} statements; distinct problems:\n" + "\n".join(lines)


def test_ten_thousand_bad_statements_were_run(fuzz_report):
    statements, reports = fuzz_report
    assert len(statements) >= TOTAL
    assert len(reports) == len(statements), (
        f"the run stopped after {len(reports)} statements: a statement hung or too many overran their budget:\n"
        + _summary([r for r in reports if r["status"] in ("overran", "hung")]))
    errors = sum(1 for r in reports if r["status"] == "error")
    assert errors > TOTAL // 2  # mostly bad input, as intended
    assert sum(1 for r in reports if r["status"] == "ok") > 100  # and some that ran


def test_nothing_but_query_errors_escape(fuzz_report):
    _, reports = fuzz_report
    escaped = [r for r in reports if r["status"] == "escaped"]
    assert not escaped, _summary(escaped)


def test_every_error_has_a_position(fuzz_report):
    _, reports = fuzz_report
    unplaced = [r for r in reports if any("without a position" in p for p in r["problems"])]
    assert not unplaced, _summary(unplaced)


def test_no_internal_errors(fuzz_report):
    """An 'internal error' is a Python exception the engine caught and wrapped: a bug."""
    _, reports = fuzz_report
    internal = [r for r in reports if any(p.startswith("internal error") for p in r["problems"])]
    assert not internal, _summary(internal)


def test_a_failed_statement_leaves_the_store_unchanged(fuzz_report):
    _, reports = fuzz_report
    changed = [r for r in reports if any("changed the store" in p or "cannot be read" in p for p in r["problems"])]
    assert not changed, _summary(changed)


def test_every_statement_stops_within_its_budget(fuzz_report):
    _, reports = fuzz_report
    overran = [r for r in reports if r["status"] in ("overran", "hung")]
    assert not overran, _summary(overran)


# --------------------------------------------------------------------------- in process, shrinking
@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.builds(make_statement, st.sampled_from(["mutated", "mutated", "soup"]), st.integers(0, 2 ** 32)))
def test_bad_statements_in_process(statement):
    """Parse, bind and plan only (no running): failures are QueryErrors with positions and the
    store is untouched; hypothesis shrinks whatever breaks this to a small statement."""
    engine = _shared_engine()
    before = store_fingerprint(engine)
    try:
        script = streamql.parse(statement)
        for node in script:
            if type(node).__name__ in ("Select", "ExprStatement"):
                engine._compile(node, statement)
            elif type(node).__name__ == "Explain":
                engine.explain_text(node.statement, statement)
    except streamql.QueryError as exc:
        assert exc.line is not None and exc.column is not None, exc
        assert exc.excerpt is not None
    except RecursionError:
        pass  # compiling outside the engine's entry points: the engine turns this into a QueryError
    assert store_fingerprint(engine) == before


_ENGINE = []


def _shared_engine():
    if not _ENGINE:
        from fuzz_runner import BASE_SCHEMA
        engine = new_engine()
        engine.execute(BASE_SCHEMA)
        _ENGINE.append(engine)
    return _ENGINE[0]


def test_an_integer_past_64_bits_bound_in_a_group_is_a_value_not_an_internal_error():
    """Found by the fuzzer: a constant of 2**63 broadcast over a batch overflowed numpy's int64."""
    import streamql
    rows = streamql.Engine().query("select x, z from Integer x, Real z where x in iota(1, 2) "
                                   "and z = 9223372036854775808 group by x, z order by x;")
    assert list(rows) == [(1, 9223372036854775808), (2, 9223372036854775808)]
