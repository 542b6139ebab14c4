"""The main-memory store: a failed statement changes nothing; save() and Engine(store_dir=…)
restore everything; the switch to a new snapshot is atomic."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import streamql
from streamql import store as store_module
from streamql.store import read_snapshot

from core_support import new_engine, store_fingerprint

SCHEMA = """
create type Equipment properties (name Charstring key, kind Charstring, region Charstring);
create type Truck under Equipment properties (payload Real);
create Equipment (name, kind, region) instances ('wl-1', 'wheel loader', 'US'), ('d-7', 'dumper', 'EU');
create Truck (name, kind, region, payload) instances ('t-1', 'truck', 'AU', 12.5), ('t-2', 'truck', 'SE', 3.0);
create function owner(Equipment e) -> Charstring as stored;
set owner(e) = 'acme' from Equipment e where name(e) = 'wl-1';
create function distance(Equipment a, Equipment b) -> Real as stored;
set distance(a, b) = 1.5 from Equipment a, Equipment b where name(a) = 'wl-1' and name(b) = 'd-7';
create function fahrenheit(Number c) -> Real as c * 9 / 5 + 32;
create function label(Equipment e) -> Charstring as name(e) + '/' + region(e);
create function heavy() -> Bag of Charstring as select name(t) from Truck t where payload(t) > 10;
create table Reading(id Integer, site Charstring, value Real, at Time, unique(id));
insert into Reading values (1, 'north', 0.7, |2024-03-07T23:10:17.9Z|), (2, 'south', 1.9, null), (3, null, null, null);
create table Site(name Charstring not null, primary key(name));
insert into Site values ('north'), ('south');
set :limits = [0.5, 2.5];
set :config = {"rate": 10, "names": ['a', 'b'], "at": |2024-01-01T00:00:00Z|};
set :count = 3;
set :label = 'x';
"""


@pytest.fixture
def engine():
    engine = new_engine()
    engine.execute(SCHEMA)
    return engine


def raw_state(engine):
    """The store exactly as data() and the schema give it, order included."""
    from streamql import codec
    return engine.store.schema_statements(), codec.pack(engine.store.data())


# ------------------------------------------------------------------------ failed statements
FAILING = [
    # create type
    "create type Equipment;",
    "create type Number;",
    "create type Bus under Vehicle;",
    "create type Dup properties (a Integer, a Real);",
    "create type Late properties (ok Integer, owner Nosuchtype);",   # ok(Late) is fine, but…
    "create type Clash properties (fahrenheit Real, fahrenheit Integer);",
    # create instances: the second row breaks the key, so the first must not stay
    "create Equipment (name, kind, region) instances ('new-1', 'k', 'r'), ('wl-1', 'k', 'r');",
    "create Equipment (name, kind) instances ('new-2', 'k'), ('new-3', 42);",
    "create Truck (name, payload) instances ('t-9', 1.0), ('t-1', 2.0);",
    "create Equipment (name) instances ('a'), ('b', 'c');",
    "create Number (x) instances (1);",
    # create function
    "create function fahrenheit(Number c) -> Real as c;",
    "create function bad(Number x) -> Charstring as x + 1;",
    "create function bad2(Number x, Number x) -> Real as x;",
    "create function bad3(Nothing x) -> Real as stored;",
    # set: the last object breaks the key
    "set name(e) = 'same' from Equipment e;",
    "set owner(e) = 42 from Equipment e;",
    "set label(e) = 'x' from Equipment e;",
    "set owner(e) = name(e) * 1 from Equipment e;",
    "set nothing(e) = 1 from Equipment e;",
    "set :limits = 1 / 'x';",
    "set :stream = siota(1, 3);",
    # insert: the last row breaks uniqueness / not null
    "insert into Reading values (10, 'a', 1.0, null), (11, 'b', 2.0, null), (1, 'c', 3.0, null);",
    "insert into Site values ('east'), (null);",
    "insert into Reading values (12, 'a', 'high', null);",
    "insert into Reading (id, colour) values (13, 'red');",
    "insert into Nothing values (1);",
    "create table Reading(x Integer);",
    "create table Integer(x Integer);",
    # delete
    "delete Integer x where x = 1;",
    "delete Equipment e where name(e) = 1;",
    "delete Equipment e where nothing(e);",
    "delete Equipment e where [1, 2][name(e) = 'x'] = 1;",
    # drop
    "drop type Equipment;",
    "drop type Nothing;",
    "drop function kind;",
    "drop function nothing;",
    "drop table Nothing;",
    "drop model nothing;",
    # models
    "create model m as 42;",
    "create model m from 'no/such/file.tflite';",
    # validate and queries change nothing either
    "validate 'x' check fahrenheit(0) => 1;",
    "select 1 / 'x';",
]


@pytest.mark.parametrize("statement", FAILING)
def test_a_failed_statement_leaves_the_store_exactly_as_it_was(engine, statement):
    before, raw_before = store_fingerprint(engine), raw_state(engine)
    revision = engine.store.revision
    with pytest.raises(streamql.QueryError) as info:
        for result in engine.execute(statement):
            list(result) if result.kind != "stream" else None
    assert info.value.line is not None and info.value.column is not None
    assert store_fingerprint(engine) == before
    assert raw_state(engine) == raw_before
    # and the store still works
    assert sorted(engine.query("select name(e) from Equipment e;")) == ["d-7", "t-1", "t-2", "wl-1"]
    assert engine.store.revision == revision   # nothing was committed: a save would write nothing new


def test_a_failure_mid_statement_rolls_back_every_earlier_change(engine):
    before = store_fingerprint(engine)
    oid_before = engine.store.next_oid
    with pytest.raises(streamql.QueryError):
        engine.execute("create Equipment (name, kind) instances ('n1', 'a'), ('n2', 'b'), ('d-7', 'c');")
    assert store_fingerprint(engine) == before and engine.store.next_oid == oid_before
    engine.execute("create Equipment (name, kind) instances ('n1', 'a');")
    assert list(engine.query("select kind(e) from Equipment e where name(e) = 'n1';")) == ["a"]


def test_a_successful_statement_bumps_the_revision(engine):
    revision = engine.store.revision
    engine.execute("set :count = 4;")
    assert engine.store.revision == revision + 1
    list(engine.query("select 1;"))
    assert engine.store.revision == revision + 1


def test_key_index_survives_a_rolled_back_set(engine):
    with pytest.raises(streamql.QueryError):
        engine.execute("set name(e) = 'same' from Equipment e;")
    with pytest.raises(streamql.QueryError):  # wl-1 is still taken
        engine.execute("create Equipment (name) instances ('wl-1');")
    engine.execute("create Equipment (name) instances ('same');")  # and 'same' is free
    engine.execute("set name(e) = 'renamed' from Equipment e where name(e) = 'd-7';")
    engine.execute("create Equipment (name) instances ('d-7');")   # the old value is free again


# ------------------------------------------------------------------------ snapshots
QUERIES = [
    "select name(e), kind(e), region(e) from Equipment e;",
    "select name(t), payload(t) from Truck t;",
    "select name(e), owner(e) from Equipment e;",
    "select name(a), name(b), distance(a, b) from Equipment a, Equipment b;",
    "select fahrenheit(100), fahrenheit(siota(0, 1));",
    "select label(e) from Equipment e;",
    "select heavy();",
    "select * from Reading r;",
    "select r.name from Site r;",
    "select :limits, :config, :count, :label;",
]


def answers(engine) -> list:
    out = []
    for query in QUERIES:
        rows = [repr(r) for r in engine.query(query)]
        out.append(sorted(rows))
    return out


def test_save_and_restore_everything(engine, tmp_path):
    engine.execute("create model centroids as kmeans([[0.1, 0.2], [0.9, 0.8]]) version '1.1';")
    expected = answers(engine)
    target = engine.save(tmp_path / "state")
    assert target.parent == tmp_path / "state"
    restored = streamql.Engine(store_dir=tmp_path / "state")
    assert answers(restored) == expected
    assert store_fingerprint(restored) == store_fingerprint(engine)
    assert list(restored.query("select predict('centroids', [0.9, 0.9])['cluster'], model_version('centroids');")) == [
        (2, "1.1")]
    # what was restored keeps its rules: keys, not null, uniqueness, derived-ness
    for statement in ("create Equipment (name) instances ('wl-1');", "insert into Site values (null);",
                      "insert into Reading values (1, 'x', 0.0, null);", "set label(e) = 'x' from Equipment e;"):
        with pytest.raises(streamql.QueryError):
            restored.execute(statement)
    # and new objects do not reuse old identities
    restored.execute("create Equipment (name) instances ('new');")
    oids = [o.oid for o in restored.query("select e from Equipment e;")]
    assert len(oids) == len(set(oids)) == 5


def test_restore_then_save_again_into_the_same_directory(engine, tmp_path):
    engine.save(tmp_path)
    again = streamql.Engine(store_dir=tmp_path)
    again.execute("set :count = 99; create Equipment (name) instances ('later');")
    again.save()
    third = streamql.Engine(store_dir=tmp_path)
    assert list(third.query("select :count;")) == [99]
    assert "later" in list(third.query("select name(e) from Equipment e;"))
    generations = sorted(p.name for p in tmp_path.glob("snapshot-*"))
    assert generations == ["snapshot-000001", "snapshot-000002"]
    third.save()
    assert sorted(p.name for p in tmp_path.glob("snapshot-*")) == ["snapshot-000002", "snapshot-000003"]


def test_an_empty_directory_is_an_empty_store(tmp_path):
    engine = streamql.Engine(store_dir=tmp_path / "new")
    assert engine.store.data()["objects"] == []
    with pytest.raises(streamql.QueryError):
        streamql.Engine().save()  # no directory to save to


def test_restore_a_function_calling_one_recreated_later(tmp_path):
    engine = new_engine()
    engine.execute("""create function g(Number x) -> Number as x + 1;
                      create function f(Number x) -> Number as g(x) * 2;
                      drop function g;
                      create function g(Number x) -> Number as x + 10;""")
    assert list(engine.query("select f(1);")) == [22]
    engine.save(tmp_path)
    restored = streamql.Engine(store_dir=tmp_path)
    assert list(restored.query("select f(1);")) == [22]


def test_restore_stored_functions_of_table_rows(tmp_path):
    engine = new_engine()
    engine.execute("""create table Reading(id Integer, value Real);
                      insert into Reading values (1, 0.5), (2, 1.5);
                      create function note(Reading r) -> Charstring as stored;
                      set note(r) = 'high' from Reading r where r.value > 1;""")
    engine.save(tmp_path)
    restored = streamql.Engine(store_dir=tmp_path)
    assert list(restored.query("select r.id, note(r) from Reading r;")) == [(2, "high")]


def test_restore_keeps_values_of_every_kind(tmp_path):
    engine = new_engine()
    engine.execute("""set :ints = [1, 2, 3]; set :reals = [0.1, 1e300, -0.0];
                      set :matrix = [[1.5, 2], [3, 4]]; set :strings = ['a', 'it''s'];
                      set :nothing = null; set :big = 9223372036854775807; set :t = |2024-03-07T23:10:17.9Z|;
                      set :tv = ts(1.5, 'x'); set :f = #'mean'; set :b = true; set :bag = bag(1, 2, 2);
                      set :nan = cast('nan' as Real);""")
    before = {k: v for k, v in engine.store.session.items()}
    engine.save(tmp_path)
    after = streamql.Engine(store_dir=tmp_path).store.session
    assert set(after) == set(before)
    for key, value in before.items():
        restored = after[key]
        assert type(restored) is type(value), key
        if isinstance(value, np.ndarray):
            assert restored.dtype == value.dtype and np.array_equal(restored, value, equal_nan=True), key
            assert np.signbit(restored).tolist() == np.signbit(value).tolist()
        elif isinstance(value, float) and value != value:
            assert restored != restored
        else:
            assert restored == value, key


# ------------------------------------------------------------------------ atomic switch
def test_a_crash_before_the_pointer_switch_leaves_the_previous_snapshot(engine, tmp_path, monkeypatch):
    engine.save(tmp_path)
    expected = answers(streamql.Engine(store_dir=tmp_path))
    engine.execute("set :count = 1000; delete Equipment e where name(e) = 'wl-1';")

    real_replace = os.replace

    def crash(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)) == "CURRENT":
            raise OSError("simulated crash before the switch")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(store_module.os, "replace", crash)
    with pytest.raises(OSError):
        engine.save(tmp_path)
    monkeypatch.setattr(store_module.os, "replace", real_replace)
    assert (tmp_path / "snapshot-000002").exists()           # the new generation was written…
    assert (tmp_path / "CURRENT").read_text().strip() == "snapshot-000001"   # …but is not current
    assert answers(streamql.Engine(store_dir=tmp_path)) == expected
    engine.save(tmp_path)                                    # the next save recovers and moves on
    assert list(streamql.Engine(store_dir=tmp_path).query("select :count;")) == [1000]


def test_a_crash_while_writing_a_generation_leaves_the_previous_snapshot(engine, tmp_path, monkeypatch):
    engine.save(tmp_path)
    expected = answers(streamql.Engine(store_dir=tmp_path))
    engine.execute("set :count = 7;")
    real_write = store_module._write

    def crash(path, payload):
        if path.name == "data.msgpack":
            raise OSError("simulated crash while writing")
        return real_write(path, payload)

    monkeypatch.setattr(store_module, "_write", crash)
    with pytest.raises(OSError):
        engine.save(tmp_path)
    monkeypatch.setattr(store_module, "_write", real_write)
    assert answers(streamql.Engine(store_dir=tmp_path)) == expected
    engine.save(tmp_path)
    assert list(streamql.Engine(store_dir=tmp_path).query("select :count;")) == [7]


def test_a_pointer_to_a_missing_generation_is_no_snapshot(tmp_path, engine):
    engine.save(tmp_path)
    (tmp_path / "CURRENT").write_text("snapshot-999999")
    assert read_snapshot(tmp_path) is None


def test_a_snapshot_of_another_format_is_refused(tmp_path, engine):
    import json
    target = engine.save(tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["format"] = 999
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(streamql.QueryError) as info:
        streamql.Engine(store_dir=tmp_path)
    assert "format" in info.value.message


def test_snapshot_files_are_readable_text_and_msgpack(tmp_path, engine):
    target = engine.save(tmp_path)
    schema = (target / "schema.sql").read_text()
    assert len(streamql.parse(schema)) >= 10   # the schema is StreamQL source
    assert "create function label(Equipment e)" in schema
    schema_texts, data, _ = read_snapshot(tmp_path)
    assert data["format"] == store_module.FORMAT_VERSION and len(data["objects"]) == 4
    pickle.dumps(data)  # plain data
