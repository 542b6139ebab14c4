"""The statement → expected result fixtures of tests/fixtures (format: core_support's docstring).

Each file runs in order against one fresh engine; every failing case of a file is reported.
Files under tests/fixtures/parse/ are only parsed (see test_core_parser.py).
"""
from __future__ import annotations

import pytest

from core_support import FIXTURES, fixture_files, load_fixture, new_engine, run_case

RUN_FILES = [p for p in fixture_files() if "parse" not in p.relative_to(FIXTURES).parts]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_file(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # file sources write and read relative paths here
    engine = new_engine()
    failures = []
    for case in load_fixture(path):
        problem = run_case(engine, case)
        if problem:
            failures.append(f"{case.where} {case.title}\n  {case.text}\n  {problem}")
    engine.close()
    assert not failures, f"{len(failures)} failing cases:\n\n" + "\n\n".join(failures)


def test_fixture_files_exist():
    assert len(RUN_FILES) >= 10
    total = sum(len(load_fixture(p)) for p in fixture_files())
    assert total >= 300, total


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_explain_every_fixture_query(path, tmp_path, monkeypatch):
    """explain runs for every query that runs, and names at least a source and a projection."""
    import streamql
    from streamql import ast as A
    monkeypatch.chdir(tmp_path)
    engine = new_engine()
    failures = []
    for case in load_fixture(path):
        problem = run_case(engine, case)
        if problem or case.error:
            continue
        try:
            statements = streamql.parse(case.text)
        except streamql.QueryError:
            continue
        last = statements[-1]
        if not isinstance(last, (A.Select, A.ExprStatement)):
            continue
        try:
            lines = list(engine.execute("explain " + last.sql())[0])
        except streamql.QueryError as exc:
            failures.append(f"{case.where}: explain failed: {exc}")
            continue
        if not lines or not any("Project" in line for line in lines):
            failures.append(f"{case.where}: explain gave {lines}")
    assert not failures, "\n".join(failures)
