"""benchmarks/int8_ablation.py's variant grammar, int8_tables.py's calibration table in int8.md (the cpu
recipe's own settings beside the shared ones) and bench_int8.py's merge of re-measured rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_int8  # noqa: E402
import int8_tables  # noqa: E402
import int8_ablation  # noqa: E402


def test_variant_grammar_with_positions_and_cpu_ablations():
    v = int8_ablation.parse_variant("percentile@99.99/256/first:2,#12/per-tensor,no-rr")
    assert v == {"method": "percentile", "percentile": 99.99, "clips": 256, "keep_float": ("first:2", "#12"),
                 "cpu": {"per_channel": False, "reduce_range": False}}
    assert int8_ablation.parse_variant("minmax/64") == {"method": "minmax", "percentile": 99.999, "clips": 64,
                                                        "keep_float": (), "cpu": {}}
    with pytest.raises(SystemExit, match="unknown cpu ablation"):
        int8_ablation.parse_variant("minmax/64/first/8bit")


def test_calibration_table_shows_the_cpu_recipes_own_settings():
    row = {"model": "m", "weights_sha256": "d61228e42088" + "0" * 52,
           "calibration": {"clips": 64, "method": "minmax", "percentile": None, "keep_float": ["first", "last"],
                           "preset": "p", "cpu": {"clips": 256, "method": "percentile", "percentile": 99.999,
                                                  "keep_float": ["first:2"]}}}
    plain = {"model": "n", "weights_sha256": "ab" * 32,
             "calibration": {"clips": 256, "method": "minmax", "percentile": None, "keep_float": [], "preset": ""}}
    lines = int8_tables._calibration_lines([row, plain])
    assert ("| m | `d61228e42088` | tensorrt 64, cpu 256 | tensorrt minmax, cpu percentile @99.999 | "
            "tensorrt first, last; cpu first:2 | p |") in lines
    assert "| n | `abababababab` | 256 | minmax | - | - |" in lines


def test_a_recipe_re_measured_alone_keeps_the_other_recipes_calibration():
    shared = {"clips": 64, "method": "minmax", "percentile": None, "keep_float": ["first", "last"], "preset": "p"}
    own = {"clips": 256, "method": "percentile", "percentile": 99.999, "keep_float": ["first:2"]}
    old = {"model": "m", "rows": {"fp32": {}, "int8-tensorrt": {}, "int8-cpu": {}}, "calibration": shared}
    cpu_alone = {"model": "m", "rows": {"fp32": {}, "int8-cpu": {}}, "calibration": {**own, "preset": "p2"}}
    got = bench_int8.merge_row(cpu_alone, old, timed=True)["calibration"]
    assert got == {**shared, "preset": "p2", "cpu": own}
    same = {"model": "m", "rows": {"fp32": {}, "int8-cpu": {}}, "calibration": shared}
    assert bench_int8.merge_row(same, old, timed=True)["calibration"] == shared  # no cpu settings of its own
    trt_alone = {"model": "m", "rows": {"fp32": {}, "int8-tensorrt": {}}, "calibration": shared}
    assert bench_int8.merge_row(trt_alone, {**old, "calibration": got}, timed=False)["calibration"] == {**shared, "cpu": own}
    both = {"model": "m", "rows": old["rows"], "calibration": {**shared, "clips": 32}}
    assert bench_int8.merge_row(both, old, timed=True)["calibration"] == {**shared, "clips": 32}


def test_a_cpu_ablation_variant_without_the_cpu_study_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        int8_ablation.main(["--study", "calib", "--variants", "minmax/64", "minmax/64/first/no-rr", "--models", "m"])
    assert e.value.code == 2 and "minmax/64/first/no-rr ablate the cpu recipe's static candidate" in capsys.readouterr().err
