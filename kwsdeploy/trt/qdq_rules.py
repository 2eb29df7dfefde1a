"""The Q/DQ rule of the TensorRT check: QuantizeLinear/DequantizeLinear as TensorRT runs them (signed
INT8, zero point 0, scale a positive constant, per-channel only on weights, no block quantization).
Yields (rule, message, accepted_from) like every rule of `kwsdeploy.trt.compat`. onnx only."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto

from kwsdeploy.trt.graph_facts import STANDARD_DOMAINS, GraphFacts, node_attr, node_input

Issue = tuple[str, str, None]


def is_weight(node: onnx.NodeProto, g: GraphFacts) -> bool:
    """Whether a Q/DQ node quantizes a constant (a weight) rather than an activation."""
    x = node_input(node, 0)
    if g.is_constant(x):
        return True
    if node.op_type == "DequantizeLinear":
        src = g.producers.get(x)
        return src is not None and src.op_type == "QuantizeLinear" and g.is_constant(node_input(src, 0))
    return False


def qdq_issues(node: onnx.NodeProto, g: GraphFacts) -> Iterator[Issue]:
    """What TensorRT would refuse in one Q/DQ node (nothing for other nodes); no version accepts these."""
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.domain not in STANDARD_DOMAINS:
        return
    scale, zp = node_input(node, 1), node_input(node, 2)
    if not g.is_constant(scale):
        yield ("qdq", "the scale must be a constant (TensorRT takes Q/DQ scales at build time)", None)
    else:
        s = g.value(scale)
        if s is not None and s.size > 1 and not is_weight(node, g):
            yield ("qdq", f"per-channel scale ({s.size} values) on an activation: TensorRT quantizes activations "
                          "per tensor; per-channel only on weights", None)
        if s is not None and s.size and not np.all(np.asarray(s, dtype=np.float64) > 0):
            yield ("qdq", "scales must be positive", None)
    if node_attr(node, "block_size", 0):
        yield ("qdq", "block quantization (block_size) is not INT8 Q/DQ", None)
    if not zp:
        if node.op_type == "QuantizeLinear" and not node_attr(node, "output_dtype", 0):
            yield ("qdq", "no zero point: ONNX then quantizes to UINT8; give a signed INT8 zero point of 0", None)
        elif node.op_type == "DequantizeLinear" and g.dtype(node_input(node, 0)) not in (None, "INT8"):
            yield ("qdq", f"dequantizes {g.dtype(node_input(node, 0))} data; TensorRT runs signed INT8 Q/DQ", None)
        elif node.op_type == "QuantizeLinear" and node_attr(node, "output_dtype", 0) != TensorProto.INT8:
            name = TensorProto.DataType.Name(node_attr(node, "output_dtype", 0))
            yield ("qdq", f"quantizes to {name}; TensorRT runs signed INT8 Q/DQ", None)
        return
    if not g.is_constant(zp):
        yield ("qdq", "the zero point must be a constant", None)
        return
    dtype = g.dtype(zp)
    if dtype is not None and dtype != "INT8":
        yield ("qdq", f"zero point of type {dtype}: TensorRT runs signed INT8 Q/DQ (int8 zero point 0)", None)
    v = g.value(zp)
    if v is not None and np.any(np.asarray(v, dtype=np.int64) != 0):
        yield ("qdq", f"zero point is not 0 (max |zero point| = {int(np.max(np.abs(np.asarray(v, np.int64))))}): "
                      "TensorRT needs symmetric quantization", None)
