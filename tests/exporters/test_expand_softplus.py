"""expand_softplus: ONNX Runtime's scalar Softplus rewritten as five vectorised elementwise nodes."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from kwsdeploy.exporters.onnx import to_fp16
from kwsdeploy.exporters.simplify import SOFTPLUS_LINEAR_ABOVE, expand_softplus
from kwsdeploy.runtime.ort import make_session


def _softplus_graph() -> onnx.ModelProto:
    nodes = [helper.make_node("Softplus", ["x"], ["s"], name="sp"), helper.make_node("Neg", ["s"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def _run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(m.SerializeToString()).run(["y"], {"x": x})[0]


def test_expanded_softplus_equals_softplus_over_the_whole_range():
    x = np.concatenate([np.linspace(-60, 60, 48001), [-1e30, -100.0, 0.0, 10.99, 11.0, 11.01, 100.0, 1e30]])
    x = x.astype(np.float32)[None]
    m = _softplus_graph()
    e = expand_softplus(m)
    onnx.checker.check_model(e, full_check=True)
    assert [n.op_type for n in e.graph.node] == ["Min", "Exp", "Add", "Log", "Max", "Neg"]
    want = -torch.nn.functional.softplus(torch.from_numpy(x).double()).numpy()
    got = _run(e, x)
    # float32 rounding of log(1 + e^x) (ONNX Runtime's own Softplus does the same), and at most e^-11 at x ~ 11
    assert np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))) <= 2e-6
    assert np.max(np.abs(got - want)[x < 0]) <= 1.2e-7
    ort_softplus = _run(m, x)
    assert np.max(np.abs(got - ort_softplus) / np.maximum(1.0, np.abs(ort_softplus))) <= 2e-6
    assert np.exp(np.float16(SOFTPLUS_LINEAR_ABOVE)) < np.finfo(np.float16).max


def test_expanded_softplus_survives_fp16():
    x = np.linspace(-20, 40, 601).astype(np.float32)[None]
    got = _run(to_fp16(expand_softplus(_softplus_graph())), x)
    want = -torch.nn.functional.softplus(torch.from_numpy(x)).numpy()
    assert np.all(np.isfinite(got))
    assert np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))) <= 2e-3  # fp16's own step


def test_graph_without_softplus_is_returned_as_is():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    m = helper.make_model(g)
    assert expand_softplus(m) is m
