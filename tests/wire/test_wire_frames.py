"""Wire frames: every type round-trips; anything malformed or hostile is a ProtocolError, nothing else."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streamql import codec, wire
from streamql.wire import ProtocolError, decode, encode, make

EXAMPLES = wire.examples()


def raises_code(code, data, **kwargs):
    with pytest.raises(ProtocolError) as info:
        decode(data, **kwargs)
    assert info.value.code == code, info.value
    return info.value


@pytest.mark.parametrize("t", sorted(EXAMPLES))
def test_every_frame_type_round_trips(t):
    frame = make(t, **EXAMPLES[t])
    back = decode(encode(frame))
    assert back == frame and back.t == t and back.v == wire.VERSION


def test_examples_cover_every_type_and_directions_partition():
    assert set(EXAMPLES) == wire.FRAME_TYPES
    assert wire.FROM_EDGE | wire.FROM_FEDERATION == wire.FRAME_TYPES
    assert wire.FROM_EDGE & wire.FROM_FEDERATION == {"error", "ping", "pong"}


@pytest.mark.parametrize("t", sorted(EXAMPLES))
def test_each_required_field_missing_or_mistyped_is_bad_field(t):
    required, _ = wire.SCHEMAS[t]
    for name in required:
        fields = dict(EXAMPLES[t])
        del fields[name]
        error = raises_code("bad_field", codec.pack({"v": 1, "t": t, **fields}))
        assert name in error.reason
        fields[name] = object_of_wrong_type(EXAMPLES[t][name])
        error = raises_code("bad_field", codec.pack({"v": 1, "t": t, **fields}))
        assert name in error.reason


def object_of_wrong_type(value):
    if isinstance(value, str):
        return 12
    if isinstance(value, (bool, int, float)):
        return "12"
    return True


def test_nested_fields_are_checked():
    hello = dict(EXAMPLES["hello"], capabilities={"ram_kb": "lots"})
    assert "capabilities.ram_kb" in raises_code("bad_field", codec.pack({"v": 1, "t": "hello", **hello})).reason
    end = dict(EXAMPLES["end"], error={"kind": "X"})
    assert "error.message" in raises_code("bad_field", codec.pack({"v": 1, "t": "end", **end})).reason
    end = dict(EXAMPLES["end"], outcome="maybe")
    raises_code("bad_field", codec.pack({"v": 1, "t": "end", **end}))


def test_cross_field_rules():
    rows = dict(EXAMPLES["rows"], n=3)
    raises_code("bad_field", codec.pack({"v": 1, "t": "rows", **rows}))
    rows = dict(EXAMPLES["rows"], names=["only-one"])
    raises_code("bad_field", codec.pack({"v": 1, "t": "rows", **rows}))
    deploy = dict(EXAMPLES["deploy"], chunk=1)
    raises_code("bad_field", codec.pack({"v": 1, "t": "deploy", **deploy}))
    with pytest.raises(ProtocolError):
        make("publish", seq=0, flow="f", n=0, cols=[])  # sequences start at 1


def test_unknown_extra_fields_are_ignored_for_forward_compatibility():
    frame = decode(codec.pack({"v": 1, "t": "ping", "nonce": 1, "future": {"x": 1}}))
    assert frame["nonce"] == 1


def test_version_and_type_errors():
    error = raises_code("unsupported_version", codec.pack({"v": 2, "t": "hello"}))
    assert error.version == 2
    raises_code("unsupported_version", codec.pack({"v": 0, "t": "ping", "nonce": 1}))
    raises_code("malformed", codec.pack({"v": "1", "t": "ping", "nonce": 1}))
    raises_code("malformed", codec.pack({"v": True, "t": "ping", "nonce": 1}))
    raises_code("malformed", codec.pack({"t": "ping", "nonce": 1}))
    raises_code("malformed", codec.pack({"v": 1, "nonce": 1}))
    raises_code("unknown_type", codec.pack({"v": 1, "t": "selfdestruct"}))
    raises_code("malformed", codec.pack({"v": 1, "t": "ping", 5: 1, "nonce": 1}))


def test_direction_filter():
    data = encode(make("query", **EXAMPLES["query"]))
    assert decode(data, accept=wire.FROM_FEDERATION).t == "query"
    raises_code("unexpected_type", data, accept=wire.FROM_EDGE)


def test_size_limit_on_both_sides():
    big = make("deploy", **dict(EXAMPLES["deploy"], data=b"x" * 5000, size=5000))
    data = encode(big)
    raises_code("too_large", data, max_size=4096)
    with pytest.raises(ProtocolError) as info:
        encode(big, max_size=4096)
    assert info.value.code == "too_large"


def test_encode_validates_too():
    with pytest.raises(ProtocolError):
        encode({"t": "ping"})
    with pytest.raises(ProtocolError):
        encode(wire.Frame("ping", {"nonce": object()}))
    assert decode(encode({"t": "ping", "nonce": 3}))["nonce"] == 3


def test_garbage_and_non_bytes():
    for data in (b"", b"\xc1", b"\xff" * 10, b"\x93\x01\x02\x03", b"\x81\xa1v", codec.pack(None)):
        with pytest.raises(ProtocolError):
            decode(data)
    raises_code("malformed", "a text frame")


def test_negotiation_and_version_error():
    assert wire.negotiate([1, 2, 3]) == 1
    assert wire.negotiate([2, 3]) is None
    assert wire.negotiate(["1", None]) is None
    frame = decode(wire.version_error(7))
    assert frame.t == "error" and frame["code"] == "unsupported_version"
    assert frame["supported"] == [1] and frame["fatal"] is True
    answer = wire.error_frame(ProtocolError("unknown_type", "unknown frame type 'x'", ref="x"))
    assert answer["code"] == "unknown_type" and answer["ref"] == "x" and "supported" not in answer


# -- fuzzing -------------------------------------------------------------------------------------
field_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(EXAMPLES)), st.dictionaries(st.sampled_from(
    sorted({k for f in EXAMPLES.values() for k in f})), field_values, max_size=6), st.data())
def test_fuzzed_fields_raise_only_protocol_error(t, overrides, data):
    document = {"v": data.draw(st.sampled_from([1, 1, 1, 2, -1])), "t": t, **EXAMPLES[t], **overrides}
    try:
        frame = decode(codec.pack(document))
    except ProtocolError:
        return
    assert decode(encode(frame)) == frame  # whatever is accepted is re-encodable


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_error(data):
    try:
        decode(data)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(EXAMPLES)), st.data())
def test_mutated_valid_frames_raise_only_protocol_error(t, data):
    encoded = bytearray(encode(make(t, **EXAMPLES[t])))
    for _ in range(data.draw(st.integers(1, 5))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    try:
        decode(bytes(encoded[:cut]))
    except ProtocolError:
        pass


def test_hostile_length_claims_do_not_allocate():
    # a map header claiming 2**32-1 entries, an array claiming 4 GB, a str claiming 4 GB
    for data in (b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff" + b"a"):
        raises_code("malformed", data)
    nested = b"\x91" * 100_000 + b"\x00"  # deep nesting of arrays
    raises_code("malformed", nested)


# -- row batches, credit, publish dedup -----------------------------------------------------------
def test_columns_round_trip_keeps_types():
    rows = [(1, 2.5, "a", np.array([1.0, 2.0]), True, None), (2, -0.5, "b", np.array([3.0, 4.0]), False, 1)]
    n, cols = wire.columns_of(rows, 6)
    assert n == 2 and cols[0].dtype == np.int64 and cols[1].dtype == np.float64 and cols[3].shape == (2, 2)
    assert cols[4].dtype == np.bool_ and isinstance(cols[2], list) and isinstance(cols[5], list)
    frame = decode(encode(make("rows", qid="q", seq=0, n=n, cols=cols)))
    back = wire.rows_of(frame["n"], frame["cols"])
    for got, want in zip(back, rows):
        assert [type(x) for x in got] == [type(x) for x in want]
        assert all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(got, want))


def test_single_column_rows_are_plain_values_and_mixed_columns_stay_lists():
    n, cols = wire.columns_of([1, 2.0, 3], 1)
    assert isinstance(cols[0], list) and wire.rows_of(n, cols) == [1, 2.0, 3]
    n, cols = wire.columns_of([1 << 70, 1], 1)
    frame = decode(encode(make("rows", qid="q", seq=0, n=n, cols=cols)))
    assert wire.rows_of(frame["n"], frame["cols"]) == [1 << 70, 1]
    with pytest.raises(ValueError):
        wire.columns_of([(1, 2), (3,)], 2)


def test_split_columns():
    pieces = list(wire.split_columns(5, [np.arange(5), list("abcde")], 2))
    assert [p[0] for p in pieces] == [2, 2, 1] and pieces[2][1][1] == ["e"]


def test_credit_window():
    window = wire.CreditWindow(10)
    assert window.take(4) == 4 and window.take(10) == 6 and window.take(1) == 0
    window.add(3)
    assert window.take(5) == 3 and window.sent == 13


def test_publish_receiver_dedups_and_survives_restart_and_new_logs():
    receiver = wire.PublishReceiver()
    assert receiver.hello("e1", "L1") == 0
    assert [receiver.accept("e1", s) for s in (1, 2, 3)] == [True, True, True]
    # reconnect: the ack for 3 was lost, so the edge resends 3 then continues
    state = receiver.state()
    restarted = wire.PublishReceiver(state)
    assert restarted.hello("e1", "L1") == 3
    assert [restarted.accept("e1", s) for s in (3, 4, 7)] == [False, True, True]
    assert restarted.missing("e1") == 2 and restarted.duplicates == 1
    # the edge's store was wiped: a new log starts again at 1
    assert restarted.hello("e1", "L2") == 0 and restarted.accept("e1", 1)
    assert restarted.hello("e2", "L9") == 0 and restarted.last("e2") == 0
    assert math.isfinite(restarted.last("e1"))


def test_protocol_doc_lists_every_frame_with_its_direction_and_required_fields():
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    rows = {t: (d, f) for t, d, f in re.findall(r"^\| `(\w+)` \| ([EF/]+) \| (.*) \|$", text, re.M)}
    assert set(rows) == wire.FRAME_TYPES
    for t, (direction, fields) in rows.items():
        assert (t in wire.FROM_EDGE) == ("E" in direction) and (t in wire.FROM_FEDERATION) == ("F" in direction), t
        required, optional = wire.SCHEMAS[t]
        for name in required:
            assert f"`{name}` " in fields, (t, name)  # required: no "?" after the name
        for name in optional:
            assert f"`{name}`?" in fields, (t, name)


def test_health_may_carry_active_models_and_autostart_queries():
    fields = dict(wire.examples()["health"], models={"vib-anomaly": "1.2.0"},
                  autostart=[{"query": "vib-anomaly:autostart/scores.sql#1", "flow": "vib-anomaly/scores",
                              "status": "running", "rows": 10, "restarts": 0, "error": None}])
    assert wire.decode(wire.encode(wire.make("health", **fields)))["models"] == {"vib-anomaly": "1.2.0"}
    with pytest.raises(wire.ProtocolError) as caught:
        wire.make("health", **dict(fields, models={"vib-anomaly": 1}))
    assert caught.value.ref == "models.vib-anomaly"
