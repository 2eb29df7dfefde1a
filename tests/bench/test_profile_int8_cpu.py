"""benchmarks/profile_int8_cpu.py: the quantized / float split of a profiled step and its Amdahl ceiling
(a tiny step graph, profiled for real; the arithmetic on made-up node times)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import int8_tables  # noqa: E402
import profile_int8_cpu as prof  # noqa: E402


WIDTH, BATCH = 256, 64  # big enough that no node's kernel time rounds to 0 us on a fast CPU


def _tiny_step_graph() -> onnx.ModelProto:
    """logits = features @ W + Exp(state); new_state = Exp(state): one quantizable MatMul, float rest."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((WIDTH, WIDTH)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["features", "W"], ["proj"], name="proj/MatMul"),
             helper.make_node("Exp", ["state.l0.h"], ["new_state.l0.h"], name="decay/Exp"),
             helper.make_node("Add", ["proj", "new_state.l0.h"], ["logits"], name="out/Add")]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", WIDTH]),
                                          helper.make_tensor_value_info("state.l0.h", TensorProto.FLOAT, ["batch", WIDTH])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", WIDTH]),
                           helper.make_tensor_value_info("new_state.l0.h", TensorProto.FLOAT, ["batch", WIDTH])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_split_counts_the_replaced_layers_in_fp32_and_the_integer_nodes_in_int8():
    times = {"proj/MatMul/MatmulTransposeFusion//MatMulAddFusion": 30.0, "decay/Exp": 50.0, "out/Add": 20.0}
    ops = {"proj/MatMul/MatmulTransposeFusion//MatMulAddFusion": "FusedMatMul", "decay/Exp": "Exp", "out/Add": "Add"}
    f = prof.split(times, ops, {"proj/MatMul"})
    assert (f["total_us"], f["quantized_us"], f["float_us"]) == (100.0, 30.0, 70.0)
    i = prof.split({"q": 10.0, "decay/Exp": 50.0, "out/Add": 20.0},
                   {"q": "DynamicQuantizeMatMul", "decay/Exp": "Exp", "out/Add": "Add"}, None)
    assert (i["quantized_us"], i["float_us"]) == (10.0, 70.0) and i["by_op_us"]["Exp"] == 50.0
    assert f["total_us"] / i["float_us"] == pytest.approx(100 / 70)  # the ceiling: the quantized part free


def test_a_real_profile_of_a_tiny_step_graph_and_its_quantized_share():
    from kwsdeploy.calibration.cpu import build_candidate, quantized_layers

    proto = _tiny_step_graph()
    q = build_candidate("dynamic-u8s8-rr", proto, None)
    assert quantized_layers(proto, q) == ["proj/MatMul"]
    t32, o32 = prof.node_times(proto.SerializeToString(), BATCH, 12)
    t8, o8 = prof.node_times(q.SerializeToString(), BATCH, 12)
    assert set(o32.values()) >= {"Exp"} and "Exp" in o8.values()
    assert set(o8.values()) & prof.QUANTIZED_OPS and not set(o32.values()) & prof.QUANTIZED_OPS
    f, i = prof.split(t32, o32, {"proj/MatMul"}), prof.split(t8, o8, None)
    assert 0 < f["quantized_us"] < f["total_us"] and 0 < i["quantized_us"] < i["total_us"]
    assert i["float_us"] == pytest.approx(sum(t for n, t in t8.items() if o8[n] not in prof.QUANTIZED_OPS), abs=0.2)


def test_int8_md_section_states_the_ceiling_against_the_target():
    row = {"fp32": {"total_us": 8000.0}, "int8": {"total_us": 7000.0, "float_us": 6000.0},
           "fp32_share_quantized": 0.25, "int8_share_quantized": 0.14, "ceiling_vs_fp32": 1.333,
           "ceiling_from_fp32_share": 1.3}
    res = {"model": "kwm-causal-192-12", "candidate": "dynamic-u8s8-rr", "quantized_layers": 50,
           "argv": ["--calls", "60"], "batches": {"64": row}}
    text = "\n".join(int8_tables.profile_lines(res))
    assert "| 64 | 8,000 | 25 % | 7,000 | 14 % | 6,000 | 1.33x | 1.30x |" in text
    assert "bounds the cpu recipe at 1.30-1.33x over fp32, so the 1.5x target is out of reach" in text
    row.update(ceiling_vs_fp32=1.8, ceiling_from_fp32_share=1.6)
    assert "1.5x target is within reach" in "\n".join(int8_tables.profile_lines(res))
    assert int8_tables.profile_lines(None) == []
