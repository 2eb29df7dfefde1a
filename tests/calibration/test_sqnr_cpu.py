"""SQNR arithmetic, and the `cpu` recipe's choice by measurement (timings injected: no timed tests)."""

from __future__ import annotations

import numpy as np
import pytest

from kwsdeploy import tolerances
from kwsdeploy.calibration.cpu import Timing, cpu_recipe
from kwsdeploy.calibration.qdq import REASON_RECURRENCE
from kwsdeploy.calibration.sqnr import below_floor, sqnr_db


def test_sqnr_of_known_noise():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(100_000)
    assert sqnr_db(ref, ref + 0.1 * rng.standard_normal(ref.shape)) == pytest.approx(20.0, abs=0.1)
    assert sqnr_db(ref, ref) == float("inf")
    assert sqnr_db(np.zeros(3), np.ones(3)) == float("-inf")
    assert below_floor({"a": 19.0, "b": 31.0, "c": float("nan")}, 20.0) == {
        "a": "SQNR 19.0 dB < 20 dB floor", "c": "SQNR nan dB < 20 dB floor"}


def _timer(speed: dict[str, float]):
    """Fake timings: each graph's seconds per step = fp32's / speed (batch 1 and 64)."""
    def timer(graphs):
        return {n: Timing(n, {1: 1e-3 / speed.get(n, 1.0), 64: 2e-2 / speed.get(n, 1.0)}) for n in graphs}
    return timer


def test_cpu_recipe_ships_the_fastest_int8_variant(kwm_graph, kwm_calib):
    r = cpu_recipe(kwm_graph[0], kwm_calib, candidates=("dynamic-u8s8-rr", "dynamic-u8s8"),
                   timer=_timer({"dynamic-u8s8-rr": 2.0, "dynamic-u8s8": 1.5}))
    assert r.settings["chosen"] == "dynamic-u8s8-rr"
    ops = {n.op_type for n in r.proto.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert r.settings["speed_vs_fp32"]["dynamic-u8s8-rr"] == {"1": 2.0, "64": 2.0}
    assert r.settings["logits_sqnr_db"]["dynamic-u8s8-rr"] >= tolerances.INT8_CPU_MIN_LOGITS_SQNR_DB
    assert any("in_proj" in q for q in r.quantized)
    recurrence = [k for k, v in r.float_layers.items() if v == REASON_RECURRENCE]
    assert len(recurrence) == 8 and not set(recurrence) & set(r.quantized)


def test_cpu_recipe_falls_back_to_fp32_when_nothing_is_faster(tc_graph, tc_calib):
    r = cpu_recipe(tc_graph[0], tc_calib, candidates=("static-qoperator-u8s8-rr",),
                   timer=_timer({"static-qoperator-u8s8-rr": 1.02}))  # inside the noise margin
    assert r.settings["chosen"] == "fp32" and r.quantized == []
    assert [n.op_type for n in r.proto.graph.node] == [n.op_type for n in tc_graph[0].graph.node]


def test_cpu_candidates_under_the_sqnr_floor_are_rejected(kwm_graph, kwm_calib):
    r = cpu_recipe(kwm_graph[0], kwm_calib, floor_db=500.0, candidates=("dynamic-u8s8",),
                   timer=_timer({"dynamic-u8s8": 3.0}))
    assert r.settings["chosen"] == "fp32" and "dynamic-u8s8" in r.settings["rejected"]


def test_cpu_recipe_needs_the_confirming_timing_to_agree(kwm_graph, kwm_calib):
    # dynamic-u8s8-rr: above the SQNR floor on every CPU (plain u8s8 saturates without VNNI, see below)
    calls = []

    def timer(graphs):
        calls.append(sorted(graphs))
        speed = 2.0 if len(calls) == 1 else 0.9  # fast in the first timing, slower in the confirmation
        return {n: Timing(n, {1: 1e-3 / (speed if n != "fp32" else 1.0), 64: 1e-2 / (speed if n != "fp32" else 1.0)})
                for n in graphs}

    r = cpu_recipe(kwm_graph[0], kwm_calib, candidates=("dynamic-u8s8-rr",), timer=timer)
    assert calls == [["dynamic-u8s8-rr", "fp32"], ["dynamic-u8s8-rr", "fp32"]]
    assert r.settings["chosen"] == "fp32" and r.settings["confirmation_speed_vs_fp32"] == {"1": 0.9, "64": 0.9}


def _avx2_without_vnni() -> bool:
    from kwsdeploy.bench.environment import cpu_flags

    flags = set(cpu_flags())
    return "avx2" in flags and not {"avx512_vnni", "avx_vnni"} & flags


@pytest.mark.skipif(not _avx2_without_vnni(),
                    reason="needs an x86 CPU with AVX2 and no VNNI, where U8S8 integer MatMul saturates (VPMADDUBSW)")
def test_u8s8_without_reduce_range_is_rejected_where_it_saturates(kwm_graph, kwm_calib):
    """On AVX2 without VNNI, ONNX Runtime's U8S8 kernels add pairs of u8 x s8 products in int16 (VPMADDUBSW),
    which saturate with 8-bit weights: the SQNR floor must catch it, and 7-bit weights (reduce_range) pass.
    Measured on a 2-core AMD EPYC (AVX2): kwm-causal-64-4's logits 0.8 dB without, 26.7 dB with."""
    r = cpu_recipe(kwm_graph[0], kwm_calib, candidates=("dynamic-u8s8", "dynamic-u8s8-rr"),
                   timer=_timer({"dynamic-u8s8": 3.0, "dynamic-u8s8-rr": 2.0}))
    assert "dynamic-u8s8" in r.settings["rejected"] and r.settings["logits_sqnr_db"]["dynamic-u8s8"] < 10.0
    assert r.settings["chosen"] == "dynamic-u8s8-rr"
    assert r.settings["logits_sqnr_db"]["dynamic-u8s8-rr"] >= tolerances.INT8_CPU_MIN_LOGITS_SQNR_DB
