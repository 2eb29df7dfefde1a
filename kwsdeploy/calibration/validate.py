"""Check a Q/DQ graph against what TensorRT's explicit quantization accepts (torch-free, onnx only).

Every QuantizeLinear/DequantizeLinear: int8 zero point present and all zeros, positive finite scale.
Per-channel scales only on weights, on the output-channel axis of their consumer (Conv: 0, MatMul
[K, N]: 1, Gemm: 0 with transB else 1), one scale per channel; activations per-tensor; weights
stored as int8 initializers behind a DequantizeLinear; graph inputs/outputs (state.* included) float.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)


class QDQError(ValueError):
    """A Q/DQ graph TensorRT would reject or misread; the message lists what is wrong."""


def _attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _weight_axis(consumer: onnx.NodeProto, input_index: int) -> int | None:
    """The output-channel axis of a weight fed to `consumer` at `input_index` (None: not a weight slot)."""
    if input_index != 1:
        return None
    if consumer.op_type in ("Conv", "ConvTranspose"):
        return 0 if consumer.op_type == "Conv" else 1
    if consumer.op_type == "MatMul":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    return None


def qdq_problems(proto: onnx.ModelProto) -> list[str]:
    """Every violation found (empty list: the graph is clean)."""
    g = proto.graph
    consts = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for k, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, k))
    problems: list[str] = []
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for n in qdq:
        where = f"{n.op_type} {n.name or n.output[0]!r}"
        if n.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: domain {n.domain!r}, TensorRT needs the standard one")
        if len(n.input) < 3 or not n.input[2]:
            problems.append(f"{where}: no zero point (defaults to uint8); give an explicit int8 zero point 0")
            continue
        zp, scale = consts.get(n.input[2]), consts.get(n.input[1])
        if zp is None or scale is None:
            problems.append(f"{where}: scale/zero point must be constants")
            continue
        if zp.data_type != TensorProto.INT8:
            problems.append(f"{where}: zero point is {TensorProto.DataType.Name(zp.data_type)}, TensorRT needs INT8")
        zpa, sa = numpy_helper.to_array(zp), numpy_helper.to_array(scale).astype(np.float64)
        if np.any(zpa != 0):
            problems.append(f"{where}: zero point {zpa.ravel()[:4].tolist()} is not 0 (asymmetric)")
        if not (np.all(np.isfinite(sa)) and np.all(sa > 0)):
            problems.append(f"{where}: scale must be positive and finite")
        per_channel = sa.ndim >= 1  # ONNX: a 1-D scale is per-axis, a scalar per-tensor
        if n.op_type == "DequantizeLinear" and n.input[0] in consts:  # a stored weight
            w = consts[n.input[0]]
            if w.data_type != TensorProto.INT8:
                problems.append(f"{where}: weight {n.input[0]!r} stored as {TensorProto.DataType.Name(w.data_type)}, "
                                "not INT8")
            uses = consumers.get(n.output[0], [])
            axes = {_weight_axis(c, k) for c, k in uses}
            if per_channel:
                axis = int(_attr(n, "axis", 1))
                axis = axis % max(1, len(w.dims))
                if None in axes or len(axes) != 1:
                    problems.append(f"{where}: per-channel scale on a tensor that is not a Conv/MatMul/Gemm weight")
                elif axis != next(iter(axes)):
                    problems.append(f"{where}: per-channel axis {axis}, but the output-channel axis of "
                                    f"{uses[0][0].op_type} {uses[0][0].name!r} is {next(iter(axes))}")
                elif w.dims[axis] != sa.size:
                    problems.append(f"{where}: {sa.size} scales for {w.dims[axis]} output channels")
        elif per_channel:
            problems.append(f"{where}: per-channel scale on an activation; activations must be per-tensor")
        if n.op_type == "QuantizeLinear" and n.input[0] in consts:
            problems.append(f"{where}: quantizes a float weight at run time; store it as int8 behind a DequantizeLinear")
    for vi in (*g.input, *g.output):
        if vi.name in consts:
            continue
        t = vi.type.tensor_type.elem_type
        if t not in _FLOATS:
            problems.append(f"graph {'input' if vi in g.input else 'output'} {vi.name!r} is "
                            f"{TensorProto.DataType.Name(t)}; inputs/outputs (state included) stay float")
    if not qdq:
        problems.append("no QuantizeLinear/DequantizeLinear node: the graph is not quantized")
    return problems


def validate_tensorrt_qdq(proto: onnx.ModelProto) -> int:
    """Raise QDQError listing the problems; returns the number of Q/DQ nodes checked."""
    problems = qdq_problems(proto)
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise QDQError("tensorrt Q/DQ check failed: " + "; ".join(problems[:5]) + more)
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)
