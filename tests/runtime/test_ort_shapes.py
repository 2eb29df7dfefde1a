"""OrtStepRunner binds the right shapes when a graph leaves non-batch output/state axes symbolic."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from kwsdeploy.contract import StateSpec, StreamSpec
from kwsdeploy.runtime.ort import OrtStepRunner

N_MFCC, FRAMES, CLASSES, WINDOW = 4, 2, 5, 6
_W = np.arange(N_MFCC * FRAMES * CLASSES, dtype=np.float32).reshape(N_MFCC * FRAMES, CLASSES) / 10


def _graph(state_axis: str | int = "win") -> bytes:
    """logits = flatten(features) @ W + sum(state); new_state = state + 1. The class axis goes through
    a Slice whose end is read from a Shape, so ONNX Runtime cannot infer it: it stays symbolic."""
    nodes = [
        helper.make_node("Flatten", ["features"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Shape", ["mm"], ["shp"]),
        helper.make_node("Slice", ["shp", "axes", "two"], ["k"]),
        helper.make_node("Slice", ["mm", "zero", "k", "axes"], ["cut"]),
        helper.make_node("ReduceSum", ["state.s.x", "axes"], ["tot"], keepdims=1),
        helper.make_node("Add", ["cut", "tot"], ["logits"]),
        helper.make_node("Add", ["state.s.x", "one"], ["new_state.s.x"]),
    ]
    inits = [numpy_helper.from_array(_W, "W"), numpy_helper.from_array(np.array([1], np.int64), "axes"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    f32 = TensorProto.FLOAT
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("features", f32, ["batch", N_MFCC, FRAMES]),
         helper.make_tensor_value_info("state.s.x", f32, ["batch", state_axis])],
        [helper.make_tensor_value_info("logits", f32, ["batch", "classes"]),
         helper.make_tensor_value_info("new_state.s.x", f32, ["batch", state_axis])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _spec() -> StreamSpec:
    return StreamSpec(mode="windowed", packet_frames=FRAMES, delay_frames=0, window_frames=WINDOW, n_mfcc=N_MFCC,
                      num_classes=CLASSES, states=(StateSpec("state.s.x", (WINDOW,)),))


def _expected(x: np.ndarray, steps_before: int) -> np.ndarray:
    return x.reshape(len(x), -1) @ _W + WINDOW * steps_before


@pytest.mark.parametrize("batch", [1, 3])
def test_symbolic_class_and_state_axes_take_the_spec_sizes(batch):
    r = OrtStepRunner(_graph(), batch=batch, spec=_spec())
    assert r.logits_shape == (batch, CLASSES)
    assert r.state()["state.s.x"].shape == (batch, WINDOW)
    x = np.random.default_rng(0).standard_normal((batch, N_MFCC, FRAMES)).astype(np.float32)
    for t in range(3):
        np.testing.assert_allclose(r.step(x), _expected(x, t), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(r.state()["state.s.x"], np.full((batch, WINDOW), 3.0, np.float32))


def test_graph_really_leaves_the_class_axis_symbolic():
    import onnxruntime as ort

    assert not isinstance(ort.InferenceSession(_graph()).get_outputs()[0].shape[1], int)


def test_symbolic_class_axis_without_spec_is_learned_from_the_graph():
    r = OrtStepRunner(_graph(state_axis=WINDOW), batch=2)
    assert r.logits_shape == (2, CLASSES)
    x = np.ones((2, N_MFCC, FRAMES), np.float32)
    np.testing.assert_allclose(r.step(x), _expected(x, 0), rtol=1e-5)
    np.testing.assert_allclose(r.step(x), _expected(x, 1), rtol=1e-5)


def test_symbolic_state_axis_without_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="state.s.x.*symbolic non-batch"):
        OrtStepRunner(_graph(), batch=2)
