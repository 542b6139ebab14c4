"""The value codec: msgpack and tagged JSON round-trip every value exactly; plain JSON is for people."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from streamql import codec
from streamql.codec import CodecError, from_json, pack, to_json, to_plain, unpack
from streamql.values import Bag, EdgeRef, FunctionRef, Obj, Time, Timeval

DTYPES = ["<f4", "<f8", "<i1", "<i2", "<i4", "<i8", "<u1", "?"]


def same(a, b) -> bool:
    """Exact identity of values: types, dtypes, shapes, NaN where NaN, the sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype == object:
            return all(same(x, y) for x, y in zip(a.ravel(), b.ravel()))
        return a.tobytes() == b.tobytes()  # bit-exact, NaN payloads and -0.0 included
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, Bag):
        return same(a.items, b.items)
    if isinstance(a, dict):
        return list(a.keys()) == list(b.keys()) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Time):
        return same(a.seconds, b.seconds)
    if isinstance(a, Timeval):
        return same(a.time, b.time) and same(a.value, b.value)
    return a == b


arrays = st.one_of(
    hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=6)),
)
times = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e10, max_value=1e10).map(Time) | \
    st.floats().map(Time)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(1 << 64), max_value=1 << 64),
    st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=20), times,
    st.builds(Obj, st.integers(min_value=0, max_value=1 << 40), st.text(min_size=1, max_size=8)),
    st.builds(EdgeRef, st.text(min_size=1, max_size=8)),
    st.builds(FunctionRef, st.text(min_size=1, max_size=8)),
    arrays,
)
keys = st.text(max_size=6) | st.integers(min_value=-5, max_value=5)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.lists(inner, max_size=4).map(Bag),
        st.dictionaries(keys, inner, max_size=4),
        st.builds(Timeval, times, inner),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_msgpack_round_trip_is_exact(value):
    assert same(unpack(pack(value)), value)


@settings(max_examples=300, deadline=None)
@given(values)
def test_tagged_json_round_trip_is_exact(value):
    text = to_json(value)
    json.loads(text)  # strict JSON: no NaN literals
    assert same(from_json(text), value)


@settings(max_examples=200, deadline=None)
@given(values)
def test_plain_json_is_strict_json(value):
    json.loads(codec.dumps_plain(value))


@pytest.mark.parametrize("dtype", DTYPES + ["<u2", "<u4", "<u8", "<f2", "<c8", "<c16"])
@pytest.mark.parametrize("shape", [(0,), (5,), (3, 4), (2, 0), (2, 3, 2)])
def test_arrays_keep_dtype_and_shape(dtype, shape):
    array = (np.arange(math.prod(shape)) % 7).astype(dtype).reshape(shape)
    for back in (unpack(pack(array)), from_json(to_json(array))):
        assert same(back, array)
        assert back.flags.writeable


def test_big_endian_and_non_contiguous_arrays():
    big = np.arange(6, dtype=">f8").reshape(2, 3)
    assert np.array_equal(unpack(pack(big)), big)
    strided = np.arange(20.0)[::3]
    assert same(unpack(pack(strided)), strided.copy())
    transposed = np.arange(6).reshape(2, 3).T
    assert np.array_equal(unpack(pack(transposed)), transposed)


def test_large_numeric_array_is_one_copy_fast():
    array = np.random.default_rng(1).random(2_000_000)
    data = pack(array)
    assert len(data) < array.nbytes + 64  # raw bytes and a small header, no per-element overhead
    assert same(unpack(data), array)


def test_nan_inf_and_negative_zero_survive():
    value = [math.nan, math.inf, -math.inf, -0.0, np.array([math.nan, -math.inf, -0.0])]
    assert same(unpack(pack(value)), value)
    assert same(from_json(to_json(value)), value)


def test_integers_beyond_64_bits():
    for n in (1 << 64, -(1 << 63) - 1, 10 ** 40, -(10 ** 40), (1 << 64) - 1, -(1 << 63)):
        assert unpack(pack(n)) == n and type(unpack(pack(n))) is int


def test_bag_vector_and_tuple_stay_apart():
    value = [Bag([1, 2]), [1, 2], (1, 2)]
    back = unpack(pack(value))
    assert [type(v) for v in back] == [Bag, list, tuple]


def test_numpy_scalars_become_python_scalars():
    back = unpack(pack([np.float32(1.5), np.int16(-3), np.bool_(True), np.uint64(7)]))
    assert back == [1.5, -3, True, 7] and [type(v) for v in back] == [float, int, bool, int]


def test_unsupported_values_raise_codec_error():
    for bad in (object(), {1, 2}, np.array(["a", "b"]), np.zeros(2, dtype="datetime64[s]"), 1j):
        with pytest.raises(CodecError):
            pack(bad)
        with pytest.raises(CodecError):
            to_json(bad)


