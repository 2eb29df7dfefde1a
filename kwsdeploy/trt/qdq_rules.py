"""The one Q/DQ rule: QuantizeLinear/DequantizeLinear as TensorRT runs them: signed INT8, zero point 0,
scale a positive constant, no block quantization, per-tensor activations, per-channel scales only on
weights, on the output-channel axis of their Conv/ConvTranspose/MatMul/Gemm consumer, one per channel.

`kwsdeploy.trt.compat` (check-trt) and `kwsdeploy.calibration.validate` (the gate of the tensorrt
recipe) both apply it. `strict=True` adds what the recipe promises beyond what TensorRT accepts:
weights stored as int8 (no run-time QuantizeLinear of a float weight), Q/DQ in the standard domain
(check-trt reports another domain as a `domain` finding), graph inputs and outputs (state included)
float, at least one Q/DQ. Yields (rule, message, accepted_from) like every rule of check-trt. onnx only.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto

from kwsdeploy.trt.graph_facts import STANDARD_DOMAINS, GraphFacts, node_attr, node_input

Issue = tuple[str, str, None]
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)


def weight_axis(consumer: onnx.NodeProto, input_index: int) -> int | None:
    """The output-channel axis of a weight fed to `consumer` at `input_index` (None: not a weight slot)."""
    if input_index != 1:
        return None
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "MatMul":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if node_attr(consumer, "transB", 0) else 1
    return None


def weight_of(node: onnx.NodeProto, g: GraphFacts) -> str | None:
    """The constant a Q/DQ node quantizes (a weight), None when it quantizes an activation."""
    x = node_input(node, 0)
    if g.is_constant(x):
        return x
    if node.op_type == "DequantizeLinear":
        src = g.producers.get(x)
        if src is not None and src.op_type == "QuantizeLinear" and g.is_constant(node_input(src, 0)):
            return node_input(src, 0)
    return None


def is_weight(node: onnx.NodeProto, g: GraphFacts) -> bool:
    """Whether a Q/DQ node quantizes a constant (a weight) rather than an activation."""
    return weight_of(node, g) is not None


def _weight_uses(node: onnx.NodeProto, g: GraphFacts) -> list[tuple[onnx.NodeProto, int]]:
    """Where the dequantized weight goes: the consumers of the DQ (of each DQ after a Q)."""
    dqs = [node] if node.op_type == "DequantizeLinear" else [
        c for c, _ in g.consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"]
    return [use for dq in dqs for use in g.consumers.get(dq.output[0], [])]


def _per_channel_issues(node: onnx.NodeProto, g: GraphFacts, scales: np.ndarray) -> Iterator[Issue]:
    weight = weight_of(node, g)
    if weight is None:
        yield ("qdq", f"per-channel scale ({scales.size} values) on an activation: activations must be per-tensor "
                      "(TensorRT quantizes them per tensor); per-channel only on weights", None)
        return
    uses = _weight_uses(node, g)
    axes = {weight_axis(c, k) for c, k in uses}
    if not uses or None in axes or len(axes) != 1:
        yield ("qdq", "per-channel scale on a tensor that is not a Conv/MatMul/Gemm weight: TensorRT takes "
                      "per-channel scales on weights only", None)
        return
    dims = _dims(weight, g)
    want = next(iter(axes))
    axis = int(node_attr(node, "axis", 1)) % max(1, len(dims) if dims else 1)
    if axis != want:
        c = uses[0][0]
        yield ("qdq", f"per-channel axis {axis}, but the output-channel axis of {c.op_type} {c.name!r} is {want}", None)
    elif dims and dims[axis] != scales.size:
        yield ("qdq", f"{scales.size} scales for {dims[axis]} output channels", None)


def _dims(name: str, g: GraphFacts) -> list[int]:
    """A constant's shape without reading its data (it may be stored externally)."""
    src = g.constants.get(name)
    if isinstance(src, TensorProto):
        return list(src.dims)
    t = next((a.t for a in src.attribute if a.name == "value"), None) if src is not None else None
    return list(t.dims) if t is not None else []


