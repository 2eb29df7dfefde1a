"""Hand-built ONNX graphs with known TensorRT problems (and a clean Q/DQ graph), for the checker tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def planted_graph() -> onnx.ModelProto:
    """features [batch, 4, T] (dynamic inner axis) -> STFT, a Q/DQ with zero point 3, DFT, an Einsum
    with an ellipsis, RMSNormalization, a per-channel activation Q/DQ, a uint8 zero point."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(3, np.int8), "zp_bad"),
        numpy_helper.from_array(np.array(0, np.int8), "zp0"),
        numpy_helper.from_array(np.array(0, np.uint8), "zp_u8"),
        numpy_helper.from_array(np.full(4, 0.1, np.float32), "s_chan"),
        numpy_helper.from_array(np.zeros(4, np.int8), "zp_chan"),
        numpy_helper.from_array(np.ones(4, np.float32), "gamma"),
        numpy_helper.from_array(np.array(16, np.int64), "step"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["features", "s", "zp_bad"], ["q"], name="q_nonzero_zp"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp_bad"], ["dq"], name="dq_nonzero_zp"),
        helper.make_node("Einsum", ["dq"], ["e"], name="einsum_ellipsis", equation="...ct->...tc"),
        helper.make_node("RMSNormalization", ["e", "gamma"], ["r"], name="rms", axis=-1),
        helper.make_node("QuantizeLinear", ["features", "s_chan", "zp_chan"], ["qc"], name="q_per_channel_act", axis=1),
        helper.make_node("DequantizeLinear", ["qc", "s_chan", "zp_chan"], ["dqc"], name="dq_per_channel_act", axis=1),
        helper.make_node("QuantizeLinear", ["dqc", "s", "zp_u8"], ["qu"], name="q_uint8"),
        helper.make_node("DequantizeLinear", ["qu", "s", "zp_u8"], ["dqu"], name="dq_uint8"),
        helper.make_node("STFT", ["dqu", "step"], ["spec"], name="stft"),
        helper.make_node("DFT", ["spec"], ["y"], name="dft"),
    ]
    graph = helper.make_graph(nodes, "planted", [_f("features", ["batch", 4, "T"])], [_f("y", None), _f("r", None)],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def clean_qdq_graph() -> onnx.ModelProto:
    """What TensorRT runs: per-tensor activation Q/DQ and per-channel weight DQ, int8 zero points 0."""
    rng = np.random.default_rng(0)
    w = np.round(rng.standard_normal((8, 4, 3)) * 20).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "sx"),
        numpy_helper.from_array(np.array(0, np.int8), "zx"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.full(8, 0.01, np.float32), "sw"),
        numpy_helper.from_array(np.zeros(8, np.int8), "zw"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["features", "sx", "zx"], ["xq"], name="x_q"),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xdq"], name="x_dq"),
        helper.make_node("DequantizeLinear", ["w_q", "sw", "zw"], ["w"], name="w_dq", axis=0),
        helper.make_node("Conv", ["xdq", "w"], ["logits"], name="conv", kernel_shape=[3]),
    ]
    graph = helper.make_graph(nodes, "qdq", [_f("features", ["batch", 4, 3])], [_f("logits", ["batch", 8, 1])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
