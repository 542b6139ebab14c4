"""Reading and validating a `.tflite` flatbuffer before any native code sees it.

The schema module LiteRT ships (`ai_edge_litert.schema_py_generated`) reads the tables, and every
table and vector is bounds-checked first, so truncated, corrupt or foreign bytes become a
ModelError with a plain message instead of a crash or a runaway loop. The result is a small
immutable description of the graph (tensors, operators, buffers) that the analysis
(MACs, arena, quantization) and the model wrapper use.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from streamql.errors import ModelError

from .runtime import schema_module

__all__ = ["OpSpec", "SubgraphSpec", "TFLiteGraph", "TensorSpec", "read_tflite"]

# Element sizes in bits by TensorType value (schema.fbs); STRING/RESOURCE/VARIANT have none.
_TYPE_BITS = {
    0: 32, 1: 16, 2: 32, 3: 8, 4: 64, 6: 8, 7: 16, 8: 64, 9: 8, 10: 64, 11: 128, 12: 64,
    15: 32, 16: 16, 17: 4, 18: 16, 19: 2, 20: 4, 21: 8, 22: 8,
}
_FLOAT_TYPES = {"float32", "float16", "float64", "bfloat16"}
_MAX_ELEMENTS = 1 << 40


@dataclass(frozen=True, slots=True)
class TensorSpec:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None
    dtype: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    constant: bool
    is_variable: bool

    @property
    def elements(self) -> int:
        return math.prod(max(d, 1) for d in self.shape)

    @property
    def nbytes(self) -> int:
        bits = _TYPE_BITS.get(_DTYPE_CODES.get(self.dtype, -1), 8)
        return (self.elements * bits + 7) // 8

    @property
    def quantized(self) -> bool:
        return bool(self.scale) and any(s != 0.0 for s in self.scale) and self.dtype not in _FLOAT_TYPES

    @property
    def is_float(self) -> bool:
        return self.dtype in _FLOAT_TYPES


@dataclass(frozen=True, slots=True)
class OpSpec:
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SubgraphSpec:
    name: str
    tensors: tuple[TensorSpec, ...]
    operators: tuple[OpSpec, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TFLiteGraph:
    version: int
    description: str
    subgraphs: tuple[SubgraphSpec, ...]
    size_bytes: int

    @property
    def main(self) -> SubgraphSpec:
        return self.subgraphs[0]

    @property
    def op_names(self) -> list[str]:
        return sorted({op.name for sg in self.subgraphs for op in sg.operators})


_DTYPE_CODES: dict[str, int] = {}
_DTYPE_NAMES: dict[int, str] = {}
_OP_NAMES: dict[int, str] = {}


def _tables():
    schema = schema_module()
    if not _OP_NAMES:
        for attr, value in vars(schema.BuiltinOperator).items():
            if not attr.startswith("_") and isinstance(value, int):
                _OP_NAMES.setdefault(value, attr)
        for attr, value in vars(schema.TensorType).items():
            if not attr.startswith("_") and isinstance(value, int):
                _DTYPE_CODES[attr.lower()] = value
                _DTYPE_NAMES[value] = attr.lower()
    return schema


class _Corrupt(Exception):
    """Internal: the bytes do not hold a well-formed TFLite flatbuffer."""


class _Bounds:
    """Bounds checks for flatbuffer tables and vectors over one byte buffer."""

    def __init__(self, buf: bytes):
        self.buf = buf
        self.n = len(buf)

    def table(self, obj, what: str):
        tab = obj._tab
        pos = tab.Pos
        if not 0 <= pos <= self.n - 4:
            raise _Corrupt(f"{what} lies outside the file")
        vtable = pos - struct.unpack_from("<i", self.buf, pos)[0]
        if not 0 <= vtable <= self.n - 4:
            raise _Corrupt(f"{what} has a field table outside the file")
        vt_len, obj_len = struct.unpack_from("<HH", self.buf, vtable)
        if vt_len < 4 or vt_len % 2 or vtable + vt_len > self.n or pos + obj_len > self.n:
            raise _Corrupt(f"{what} has a malformed field table")
        return obj

    def vector(self, obj, field: int, elem_size: int, what: str) -> int:
        """Length of the vector in vtable slot `field`, after checking it fits in the file."""
        tab = obj._tab
        o = tab.Offset(field)
        if o == 0:
            return 0
        if tab.Pos + o + 4 > self.n:
            raise _Corrupt(f"{what} lies outside the file")
        start = tab.Vector(o)
        if start > self.n:
            raise _Corrupt(f"{what} lies outside the file")
        length = tab.VectorLen(o)
        if start + length * elem_size > self.n:
            raise _Corrupt(f"{what} claims {length} elements, more than the file holds")
        return length

    def string(self, obj, field: int, what: str) -> str:
        length = self.vector(obj, field, 1, what)
        if length == 0:
            return ""
        start = obj._tab.Vector(obj._tab.Offset(field))
        try:
            return self.buf[start:start + length].decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"{what} is not UTF-8 text") from None


def read_tflite(data: bytes, name: str = "model") -> TFLiteGraph:
    """Validate `data` as a TFLite model and describe its graph; ModelError when it is not one."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelError(f"model '{name}': expected the bytes of a .tflite file, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 8:
        raise ModelError(f"model '{name}' is not a TFLite model: the file is only {len(data)} bytes long")
    if data[4:8] != b"TFL3":
        hint = _guess_format(data)
        raise ModelError(
            f"model '{name}' is not a TFLite model: the file lacks the 'TFL3' identifier"
            + (f" (it looks like {hint})" if hint else "")
        )
    schema = _tables()
    try:
        return _read(schema, data)
    except _Corrupt as exc:
        raise ModelError(f"model '{name}' is a corrupt or truncated TFLite file: {exc}") from None
    except (struct.error, IndexError, ValueError, OverflowError, TypeError, MemoryError) as exc:
        raise ModelError(
            f"model '{name}' is a corrupt or truncated TFLite file: the flatbuffer cannot be read"
            f" ({type(exc).__name__})"
        ) from None


