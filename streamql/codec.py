"""One encoding of every value: msgpack for snapshots and wire frames, JSON two ways.

`pack(value) -> bytes` and `unpack(bytes) -> value` round-trip every run-time value exactly
(see `streamql.values`): numpy arrays keep dtype and shape (one memcpy, no per-element Python),
Time, Timeval, Bag (apart from a Vector list), store objects by id, edges, function references,
tuples, Records with any scalar keys, NaN and infinities, and integers of any size.

`to_json`/`from_json` is the lossless tagged JSON of the same values (for snapshots a human may
read, and for debugging); `to_plain` is what an API consumer sees in an NDJSON row: arrays become
lists, times ISO strings, NaN and infinities null. docs/protocol.md has the mapping table.
"""
from __future__ import annotations

import base64
import json
import math
import struct
import threading
from typing import Any

import msgpack
import numpy as np

from .values import Bag, EdgeRef, FunctionRef, Obj, Time, Timeval

__all__ = [
    "CodecError", "pack", "unpack", "to_json", "from_json", "to_jsonable", "from_jsonable",
    "to_plain", "dumps_plain", "DTYPES", "dtype_name", "MAX_DEPTH",
]

MAX_DEPTH = 64
"""Nesting of extension values (Bag in Timeval in …) accepted by `unpack`: hostile input stops here."""


class CodecError(ValueError):
    """A value that cannot be encoded, or bytes/JSON that do not decode to a value."""


# -- extension type codes (part of the wire contract: never renumber) -------------------------
EXT_NDARRAY = 1      # numeric array: dtype code u8, ndim u8, shape u64 LE × ndim, raw LE data
EXT_OBJARRAY = 2     # object array: msgpack [shape, flat elements]
EXT_TIME = 3         # Time: float64 big-endian seconds since the epoch
EXT_TIMEVAL = 4      # Timeval: msgpack [seconds, value]
EXT_BAG = 5          # Bag: msgpack [elements]
EXT_OBJ = 6          # Obj: msgpack [oid, type name]
EXT_EDGE = 7         # EdgeRef: UTF-8 device id
EXT_FUNCTION = 8     # FunctionRef: UTF-8 function name
EXT_BIGINT = 9       # int outside 64 bits: two's complement, big-endian, minimal length
EXT_TUPLE = 10       # tuple (a row of several columns): msgpack [elements]

# dtype names as the language writes them (`array('f32', …)`), with their ext codes.
DTYPES: dict[str, tuple[int, np.dtype]] = {
    "bool": (0, np.dtype("?")),
    "i8": (1, np.dtype("<i1")), "i16": (2, np.dtype("<i2")),
    "i32": (3, np.dtype("<i4")), "i64": (4, np.dtype("<i8")),
    "u8": (5, np.dtype("<u1")), "u16": (6, np.dtype("<u2")),
    "u32": (7, np.dtype("<u4")), "u64": (8, np.dtype("<u8")),
    "f16": (9, np.dtype("<f2")), "f32": (10, np.dtype("<f4")), "f64": (11, np.dtype("<f8")),
    "c64": (12, np.dtype("<c8")), "c128": (13, np.dtype("<c16")),
}
_BY_CODE = {code: (name, dt) for name, (code, dt) in DTYPES.items()}
_NAME_BY_KEY = {(dt.kind, dt.itemsize): name for name, (_, dt) in DTYPES.items()}
_U64 = struct.Struct("<Q")
_F64BE = struct.Struct(">d")
_INT64_MIN, _UINT64_MAX = -(1 << 63), (1 << 64) - 1


def dtype_name(dtype: np.dtype) -> str:
    """The codec's name of a numeric dtype (`f32`, `i64`, `bool`, …); CodecError for others."""
    dtype = np.dtype(dtype)
    name = _NAME_BY_KEY.get((dtype.kind, dtype.itemsize))
    if name is None or dtype.kind not in "biufc":
        raise CodecError(f"arrays of dtype {dtype} cannot be encoded "
                         f"(numeric dtypes: {', '.join(DTYPES)}; or object)")
    return name


# == msgpack ===================================================================================
def pack(value: Any) -> bytes:
    """The msgpack encoding of a value; CodecError when it holds something that is not a value."""
    try:
        return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode value: {exc}") from None


