"""Signals a script defines (`create type ns:signal under Signal`, `set ts_signal_stream(s) = …`):
kept in the store as objects and the text of their stream, so they survive a save and a reopen,
and read like the engine's own signals (by object or by name)."""
from __future__ import annotations

import itertools

import pytest

import streamql


def test_a_script_signal_survives_a_reopen_and_reads_by_name(tmp_path):
    engine = streamql.Engine(store_dir=tmp_path / "store")
    engine.execute("create type sama:signal under Signal;"
                   "create sama:signal(name) instances :s ('squares');"
                   "set ts_signal_stream(:s) = (select stream of i * i from Integer i where i in siota(1, 50));")
    engine.save()
    engine.close()
    reopened = streamql.Engine(store_dir=tmp_path / "store")
    rows = list(itertools.islice(reopened.query("signal_stream('squares');"), 4))
    assert rows == [1, 4, 9, 16]
    assert "squares" in reopened.catalog.signal_names()


def test_an_engine_signal_of_the_same_name_comes_first(tmp_path):
    engine = streamql.Engine()
    engine.add_signal("temp", [20.5, 21.0])
    engine.execute("create type my:signal under Signal; create my:signal(name) instances :t ('temp');"
                   "set signal_stream(:t) = siota(1, 3);")
    assert list(itertools.islice(engine.query("signal_stream('temp');"), 2)) == [20.5, 21.0]
    assert list(engine.query("signal_stream(:t);")) == [1, 2, 3]


def test_a_signal_stream_is_checked_when_it_is_set():
    engine = streamql.Engine()
    engine.execute("create type my:signal under Signal; create my:signal(name) instances :t ('t');")
    with pytest.raises(streamql.QueryError, match="unknown function"):
        engine.execute("set ts_signal_stream(:t) = no_such_source(1);")
    with pytest.raises(streamql.QueryError, match="not a signal"):
        list(engine.query("select signal_stream(x) from Integer x where x = 3;"))