def _read(schema, data: bytes) -> TFLiteGraph:
    b = _Bounds(data)
    root = struct.unpack_from("<I", data, 0)[0]
    if root < 8 or root > len(data) - 4:
        raise _Corrupt("the root table lies outside the file")
    model = b.table(schema.Model.GetRootAs(data, 0), "the model table")
    version = model.Version()
    if version != 3:
        raise _Corrupt(f"schema version {version} is not 3")
    description = b.string(model, 10, "the description")

    n_codes = b.vector(model, 6, 4, "the operator code list")
    op_names = []
    for i in range(n_codes):
        code = b.table(model.OperatorCodes(i), f"operator code {i}")
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        if builtin == getattr(schema.BuiltinOperator, "CUSTOM", 32):
            custom = b.string(code, 6, f"custom code {i}")
            op_names.append(f"CUSTOM:{custom}")
        else:
            if builtin not in _OP_NAMES:
                raise _Corrupt(f"operator code {i} names unknown builtin operator {builtin}")
            op_names.append(_OP_NAMES[builtin])

    n_buffers = b.vector(model, 12, 4, "the buffer list")
    buffer_has_data = []
    for i in range(n_buffers):
        buf = b.table(model.Buffers(i), f"buffer {i}")
        length = b.vector(buf, 4, 1, f"buffer {i}")
        offset, size = buf.Offset(), buf.Size()
        if offset > 1 and offset + size > len(data):
            raise _Corrupt(f"buffer {i} points past the end of the file")
        buffer_has_data.append(length > 0 or (offset > 1 and size > 0))

    n_subgraphs = b.vector(model, 8, 4, "the subgraph list")
    if n_subgraphs == 0:
        raise _Corrupt("the model has no subgraph")
    subgraphs = []
    for s in range(n_subgraphs):
        subgraphs.append(_read_subgraph(schema, b, b.table(model.Subgraphs(s), f"subgraph {s}"), s,
                                        op_names, buffer_has_data))
    main = subgraphs[0]
    if not main.inputs or not main.outputs:
        raise _Corrupt("the main subgraph declares no inputs or no outputs")
    return TFLiteGraph(version, description, tuple(subgraphs), len(data))


