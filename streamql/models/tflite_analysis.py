"""What a TFLite graph costs: multiply-accumulates, working memory, quantization.

Everything is computed from the static shapes in the flatbuffer, per sample (divided by the batch
size the model was converted with, normally 1).

>>> from streamql.testing.tflite import fully_connected
>>> from streamql.models.tflite_format import read_tflite
>>> graph = read_tflite(fully_connected([[1.0] * 256] * 8))
>>> macs(graph)[0]
2048
"""
from __future__ import annotations

import math

from .tflite_format import OpSpec, SubgraphSpec, TensorSpec, TFLiteGraph

__all__ = ["ARENA_ALIGNMENT", "arena_bytes", "batch_size", "macs", "quantization"]

ARENA_ALIGNMENT = 16  # bytes; TFLite Micro aligns tensors in its arena to 16


def batch_size(graph: TFLiteGraph) -> int:
    """The static batch dimension of the main input (1 for the usual [1, …] models)."""
    first = graph.main.tensors[graph.main.inputs[0]]
    if len(first.shape) >= 2 and first.shape[0] >= 1:
        return first.shape[0]
    return 1


def _op_macs(op: OpSpec, tensors: tuple[TensorSpec, ...]) -> int:
    def t(k: int) -> TensorSpec | None:
        return tensors[k] if 0 <= k < len(tensors) else None

    def dims(spec: TensorSpec | None) -> tuple[int, ...]:
        return tuple(max(d, 1) for d in spec.shape) if spec is not None else ()

    ins = [t(k) for k in op.inputs]
    out = t(op.outputs[0]) if op.outputs else None
    if out is None:
        return 0
    out_elems = math.prod(dims(out))
    if op.name == "FULLY_CONNECTED" and len(ins) >= 2 and ins[1] is not None:
        weights = dims(ins[1])  # [units, depth]: each output element is one dot product of depth
        return out_elems * weights[-1]
    if op.name == "CONV_2D" and len(ins) >= 2 and ins[1] is not None:
        kh, kw, cin = dims(ins[1])[1:4]  # filter [cout, kh, kw, cin]
        return out_elems * kh * kw * cin
    if op.name == "DEPTHWISE_CONV_2D" and len(ins) >= 2 and ins[1] is not None:
        kh, kw = dims(ins[1])[1:3]  # filter [1, kh, kw, cout]: one input channel per output
        return out_elems * kh * kw
    if op.name == "CONV_3D" and len(ins) >= 2 and ins[1] is not None:
        kd, kh, kw, cin = dims(ins[1])[0:4]  # filter [kd, kh, kw, cin, cout]
        return out_elems * kd * kh * kw * cin
    if op.name == "TRANSPOSE_CONV" and len(ins) >= 3 and ins[1] is not None and ins[2] is not None:
        cout, kh, kw = dims(ins[1])[0:3]  # inputs: output_shape, filter [cout, kh, kw, cin], input
        return math.prod(dims(ins[2])) * kh * kw * cout
    if op.name == "BATCH_MATMUL" and len(ins) >= 2 and ins[0] is not None:
        return out_elems * dims(ins[0])[-1]
    return 0


def macs(graph: TFLiteGraph) -> tuple[int, dict[str, int]]:
    """Multiply-accumulates per sample, in total and by operator name (only those that do any).

    Counted: FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, CONV_3D, TRANSPOSE_CONV, BATCH_MATMUL,
    over every subgraph once (loops in control flow are not unrolled).
    """
    by_op: dict[str, int] = {}
    for sg in graph.subgraphs:
        for op in sg.operators:
            n = _op_macs(op, sg.tensors)
            if n:
                by_op[op.name] = by_op.get(op.name, 0) + n
    per = batch_size(graph)
    by_op = {name: n // per for name, n in sorted(by_op.items())}
    return sum(by_op.values()), by_op


def _aligned(n: int) -> int:
    return (n + ARENA_ALIGNMENT - 1) // ARENA_ALIGNMENT * ARENA_ALIGNMENT


def lifetimes(sg: SubgraphSpec) -> dict[int, tuple[int, int]]:
    """First and last operator step at which each non-constant tensor must hold its data.

    Graph inputs are alive from before the first operator (-1); graph outputs and variables until
    after the last (len(operators)).
    """
    end = len(sg.operators)
    spans: dict[int, list[int]] = {}

    def touch(k: int, step: int) -> None:
        if k < 0 or sg.tensors[k].constant:
            return
        span = spans.setdefault(k, [step, step])
        span[0] = min(span[0], step)
        span[1] = max(span[1], step)

    for k in sg.inputs:
        touch(k, -1)
    for step, op in enumerate(sg.operators):
        for k in op.inputs:
            touch(k, step)
        for k in op.outputs:
            touch(k, step)
    for k in sg.outputs:
        touch(k, end)
    for k, spec in enumerate(sg.tensors):
        if spec.is_variable and k in spans:
            spans[k] = [-1, end]
    return {k: (a, b) for k, (a, b) in spans.items()}


def arena_bytes(graph: TFLiteGraph) -> int:
    """Estimated tensor arena of the main subgraph, per sample.

    Non-constant tensors are placed greedily by size (largest first) at the lowest offset that
    does not overlap, in memory and in lifetime, any tensor already placed: the "greedy by size"
    planner TFLite Micro uses. The arena is the highest end offset, each tensor aligned to 16
    bytes. Constants stay in flash and are not counted.
    """
    sg = graph.main
    spans = lifetimes(sg)
    per = batch_size(graph)
    sizes = {k: _aligned(max(sg.tensors[k].nbytes // per, 1)) for k in spans}
    order = sorted(spans, key=lambda k: (-sizes[k], spans[k][0], k))
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    top = 0
    for k in order:
        first, last = spans[k]
        size = sizes[k]
        busy = sorted((o, e) for o, e, f, l in placed if not (l < first or last < f))
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            offset = max(offset, e)
        placed.append((offset, offset + size, first, last))
        top = max(top, offset + size)
    return top


def quantization(graph: TFLiteGraph) -> str:
    """'none' (float only), 'int8' (integer only: int8/uint8/int16 activations and weights), or
    'mixed' (both, e.g. dynamic-range models or float models with quantize/dequantize ends)."""
    has_float = has_quant = False
    for sg in graph.subgraphs:
        used = set(sg.inputs) | set(sg.outputs)
        for op in sg.operators:
            used.update(k for k in op.inputs if k >= 0)
            used.update(op.outputs)
        for k in used:
            spec = sg.tensors[k]
            if spec.quantized and spec.dtype in ("int8", "uint8", "int16", "int4"):
                has_quant = True
            elif spec.is_float:
                has_float = True
    if has_quant and has_float:
        return "mixed"
    return "int8" if has_quant else "none"
