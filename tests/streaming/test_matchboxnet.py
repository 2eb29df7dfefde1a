"""Causal MatchboxNet step form: clip parity with the offline model, the stream spec, ONNX export."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from kwsdeploy.models import create
from kwsdeploy.streaming.convert import to_streaming
from kwsdeploy.streaming.layers import stream_clip
from kwsdeploy.tolerances import ONNX_PARITY_ATOL, STEP_PARITY_ATOL


def randomize_batchnorm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random affine and running statistics in every BatchNorm, so that folding is really tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.weight.copy_(1 + 0.3 * torch.randn(c, generator=gen))
                m.bias.copy_(0.3 * torch.randn(c, generator=gen))
    return model.eval()


@pytest.mark.parametrize("n_mfcc,batch,packet", [(64, 1, None), (64, 3, None), (40, 3, 7)])
def test_step_form_reproduces_offline_logits_on_a_clip(n_mfcc, batch, packet):
    torch.manual_seed(batch)
    model = randomize_batchnorm(create("matchboxnet-causal", num_classes=12, n_mfcc=n_mfcc), seed=20 + batch)
    step = to_streaming(model, packet_frames=packet)
    clip = 3.0 * torch.randn(batch, n_mfcc, 98, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        offline = model(clip[:, None])
        streamed = stream_clip(step, clip)  # 98 packets of 1 frame (or 14 of 7)
    err = (streamed - offline).abs().max().item()
    assert err < STEP_PARITY_ATOL, err  # measured ~2.4e-7
    assert offline.abs().max().item() > 0.1


def test_stream_spec_of_matchboxnet_causal():
    step = to_streaming(create("matchboxnet-causal", n_mfcc=64))
    spec = step.stream_spec
    assert (spec.mode, spec.packet_frames, spec.delay_frames, spec.window_frames, spec.n_mfcc) == ("exact", 1, 0, 98, 64)
    shapes = {s.name: s.shape for s in spec.states}
    assert shapes == {
        "state.block0_sub0_depthwise.conv": (64, 10),
        "state.block1_sub0_depthwise.conv": (128, 12),
        "state.block1_sub1_depthwise.conv": (64, 12),
        "state.block2_sub0_depthwise.conv": (64, 14),
        "state.block2_sub1_depthwise.conv": (64, 14),
        "state.block3_sub0_depthwise.conv": (64, 16),
        "state.block3_sub1_depthwise.conv": (64, 16),
        "state.block4_sub0_depthwise.conv": (64, 56),  # k=29, dilation 2
        "state.pool.pool": (128, 97),
    }
    assert spec.warmup_packets == 98


def test_same_padded_reference_model_streams_windowed_only():
    model = create("matchboxnet", n_mfcc=64)
    assert to_streaming(model).stream_spec.mode == "windowed"
    with pytest.raises(ValueError, match="windowed"):
        to_streaming(model, mode="exact")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is fast; dynamo also works
def test_step_exports_to_onnx_and_matches():
    import onnxruntime as ort

    model = randomize_batchnorm(create("matchboxnet-causal", n_mfcc=64), seed=1)
    step = to_streaming(model)
    spec = step.stream_spec
    x = torch.randn(2, 64, spec.packet_frames)
    state = [torch.randn_like(s) for s in step.init_state(2)]
    buf = io.BytesIO()
    torch.onnx.export(
        step, (x, *state), buf, input_names=["features", *spec.state_names],
        output_names=["logits", *spec.new_state_names], dynamo=False, opset_version=17,
    )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", *spec.new_state_names]
    outs = sess.run(None, {"features": x.numpy(), **{n: s.numpy() for n, s in zip(spec.state_names, state)}})
    with torch.no_grad():
        ref = step(x, *state)
    err = max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outs, ref))
    assert err < ONNX_PARITY_ATOL, err