def _zero_point_issues(node: onnx.NodeProto, g: GraphFacts) -> Iterator[Issue]:
    zp = node_input(node, 2)
    if not zp:
        if node.op_type == "QuantizeLinear" and not node_attr(node, "output_dtype", 0):
            yield ("qdq", "no zero point: ONNX then quantizes to UINT8; give a signed INT8 zero point of 0", None)
        elif node.op_type == "DequantizeLinear" and g.dtype(node_input(node, 0)) not in (None, "INT8"):
            yield ("qdq", f"dequantizes {g.dtype(node_input(node, 0))} data; TensorRT needs INT8 Q/DQ", None)
        elif node.op_type == "QuantizeLinear" and node_attr(node, "output_dtype", 0) != TensorProto.INT8:
            name = TensorProto.DataType.Name(node_attr(node, "output_dtype", 0))
            yield ("qdq", f"quantizes to {name}; TensorRT needs INT8 Q/DQ", None)
        return
    if not g.is_constant(zp):
        yield ("qdq", "the zero point must be a constant", None)
        return
    dtype = g.dtype(zp)
    if dtype is not None and dtype != "INT8":
        yield ("qdq", f"zero point of type {dtype}: TensorRT needs INT8 (signed, zero point 0)", None)
    v = g.value(zp)
    if v is not None and np.any(np.asarray(v, dtype=np.int64) != 0):
        yield ("qdq", f"zero point is not 0 (max |zero point| = {int(np.max(np.abs(np.asarray(v, np.int64))))}): "
                      "TensorRT needs symmetric quantization", None)


def qdq_issues(node: onnx.NodeProto, g: GraphFacts, strict: bool = False) -> Iterator[Issue]:
    """What the rule refuses in one Q/DQ node (nothing for other nodes); no TensorRT version accepts these."""
    if node.op_type not in QDQ_OPS:
        return
    if node.domain not in STANDARD_DOMAINS:
        if strict:
            yield ("qdq", f"domain {node.domain!r}: TensorRT needs the standard QuantizeLinear/DequantizeLinear", None)
        return
    scale = node_input(node, 1)
    if not g.is_constant(scale):
        yield ("qdq", "the scale must be a constant (TensorRT takes Q/DQ scales at build time)", None)
    else:
        s = g.value(scale)
        if s is not None and s.size and not (np.all(np.isfinite(np.asarray(s, np.float64)))
                                             and np.all(np.asarray(s, dtype=np.float64) > 0)):
            yield ("qdq", "scales must be positive and finite", None)
        if s is not None and s.size > 1:
            yield from _per_channel_issues(node, g, np.asarray(s))
    if node_attr(node, "block_size", 0):
        yield ("qdq", "block quantization (block_size) is not INT8 Q/DQ", None)
    yield from _zero_point_issues(node, g)
    if strict and node.op_type == "QuantizeLinear" and g.is_constant(node_input(node, 0)):
        yield ("qdq", "quantizes a float weight at run time; store it as int8 behind a DequantizeLinear", None)


def graph_qdq_issues(g: GraphFacts) -> Iterator[tuple[str, str]]:
    """The strict rule's graph-level part, as (where, message): float graph inputs/outputs, some Q/DQ."""
    graph = g.model.graph
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for vi in values:
            t = vi.type.tensor_type.elem_type
            if vi.name not in g.constants and t not in _FLOATS:
                yield (f"graph {kind} {vi.name!r}", f"is {TensorProto.DataType.Name(t)}; inputs/outputs "
                                                    "(state included) stay float")
    if not any(n.op_type in QDQ_OPS for n in graph.node):
        yield ("graph", "no QuantizeLinear/DequantizeLinear node: the graph is not quantized")
