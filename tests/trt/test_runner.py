"""The TensorRT step runner: against a stand-in of TensorRT + cuda-python backed by ONNX Runtime
(its logic: swapped state sets, addresses, CUDA graph replay, reset), and for real where TensorRT is."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kwsdeploy.runtime import trt as rtrt
from kwsdeploy.runtime.ort import OrtStepRunner
from kwsdeploy.runtime.runners import open_runner
from kwsdeploy.trt.lazy import have_tensorrt
from .fake_trt import FakeCudart, fake_tensorrt


@pytest.fixture
def fake(monkeypatch, tiny_bundle):
    cudart = FakeCudart()
    monkeypatch.setattr(rtrt, "import_tensorrt", lambda: fake_tensorrt(cudart))
    monkeypatch.setattr(rtrt, "import_cudart", lambda: cudart)
    engine = tiny_bundle / "model.fp32.trt10.3.engine"
    engine.write_bytes((tiny_bundle / "model.onnx").read_bytes())  # the stand-in's "engine" is the graph
    yield cudart
    engine.unlink()


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_runner_streams_like_onnxruntime(fake, tiny_bundle, clip_features, cuda_graph):
    x = clip_features[:2, :, :24]
    ref = OrtStepRunner(tiny_bundle / "model.onnx", batch=2).run(x)
    runner = rtrt.TrtStepRunner(tiny_bundle / "model.onnx", batch=2, cuda_graph=cuda_graph)
    assert runner.engine_path.name == "model.fp32.trt10.3.engine" and runner.uses_cuda_graph == cuda_graph
    got = runner.run(x)
    assert got.shape == ref.shape == (24, 2, 12)
    assert np.array_equal(got, ref)  # same graph, same arithmetic: only the plumbing differs
    assert fake.launches["graph"] == (24 if cuda_graph else 0)
    # a second run resets the state; run(reset=False) continues it
    assert np.array_equal(runner.run(x), ref)
    cont = runner.run(x, reset=False)
    ort_runner = OrtStepRunner(tiny_bundle / "model.onnx", batch=2)
    ort_runner.run(x)
    assert np.array_equal(cont, ort_runner.run(x, reset=False))


def test_state_and_per_stream_reset_match_onnxruntime(fake, tiny_bundle, clip_features):
    x = clip_features[:2, :, :5]
    ort_runner = OrtStepRunner(tiny_bundle / "model.onnx", batch=2)
    runner = open_runner(tiny_bundle, backend="tensorrt", batch=2)
    assert isinstance(runner, rtrt.TrtStepRunner) and runner.labels == [f"w{i}" for i in range(12)]
    for r in (ort_runner, runner):
        r.run(x)
        r.reset(stream=1)
    s_trt, s_ort = runner.state(), ort_runner.state()
    assert sorted(s_trt) == sorted(s_ort) == ["state.conv.buffer", "state.pool.sum"]
    for name in s_ort:
        assert np.array_equal(s_trt[name], s_ort[name]) and not s_trt[name][1].any() and s_trt[name][0].any()
    step = clip_features[:2, :, 5:6]
    assert np.array_equal(runner.step(step), ort_runner.step(step))
    runner.close()


def test_missing_engine_says_how_to_build_it(fake, tiny_bundle):
    with pytest.raises(FileNotFoundError, match="kwsdeploy engine build .* --precision fp16"):
        rtrt.TrtStepRunner(tiny_bundle / "model.onnx", precision="fp16", build_missing=False)


@pytest.mark.skipif(not have_tensorrt(), reason="TensorRT is not installed (it cannot be on this project's CI "
                                                  "machines); the real runner is checked on a device")
def test_real_tensorrt_runner_matches_onnxruntime(tiny_bundle, clip_features, tmp_path):
    from kwsdeploy.trt.builder import build_engine

    res = build_engine(tiny_bundle, "fp32", max_batch=2, out=tmp_path / "model.fp32.engine")
    x = clip_features[:2, :, :24]
    got = rtrt.TrtStepRunner(res.engine, batch=2).run(x)
    ref = OrtStepRunner(tiny_bundle / "model.onnx", batch=2).run(x)
    assert np.max(np.abs(got - ref)) <= 1e-4


def test_auto_backend_is_onnxruntime_without_tensorrt_and_tensorrt_with_an_engine(fake, tiny_bundle, monkeypatch):
    from kwsdeploy.runtime import runners
    from kwsdeploy.trt import lazy

    monkeypatch.setattr(lazy, "have_tensorrt", lambda: False)
    assert runners.resolve_backend(tiny_bundle) == "onnxruntime"
    monkeypatch.setattr(lazy, "have_tensorrt", lambda: True)
    monkeypatch.setattr(lazy, "import_tensorrt", lambda: fake_tensorrt(fake))
    assert runners.resolve_backend(tiny_bundle) == "tensorrt"  # model.fp32.trt10.3.engine is there
    assert runners.resolve_backend(tiny_bundle, precision="fp16") == "onnxruntime"
    assert runners.resolve_backend(tiny_bundle, "onnxruntime") == "onnxruntime"
    with pytest.raises(ValueError, match="Unknown runner backend 'cuda'"):
        runners.resolve_backend(tiny_bundle, "cuda")


@pytest.mark.parametrize("version, strong", [("10.3.0.30", False), ("11.4.1", True)])
def test_engine_build_calls_and_atomic_files_through_the_stand_in(tiny_bundle, tmp_path, monkeypatch, version, strong):
    from kwsdeploy.trt import builder

    cudart = FakeCudart()
    trt = fake_tensorrt(cudart, version)
    monkeypatch.setattr(builder, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(builder, "import_cudart", lambda: cudart)
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"old")
    res = builder.build_engine(tiny_bundle, "fp32", max_batch=3, workspace_mb=64, timing_cache=cache,
                               out=tmp_path / "e.engine")
    assert res.engine.read_bytes() == (tiny_bundle / "model.onnx").read_bytes()
    assert cache.read_bytes() == b"old+tuned" and sorted(p.name for p in tmp_path.iterdir()) == ["e.engine", "t.cache"]
    calls = trt.calls
    assert calls[0] == ("network", 1 if strong else 0) and ("pool", "WORKSPACE", 64 << 20) in calls
    assert ("clear_flag", "TF32") in calls and not any(c[0] == "set_flag" for c in calls)
    assert ("set_shape", "state.pool.sum", (1, 8), (1, 8), (3, 8)) in calls and ("cache_in", b"old") in calls
    assert res.facts["gpu"] == "Fake GPU" and res.facts["compute_capability"] == "8.7"
    assert res.facts["tensorrt"] == version and res.facts["strongly_typed"] == strong
    with pytest.raises(FileExistsError, match="--overwrite"):
        builder.build_engine(tiny_bundle, "fp32", out=tmp_path / "e.engine")


def test_bare_graph_without_engine_is_built_in_memory(tiny_bundle, tmp_path, monkeypatch, clip_features):
    from kwsdeploy.trt import builder

    cudart = FakeCudart()
    trt = fake_tensorrt(cudart)
    for mod in (rtrt, builder):
        monkeypatch.setattr(mod, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(rtrt, "import_cudart", lambda: cudart)
    bare = tmp_path / "graph.onnx"  # a benchmark's temporary graph: no bundle, no engine
    bare.write_bytes((tiny_bundle / "model.onnx").read_bytes())
    runner = rtrt.TrtStepRunner(bare, batch=2)
    assert "built an engine in memory" in runner.engine_note
    assert ("set_shape", "features", (1, 40, 1), (1, 40, 1), (2, 40, 1)) in trt.calls
    x = clip_features[:2, :, :6]
    assert np.array_equal(runner.run(x), OrtStepRunner(bare, batch=2).run(x))


def test_cli_engine_build_with_tensorrt_writes_engine_and_facts(tiny_bundle, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from kwsdeploy.cli.main import app
    from kwsdeploy.trt import builder

    from kwsdeploy.manifest import Manifest
    from kwsdeploy.runtime.verify import verify_bundle

    cudart = FakeCudart()
    trt = fake_tensorrt(cudart, "10.16.0.1")
    for mod in (builder, rtrt):
        monkeypatch.setattr(mod, "import_tensorrt", lambda: trt)
        monkeypatch.setattr(mod, "import_cudart", lambda: cudart)
    out = tmp_path / "m.engine"  # outside the bundle: facts beside it
    r = CliRunner().invoke(app, ["engine", "build", str(tiny_bundle), "--out", str(out), "--max-batch", "2"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{out}: TensorRT 10.16.0.1 fp32 engine for Fake GPU (sm 8.7)")
    assert "golden parity" in r.stdout and "(atol 0.0001)" in r.stdout
    facts = json.loads((tmp_path / "m.engine.json").read_text())
    assert facts["engine"] == "m.engine" and facts["source"] == "model.onnx" and facts["strongly_typed"] is True
    assert facts["profile"]["features"] == [[1, 40, 1], [1, 40, 1], [2, 40, 1]] and facts["parity_max_abs"] < 1e-4
    # inside the bundle (the default name): a manifest entry of format 'engine' with its facts and hash
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    for stale in copy.glob("*.engine"):
        stale.unlink()
    r = CliRunner().invoke(app, ["engine", "build", str(copy)])
    assert r.exit_code == 0, r.output
    m = Manifest.read(copy)
    e = m.file("step", "fp32", format="engine")
    assert e.path == "model.fp32.trt10.16.engine" and e.engine.tensorrt_version == "10.16.0.1"
    assert (e.engine.gpu_name, e.engine.compute_capability, e.engine.source) == ("Fake GPU", "8.7", "model.onnx")
    assert e.parity_max_abs <= e.parity_atol == 1e-4 and e.engine.extra["strongly_typed"] is True
    m.verify_hashes(copy)
    assert [c.path for c in verify_bundle(copy)] == ["model.onnx"]  # engines are hash-checked, not run on ORT
