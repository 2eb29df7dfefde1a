"""Causal TC-ResNet step form: clip parity with the offline model, the stream spec, ONNX export."""

from __future__ import annotations

import pytest
import torch

from kwsdeploy.models import create
from kwsdeploy.streaming.convert import to_streaming
from kwsdeploy.streaming.layers import stream_clip
from kwsdeploy.tolerances import ONNX_PARITY_ATOL, STEP_PARITY_ATOL

from .step_checks import onnx_step_error, randomize_batchnorm


@pytest.mark.parametrize("name", ["tcresnet8-causal", "tcresnet14-causal"])
@pytest.mark.parametrize("batch", [1, 3])
def test_step_form_reproduces_offline_logits_on_a_clip(name, batch):
    torch.manual_seed(batch)
    model = randomize_batchnorm(create(name, num_classes=7), seed=10 + batch)
    step = to_streaming(model)
    clip = 3.0 * torch.randn(batch, 40, 98, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        offline = model(clip[:, None])
        streamed = stream_clip(step, clip)  # 13 packets of 8 frames, tail zero-padded to 104
    assert streamed.shape == (batch, 7)
    err = (streamed - offline).abs().max().item()
    assert err < STEP_PARITY_ATOL, err  # measured ~2.4e-7
    assert offline.abs().max().item() > 0.1  # the comparison is not between near-zero logits


def test_stream_spec_of_tcresnet8_causal():
    step = to_streaming(create("tcresnet8-causal"))
    spec = step.stream_spec
    assert (spec.mode, spec.packet_frames, spec.delay_frames, spec.window_frames) == ("exact", 8, 0, 98)
    assert spec.warmup_packets == 13 and step.clip_exact
    shapes = {s.name: s.shape for s in spec.states}
    assert shapes == {
        "state.stem.conv": (40, 2),
        "state.block0_conv1.conv": (16, 8),
        "state.block0_conv2.conv": (24, 8),
        "state.block1_conv1.conv": (24, 8),
        "state.block1_conv2.conv": (32, 8),
        "state.block2_conv1.conv": (32, 8),
        "state.block2_conv2.conv": (48, 8),
        "state.pool.pool": (48, 12),
    }
    state = step.init_state(2)
    assert [tuple(s.shape) for s in state] == [(2, *s.shape) for s in spec.states]


def test_step_is_pure_and_shares_the_head():
    model = randomize_batchnorm(create("tcresnet8-causal"), seed=0)
    step = to_streaming(model)
    assert step.head is model.head
    x = torch.randn(2, 40, 8)
    state = [torch.randn_like(s) for s in step.init_state(2)]
    with torch.no_grad():
        first = step(x, *state)
        second = step(x, *state)
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # no hidden state between calls


def test_same_padded_reference_model_streams_windowed_only():
    model = create("tcresnet8")
    assert to_streaming(model).stream_spec.mode == "windowed"
    with pytest.raises(ValueError, match="windowed"):
        to_streaming(model, mode="exact")


def test_packet_must_be_a_multiple_of_the_stride():
    with pytest.raises(ValueError, match=r"packet_frames must be a positive multiple of 8 \(the total time stride of tcresnet8-causal\), got 12"):
        to_streaming(create("tcresnet8-causal"), packet_frames=12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is fast; dynamo also works
def test_step_exports_to_onnx_and_matches():
    model = randomize_batchnorm(create("tcresnet8-causal"), seed=1)
    step = to_streaming(model)
    spec = step.stream_spec
    sess, err = onnx_step_error(step, batch=1)
    assert [i.name for i in sess.get_inputs()] == ["features", *spec.state_names]
    assert err < ONNX_PARITY_ATOL, err
