"""`--quantize-state` (`calibration/state_q.py`): the SSM state is int8-representable where the step reads it
and where it hands it on, the graph's inputs/outputs stay float, the one Q/DQ rule holds; refused on a
model without SSM state."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kwsdeploy.calibration.state_q import StateQuantizeError, quantize_state, ssm_states
from kwsdeploy.calibration.validate import qdq_problems
from kwsdeploy.trt.compat import check_model


def _graph(kind: str = "ssm"):
    """new_state = 0.9 * state + x; logits = ReduceSum(state) (a one-state recurrence)."""
    s, ns = f"state.l0.{kind}", f"new_state.l0.{kind}"
    nodes = [helper.make_node("Mul", [s, "decay"], ["d"], name="mul"),
             helper.make_node("Add", ["d", "x"], [ns], name="add"),
             helper.make_node("ReduceSum", [s, "axes"], ["logits"], name="sum", keepdims=0)]
    f = lambda n, shape: helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
    g = helper.make_graph(nodes, "g", [f("x", ["batch", 8]), f(s, ["batch", 8])], [f("logits", ["batch"]), f(ns, ["batch", 8])],
                          [numpy_helper.from_array(np.array(0.9, np.float32), "decay"),
                           numpy_helper.from_array(np.array([1], np.int64), "axes")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(proto, x, s):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x, "state.l0.ssm": s})


def test_state_read_and_update_are_int8_representable_and_close():
    proto = _graph()
    assert ssm_states(proto) == ["state.l0.ssm"]
    q, scales = quantize_state(proto, {"state.l0.ssm": (-2.0, 2.54)})
    scale = scales["state.l0.ssm"]
    assert scale == pytest.approx(2.54 / 127)
    rng = np.random.default_rng(0)
    x, s = rng.uniform(-0.2, 0.2, (3, 8)).astype(np.float32), rng.uniform(-2, 2, (3, 8)).astype(np.float32)
    (ref_l, ref_s), (got_l, got_s) = _run(proto, x, s), _run(q, x, s)
    k = got_s / scale
    assert np.allclose(k, np.round(k), atol=1e-3) and np.abs(k).max() <= 127  # what it hands on is int8
    s_read = np.round(s / scale) * scale  # what it read
    assert np.allclose(got_l, s_read.sum(1), atol=1e-5)
    assert np.abs(got_s - ref_s).max() <= 0.9 * scale / 2 + scale / 2 + 1e-6  # read and write rounding
    assert np.abs(got_s - ref_s).max() > 0
    assert [i.type.tensor_type.elem_type for i in (*q.graph.input, *q.graph.output)] == [TensorProto.FLOAT] * 4
    assert qdq_problems(q) == [] and all(r.ok for r in check_model(q, ["10.3", "10.16", "11"]))


def test_no_ssm_state_is_a_one_line_refusal():
    with pytest.raises(StateQuantizeError, match=r"has no SSM state \(state.<layer>.ssm\).*drop --quantize-state"):
        quantize_state(_graph("conv"), {"state.l0.conv": (-1.0, 1.0)})


def test_kwm_recipe_with_quantize_state_records_its_cost(kwm_graph, kwm_calib, kwm_int8):
    from kwsdeploy.calibration.qdq import tensorrt_recipe

    r = tensorrt_recipe(kwm_graph[0], kwm_calib, quantize_state=True)
    st = r.settings
    assert sorted(st["state_int8_scales"]) == [f"state.layer{i}.ssm" for i in range(4)]
    ranges = kwm_calib.ranges()
    for name, scale in st["state_int8_scales"].items():
        assert scale == pytest.approx(max(map(abs, ranges[name])) / 127, rel=1e-5)
    # same graph as the default recipe but for the state Q/DQ: the float-state figure is the default's
    assert st["stream_logits_sqnr_db_float_state"] == kwm_int8.settings["stream_logits_sqnr_db"]
    assert r.float_layers == kwm_int8.float_layers
    assert st["stream_logits_sqnr_db"] < st["stream_logits_sqnr_db_float_state"]  # int8 state costs SQNR
    assert sum(n.op_type == "QuantizeLinear" for n in r.proto.graph.node) == \
        sum(n.op_type == "QuantizeLinear" for n in kwm_int8.proto.graph.node) + 8  # read + update per layer
    assert qdq_problems(r.proto) == []
