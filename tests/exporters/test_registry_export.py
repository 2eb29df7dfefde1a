"""Export + ONNX Runtime parity for real registry entries: every exact family, windowed KWT and KWM,
the MFCC frontend inside the graph, batch 2. Random (seeded) weights: parity does not need training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kwsdeploy import tolerances
from kwsdeploy.exporters.bundle import ParityData, build_bundle
from kwsdeploy.models.registry import create

# (registry name, frames of real features streamed): short streams keep the suite fast.
CASES = [
    ("tcresnet8-causal", 32),
    ("bcresnet1-causal", 24),
    ("matchboxnet-causal", 24),
    ("kwm-causal-64-4", 24),
    ("kwt-1", 30),
    ("kwm-64-12", 20),  # built with depth 2 (see OVERRIDES): its windowed graph unrolls the scan
]
OVERRIDES = {"kwm-64-12": {"depth": 2}}


def _build(name, clip_features, frames, **kw):
    torch.manual_seed(0)
    model = create(name, **OVERRIDES.get(name, {})).eval()
    feats = clip_features[:2, :, :frames]
    from kwsdeploy.streaming.convert import to_streaming

    smodel = to_streaming(model, **({"hop_frames": 10} if name in ("kwt-1", "kwm-64-12") else {}))
    return build_bundle(
        model, [str(i) for i in range(12)], smodel.stream_spec.feature_config, ParityData(features=feats, **kw.pop("data", {})),
        smodel=smodel, exporter="legacy", **kw,
    )


@pytest.mark.parametrize("name, frames", CASES, ids=[c[0] for c in CASES])
def test_registry_step_graph_matches_torch_step_form(name, frames, clip_features):
    manifest, blobs, rows = _build(name, clip_features, frames)
    mf = manifest.file("step")
    assert mf.parity_max_abs <= tolerances.ONNX_PARITY_ATOL, (name, mf.parity_max_abs)
    assert [t.name for t in mf.inputs][1:] == manifest.stream.state_names
    assert all(t.shape[0] == "batch" for t in mf.inputs + mf.outputs)
    assert not set(mf.op_histogram) & {"Loop", "Scan", "If", "SequenceConstruct"}
    # The windowed bidirectional KWM recomputes an unrolled scan every hop: a big graph, reported as is.
    assert 0 < mf.nodes < (5_000 if name == "kwm-64-12" else 500), (name, mf.nodes)
    print(f"{name}: {mf.nodes} nodes, parity {mf.parity_max_abs:.2e}")


def test_registry_step_graph_with_frontend_and_fp16(clip_audio):
    from kwsdeploy.features import compute_features
    from kwsdeploy.config import FeatureConfig

    audio = clip_audio[:2, :8000]
    data = {"audio": audio, "source": "2 wavs"}
    manifest, blobs, rows = _build("tcresnet8-causal", compute_features(audio, FeatureConfig()).numpy(), 98,
                                   frontend=True, precisions=("fp32", "fp16"), data=data)
    fp32, fp16 = manifest.file("step", "fp32"), manifest.file("step", "fp16")
    assert fp32.input_kind == "audio" and fp32.inputs[1].name == "state.frontend.samples"
    assert fp32.parity_max_abs <= tolerances.ONNX_PARITY_ATOL
    assert fp16.parity_max_abs <= tolerances.ONNX_FP16_PARITY_ATOL
    assert len(blobs["model.fp16.onnx"]) < len(blobs["model.onnx"])


def test_convmixer_channel_norm_windowed_graph_matches_torch(clip_features):
    """The window's cepstral mean inside the windowed graph: ONNX Runtime equals torch on real features."""
    from kwsdeploy.streaming.convert import to_streaming

    torch.manual_seed(0)
    model = create("convmixer", n_mfcc=40, channel_norm=True).eval()
    smodel = to_streaming(model, hop_frames=10)
    manifest, blobs, rows = build_bundle(
        model, [str(i) for i in range(12)], smodel.stream_spec.feature_config,
        ParityData(features=clip_features[:2, :, :118]), smodel=smodel, exporter="legacy",
    )
    mf = manifest.file("step")
    assert mf.parity_max_abs <= tolerances.ONNX_PARITY_ATOL, mf.parity_max_abs
    assert mf.op_histogram.get("ReduceMean", 0) >= 1, mf.op_histogram
