"""Exported step graphs leave only the batch axis symbolic: the windowed ring buffer and the logits'
class axis are static (TensorRT profiles, the manifest and OrtStepRunner's bound buffers need them)."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from kwsdeploy.contract import LOGITS
from kwsdeploy.exporters.onnx import _static_inner_axes, export_step


def _dims(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_windowed_bcresnet1_step_graph_has_static_inner_axes():
    from kwsdeploy.models.registry import create
    from kwsdeploy.streaming.convert import to_streaming

    smodel = to_streaming(create("bcresnet1").eval(), mode="windowed", packet_frames=10).eval()
    proto = export_step(smodel, exporter="legacy")
    spec = smodel.stream_spec
    shapes = {_vi.name: _dims(_vi) for _vi in (*proto.graph.input, *proto.graph.output)}
    assert shapes[LOGITS] == ["batch", spec.num_classes]
    for s in spec.states:
        assert shapes[s.name] == shapes[s.output_name] == ["batch", *s.shape]
    assert all(isinstance(d, int) for dims in shapes.values() for d in dims[1:]), shapes


def test_static_inner_axes_fills_a_symbolic_class_axis_and_keeps_the_batch():
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], [LOGITS])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch", "classes"])],
    )
    proto = helper.make_model(g)
    _static_inner_axes(proto, [(2, 7)], [(2, 7)])
    assert _dims(proto.graph.input[0]) == ["batch", 7] and _dims(proto.graph.output[0]) == ["batch", 7]
    onnx.checker.check_model(proto)
