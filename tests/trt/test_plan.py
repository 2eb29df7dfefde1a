"""Engine build plans as data: which graph, typing and flags per precision and TensorRT version, the
optimization profile over every input, and the exact trtexec command lines for 10.3, 10.16 and 11."""

from __future__ import annotations

import importlib.util
import shlex
from types import SimpleNamespace as NS

import pytest
from typer.testing import CliRunner

from kwsdeploy.trt import plan as tp
from kwsdeploy.trt.versions import TrtVersion

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
INPUTS = (NS(name="features", shape=("batch", 40, 8)), NS(name="state.stem.conv", shape=("batch", 40, 2)),
          NS(name="state.pool.pool", shape=("batch", 48, 12)))


def _manifest(*precisions):
    files = [NS(mode="step", precision=p, path={"fp32": "model.onnx", "fp16": "model.fp16.onnx",
                                                "int8": "model.int8.onnx"}[p], input_kind="features", inputs=INPUTS)
             for p in precisions]
    files.append(NS(mode="offline", precision="fp32", path="model.offline.onnx", input_kind="features", inputs=()))
    return NS(files=files)


@pytest.mark.parametrize("precision, version, onnx, strong, set_flags, trtexec_flags", [
    ("fp32", "10.3", "model.onnx", False, (), ("--noTF32",)),
    ("fp32", "10.16", "model.onnx", True, (), ("--stronglyTyped", "--noTF32")),
    ("fp32", "11", "model.onnx", True, (), ("--noTF32",)),
    ("fp16", "10.3", "model.onnx", False, ("FP16",), ("--fp16",)),
    ("fp16", "10.16", "model.fp16.onnx", True, (), ("--stronglyTyped",)),
    ("fp16", "11", "model.fp16.onnx", True, (), ()),
    ("int8", "10.3", "model.int8.onnx", False, ("INT8",), ("--int8",)),
    ("int8", "10.16", "model.int8.onnx", True, (), ("--stronglyTyped",)),
    ("int8", "11.4", "model.int8.onnx", True, (), ()),
])
def test_plan_per_precision_and_version(precision, version, onnx, strong, set_flags, trtexec_flags):
    p = tp.build_plan(_manifest("fp32", "fp16", "int8"), precision, version)
    assert (p.onnx, p.strongly_typed, p.builder_flags, p.trtexec_flags) == (onnx, strong, set_flags, trtexec_flags)
    assert p.cleared_flags == (("TF32",) if precision == "fp32" else ())
    assert p.network_flags(0) == (1 if strong else 0)  # 1 << STRONGLY_TYPED (bit 0 here)


def test_plan_refusals_and_fallbacks():
    only32 = _manifest("fp32")
    with pytest.raises(tp.PlanError, match="strongly typed only.*--fp16"):
        tp.build_plan(only32, "fp16", "11")
    fallback = tp.build_plan(only32, "fp16", "10.16")  # no fp16 graph: the (deprecated) weak FP16 flag
    assert fallback.trtexec_flags == ("--fp16",) and not fallback.strongly_typed and "deprecated" in fallback.notes[0]
    with pytest.raises(tp.PlanError, match="no INT8 Q/DQ step graph"):
        tp.build_plan(only32, "int8", "10.3")
    with pytest.raises(tp.PlanError, match="--precision must be one of fp32, fp16, int8"):
        tp.build_plan(only32, "bf16", "10.3")


def test_profile_covers_every_input_over_the_batch_axis():
    shapes = tp.profile_shapes(INPUTS, max_batch=16, opt_batch=4)
    assert list(shapes) == ["features", "state.stem.conv", "state.pool.pool"]
    assert shapes["state.pool.pool"] == ((1, 48, 12), (4, 48, 12), (16, 48, 12))
    assert tp.at_batch(shapes, 2)["features"] == (2, 40, 8)
    with pytest.raises(tp.PlanError, match="outside the engine's profile"):
        tp.at_batch(shapes, 17)
    with pytest.raises(tp.PlanError, match="--opt-batch"):
        tp.profile_shapes(INPUTS, max_batch=2, opt_batch=3)
    with pytest.raises(tp.PlanError, match="fixed sizes elsewhere"):
        tp.profile_shapes([NS(name="features", shape=("batch", 40, "T"))])
    assert tp.shape_spec({"a": (1, 2, 3), "s": ()}) == "a:1x2x3,s:"


