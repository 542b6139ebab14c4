"""Every function of the library has a test: each overload's name must be called in a StreamQL
statement of some core test or fixture. Adding a function without a test fails here. Also the
registry's own promises: signatures, docs, volatility, aggregate splits.

"Called in a statement" is checked on statements, not on text: the fixtures' cases, and the
string constants of the core tests that parse as StreamQL, parsed, with the calls found in their
syntax trees (operators, which are spelled, not named, are looked for in those statements' text).
A name in a comment, a docstring or Python code calls nothing and counts for nothing."""
from __future__ import annotations

import ast as pyast
import re
from pathlib import Path

import pytest

import streamql
from streamql.library import AGGREGATE, SCALAR, SOURCE, STREAM

from core_support import FIXTURES, load_fixture

TESTS = Path(__file__).resolve().parent

# Operators are written as operators, not called by name.
OPERATOR_SPELLING = {
    "+": r"[\w)\]] \+ [\w(\[:'\"]", "-": r"[\w)\]] - [\w(\[:]", "*": r"[\w)\]] \* [\w(\[:]",
    "/": r"[\w)\]] / [\w(\[:]", "%": r"[\w)\]] % [\w(\[:-]", "^": r"\^", ".*": r"\.\*", "./": r"\./",
    ".^": r"\.\^", "=": r"[\w)\]] = [\w(\[:'-]", "!=": r"!=", "<": r"[\w)\]] < [\w(\[:'-]", "<=": r"<=",
    ">": r"[\w)\]] > [\w(\[:'-]", ">=": r">=", "neg": r"(?:^|[\s(,])-[\w(:\[]",
    "in": r"\bin\b", "in_list": r"\bin \([^s]", "between": r"\bbetween\b", "like": r"\blike\b",
    "is_null": r"\bis (not )?null\b", "index": r"[\w)\]]\[[^\]:]+\]", "slice": r"\[\w+:\w+\]",
    "vector": r"\[\w+, \w+\]", "record": r"\{\"\w+\": \w", "cast": r"\bcast\(",
}


def _statements() -> list[str]:
    """The StreamQL statements of the core tests (string constants that parse) and fixtures."""
    texts = []
    for path in sorted(TESTS.glob("test_core_*.py")):
        for node in pyast.walk(pyast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, pyast.Constant) and isinstance(node.value, str) and ";" in node.value:
                texts.append(node.value)
            elif isinstance(node, pyast.JoinedStr):   # f"… '{path}' …": each placeholder as 0
                text = "".join(part.value if isinstance(part, pyast.Constant) else "0" for part in node.values)
                if ";" in text:
                    texts.append(text)
    for path in sorted(FIXTURES.rglob("*.sql")):
        if "parse" not in path.relative_to(FIXTURES).parts:   # parsing alone tests nothing
            texts.extend(case.text for case in load_fixture(path))
    statements = []
    for text in texts:
        try:
            streamql.parse(text)
        except streamql.QueryError:
            continue
        statements.append(text)
    return statements


def _called(statements: list[str]) -> set[str]:
    names = set()
    for text in statements:
        for statement in streamql.parse(text):
            names |= {n.name.lower() for n in statement.walk() if isinstance(n, streamql.ast.Call)}
    return names


def _overloads():
    return list(streamql.Engine().library.all())


@pytest.fixture(scope="module")
def statements() -> list[str]:
    return _statements()


def test_every_library_function_is_called_in_a_test(statements):
    called = _called(statements)
    text = "\n".join(statements)
    missing = []
    for name in sorted({o.name for o in _overloads()}):
        if name in OPERATOR_SPELLING:
            found = re.search(OPERATOR_SPELLING[name], text, re.M | re.I)
        else:
            found = name.lower() in called
        if not found:
            missing.append(name)
    assert not missing, f"library functions without a test: {missing}"


def test_a_mention_outside_a_statement_counts_for_nothing():
    """The check itself: comments, docstrings and Python calls are not statements."""
    tricky = '# sqrt(2) in a comment\ndef f():\n    """abs(x) in a docstring"""\n    return floor(3)\n'
    constants = [n.value for n in pyast.walk(pyast.parse(tricky)) if isinstance(n, pyast.Constant)]
    assert not _called([c for c in constants if isinstance(c, str) and ";" in c])
    assert _called(["select sqrt(x) + ceiling(1) from Real x where x in iota(1, 2);"]) == {"sqrt", "ceiling", "iota"}


def test_every_overload_name_is_known_to_this_check():
    operators = {o.name for o in _overloads() if not re.fullmatch(r"[a-z_][a-z0-9_]*(:[a-z_]+)?", o.name)}
    assert operators <= set(OPERATOR_SPELLING), operators - set(OPERATOR_SPELLING)


def test_registry_entries_are_complete():
    for o in _overloads():
        assert o.kind in (SCALAR, AGGREGATE, STREAM, SOURCE), o.name
        assert o.doc, f"{o.signature} has no doc"
        assert o.signature.startswith(o.name + "(") and " -> " in o.signature
        assert o.scalar is not None or o.batch is not None, o.name
        if o.kind == SOURCE:
            assert o.volatile, f"source {o.name} must be volatile"
        if o.kind == AGGREGATE and o.name not in ("median", "m2"):
            split = o.split
            assert split is not None and split.parts, o.name
    for name in ("now", "frand", "signal_value", "heartbeat"):
        assert all(o.volatile for o in streamql.Engine().library.overloads(name)), name


def test_engine_functions_lists_library_and_user_functions():
    engine = streamql.Engine()
    engine.execute("create function twice(Number x) -> Number as x * 2; create function tag(Number x) -> Charstring as stored;")
    described = engine.functions()
    names = {d["name"] for d in described}
    assert {"sqrt", "winagg", "twice", "tag"} <= names
    aggregates = {d["name"]: d["aggregate_split"] for d in described if d["kind"] == "aggregate"}
    assert aggregates["avg"] == ["sum", "count"] and aggregates["stdev"] == ["n", "mean", "M2"]
    assert aggregates["median"] is None
    user = {d["name"]: d["kind"] for d in described if d.get("topic") == "user"}
    assert user == {"twice": "derived", "tag": "stored"}
