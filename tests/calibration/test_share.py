"""Duplicate constants of a quantized graph stored once: same outputs, fewer initializers, frontend untouched."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kwsdeploy.calibration.report import model_weight_bytes
from kwsdeploy.calibration.share import share_constants


def _graph() -> onnx.ModelProto:
    """x -> Q/DQ (scale s1, zero point z1) -> Add w -> Q/DQ (s2, z2) -> y; z1 == z2 (zeros), s1 == s2,
    and a frontend constant equal to w that must stay its own."""
    zp = np.zeros((), np.int8)
    inits = [numpy_helper.from_array(np.float32(0.05), "s1"), numpy_helper.from_array(np.float32(0.05), "s2"),
             numpy_helper.from_array(zp, "z1"), numpy_helper.from_array(zp, "z2"),
             numpy_helper.from_array(np.arange(4, dtype=np.float32), "w"),
             numpy_helper.from_array(np.arange(4, dtype=np.float32), "frontend/w")]
    inits[2] = helper.make_tensor("z1", TensorProto.INT8, [], [0])  # typed (int32_data), as quantizers write it
    nodes = [helper.make_node("QuantizeLinear", ["x", "s1", "z1"], ["q1"]),
             helper.make_node("DequantizeLinear", ["q1", "s1", "z1"], ["d1"]),
             helper.make_node("Add", ["d1", "w"], ["a"]),
             helper.make_node("Add", ["a", "frontend/w"], ["b"]),
             helper.make_node("QuantizeLinear", ["b", "s2", "z2"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_duplicates_are_stored_once_and_the_graph_computes_the_same():
    m = _graph()
    s, dropped = share_constants(m)
    onnx.checker.check_model(s)
    names = [i.name for i in s.graph.initializer]
    assert dropped == 2 and sorted(names) == ["frontend/w", "s1", "w", "z1"]  # s2 -> s1, z2 -> z1
    assert all(i.raw_data for i in s.graph.initializer if not i.name.startswith("frontend/"))
    x = np.array([0.3, -1.2, 2.5, 0.01], np.float32)
    np.testing.assert_array_equal(_run(s, x), _run(m, x))
    assert model_weight_bytes(s.SerializeToString()) < model_weight_bytes(m.SerializeToString())
    assert [n.input[1:] for n in s.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")] == [["s1", "z1"]] * 4
    again, none = share_constants(s)
    assert none == 0 and [i.name for i in again.graph.initializer] == names