def _read_subgraph(schema, b: _Bounds, sg, s: int, op_names: list[str],
                   buffer_has_data: list[bool]) -> SubgraphSpec:
    where = f"subgraph {s}"
    n_tensors = b.vector(sg, 4, 4, f"{where} tensor list")
    tensors = []
    for i in range(n_tensors):
        t = b.table(sg.Tensors(i), f"{where} tensor {i}")
        shape = tuple(int(d) for d in _ints(b, t, 4, "<i", f"tensor {i} shape"))
        sig_len = b.vector(t, 18, 4, f"tensor {i} shape signature")
        signature = tuple(int(d) for d in _ints(b, t, 18, "<i", "")) if sig_len else None
        if any(d < 0 for d in shape) or math.prod(max(d, 1) for d in shape) > _MAX_ELEMENTS:
            raise _Corrupt(f"tensor {i} has an impossible shape {list(shape)}")
        type_code = int(t.Type())
        dtype = _DTYPE_NAMES.get(type_code)
        if dtype is None:
            raise _Corrupt(f"tensor {i} has unknown element type {type_code}")
        buffer_index = int(t.Buffer())
        if buffer_index >= max(len(buffer_has_data), 1):
            raise _Corrupt(f"tensor {i} refers to buffer {buffer_index}, which does not exist")
        constant = buffer_index > 0 and buffer_has_data[buffer_index]
        scale: tuple[float, ...] = ()
        zero_point: tuple[int, ...] = ()
        if t._tab.Offset(12):
            q = b.table(t.Quantization(), f"tensor {i} quantization")
            scale = tuple(float(v) for v in _ints(b, q, 8, "<f", f"tensor {i} scales"))
            zero_point = tuple(int(v) for v in _ints(b, q, 10, "<q", f"tensor {i} zero points"))
        name = b.string(t, 10, f"tensor {i} name") or f"tensor_{i}"
        tensors.append(TensorSpec(i, name, shape, signature, dtype, scale, zero_point, constant,
                                  bool(t.IsVariable())))
    def check_index(k: int, what: str, optional: bool = False) -> int:
        if (optional and k == -1) or 0 <= k < n_tensors:
            return k
        raise _Corrupt(f"{where} {what} refers to tensor {k}, which does not exist")

    inputs = tuple(check_index(int(k), "input") for k in _ints(b, sg, 6, "<i", f"{where} inputs"))
    outputs = tuple(check_index(int(k), "output") for k in _ints(b, sg, 8, "<i", f"{where} outputs"))
    n_ops = b.vector(sg, 10, 4, f"{where} operator list")
    operators = []
    for i in range(n_ops):
        op = b.table(sg.Operators(i), f"{where} operator {i}")
        code = int(op.OpcodeIndex())
        if not 0 <= code < len(op_names):
            raise _Corrupt(f"operator {i} uses operator code {code}, which does not exist")
        ins = tuple(check_index(int(k), f"operator {i} input", True) for k in _ints(b, op, 6, "<i", "op inputs"))
        outs = tuple(check_index(int(k), f"operator {i} output") for k in _ints(b, op, 8, "<i", "op outputs"))
        operators.append(OpSpec(op_names[code], ins, outs))
    return SubgraphSpec(b.string(sg, 12, f"{where} name"), tuple(tensors), tuple(operators), inputs, outputs)


def _ints(b: _Bounds, obj, field: int, fmt: str, what: str) -> tuple:
    size = struct.calcsize(fmt)
    length = b.vector(obj, field, size, what)
    if length == 0:
        return ()
    tab = obj._tab
    start = tab.Vector(tab.Offset(field))
    return struct.unpack_from("<" + fmt[1:] * length, b.buf, start)


def _guess_format(data: bytes) -> str | None:
    head = data[:8]
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, perhaps a model bundle or a Keras file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 (Keras .h5) file"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy file"
    if head.lstrip()[:1] in (b"{", b"["):
        return "JSON text"
    if data[:2] == b"\x08\x03" or data[:1] == b"\x08":
        return "a protocol buffer, perhaps an ONNX or TensorFlow model"
    return None
