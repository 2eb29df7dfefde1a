"""Per-layer SQNR over a free-running stream (`sqnr.free_running`, `sqnr.stream_layer_sqnr`): the loop is
the device runner's, identical graphs are infinite, and the stretches partition the stream."""

from __future__ import annotations

import math

import numpy as np

from kwsdeploy.calibration.data import joined_streams, stream_inputs
from kwsdeploy.calibration.qdq import quantize_tensorrt, quiet
from kwsdeploy.calibration.sqnr import free_running, sqnr_db, stream_layer_sqnr


def _x(calib):
    return stream_inputs(joined_streams(calib.clips, 2)[:, :24000], calib.input_name, calib.feature_config)


def test_free_running_logits_are_the_step_runners(tc_graph, tc_calib):
    from kwsdeploy.runtime.ort import OrtStepRunner

    x = _x(tc_calib)
    got = free_running(tc_graph[0], x)["logits"]
    ref = OrtStepRunner(tc_graph[0].SerializeToString(), batch=x.shape[0], threads=1).run(x)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5


def test_stream_layer_sqnr_per_stretch(tc_graph, tc_calib):
    proto = tc_graph[0]
    with quiet():
        q = quantize_tensorrt(proto, tc_calib, weight_only=False)
    x = _x(tc_calib)
    layers = q.quantized[:3]
    same = stream_layer_sqnr(proto, proto, x, layers, parts=3)
    assert set(same) == {*layers, "logits"} and all(math.isinf(v) for vs in same.values() for v in vs)
    per = stream_layer_sqnr(proto, q.proto, x, layers, parts=3)
    assert all(len(v) == 3 and all(10 < s < 80 for s in v) for v in per.values())
    a, b = free_running(proto, x)["logits"], free_running(q.proto, x)["logits"]
    edges = np.linspace(0, len(a), 4).astype(int)
    assert per["logits"] == [round(sqnr_db(a[i:j], b[i:j]), 2) for i, j in zip(edges[:-1], edges[1:])]
