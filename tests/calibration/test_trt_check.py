"""The TensorRT recipe's INT8 graphs pass the TensorRT compatibility check (kwsdeploy.trt.compat) for
every target: signed INT8, zero point 0, per-channel only on weights, only the batch dynamic."""

from __future__ import annotations

import pytest

from kwsdeploy.calibration.qdq import tensorrt_recipe
from kwsdeploy.trt.compat import check_model


@pytest.mark.parametrize("which", ["tc", "kwm"])
def test_tensorrt_recipe_graphs_pass_the_tensorrt_check(which, request):
    graph, _ = request.getfixturevalue(f"{which}_graph")
    q = tensorrt_recipe(graph, request.getfixturevalue(f"{which}_calib")).proto
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in q.graph.node)
    assert qdq > 10
    for r in check_model(q, ["10.3", "10.16", "11"], name=f"{which}-int8"):
        assert r.ok, [f.line() for f in r.findings]
