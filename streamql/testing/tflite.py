"""Build small `.tflite` models in code, with the flatbuffer schema module LiteRT ships.

No TensorFlow: a `GraphBuilder` assembles tensors, constant buffers and builtin operators through
the schema's object API (`ModelT`, `SubGraphT`, `OperatorT`, `TensorT`, `BufferT`) and packs them
with the file identifier ``TFL3``. The helpers below cover what the model tests need:

>>> data = fully_connected([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [0.5, 0.0, -1.0], relu=True)
>>> data[4:8]
b'TFL3'
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "GraphBuilder",
    "Int8Dense",
    "conv_model",
    "fully_connected",
    "int8_fully_connected",
    "quantize",
    "two_outputs",
]

_DTYPES = {"float32": 0, "int32": 2, "uint8": 3, "int64": 4, "int16": 7, "int8": 9}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


class GraphBuilder:
    """One subgraph of tensors and builtin operators, packed into TFLite flatbuffer bytes."""

    def __init__(self, description: str = "streamql test model"):
        schema = _schema()
        self._schema = schema
        self.description = description
        self.tensors: list = []
        self.operators: list = []
        self.buffers: list = [schema.BufferT()]  # buffer 0 is the empty sentinel
        self.opcodes: dict[int, int] = {}
        self.opcode_list: list = []

    def tensor(self, name: str, shape, dtype: str = "float32", data=None,
               scale=None, zero_point=None, quantized_dimension: int = 0,
               shape_signature=None) -> int:
        """Add a tensor (a constant when `data` is given) and return its index."""
        schema = self._schema
        t = schema.TensorT()
        t.name = name
        t.shape = [int(d) for d in shape]
        if shape_signature is not None:
            t.shapeSignature = [int(d) for d in shape_signature]
        t.type = _DTYPES[dtype]
        if data is not None:
            array = np.ascontiguousarray(np.asarray(data, dtype=dtype).reshape(t.shape))
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(array.astype(array.dtype.newbyteorder("<")).tobytes(), dtype=np.uint8)
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        if scale is not None:
            q = schema.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scale)]
            zp = np.zeros(len(q.scale), dtype=np.int64) if zero_point is None else np.atleast_1d(zero_point)
            q.zeroPoint = [int(z) for z in zp]
            q.quantizedDimension = quantized_dimension
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, opname: str, inputs, outputs, options=None, options_type: str | None = None) -> None:
        """Add a builtin operator by its schema name (`FULLY_CONNECTED`, `CONV_2D`, …)."""
        schema = self._schema
        code = getattr(schema.BuiltinOperator, opname)
        if code not in self.opcodes:
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.opcodes[code] = len(self.opcode_list)
            self.opcode_list.append(oc)
        o = schema.OperatorT()
        o.opcodeIndex = self.opcodes[code]
        o.inputs = list(inputs)
        o.outputs = list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(schema.BuiltinOptions, options_type or type(options).__name__[:-1])
            o.builtinOptions = options
        self.operators.append(o)

    def build(self, inputs, outputs) -> bytes:
        import flatbuffers

        schema = self._schema
        sg = schema.SubGraphT()
        sg.tensors = self.tensors
        sg.inputs = list(inputs)
        sg.outputs = list(outputs)
        sg.operators = self.operators
        sg.name = "main"
        model = schema.ModelT()
        model.version = 3
        model.description = self.description
        model.operatorCodes = self.opcode_list
        model.subgraphs = [sg]
        model.buffers = self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    # options ---------------------------------------------------------------------------------
    def fc_options(self, activation: str = "NONE"):
        o = self._schema.FullyConnectedOptionsT()
        o.fusedActivationFunction = getattr(self._schema.ActivationFunctionType, activation)
        return o


def fully_connected(weights, bias=None, *, relu: bool = False, input_name: str = "input",
                    output_name: str = "output", batch: int = 1) -> bytes:
    """A float32 model: input [batch, in] → FULLY_CONNECTED (weights [out, in]) → [batch, out]."""
    w = np.asarray(weights, dtype=np.float32)
    out_n, in_n = w.shape
    g = GraphBuilder()
    x = g.tensor(input_name, [batch, in_n], shape_signature=[-1, in_n])
    wt = g.tensor("weights", [out_n, in_n], data=w)
    ins = [x, wt]
    if bias is not None:
        ins.append(g.tensor("bias", [out_n], data=np.asarray(bias, dtype=np.float32)))
    else:
        ins.append(-1)
    y = g.tensor(output_name, [batch, out_n], shape_signature=[-1, out_n])
    g.op("FULLY_CONNECTED", ins, [y], g.fc_options("RELU" if relu else "NONE"))
    return g.build([x], [y])


def quantize(x, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    """Affine quantization as TFLite does it: round half away from zero, then clamp."""
    info = np.iinfo(dtype)
    q = np.asarray(x, dtype=np.float64) / scale
    q = np.sign(q) * np.floor(np.abs(q) + 0.5) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


@dataclass(frozen=True)
class Int8Dense:
    """An int8 fully connected model and everything needed to compute it independently."""

    data: bytes
    weights_q: np.ndarray   # int8 [out, in]
    weight_scale: float
    bias_q: np.ndarray      # int32 [out]
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int

    def reference(self, x) -> np.ndarray:
        """Numpy oracle: quantize x, integer matmul, requantize, dequantize (float64)."""
        x = np.asarray(x, dtype=np.float64)
        xq = quantize(x, self.input_scale, self.input_zero_point).astype(np.int64)
        acc = (xq - self.input_zero_point) @ self.weights_q.astype(np.int64).T + self.bias_q
        real = acc * (self.input_scale * self.weight_scale)
        yq = quantize(real, self.output_scale, self.output_zero_point).astype(np.int64)
        return (yq - self.output_zero_point) * self.output_scale


def int8_fully_connected(weights, bias, *, input_range=(-1.0, 1.0), output_range=None,
                         relu: bool = False) -> Int8Dense:
    """A full-integer model: int8 input/output with scale and zero point, int8 weights, int32 bias."""
    w = np.asarray(weights, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    out_n, in_n = w.shape
    lo, hi = input_range
    in_scale, in_zp = _affine(lo, hi)
    w_scale = float(np.max(np.abs(w))) / 127.0 or 1.0
    wq = quantize(w, w_scale, 0)
    bias_scale = in_scale * w_scale
    bq = np.round(b / bias_scale).astype(np.int32)
    if output_range is None:
        corners = np.abs(w).sum(axis=1) * max(abs(lo), abs(hi)) + np.abs(b)
        output_range = (0.0 if relu else -float(corners.max()), float(corners.max()))
    out_scale, out_zp = _affine(*output_range)
    g = GraphBuilder("streamql int8 test model")
    x = g.tensor("input", [1, in_n], "int8", scale=in_scale, zero_point=in_zp, shape_signature=[-1, in_n])
    wt = g.tensor("weights", [out_n, in_n], "int8", data=wq, scale=w_scale, zero_point=0)
    bt = g.tensor("bias", [out_n], "int32", data=bq, scale=bias_scale, zero_point=0)
    y = g.tensor("output", [1, out_n], "int8", scale=out_scale, zero_point=out_zp, shape_signature=[-1, out_n])
    g.op("FULLY_CONNECTED", [x, wt, bt], [y], g.fc_options("RELU" if relu else "NONE"))
    return Int8Dense(g.build([x], [y]), wq, w_scale, bq, in_scale, in_zp, out_scale, out_zp)


def _affine(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point mapping [lo, hi] (widened to hold 0) onto int8."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return float(scale), zp


def two_outputs(w1, b1, w2, b2, *, names=("scores", "embedding")) -> bytes:
    """One float input feeding two FULLY_CONNECTED heads, each a model output."""
    w1 = np.asarray(w1, dtype=np.float32)
    w2 = np.asarray(w2, dtype=np.float32)
    in_n = w1.shape[1]
    g = GraphBuilder()
    x = g.tensor("input", [1, in_n], shape_signature=[-1, in_n])
    outs = []
    for name, w, b in ((names[0], w1, b1), (names[1], w2, b2)):
        wt = g.tensor(f"{name}/weights", w.shape, data=w)
        bt = g.tensor(f"{name}/bias", [w.shape[0]], data=np.asarray(b, dtype=np.float32))
        y = g.tensor(name, [1, w.shape[0]], shape_signature=[-1, w.shape[0]])
        g.op("FULLY_CONNECTED", [x, wt, bt], [y], g.fc_options())
        outs.append(y)
    return g.build([x], outs)


def conv_model(height: int = 8, width: int = 8, channels: int = 3, filters: int = 4,
               kernel: int = 3, depth_multiplier: int = 2, dense: int = 5, seed: int = 0) -> bytes:
    """Float CONV_2D (VALID, stride 1) → DEPTHWISE_CONV_2D (SAME, stride 2) → RESHAPE → FULLY_CONNECTED.

    MACs per sample: conv = oh*ow*filters*k*k*channels, depthwise = oh2*ow2*(filters*dm)*k*k,
    dense = dense * (oh2*ow2*filters*dm).
    """
    rng = np.random.default_rng(seed)
    schema = _schema()
    g = GraphBuilder("streamql conv test model")
    x = g.tensor("image", [1, height, width, channels], shape_signature=[-1, height, width, channels])
    oh, ow = height - kernel + 1, width - kernel + 1
    f1 = g.tensor("conv/filter", [filters, kernel, kernel, channels],
                  data=rng.normal(0, 0.3, (filters, kernel, kernel, channels)))
    b1 = g.tensor("conv/bias", [filters], data=rng.normal(0, 0.1, filters))
    h1 = g.tensor("conv/out", [1, oh, ow, filters])
    c = schema.Conv2DOptionsT()
    c.padding, c.strideW, c.strideH = schema.Padding.VALID, 1, 1
    c.fusedActivationFunction = schema.ActivationFunctionType.RELU
    g.op("CONV_2D", [x, f1, b1], [h1], c)
    oc = filters * depth_multiplier
    oh2, ow2 = -(-oh // 2), -(-ow // 2)
    f2 = g.tensor("dw/filter", [1, kernel, kernel, oc], data=rng.normal(0, 0.3, (1, kernel, kernel, oc)))
    b2 = g.tensor("dw/bias", [oc], data=rng.normal(0, 0.1, oc))
    h2 = g.tensor("dw/out", [1, oh2, ow2, oc])
    d = schema.DepthwiseConv2DOptionsT()
    d.padding, d.strideW, d.strideH = schema.Padding.SAME, 2, 2
    d.depthMultiplier = depth_multiplier
    g.op("DEPTHWISE_CONV_2D", [h1, f2, b2], [h2], d)
    flat_n = oh2 * ow2 * oc
    shape = g.tensor("flat/shape", [2], "int32", data=[-1, flat_n])
    flat = g.tensor("flat", [1, flat_n])
    r = schema.ReshapeOptionsT()
    r.newShape = [-1, flat_n]
    g.op("RESHAPE", [h2, shape], [flat], r)
    w3 = g.tensor("dense/weights", [dense, flat_n], data=rng.normal(0, 0.1, (dense, flat_n)))
    y = g.tensor("logits", [1, dense])
    g.op("FULLY_CONNECTED", [flat, w3, -1], [y], g.fc_options())
    return g.build([x], [y])