def _pack_inner(value: Any) -> bytes:
    # A fresh packer: msgpack packers are not reentrant from inside `default`.
    return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return _pack_array(obj)
    if isinstance(obj, bool) or isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, int):
        value = int(obj)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value  # an int subclass (IntEnum): plain int
        length = (value + (value < 0)).bit_length() // 8 + 1
        return msgpack.ExtType(EXT_BIGINT, value.to_bytes(length, "big", signed=True))
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, np.generic):
        item = obj.item()
        if isinstance(item, (bool, int, float, complex, str, bytes)) and not isinstance(item, complex):
            return item
        raise CodecError(f"cannot encode numpy scalar of dtype {obj.dtype}")
    if isinstance(obj, Time):
        return msgpack.ExtType(EXT_TIME, _F64BE.pack(obj.seconds))
    if isinstance(obj, Timeval):
        seconds = obj.time.seconds if isinstance(obj.time, Time) else obj.time
        return msgpack.ExtType(EXT_TIMEVAL, _pack_inner([float(seconds), obj.value]))
    if isinstance(obj, Bag):
        return msgpack.ExtType(EXT_BAG, _pack_inner(list(obj.items)))
    if isinstance(obj, tuple):
        return msgpack.ExtType(EXT_TUPLE, _pack_inner(list(obj)))
    if isinstance(obj, Obj):
        return msgpack.ExtType(EXT_OBJ, _pack_inner([obj.oid, obj.type_name]))
    if isinstance(obj, EdgeRef):
        return msgpack.ExtType(EXT_EDGE, str(obj.id).encode("utf-8"))
    if isinstance(obj, FunctionRef):
        return msgpack.ExtType(EXT_FUNCTION, obj.name.encode("utf-8"))
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    raise CodecError(f"cannot encode a value of type {type(obj).__name__}")


def _pack_array(array: np.ndarray) -> msgpack.ExtType:
    if array.dtype == object:
        return msgpack.ExtType(EXT_OBJARRAY, _pack_inner([list(array.shape), array.ravel().tolist()]))
    name = dtype_name(array.dtype)
    code, wire_dtype = DTYPES[name]
    if array.ndim > 32:
        raise CodecError("arrays of more than 32 dimensions cannot be encoded")
    if array.dtype != wire_dtype:
        array = array.astype(wire_dtype)  # big-endian in, little-endian on the wire
    array = np.ascontiguousarray(array)
    header = bytes((code, array.ndim)) + b"".join(_U64.pack(n) for n in array.shape)
    return msgpack.ExtType(EXT_NDARRAY, b"".join((header, array.reshape(-1).view(np.uint8))))


_local = threading.local()


def unpack(data: bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH) -> Any:
    """The value that `pack` encoded; CodecError (never another exception) for anything else."""
    previous = getattr(_local, "max_depth", MAX_DEPTH)
    _local.max_depth = max_depth
    try:
        return _unpack_inner(data, max_depth)
    except CodecError:
        raise
    except RecursionError:
        raise CodecError("value nested too deeply") from None
    except Exception as exc:  # msgpack raises a zoo of exception types on hostile input
        raise CodecError(f"not a msgpack-encoded value: {exc.__class__.__name__}: {exc}") from None
    finally:
        _local.max_depth = previous


