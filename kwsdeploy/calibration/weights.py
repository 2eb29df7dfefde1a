"""Weight-only int8 storage for what the tensorrt recipe computes in float.

A layer kept float (depthwise conv, a layer under an SQNR floor) still stores its weight as int8: a
symmetric per-channel int8 initializer (output-channel axis, zero point 0) behind a DequantizeLinear
feeding the layer, activations float. This is TensorRT's form for pre-quantized weights (a
DequantizeLinear between the weight and the linear operator); the layer runs in float.

Decay rates (a constant, all of one sign, multiplied into an Exp: Keyword Mamba's A in exp(dt*A))
are stored in the log domain, int8 per-tensor: DequantizeLinear -> Exp (-> Neg), the same relative
error (about 1 %) for a slow mode as for a fast one; TensorRT folds it at build time.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from kwsdeploy.trt.qdq_rules import weight_axis

MIN_DECAY_ELEMENTS = 64  # smaller decay constants are not worth three nodes
REASON_SUFFIX = "; weight stored int8 (weight-only)"


def symmetric_int8(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, positive float32 scales) of `w`, per channel on `axis` (None: per tensor)."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max() if axis is None else np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(1)
    scale = np.where(np.asarray(amax) > 0, np.asarray(amax) / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def _dq(name: str, q: np.ndarray, scale: np.ndarray, axis: int | None, out: str):
    inits = [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_wscale"),
             numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_wzero")]
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node("DequantizeLinear", [i.name for i in inits], [out], name=f"{name}_WeightOnlyDQ", **attrs)
    return inits, node


def _consumers(g: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    out: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for k, name in enumerate(n.input):
            out.setdefault(name, []).append((n, k))
    return out


def store_weights_int8(proto: onnx.ModelProto, layers: Iterable[str], decays: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `proto` whose float `layers` (Conv/MatMul/Gemm node names with a constant weight used
    by them alone) and, with `decays`, whose decay constants store int8; returns (graph, what changed)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    uses = _consumers(g)
    wanted = set(layers)
    new_inits, new_nodes, done, drop = [], [], [], set()
    for node in g.node:
        if node.name not in wanted or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w_name = node.input[1]
        axis = weight_axis(node, 1)
        if axis is None or len(uses.get(w_name, [])) != 1 or inits[w_name].data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(inits[w_name])
        q, scale = symmetric_int8(w, axis % w.ndim)
        i, dq = _dq(w_name, q, scale, axis % w.ndim, w_name)
        new_inits += i
        new_nodes.append(dq)
        drop.add(w_name)
        done.append(node.name)
    if decays:
        for name, t in inits.items():
            if name in drop or t.data_type != onnx.TensorProto.FLOAT or name.startswith("frontend/"):
                continue
            users = uses.get(name, [])
            if not users or any(u.op_type != "Mul" or not _feeds_exp(u, uses) for u, _ in users):
                continue
            a = numpy_helper.to_array(t)
            if a.size < MIN_DECAY_ELEMENTS or not (np.all(a < 0) or np.all(a > 0)):
                continue
            q, scale = symmetric_int8(np.log(np.abs(a)), None)
            log_name = f"{name}_log"
            i, dq = _dq(name, q, scale, None, log_name)
            nodes = [dq, helper.make_node("Exp", [log_name], [name if a.flat[0] > 0 else f"{name}_abs"],
                                          name=f"{name}_WeightOnlyExp")]
            if a.flat[0] < 0:
                nodes.append(helper.make_node("Neg", [f"{name}_abs"], [name], name=f"{name}_WeightOnlyNeg"))
            new_inits += i
            new_nodes += nodes
            drop.add(name)
            done.append(name)
    if not done:
        return out, []
    inputs = [i for i in g.input if i.name not in drop]  # an old-style graph lists initializers as inputs
    del g.input[:]
    g.input.extend(inputs)
    kept = [i for i in g.initializer if i.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    body = list(g.node)
    del g.node[:]
    g.node.extend(new_nodes + body)
    return out, done


def _feeds_exp(node: onnx.NodeProto, uses) -> bool:
    return any(u.op_type == "Exp" for u, _ in uses.get(node.output[0], []))
