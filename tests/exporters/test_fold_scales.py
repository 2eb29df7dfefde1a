"""fold_scales: a constant per-feature scale before a projection is folded into its weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kwsdeploy.exporters.simplify import fold_scales
from kwsdeploy.runtime.ort import make_session


def _graph(extra_consumer: bool, gemm: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "c")
    w = numpy_helper.from_array(rng.standard_normal((4, 6) if gemm else (6, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("Mul", ["x", "c"], ["xs"])]
    if gemm:
        nodes.append(helper.make_node("Gemm", ["xs", "w"], ["y"], transB=1))
    else:
        nodes.append(helper.make_node("MatMul", ["xs", "w"], ["y"]))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["xs"], ["r"]))
        outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 6]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])], outs,
                          initializer=[c, w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def _run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(m.SerializeToString()).run(["y"], {"x": x})[0]


def test_scale_folds_into_matmul_and_gemm():
    x = np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32)
    for gemm in (False, True):
        m = _graph(False, gemm)
        f = fold_scales(m)
        assert [n.op_type for n in f.graph.node] == ["Gemm" if gemm else "MatMul"]
        onnx.checker.check_model(f, full_check=True)
        assert np.max(np.abs(_run(f, x) - _run(m, x))) <= 1e-5


def test_scale_with_another_consumer_stays():
    m = _graph(True)
    assert [n.op_type for n in fold_scales(m).graph.node] == ["Mul", "MatMul", "Relu"]


def test_sum_of_squares_fuses():
    from kwsdeploy.exporters.simplify import fuse_sum_squares

    axes = numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes")
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("ReduceSum", ["sq", "axes"], ["y"], keepdims=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], initializer=[axes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    f = fuse_sum_squares(m)
    assert [n.op_type for n in f.graph.node] == ["ReduceSumSquare"]
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    got = make_session(f.SerializeToString()).run(["y"], {"x": x})[0]
    assert np.array_equal(got, (x * x).sum(-1))


def test_rms_norm_weight_stays_for_onnx_runtime_to_fuse():
    """x / Sqrt(mean(x^2) + eps) * w before a MatMul keeps its Mul: ONNX Runtime fuses the six nodes
    into one SimplifiedLayerNormalization, which a folded weight would prevent."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "proj")]
    nodes = [helper.make_node("Pow", ["x", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq", "axes"], ["m"], keepdims=1),
             helper.make_node("Add", ["m", "eps"], ["a"]), helper.make_node("Sqrt", ["a"], ["s"]),
             helper.make_node("Div", ["x", "s"], ["n"]), helper.make_node("Mul", ["n", "w"], ["nw"]),
             helper.make_node("MatMul", ["nw", "proj"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    assert [n.op_type for n in fold_scales(m).graph.node] == ["Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "MatMul"]
