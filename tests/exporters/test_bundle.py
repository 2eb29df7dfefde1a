"""Export bundles from tiny step modules: ORT parity, manifest contents, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from kwsdeploy import tolerances
from kwsdeploy.exporters import bundle as eb
from kwsdeploy.exporters.bundle import ParityData, ParityError, export_bundle
from kwsdeploy.manifest import GOLDEN_NAME, ONNX_METADATA_KEY, Manifest
from kwsdeploy.streaming.windowed import WindowedStream
from .tiny_steps import TinyCausalStep, TinyFrontend, TinyOffline, seeded

LABELS = [f"w{i}" for i in range(12)]


def _export(tmp_path, name="b", **kw):
    kw.setdefault("model", seeded(TinyOffline()))
    kw.setdefault("labels", LABELS)
    kw.setdefault("feature_config", (kw.get("smodel") or TinyCausalStep()).stream_spec.feature_config)
    kw.setdefault("exporter", "legacy")
    return export_bundle(tmp_path / name, **kw)


def test_exact_step_bundle_matches_torch_within_atol_batch3(tmp_path, clip_features):
    res = _export(tmp_path, smodel=seeded(TinyCausalStep()), parity=ParityData(features=clip_features, source="3 clips"))
    mf = res.manifest.file("step")
    assert mf.path == "model.onnx" and mf.input_kind == "features"
    assert mf.parity_max_abs <= tolerances.ONNX_PARITY_ATOL and mf.parity_atol == tolerances.ONNX_PARITY_ATOL
    assert mf.nodes == 8  # Concat Conv Relu Squeeze Add Div Gemm Slice: constants all folded
    assert [t.name for t in mf.inputs] == ["features", "state.conv.buffer", "state.pool.sum"]
    assert [t.name for t in mf.outputs] == ["logits", "new_state.conv.buffer", "new_state.pool.sum"]
    assert mf.inputs[0].shape == ("batch", 40, 1)
    on_disk = Manifest.read(res.path)
    assert on_disk == res.manifest
    assert sorted(p.name for p in res.path.iterdir()) == sorted(["manifest.json", "model.onnx", GOLDEN_NAME])
    proto = onnx.load(res.path / "model.onnx")
    assert {p.key: p.value for p in proto.metadata_props}[ONNX_METADATA_KEY] == res.manifest.identity_sha256()
    with np.load(res.path / GOLDEN_NAME) as g:
        assert g["step.features.input"].shape == (2, 40, 98) and g["step.features.logits"].shape == (98, 2, 12)
    assert res.manifest.accuracy["onnx_vs_torch_top1_agreement"] == 1.0


def test_windowed_step_and_offline_fp16_bundle(tmp_path, clip_features):
    model = seeded(TinyOffline())
    res = _export(tmp_path, model=model, smodel=WindowedStream(model, hop_frames=10), modes=("step", "offline"),
                  precisions=("fp32", "fp16"), parity=ParityData(features=clip_features))
    names = {(f.mode, f.precision): f for f in res.manifest.files}
    assert set(names) == {("step", "fp32"), ("step", "fp16"), ("offline", "fp32"), ("offline", "fp16")}
    assert names[("step", "fp32")].inputs[0].shape == ("batch", 40, 10)
    assert names[("step", "fp32")].inputs[1].name == "state.window.features"
    assert names[("offline", "fp32")].inputs[0].shape == ("batch", 1, 40, 98)
    for (mode, prec), f in names.items():
        assert f.parity_max_abs <= f.parity_atol
        assert f.parity_atol == (tolerances.ONNX_PARITY_ATOL if prec == "fp32" else tolerances.ONNX_FP16_PARITY_ATOL)
        assert f.io_dtype == "float32" and all(t.dtype == "float32" for t in f.inputs + f.outputs)
    fp16 = onnx.load(res.path / "model.fp16.onnx")
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.graph.initializer)
    assert res.manifest.stream.packet_frames == 10


def test_frontend_step_bundle_takes_audio_and_keeps_sample_cache(tmp_path, clip_audio):
    res = _export(tmp_path, smodel=seeded(TinyCausalStep()), frontend=True, frontend_step=seeded(TinyFrontend(), 1),
                  parity=ParityData(audio=clip_audio, source="3 wavs"))
    mf = res.manifest.file("step")
    assert mf.input_kind == "audio"
    assert [t.name for t in mf.inputs] == ["audio", "state.frontend.samples", "state.conv.buffer", "state.pool.sum"]
    assert mf.inputs[0].shape == ("batch", 160) and mf.inputs[1].shape == ("batch", 320)
    assert "new_state.frontend.samples" in [t.name for t in mf.outputs]
    assert mf.parity_max_abs <= tolerances.ONNX_PARITY_ATOL


def test_parity_failure_is_loud_and_writes_nothing(tmp_path, clip_features, monkeypatch):
    real = eb._ort_stream
    monkeypatch.setattr(eb, "_ort_stream", lambda proto, x: real(proto, x) + 1e-3)
    with pytest.raises(ParityError, match="exceeds 0.0001"):
        _export(tmp_path, smodel=seeded(TinyCausalStep()), parity=ParityData(features=clip_features))
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_no_bundle_and_no_temp_dir(tmp_path, clip_features, monkeypatch):
    calls = []

    def failing_write(path, data):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        path.write_bytes(data)

    monkeypatch.setattr(eb, "_write_file", failing_write)
    with pytest.raises(OSError, match="simulated"):
        _export(tmp_path, smodel=seeded(TinyCausalStep()), parity=ParityData(features=clip_features))
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_existing_bundle_needs_overwrite_and_is_replaced_whole(tmp_path, clip_features):
    kw = dict(smodel=seeded(TinyCausalStep()), parity=ParityData(features=clip_features))
    first = _export(tmp_path, **kw)
    with pytest.raises(ValueError, match="--overwrite"):
        _export(tmp_path, **kw)
    (first.path / "stray.txt").write_text("x")
    second = _export(tmp_path, overwrite=True, **kw)
    assert not (second.path / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert json.loads((second.path / "manifest.json").read_text())["schema_version"] == 2