def test_tagged_json_forms():
    assert json.loads(to_json(Time.parse("2024-03-07T23:10:17.9Z"))) == {"$time": "2024-03-07T23:10:17.9Z"}
    assert json.loads(to_json(math.nan)) == {"$float": "NaN"}
    assert json.loads(to_json(np.array([1, 2], dtype=np.int16))) == \
        {"$array": {"dtype": "i16", "shape": [2], "data": [1, 2]}}
    assert json.loads(to_json({"$x": 1})) == {"$record": [["$x", 1]]}
    assert from_json('{"$time": 12.5}') == Time(12.5)


@pytest.mark.parametrize("text", [
    '{"$nope": 1}', '{"$float": "nan"}', '{"$array": {"dtype": "f64", "shape": [3], "data": [1]}}',
    '{"$array": {"dtype": "x9", "shape": [1], "data": [1]}}', '{"$obj": [1]}', '{"$bytes": "!!"}',
    '{"$time": "yesterday"}', '{"$record": [[1]]}', 'not json', '{"$x": 1, "y": 2}', '[' * 5000,
])
def test_malformed_tagged_json_raises_codec_error(text):
    with pytest.raises(CodecError):
        from_json(text)


def test_plain_json_mapping():
    row = {"t": Time.parse("2024-03-07T23:10:17.9Z"), "w": np.array([1.0, math.nan, math.inf]),
           "m": np.arange(4, dtype=np.int8).reshape(2, 2), "b": Bag([1]), "o": Obj(3, "Equipment"),
           "e": EdgeRef("wl-1"), "f": FunctionRef("mean"), "x": -math.inf, "k": {1: "one"},
           "tv": Timeval(Time(0.0), 2.5), "r": (1, "a")}
    assert to_plain(row) == {"t": "2024-03-07T23:10:17.9Z", "w": [1.0, None, None], "m": [[0, 1], [2, 3]],
                             "b": [1], "o": "#[OID 3 Equipment]", "e": "wl-1", "f": "mean", "x": None,
                             "k": {"1": "one"}, "tv": {"time": "1970-01-01T00:00:00Z", "value": 2.5},
                             "r": [1, "a"]}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_unpack_garbage_raises_only_codec_error(data):
    try:
        unpack(data)
    except CodecError:
        pass


@settings(max_examples=200, deadline=None)
@given(values, st.data())
def test_unpack_mutated_encodings_raises_only_codec_error(value, data):
    encoded = bytearray(pack(value))
    if encoded:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(encoded) - 1))
            encoded[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    try:
        unpack(bytes(encoded[:cut]))
    except CodecError:
        pass


def test_hostile_extension_payloads():
    import msgpack
    cases = [
        msgpack.ExtType(codec.EXT_NDARRAY, bytes([11, 1]) + (10 ** 12).to_bytes(8, "little")),  # claims 8 TB
        msgpack.ExtType(codec.EXT_NDARRAY, bytes([99, 0])),
        msgpack.ExtType(codec.EXT_NDARRAY, bytes([11])),
        msgpack.ExtType(codec.EXT_TIME, b"\x00"),
        msgpack.ExtType(codec.EXT_TIMEVAL, msgpack.packb(["x", 1])),
        msgpack.ExtType(codec.EXT_OBJ, msgpack.packb([1])),
        msgpack.ExtType(codec.EXT_OBJARRAY, msgpack.packb([[2 ** 40], []])),
        msgpack.ExtType(codec.EXT_EDGE, b"\xff\xfe"),
        msgpack.ExtType(codec.EXT_BIGINT, b""),
        msgpack.ExtType(77, b"?"),
    ]
    for ext in cases:
        with pytest.raises(CodecError):
            unpack(msgpack.packb(ext))


def test_deeply_nested_extensions_are_refused():
    data = pack(1)
    import msgpack
    for _ in range(200):
        data = msgpack.packb(msgpack.ExtType(codec.EXT_BAG, b"\x91" + data))  # a bag of one element
    with pytest.raises(CodecError, match="nested"):
        unpack(data)
    shallow = Bag([Bag([Bag([1])])])
    assert unpack(pack(shallow)) == shallow


@pytest.mark.parametrize("dtype, bits", [("f4", 0xFFC00000), ("f4", 0x7FC00123), ("f8", 0xFFF8000000000000),
                                         ("f2", 0xFE00)])
def test_tagged_json_keeps_the_sign_and_payload_of_nan_in_arrays(dtype, bits):
    value = np.array([np.nan, 1.0, np.nan], dtype=dtype)
    value.view(f"u{value.itemsize}")[2] = bits
    text = to_json(value)
    assert json.loads(text)["$array"]["data"][0] == "NaN"            # the usual NaN stays readable
    assert same(from_json(text), value)
    with pytest.raises(CodecError):
        from_json(text.replace(f"{bits:x}", "7"))                     # wrong size
