"""`streamql run FILE`, `streamql run -` and a script piped into `streamql`: the shell's printing,
errors with carets on standard error, a non-zero status at the first error."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamql.shell.script import run_files

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """\
create function fahrenheit(Number c) -> Real as c * 9 / 5 + 32;
-- a comment; with a semicolon
select c, fahrenheit(c) as f from Integer c where c in iota(0, 2);
select stream of x from Integer x where x in siota(1, 2)
"""
EXPECTED = """\
function fahrenheit created
 c |  f
---+------
 0 | 32.0
 1 | 33.8
 2 | 35.6
(3 rows)
 x
--------
      1
      2
(2 rows)
"""
BROKEN = "select 'before';\nselect nope\n  from Real x;\nselect 'after';\n"


def streamql(*args, stdin: str | None = None, env_extra: dict | None = None):
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME=os.environ.get("HOME", "/tmp"), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "streamql.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "script.sql"
    path.write_text(SCRIPT)
    return path


def test_run_files_in_process(script):
    out, err = io.StringIO(), io.StringIO()
    assert run_files([str(script)], out=out, err=err) == 0
    assert out.getvalue() == EXPECTED and err.getvalue() == ""


def test_run_stops_at_the_first_error_with_a_caret(tmp_path):
    path = tmp_path / "broken.sql"
    path.write_text(BROKEN)
    out, err = io.StringIO(), io.StringIO()
    assert run_files([str(path)], out=out, err=err) == 1
    assert "before" in out.getvalue() and "after" not in out.getvalue()
    assert err.getvalue() == (f"{path}: NameError at line 2, column 8: unknown variable nope\n"
                              "  2 | select nope\n"
                              "    |        ^^^^\n")


def test_run_with_a_store_saves_and_restores(tmp_path):
    store = tmp_path / "store"
    first = tmp_path / "a.sql"
    first.write_text("create function f(Number x) -> Number as x + 1;")
    second = tmp_path / "b.sql"
    second.write_text("select f(41);")
    assert run_files([str(first)], store=str(store), out=io.StringIO(), err=io.StringIO()) == 0
    out = io.StringIO()
    assert run_files([str(second)], store=str(store), out=out, err=io.StringIO()) == 0
    assert " 42" in out.getvalue()


def test_a_missing_file():
    err = io.StringIO()
    assert run_files(["/nonexistent/x.sql"], out=io.StringIO(), err=err) == 1
    assert "cannot read /nonexistent/x.sql" in err.getvalue()


def test_the_command_line_run_and_piped_stdin_print_alike(script):
    ran = streamql("run", str(script))
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, EXPECTED, "")
    piped = streamql(stdin=SCRIPT)                    # `streamql < script.sql`
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, EXPECTED, "")
    dashed = streamql("run", "-", stdin=SCRIPT)
    assert (dashed.returncode, dashed.stdout) == (0, EXPECTED)


def test_the_command_line_exit_status_and_errors_on_stderr():
    piped = streamql(stdin=BROKEN)
    assert piped.returncode == 1
    assert piped.stdout.count("(1 row)") == 1 and "after" not in piped.stdout
    assert "<stdin>: NameError at line 2, column 8: unknown variable nope" in piped.stderr
    assert "    |        ^^^^" in piped.stderr
    assert "Traceback" not in piped.stderr


def test_the_command_line_csv_output(script):
    ran = streamql("run", "--output", "csv", str(script))
    assert ran.returncode == 0
    assert ran.stdout == "c,f\n0,32.0\n1,33.8\n2,35.6\nx\n1\n2\n"
    assert "function fahrenheit created" in ran.stderr   # messages stay off the CSV


def test_the_shell_with_a_store_saves_it_on_exit(tmp_path, monkeypatch, capsys):
    import argparse

    from streamql.shell import main

    store = tmp_path / "store"
    args = argparse.Namespace(federation=None, token=None, store=str(store), history=None)
    monkeypatch.setattr("sys.stdin", io.StringIO("create function f(Number x) -> Number as x + 1;\n"))
    assert main(args) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("select f(41);\n"))
    assert main(args) == 0
    assert " 42\n" in capsys.readouterr().out