def _unpack_inner(data, max_depth: int) -> Any:
    depth = getattr(_local, "depth", 0)
    if depth >= max_depth:
        raise CodecError(f"value nested deeper than {max_depth} levels")
    _local.depth = depth + 1
    try:
        value = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False,
                                use_list=True)
    finally:
        _local.depth = depth
    return value


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_NDARRAY:
        return _unpack_array(data)
    if code == EXT_TIME:
        if len(data) != 8:
            raise CodecError("a Time must be 8 bytes")
        return Time(_F64BE.unpack(data)[0])
    if code == EXT_BIGINT:
        if not data:
            raise CodecError("an empty big integer")
        return int.from_bytes(data, "big", signed=True)
    if code == EXT_EDGE:
        return EdgeRef(data.decode("utf-8"))
    if code == EXT_FUNCTION:
        return FunctionRef(data.decode("utf-8"))
    inner = _unpack_inner(data, getattr(_local, "max_depth", MAX_DEPTH))
    if code == EXT_TIMEVAL:
        if not (isinstance(inner, list) and len(inner) == 2 and _is_number(inner[0])):
            raise CodecError("a Timeval must be [seconds, value]")
        return Timeval(Time(float(inner[0])), inner[1])
    if code == EXT_BAG:
        _expect(isinstance(inner, list), "a Bag must hold a list")
        return Bag(inner)
    if code == EXT_TUPLE:
        _expect(isinstance(inner, list), "a tuple must hold a list")
        return tuple(inner)
    if code == EXT_OBJ:
        _expect(isinstance(inner, list) and len(inner) == 2 and _is_int(inner[0])
                and isinstance(inner[1], str), "an object must be [oid, type name]")
        return Obj(inner[0], inner[1])
    if code == EXT_OBJARRAY:
        _expect(isinstance(inner, list) and len(inner) == 2 and isinstance(inner[0], list)
                and all(_is_int(n) and n >= 0 for n in inner[0]) and isinstance(inner[1], list),
                "an object array must be [shape, elements]")
        shape, items = inner
        _expect(math.prod(shape) == len(items), "object array shape does not match its elements")
        return _object_array(items, shape)
    raise CodecError(f"unknown extension type {code}")


def _unpack_array(data: bytes) -> np.ndarray:
    if len(data) < 2:
        raise CodecError("truncated array header")
    code, ndim = data[0], data[1]
    if code not in _BY_CODE:
        raise CodecError(f"unknown array dtype code {code}")
    offset = 2 + 8 * ndim
    if len(data) < offset:
        raise CodecError("truncated array shape")
    shape = tuple(_U64.unpack_from(data, 2 + 8 * i)[0] for i in range(ndim))
    _, dtype = _BY_CODE[code]
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) - offset:
        raise CodecError(f"array of shape {shape} and dtype {dtype} does not match its "
                         f"{len(data) - offset} data bytes")
    if count == 0:
        return np.empty(shape, dtype=dtype.newbyteorder("="))
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)  # writeable, native order


def _object_array(items: list, shape: list) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):  # element by element: numpy would broadcast nested lists
        array[i] = item
    return array.reshape(shape)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CodecError(message)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# == tagged JSON (lossless) ====================================================================
def to_json(value: Any, *, indent: int | None = None) -> str:
    """Lossless JSON text of a value: tags such as {"$time": …} and {"$array": …} keep types."""
    return json.dumps(to_jsonable(value), indent=indent, allow_nan=False, ensure_ascii=False)


def from_json(text: str | bytes) -> Any:
    """The value that `to_json` wrote; CodecError for anything else."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"not JSON: {exc}") from None
    return from_jsonable(document)


def to_jsonable(value: Any) -> Any:
    """The tagged-JSON tree of a value (dicts, lists, str, numbers, bool, None only)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {"$float": _nonfinite_name(value)}
    if isinstance(value, np.ndarray):
        return {"$array": _array_jsonable(value)}
    if isinstance(value, np.generic):
        return to_jsonable(_default(value))
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [to_jsonable(v) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: to_jsonable(v) for k, v in value.items()}
        return {"$record": [[to_jsonable(k), to_jsonable(v)] for k, v in value.items()]}
    if isinstance(value, Time):
        return {"$time": _time_jsonable(value)}
    if isinstance(value, Timeval):
        time = value.time if isinstance(value.time, Time) else Time(float(value.time))
        return {"$timeval": [_time_jsonable(time), to_jsonable(value.value)]}
    if isinstance(value, Bag):
        return {"$bag": [to_jsonable(v) for v in value.items]}
    if isinstance(value, Obj):
        return {"$obj": [value.oid, value.type_name]}
    if isinstance(value, EdgeRef):
        return {"$edge": value.id}
    if isinstance(value, FunctionRef):
        return {"$function": value.name}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    raise CodecError(f"cannot encode a value of type {type(value).__name__}")


def _nonfinite_name(x: float) -> str:
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _time_jsonable(time: Time) -> Any:
    seconds = time.seconds
    if math.isfinite(seconds) and abs(seconds) < 2.5e11:
        try:
            text = time.iso()
            if repr(Time.parse(text).seconds) == repr(seconds):
                return text  # readable when exact
        except (ValueError, OverflowError):
            pass
    return to_jsonable(float(seconds))


