"""Loading OSQL code: `load_osql(path)`, the models folder (`models:folder`, `models:load`) and
SA Engine's model directory convention (master.osql, then *.test.osql), with the files rule."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

import streamql
from streamql.shell.script import run_files

MODELS = Path(__file__).parent / "models"


def test_streamql_run_takes_a_model_directory_master_then_tests():
    out, err = io.StringIO(), io.StringIO()
    assert run_files([str(MODELS / "vibration")], out=out, err=err) == 0, err.getvalue()
    printed = out.getvalue()
    assert printed.index("features.osql") < printed.index("alarms.osql") < printed.index("levels by site")
    assert "roughness per window': 1 checks passed" in printed


def test_a_failing_model_test_fails_the_run(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "master.osql").write_text("create function twice(Number x) -> Number as 2 * x;")
    (model / "twice.test.osql").write_text("validate 'wrong' check twice(2) => 5;")
    err = io.StringIO()
    assert run_files([str(model)], out=io.StringIO(), err=err) == 1
    assert "twice(2) gave 4" in err.getvalue()


def test_models_load_runs_master_and_defines_its_functions():
    engine = streamql.Engine(models_dir=MODELS)
    assert list(engine.query("models:folder('vibration');")) == [str(MODELS / "vibration") + "/"]
    engine.execute("models:load('vibration');")
    assert list(engine.query("magnitude([3, 4]);")) == [5.0]
    assert sorted(engine.query("alarm_sites(2.0);")) == ["north"]


def test_load_osql_runs_each_statement_of_a_file(tmp_path):
    (tmp_path / "defs.osql").write_text("create function inc(Integer x) -> Integer as x + 1;\nset :loaded = 7;\n")
    engine = streamql.Engine(base_dir=tmp_path)
    result = engine.execute("load_osql('defs.osql');")[0]
    assert "2 statements" in result.message
    assert list(engine.query("inc(:loaded);")) == [8]


def test_an_error_in_a_loaded_file_names_the_file_and_its_line(tmp_path):
    (tmp_path / "bad.osql").write_text("set :a = 1;\nselect 1 +;\n")
    engine = streamql.Engine(base_dir=tmp_path)
    with pytest.raises(streamql.QueryError) as info:
        engine.execute("load_osql('bad.osql');")
    assert "bad.osql" in info.value.message and info.value.line == 2
    assert "a" not in engine.store.session   # a file that does not parse runs nothing


def test_a_file_that_loads_itself_is_an_error(tmp_path):
    (tmp_path / "loop.osql").write_text("load_osql('loop.osql');")
    engine = streamql.Engine(base_dir=tmp_path)
    with pytest.raises(streamql.QueryError, match="already being loaded"):
        engine.execute("load_osql('loop.osql');")


def test_loading_follows_the_files_rule(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (tmp_path / "outside.osql").write_text("set :x = 1;")
    (files / "inside.osql").write_text("set :x = 2;")
    engine = streamql.Engine(files=files)
    engine.execute("load_osql('inside.osql');")
    with pytest.raises(streamql.QueryError) as info:
        engine.execute(f"load_osql('{tmp_path / 'outside.osql'}');")
    assert info.value.kind == "RuntimeError" and str(files) in info.value.message
    assert info.value.line == 1 and info.value.column == 1
    with pytest.raises(streamql.QueryError, match="no files directory"):
        streamql.Engine(files=None).execute("load_osql('inside.osql');")
    assert list(engine.query(":x;")) == [2]


def test_queries_never_load_code(tmp_path):
    (tmp_path / "defs.osql").write_text("set :x = 1;")
    engine = streamql.Engine(base_dir=tmp_path)
    # Engine.query is what an edge runs for a fragment and a federation for a client's query
    with pytest.raises(streamql.QueryError, match="not as a query"):
        engine.query("load_osql('defs.osql');")
    with pytest.raises(streamql.QueryError, match="statement of its own"):
        list(engine.query("select load_osql('defs.osql') + 'x';"))
    with pytest.raises(streamql.QueryError, match="statement of its own"):
        list(engine.query("select models:load('m');"))
    assert "x" not in engine.store.session


def test_system_models_say_they_are_not_part_of_streamql():
    with pytest.raises(streamql.QueryError, match="not part of StreamQL"):
        streamql.Engine().execute('system_models:load("nn");')


def test_quit_ends_a_script(tmp_path):
    script = tmp_path / "s.osql"
    script.write_text("set :a = 1;\nquit;\nselect 1 / 0 + 'never';\n")
    assert run_files([str(script)], out=io.StringIO(), err=io.StringIO()) == 0


def test_a_model_of_script_signals_binary_payloads_and_tuple_results():
    out, err = io.StringIO(), io.StringIO()
    assert run_files([str(MODELS / "frames")], out=out, err=err) == 0, err.getvalue()
    assert out.getvalue().count("checks passed") == 3
    engine = streamql.Engine(models_dir=MODELS)
    engine.execute("models:load('frames');")
    peaks = engine.query("peaks(:f1);")
    assert peaks.columns == ["position", "value"] and list(peaks) == [(6, 222)]
    expected = bytes((i * 37) % 256 for i in range(1, 9))   # the oracle: the frame's bytes by hand
    assert list(engine.query("payload(:f1);")) == [expected]
