"""Binary payloads (SA Engine's Binary): kept in the store across a save and a reopen, carried by
the wire codec (msgpack and JSON) unchanged, printed so that they read back."""
from __future__ import annotations

import streamql
from streamql import codec
from streamql.values import format_value


def test_binaries_in_stored_functions_and_session_variables_survive_a_reopen(tmp_path):
    engine = streamql.Engine(store_dir=tmp_path / "store")
    engine.execute("create type Frame; create function payload(Frame f) -> Binary as stored;"
                   "create Frame(payload) instances :f (binary('00FF10'));"
                   "set :raw = binary([1, 2, 3]);")
    engine.save()
    engine.close()
    reopened = streamql.Engine(store_dir=tmp_path / "store")
    assert list(reopened.query("select payload(f) from Frame f;")) == [b"\x00\xff\x10"]
    assert list(reopened.query("hex(:raw);")) == ["010203"]
    assert list(reopened.query("select f from Frame f where payload(f) = binary('00ff10');"))


def test_a_binary_row_crosses_the_wire_codec_exactly():
    engine = streamql.Engine()
    rows = list(engine.query("select binary([0, 255, 7]), binary(65535);"))
    assert codec.unpack(codec.pack(rows)) == rows == [(b"\x00\xff\x07", b"\xff\xff")]
    assert codec.from_json(codec.to_json(rows[0][0])) == b"\x00\xff\x07"


def test_a_binary_prints_as_the_expression_that_makes_it():
    engine = streamql.Engine()
    value = next(iter(engine.query("binary('CAFE');")))
    assert format_value(value) == "binary('CAFE')"
    assert list(engine.query(format_value(value) + ";")) == [value]