def _array_jsonable(array: np.ndarray) -> dict:
    if array.dtype == object:
        return {"dtype": "object", "shape": list(array.shape),
                "data": [to_jsonable(v) for v in array.ravel().tolist()]}
    name = dtype_name(array.dtype)
    flat = np.ascontiguousarray(array.ravel())
    if array.dtype.kind == "c":
        parts = _float_items(flat.view(f"{array.dtype.byteorder}f{array.dtype.itemsize // 2}"))
        data = [parts[i:i + 2] for i in range(0, len(parts), 2)]
    elif array.dtype.kind == "f":
        data = _float_items(flat)
    else:
        data = flat.tolist()
    return {"dtype": name, "shape": list(array.shape), "data": data}


def _float_items(floats: np.ndarray) -> list:
    """A float array's items as JSON: numbers, and "NaN", "Infinity", "-Infinity" — or, for a NaN
    with another sign or payload than the dtype's own, "NaN:" and its bits in hex (bit-exact)."""
    data = floats.tolist()
    finite = np.isfinite(floats)
    if finite.all():
        return data
    canonical = np.array([np.nan], dtype=floats.dtype.newbyteorder(">")).tobytes()
    for i in np.flatnonzero(~finite):
        x = data[i]
        if not math.isnan(x):
            data[i] = "Infinity" if x > 0 else "-Infinity"
            continue
        bits = floats[i:i + 1].astype(floats.dtype.newbyteorder(">")).tobytes()
        data[i] = "NaN" if bits == canonical else "NaN:" + bits.hex()
    return data


def _floats_from(data: list, dtype: np.dtype) -> np.ndarray:
    """The inverse of _float_items, for a float dtype."""
    out = np.array([math.nan if isinstance(x, str) and x.startswith("NaN:") else _scalar_from(x) for x in data],
                   dtype=dtype)
    bits = out.view(f"u{dtype.itemsize}")
    for i, x in enumerate(data):
        if isinstance(x, str) and x.startswith("NaN:"):
            try:
                raw = bytes.fromhex(x[4:])
            except ValueError:
                raise CodecError(f"not a number: {x!r}") from None
            _expect(len(raw) == dtype.itemsize, f"{x!r} is not {dtype.itemsize} bytes")
            bits[i] = int.from_bytes(raw, "big")
            _expect(math.isnan(out[i]), f"{x!r} is not a NaN")
    return out


_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def from_jsonable(document: Any) -> Any:
    """The value of a tagged-JSON tree; CodecError for a malformed tag."""
    try:
        return _from_jsonable(document)
    except CodecError:
        raise
    except RecursionError:
        raise CodecError("value nested too deeply") from None
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise CodecError(f"malformed tagged JSON: {exc}") from None


def _from_jsonable(doc: Any) -> Any:
    if doc is None or isinstance(doc, (bool, int, float, str)):
        return doc
    if isinstance(doc, list):
        return [_from_jsonable(v) for v in doc]
    if not isinstance(doc, dict):
        raise CodecError(f"unexpected JSON value of type {type(doc).__name__}")
    if len(doc) == 1:
        (tag, body), = doc.items()
        if tag.startswith("$"):
            return _from_tag(tag, body)
    for key in doc:
        if key.startswith("$"):
            raise CodecError(f"unknown tag {key!r} (a Record with '$' keys is written as $record)")
    return {k: _from_jsonable(v) for k, v in doc.items()}


def _from_tag(tag: str, body: Any) -> Any:
    if tag == "$float":
        if body not in _NONFINITE:
            raise CodecError(f"$float must be NaN, Infinity or -Infinity, not {body!r}")
        return _NONFINITE[body]
    if tag == "$time":
        return _time_from(body)
    if tag == "$timeval":
        _expect(isinstance(body, list) and len(body) == 2, "$timeval must be [time, value]")
        return Timeval(_time_from(body[0]), _from_jsonable(body[1]))
    if tag == "$array":
        return _array_from(body)
    if tag == "$tuple":
        _expect(isinstance(body, list), "$tuple must be a list")
        return tuple(_from_jsonable(v) for v in body)
    if tag == "$bag":
        _expect(isinstance(body, list), "$bag must be a list")
        return Bag(_from_jsonable(v) for v in body)
    if tag == "$record":
        _expect(isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body),
                "$record must be a list of [key, value] pairs")
        return {_from_jsonable(k): _from_jsonable(v) for k, v in body}
    if tag == "$obj":
        _expect(isinstance(body, list) and len(body) == 2 and _is_int(body[0])
                and isinstance(body[1], str), "$obj must be [oid, type name]")
        return Obj(body[0], body[1])
    if tag == "$edge":
        _expect(isinstance(body, str), "$edge must be a string")
        return EdgeRef(body)
    if tag == "$function":
        _expect(isinstance(body, str), "$function must be a string")
        return FunctionRef(body)
    if tag == "$bytes":
        _expect(isinstance(body, str), "$bytes must be a base64 string")
        return base64.b64decode(body, validate=True)
    raise CodecError(f"unknown tag {tag!r}")


