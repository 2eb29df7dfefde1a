"""The INT8 knobs chosen per model on the validation speaker: --keep-float (first/last/name), the
percentile, and the cpu recipe's static candidate (7-bit weights with reduce_range, its method)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from kwsdeploy.calibration.qdq import (
    REASON_REQUESTED,
    QuantizeError,
    name_nodes,
    quantizable_layers,
    quantize_tensorrt,
    resolve_keep_float,
    tensorrt_recipe,
)
from kwsdeploy.calibration.validate import validate_tensorrt_qdq


def test_keep_float_resolves_first_last_and_names(tc_graph):
    proto = name_nodes(tc_graph[0])
    todo = quantizable_layers(proto)
    got = resolve_keep_float(proto, ("first", "last", todo[2]))
    assert list(got) == [todo[0], todo[-1], todo[2]] and len(todo) == 11
    assert got[todo[2]] == REASON_REQUESTED and got[todo[0]].endswith("first quantizable layer")
    with pytest.raises(QuantizeError, match="--keep-float 'nope' is not a layer this recipe quantizes"):
        resolve_keep_float(proto, ("nope",))


def test_keep_float_first_n_and_last_n_count_from_each_end(tc_graph):
    proto = name_nodes(tc_graph[0])
    todo = quantizable_layers(proto, "cpu")
    got = resolve_keep_float(proto, ("first:2", "last:3", "first"), "cpu")
    assert list(got) == [todo[0], todo[1], todo[-1], todo[-2], todo[-3]]
    assert got[todo[1]].endswith("one of the first 2 quantizable layers")
    assert got[todo[-3]].endswith("one of the last 3 quantizable layers")
    assert list(resolve_keep_float(proto, ("first:1",), "cpu")) == list(resolve_keep_float(proto, ("first",), "cpu"))
    assert len(resolve_keep_float(proto, ("first:99",), "cpu")) == len(todo)
    for bad in ("first:0", "last:x", "first:"):
        with pytest.raises(QuantizeError, match="give (first|last):N with N >= 1"):
            resolve_keep_float(proto, (bad,), "cpu")
    assert list(resolve_keep_float(proto, ("#3", "#1"), "cpu")) == [todo[2], todo[0]]
    assert resolve_keep_float(proto, ("#3",), "cpu")[todo[2]].endswith("quantizable layer #3")
    with pytest.raises(QuantizeError, match=f"quantizes {len(todo)} layers; give #1 to #{len(todo)}"):
        resolve_keep_float(proto, (f"#{len(todo) + 1}",), "cpu")
    with pytest.raises(QuantizeError, match="give #N with N >= 1"):
        resolve_keep_float(proto, ("#0",), "cpu")
    from kwsdeploy.calibration.passes import Int8Options

    for bad, said in (("first:0", "first:N"), ("#x", "#N"), ("last:", "last:N")):  # refused before any export work
        with pytest.raises(QuantizeError, match=f"give {said} with N >= 1"):
            Int8Options(keep_float=("first", bad))
        with pytest.raises(QuantizeError, match=f"give {said} with N >= 1"):
            Int8Options(cpu={"keep_float": (bad,)})
    assert Int8Options(keep_float=("first:2", "#3", "node")).keep_float == ("first:2", "#3", "node")


def test_tensorrt_recipe_keeps_the_requested_layers_float_and_stays_qdq_valid(tc_graph, tc_calib):
    r = tensorrt_recipe(tc_graph[0], tc_calib, keep_float=("first", "last"))
    todo = quantizable_layers(name_nodes(tc_graph[0]))
    assert todo[0] not in r.quantized and todo[-1] not in r.quantized and len(r.quantized) == len(todo) - 2
    assert REASON_REQUESTED in r.float_layers[todo[0]] and r.settings["keep_float"] == sorted([todo[0], todo[-1]])
    assert validate_tensorrt_qdq(r.proto) > 0


def _activation_scales(proto: onnx.ModelProto) -> dict[str, float]:
    """Scale of every activation QuantizeLinear, by the tensor it quantizes."""
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in proto.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def test_a_lower_percentile_clips_more_of_the_range(tc_graph, tc_calib):
    lo = quantize_tensorrt(tc_graph[0], tc_calib, "percentile", weight_only=False, percentile=99.0)
    hi = quantize_tensorrt(tc_graph[0], tc_calib, "percentile", weight_only=False, percentile=99.999)
    mm = quantize_tensorrt(tc_graph[0], tc_calib, "minmax", weight_only=False)
    a, b, c = _activation_scales(lo.proto), _activation_scales(hi.proto), _activation_scales(mm.proto)
    assert set(a) == set(b) == set(c) and len(a) >= 11 and lo.settings["percentile"] == 99.0
    assert all(a[k] <= b[k] <= c[k] * 1.0001 for k in a)
    assert sum(a[k] < 0.9 * c[k] for k in a) >= len(a) // 2  # most ranges have outliers beyond the 99th percentile


def test_cpu_static_candidate_has_7_bit_per_channel_weights_and_keeps_requested_layers(tc_graph, tc_calib):
    from kwsdeploy.calibration.cpu import build_candidate

    proto = name_nodes(tc_graph[0])
    first = quantizable_layers(proto, "cpu")[0]
    g = build_candidate("static-qoperator-u8s8-rr", proto, tc_calib, exclude={first: "x"})
    inits = {i.name: numpy_helper.to_array(i) for i in g.graph.initializer}
    convs = [n for n in g.graph.node if n.op_type == "QLinearConv"]
    weights = [inits[n.input[3]] for n in convs]
    every = build_candidate("static-qoperator-u8s8-rr", proto, tc_calib)
    assert len(convs) == sum(n.op_type == "QLinearConv" for n in every.graph.node) - 1 >= 5
    assert all(w.dtype == np.int8 and int(np.abs(w.astype(np.int16)).max()) <= 64 for w in weights)
    assert any(int(np.abs(w.astype(np.int16)).max()) > 32 for w in weights)  # 7 bits used, not fewer
    assert all(inits[n.input[4]].size == inits[n.input[3]].shape[0] > 1 for n in convs)  # per-channel scales
    assert first in {n.name for n in g.graph.node if n.op_type == "Conv"}