def test_trtexec_build_lines_for_10_3_and_11():
    m = _manifest("fp32", "fp16", "int8")
    shapes = tp.profile_shapes(INPUTS, max_batch=8)
    line103 = tp.format_command(tp.trtexec_build_command(tp.build_plan(m, "fp16", "10.3"), shapes, "b/model.onnx",
                                                         "b/model.fp16.trt10.3.engine", "b/timing.cache", 512))
    assert line103 == (
        "trtexec --onnx=b/model.onnx --saveEngine=b/model.fp16.trt10.3.engine --timingCacheFile=b/timing.cache "
        "--minShapes=features:1x40x8,state.stem.conv:1x40x2,state.pool.pool:1x48x12 "
        "--optShapes=features:1x40x8,state.stem.conv:1x40x2,state.pool.pool:1x48x12 "
        "--maxShapes=features:8x40x8,state.stem.conv:8x40x2,state.pool.pool:8x48x12 "
        "--memPoolSize=workspace:512M --fp16 --skipInference")
    argv11 = tp.trtexec_build_command(tp.build_plan(m, "int8", "11"), shapes, "b/model.int8.onnx", "e.engine")
    assert argv11[:4] == ["trtexec", "--onnx=b/model.int8.onnx", "--saveEngine=e.engine", "--timingCacheFile=timing.cache"]
    assert not {"--int8", "--fp16", "--best", "--stronglyTyped"} & set(argv11)  # gone or default in 11
    assert "--maxShapes=features:8x40x8,state.stem.conv:8x40x2,state.pool.pool:8x48x12" in argv11
    assert argv11[-2:] == ["--memPoolSize=workspace:256M", "--skipInference"]
    assert shlex.split(tp.format_command(["trtexec", "--onnx=my dir/m.onnx"])) == ["trtexec", "--onnx=my dir/m.onnx"]


def test_trtexec_bench_lines_count_transfers_on_every_version():
    shapes = {"features": (1, 40, 8)}
    b103 = tp.trtexec_bench_command("e.engine", shapes, "10.3")
    b11 = tp.trtexec_bench_command("e.engine", shapes, "11")
    assert b103 == ["trtexec", "--loadEngine=e.engine", "--shapes=features:1x40x8", "--iterations=2000",
                    "--warmUp=500", "--duration=0", "--useCudaGraph", "--useSpinWait"]
    assert b11 == ["trtexec", "--loadEngine=e.engine", "--shapes=features:1x40x8", "--iterations=2000",
                   "--warmUp=500", "--duration=0", "--includeDataTransfers"]


def test_engine_names_and_facts():
    from kwsdeploy.trt.builder import engine_facts

    assert tp.engine_file_name("fp16", "10.3.0.30") == "model.fp16.trt10.3.engine"
    plan = tp.build_plan(_manifest("fp32"), "fp32", "10.3")
    facts = engine_facts(plan, "10.3.0.30", {"gpu": "Orin", "compute_capability": "8.7"},
                         tp.profile_shapes(INPUTS, 2), 256, b"\x00" * 10, 1.23456)
    assert facts["tensorrt"] == "10.3.0.30" and facts["compute_capability"] == "8.7" and facts["size"] == 10
    assert facts["profile"]["features"] == [[1, 40, 8], [1, 40, 8], [2, 40, 8]] and facts["build_seconds"] == 1.235
    assert facts["sha256"] == "01d448afd928065458cf670b60f5a594d735af0172c8d67f22a81680132681ca"


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here: the command builds instead of printing")
def test_engine_build_without_tensorrt_prints_trtexec_and_exits_2(tiny_bundle):
    from kwsdeploy.cli.main import app

    r = CliRunner().invoke(app, ["engine", "build", str(tiny_bundle), "--precision", "fp16",
                                                 "--max-batch", "4"])
    assert r.exit_code == 2
    argv = shlex.split(r.stdout)
    assert argv[0] == "trtexec" and f"--onnx={tiny_bundle / 'model.onnx'}" in argv and "--fp16" in argv
    assert f"--saveEngine={tiny_bundle / 'model.fp16.trt10.3.engine'}" in argv
    assert "--maxShapes=features:4x40x1,state.conv.buffer:4x40x2,state.pool.sum:4x8" in argv
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: TensorRT is not installed here")
    r11 = CliRunner().invoke(app, ["engine", "build", str(tiny_bundle), "--trt", "11"])
    assert r11.exit_code == 2 and "--noTF32" in r11.stdout and "--stronglyTyped" not in r11.stdout
    bad = CliRunner().invoke(app, ["engine", "build", str(tiny_bundle), "--precision", "int8"])
    assert bad.exit_code == 2 and "no INT8 Q/DQ step graph" in bad.stderr and not bad.stdout


@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT is not installed (it cannot be on this project's CI machines); "
                                         "the engine build runs on a device with TensorRT")
def test_engine_build_with_tensorrt(tiny_bundle, tmp_path):
    from kwsdeploy.trt.builder import build_engine

    res = build_engine(tiny_bundle, "fp32", max_batch=2, out=tmp_path / "e.engine", timing_cache=tmp_path / "t.cache")
    assert res.engine.stat().st_size == res.facts["size"] > 0 and res.timing_cache.is_file()
    assert TrtVersion.parse(res.facts["tensorrt"]) >= TrtVersion(10, 0)
