"""Causal MatchboxNet step form: clip parity with the offline model, the stream spec, ONNX export."""

from __future__ import annotations

import pytest
import torch

from kwsdeploy.models import create
from kwsdeploy.streaming.convert import to_streaming
from kwsdeploy.streaming.layers import stream_clip
from kwsdeploy.tolerances import ONNX_PARITY_ATOL, STEP_PARITY_ATOL

from .step_checks import onnx_step_error, randomize_batchnorm


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
    model = randomize_batchnorm(create("matchboxnet-causal", n_mfcc=64), seed=1)
    step = to_streaming(model)
    spec = step.stream_spec
    sess, err = onnx_step_error(step, batch=2)
    assert [o.name for o in sess.get_outputs()] == ["logits", *spec.new_state_names]
    assert err < ONNX_PARITY_ATOL, err
