"""Weight-only int8 storage (`calibration/weights.py`): float layers keep float arithmetic but store int8
weights behind a DequantizeLinear (per channel, on the output-channel axis), decay rates in the log domain;
every graph still passes the one Q/DQ rule, and the tensorrt graph meets the 0.3x size target."""

from __future__ import annotations

import numpy as np
import pytest
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kwsdeploy.calibration.qdq import REASON_RECURRENCE
from kwsdeploy.calibration.report import model_weight_bytes
from kwsdeploy.calibration.validate import qdq_problems
from kwsdeploy.calibration.weights import REASON_SUFFIX, store_weights_int8, symmetric_int8
from kwsdeploy.trt.compat import check_model


def _graph():
    """x [1, 4, 8] -> depthwise Conv (w [4, 1, 3]) -> Mul by a decay A [4, 1] (all negative) -> Exp."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 1, 3)).astype(np.float32) * np.array([1, 0.01, 3, 0.3], np.float32)[:, None, None]
    a = -np.exp(rng.uniform(np.log(0.5), np.log(20), (4, 64))).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=4, kernel_shape=[3], pads=[1, 1]),
             helper.make_node("ReduceMean", ["y"], ["m"], name="mean", axes=[2], keepdims=1),
             helper.make_node("Mul", ["m", "A"], ["dA"], name="mul"),
             helper.make_node("Exp", ["dA"], ["out"], name="exp")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 64])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(a, "A")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), w, a


def _consts(proto, names):
    sess = ort.InferenceSession(_expose(proto, names).SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, {"x": np.ones((1, 4, 8), np.float32)})))


def _expose(proto, names):
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    return out


def test_symmetric_int8_per_channel_error_is_half_a_step_of_each_channel():
    w = np.array([[1.0, -0.5, 0.25], [0.01, 0.02, -0.03]], np.float32)
    q, s = symmetric_int8(w, 0)
    assert q.dtype == np.int8 and np.allclose(s, [1 / 127, 0.03 / 127])
    assert np.all(np.abs(q * s[:, None] - w) <= s[:, None] / 2 + 1e-9)
    assert q[0, 0] == 127 and q[1, 2] == -127


def test_depthwise_weight_and_decay_store_int8_and_stay_close():
    proto, w, a = _graph()
    out, done = store_weights_int8(proto, ["dw"])
    assert done == ["dw", "A"]
    inits = {i.name: i for i in out.graph.initializer}
    assert "w" not in inits and "A" not in inits
    assert inits["w_int8"].data_type == inits["A_int8"].data_type == TensorProto.INT8
    assert numpy_helper.to_array(inits["w_wscale"]).shape == (4,)  # per output channel
    assert [n.op_type for n in out.graph.node[:4]] == ["DequantizeLinear", "DequantizeLinear", "Exp", "Neg"]
    got = _consts(out, ["w", "A"])
    step = np.abs(w).reshape(4, -1).max(1) / 127
    assert np.all(np.abs(got["w"] - w) <= step[:, None, None] / 2 + 1e-7)  # each channel its own step
    rel = np.abs(got["A"] / a - 1)
    assert rel.max() < 0.013  # log domain: ~1.2 % for the slowest mode as for the fastest
    lin = np.abs(np.round(a / (np.abs(a).max() / 127)) * (np.abs(a).max() / 127) / a - 1)
    assert lin.max() > 3 * rel.max()  # per-tensor linear int8 would be much worse on the slow modes
    assert qdq_problems(out) == [] and all(r.ok for r in check_model(out, ["10.3", "10.16", "11"]))
    x = np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32)
    run = lambda p: ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ref, q = run(proto), run(out)
    assert 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - q) ** 2)) > 30  # 34 dB measured


def test_a_shared_or_mixed_sign_constant_is_left_alone():
    proto, _, a = _graph()
    for t in proto.graph.initializer:
        if t.name == "A":
            t.CopyFrom(numpy_helper.from_array(np.where(np.arange(a.size).reshape(a.shape) % 2, a, -a), "A"))
    proto.graph.node.append(helper.make_node("Conv", ["x", "w"], ["y2"], name="dw2", group=4, kernel_shape=[3]))
    out, done = store_weights_int8(proto, ["dw"])
    assert done == [] and model_weight_bytes(out.SerializeToString()) == model_weight_bytes(proto.SerializeToString())


def test_kwm_tensorrt_graph_is_at_most_0_3x_and_float_layers_store_int8(kwm_graph, kwm_int8):
    r = kwm_int8
    ratio = model_weight_bytes(r.proto.SerializeToString()) / model_weight_bytes(kwm_graph[0].SerializeToString())
    assert ratio <= 0.30
    decays = [k for k in r.settings["weight_only_int8"] if k not in r.float_layers]
    assert len(decays) == 4  # A of each of the 4 layers
    for k, v in r.float_layers.items():  # every float layer with a weight stores it int8; the recurrence has none
        assert (v == REASON_RECURRENCE) != v.endswith(REASON_SUFFIX)
    assert qdq_problems(r.proto) == []


def test_weight_only_storage_only_over_the_parameter_threshold(tc_graph, tc_calib, monkeypatch):
    from kwsdeploy import tolerances
    from kwsdeploy.calibration.qdq import model_params, tensorrt_recipe

    proto = tc_graph[0]
    assert model_params(proto) > tolerances.INT8_WEIGHT_ONLY_MIN_PARAMS  # tcresnet8-causal: 65k weights
    base = tensorrt_recipe(proto, tc_calib, stream_trigger_db=-float("inf"))
    floor = min(base.settings["layer_sqnr_db"].values()) + 0.5  # at least one layer stays float
    on = tensorrt_recipe(proto, tc_calib, floor_db=floor)
    kept = [k for k, v in on.float_layers.items() if v.startswith("SQNR")]
    assert kept and on.settings["weight_only_int8"] == kept  # the SQNR-kept layers store int8
    monkeypatch.setattr(tolerances, "INT8_WEIGHT_ONLY_MIN_PARAMS", model_params(proto))
    off = tensorrt_recipe(proto, tc_calib, floor_db=floor)
    assert off.settings["weight_only_int8"] == [] and not any(v.endswith(REASON_SUFFIX) for v in off.float_layers.values())
    grown = model_weight_bytes(off.proto.SerializeToString()) - model_weight_bytes(on.proto.SerializeToString())
    n = sum(numpy_helper.to_array(i).size for i in on.proto.graph.initializer if i.name.endswith("_int8"))
    assert grown == pytest.approx(3 * n, rel=0.05)  # float32 instead of int8, less the scales