def _time_from(body: Any) -> Time:
    if isinstance(body, str):
        return Time.parse(body)
    value = _from_jsonable(body)
    _expect(_is_number(value), "$time must be an ISO string or seconds")
    return Time(float(value))


def _array_from(body: Any) -> np.ndarray:
    _expect(isinstance(body, dict) and {"dtype", "shape", "data"} <= body.keys(),
            "$array must have dtype, shape and data")
    shape, data, name = body["shape"], body["data"], body["dtype"]
    _expect(isinstance(shape, list) and all(_is_int(n) and n >= 0 for n in shape),
            "$array shape must be a list of sizes")
    _expect(isinstance(data, list) and len(data) == math.prod(shape),
            "$array data must be a flat list matching the shape")
    if name == "object":
        return _object_array([_from_jsonable(v) for v in data], shape)
    if name not in DTYPES:
        raise CodecError(f"unknown dtype {name!r}")
    dtype = DTYPES[name][1].newbyteorder("=")
    if dtype.kind == "c":
        _expect(all(isinstance(z, list) and len(z) == 2 for z in data), "complex items are [re, im]")
        parts = _floats_from([x for z in data for x in z], np.dtype(f"f{dtype.itemsize // 2}"))
        return parts.view(dtype).reshape(shape)
    if dtype.kind == "f":
        return _floats_from(data, dtype).reshape(shape)
    return np.array(data, dtype=dtype).reshape(shape)


def _scalar_from(x: Any) -> float:
    if isinstance(x, str):
        if x not in _NONFINITE:
            raise CodecError(f"not a number: {x!r}")
        return _NONFINITE[x]
    _expect(_is_number(x), f"not a number: {x!r}")
    return x


# == plain JSON (for API consumers) ============================================================
def to_plain(value: Any) -> Any:
    """A value as a consumer of the HTTP API sees it: plain JSON, lossy on purpose.

    Arrays → nested lists, Time → ISO string, Timeval → {"time", "value"}, NaN/±inf → null,
    Bag and tuple → list, Obj → "#[OID n T]", EdgeRef → its id, FunctionRef → its name,
    bytes → base64 text, Record keys → strings.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _array_plain(value)
    if isinstance(value, np.generic):
        return to_plain(value.item())
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(to_plain(k)): to_plain(v) for k, v in value.items()}
    if isinstance(value, Time):
        return _time_plain(value)
    if isinstance(value, Timeval):
        time = value.time if isinstance(value.time, Time) else Time(float(value.time))
        return {"time": _time_plain(time), "value": to_plain(value.value)}
    if isinstance(value, Bag):
        return [to_plain(v) for v in value.items]
    if isinstance(value, Obj):
        return repr(value)
    if isinstance(value, EdgeRef):
        return value.id
    if isinstance(value, FunctionRef):
        return value.name
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise CodecError(f"cannot encode a value of type {type(value).__name__}")


def _time_plain(time: Time) -> Any:
    try:
        return time.iso()
    except (ValueError, OverflowError):
        return None


def _array_plain(array: np.ndarray) -> Any:
    kind = array.dtype.kind
    if kind == "f":
        if np.isfinite(array).all():
            return array.tolist()
        return np.where(np.isfinite(array), array, None).tolist()
    if kind in "biu":
        return array.tolist()
    if kind == "c":
        return to_plain(np.stack([array.real, array.imag], axis=-1))
    return [to_plain(v) for v in array.tolist()] if array.ndim == 1 else \
        [_array_plain(sub) for sub in array]


def dumps_plain(value: Any) -> str:
    """Compact plain JSON text of a value (one NDJSON line without the newline)."""
    return json.dumps(to_plain(value), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
