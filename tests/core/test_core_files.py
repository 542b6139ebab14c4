"""Which files a statement may read (streamql/files.py): only inside the engine's files directory,
once `..` and symlinks are resolved; refused alike whether the file exists or not; none at all with
`files=None`; anything the process can read by default (a program's own engine)."""
from __future__ import annotations

import os

import pytest

import streamql
from streamql.files import FileAccess

FUNCTIONS = ("csv:file_stream", "json:file_stream")


@pytest.fixture
def tree(tmp_path):
    files = tmp_path / "files"
    (files / "sub").mkdir(parents=True)
    (files / "inside.csv").write_text("[1, 2]\n")           # one row as CSV, one value as JSON lines
    (files / "sub" / "deeper.csv").write_text("[3, 4]\n")
    (tmp_path / "secret.csv").write_text("root:x:0:0\n")
    (files / "link-out.csv").symlink_to(tmp_path / "secret.csv")
    (files / "link-in.csv").symlink_to(files / "inside.csv")
    (files / "dir-out").symlink_to(tmp_path)
    return tmp_path


def refusal(engine, fn: str, path: str) -> streamql.QueryError:
    with pytest.raises(streamql.QueryError) as caught:
        list(engine.query(f"select vectorof({fn}('{path}'));"))
    return caught.value


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_files_inside_the_directory_are_read_relative_or_absolute(tree, fn):
    files = tree / "files"
    engine = streamql.Engine(files=files)
    for path in ("inside.csv", str(files / "inside.csv"), "sub/deeper.csv", "sub/../inside.csv", "link-in.csv"):
        assert len(list(engine.query(f"select vectorof({fn}('{path}'));"))[0]) == 1, path


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("path", ["/etc/passwd", "../secret.csv", "sub/../../secret.csv", "link-out.csv",
                                  "dir-out/secret.csv", "/etc/../etc/passwd", "../files-elsewhere/x.csv"])
def test_paths_outside_are_refused_naming_the_directory_and_nothing_else(tree, fn, path):
    error = refusal(streamql.Engine(files=tree / "files"), fn, path)
    assert error.kind == "RuntimeError" and error.line == 1 and error.column is not None
    assert f"reads only files inside {os.path.realpath(tree / 'files')}" in error.message
    assert "root:" not in error.message


def test_a_file_outside_is_refused_alike_whether_it_exists_or_not(tree):
    engine = streamql.Engine(files=tree / "files")
    there = refusal(engine, "csv:file_stream", str(tree / "secret.csv")).message
    absent = refusal(engine, "csv:file_stream", str(tree / "absent.csv")).message
    assert there.replace("secret", "absent") == absent


def test_a_missing_file_inside_is_named(tree):
    error = refusal(streamql.Engine(files=tree / "files"), "json:file_stream", "absent.jsonl")
    assert "no such file: absent.jsonl" in error.message


def test_an_engine_without_a_files_directory_reads_nothing(tree):
    engine = streamql.Engine(files=None)
    for fn in FUNCTIONS:
        error = refusal(engine, fn, str(tree / "files" / "inside.csv"))
        assert "no files directory" in error.message
    with pytest.raises(streamql.QueryError) as caught:
        engine.execute(f"create model m from '{tree / 'files' / 'inside.csv'}';")
    assert caught.value.kind == "RuntimeError" and "no files directory" in caught.value.message


def test_create_model_from_a_file_follows_the_same_rule(tree):
    engine = streamql.Engine(files=tree / "files")
    for path in ("/etc/passwd", "link-out.csv", "../secret.csv"):
        with pytest.raises(streamql.QueryError) as caught:
            engine.execute(f"create model m from '{path}';")
        assert caught.value.kind == "RuntimeError" and "reads only files inside" in caught.value.message
    with pytest.raises(streamql.QueryError) as caught:   # inside, not a model: the loader says so
        engine.execute("create model m from 'inside.csv';")
    assert caught.value.kind == "ModelError"
    with pytest.raises(streamql.QueryError) as caught:   # a directory is not a model file
        engine.execute("create model m from 'sub';")
    assert caught.value.kind == "ModelError" and "not a regular file" in caught.value.message


def test_a_local_engine_reads_what_its_process_can_by_default(tree):
    engine = streamql.Engine()
    assert engine.files.anywhere
    assert list(engine.query(f"select vectorof(csv:file_stream('{tree / 'secret.csv'}'));"))[0] == [["root:x:0:0"]]


def test_relative_paths_resolve_against_the_base_directory(tree, monkeypatch):
    monkeypatch.chdir(tree)
    engine = streamql.Engine(base_dir=tree / "files" / "sub")
    assert len(list(engine.query("select vectorof(csv:file_stream('deeper.csv'));"))[0]) == 1
    assert len(list(streamql.Engine().query("select vectorof(csv:file_stream('secret.csv'));"))[0]) == 1


def test_unusable_paths_are_errors_not_crashes(tree):
    access = FileAccess(tree / "files")
    for path in ("", "a\x00b"):
        with pytest.raises(streamql.QueryError) as caught:
            access.resolve(path, "csv:file_stream")
        assert caught.value.kind == "RuntimeError"
    error = refusal(streamql.Engine(files=tree / "files"), "csv:file_stream", "x" * 5000)
    assert error.kind == "RuntimeError" and "cannot read" in error.message


def test_a_json_line_past_the_cap_is_an_error_not_one_huge_value(tree, monkeypatch):
    from streamql.library import io

    monkeypatch.setattr(io, "MAX_LINE_CHARS", 1000)
    (tree / "files" / "long.jsonl").write_text('"' + "x" * 5000 + '"\n')
    error = refusal(streamql.Engine(files=tree / "files"), "json:file_stream", "long.jsonl")
    assert "line 1: longer than 1000 characters" in error.message
