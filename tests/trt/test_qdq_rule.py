"""One Q/DQ rule for check-trt and the tensorrt recipe's gate (`kwsdeploy.trt.qdq_rules`): the same
planted fault gives the same message in both; strict adds only what the recipe promises beyond TensorRT."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from kwsdeploy.calibration.validate import qdq_problems
from kwsdeploy.trt.compat import find_issues
from .planted import clean_qdq_graph


def _qdq_msgs(g):
    return sorted(f.message for f in find_issues(g) if f.rule == "qdq")


def _plant(what: str) -> onnx.ModelProto:
    g = clean_qdq_graph()
    nodes = {n.name: n for n in g.graph.node}
    inits = {i.name: i for i in g.graph.initializer}
    if what == "axis":  # per-channel weight scale on the input-channel axis of the Conv
        del nodes["w_dq"].attribute[:]
        nodes["w_dq"].attribute.append(onnx.helper.make_attribute("axis", 1))
    elif what == "count":  # 4 scales for 8 output channels
        inits["sw"].CopyFrom(numpy_helper.from_array(np.full(4, 0.01, np.float32), "sw"))
        inits["zw"].CopyFrom(numpy_helper.from_array(np.zeros(4, np.int8), "zw"))
    elif what == "float_weight":  # a float weight quantized at run time (legal for TensorRT, not our recipe)
        w = numpy_helper.to_array(inits["w_q"]).astype(np.float32) * 0.01
        inits["w_q"].CopyFrom(numpy_helper.from_array(w, "w_f"))
        g.graph.node.insert(0, onnx.helper.make_node("QuantizeLinear", ["w_f", "sw", "zw"], ["w_q"], name="w_q", axis=0))
    return g


def test_clean_graph_passes_both():
    g = clean_qdq_graph()
    assert _qdq_msgs(g) == [] and qdq_problems(g) == []


def test_a_wrong_weight_axis_or_scale_count_is_the_same_finding_in_both():
    for what, text in (("axis", "per-channel axis 1, but the output-channel axis of Conv 'conv' is 0"),
                       ("count", "4 scales for 8 output channels")):
        g = _plant(what)
        assert _qdq_msgs(g) == [text]
        assert qdq_problems(g) == [f"DequantizeLinear 'w_dq': {text}"]


def test_strict_adds_only_the_recipe_promises():
    g = _plant("float_weight")
    assert _qdq_msgs(g) == []  # TensorRT folds a Q/DQ pair on a float constant
    assert qdq_problems(g) == ["QuantizeLinear 'w_q': quantizes a float weight at run time; "
                               "store it as int8 behind a DequantizeLinear"]
    g = clean_qdq_graph()
    del g.graph.node[:3]
    g.graph.node[0].input[0] = "features"
    g.graph.node[0].input[1] = "w_q"
    assert _qdq_msgs(g) == [] and qdq_problems(g) == [
        "graph: no QuantizeLinear/DequantizeLinear node: the graph is not quantized"]
