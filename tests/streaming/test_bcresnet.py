"""BC-ResNet step form: clip parity with the causal offline model, the 2-D stream layers, the
stream spec, ONNX export, and the windowed mode of the reference ('same'-padded) widths."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kwsdeploy.models import create
from kwsdeploy.streaming.convert import to_streaming
from kwsdeploy.streaming.layers import stream_clip
from kwsdeploy.streaming.layers2d import StreamTimeConv2d, subband_scale_shift
from kwsdeploy.tolerances import ONNX_PARITY_ATOL, STEP_PARITY_ATOL


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded random conv weights (default init) plus random affine and running statistics in every
    BatchNorm and SubSpectralNorm, so that folding is really tested."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.reset_parameters()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.weight.copy_(1 + 0.3 * torch.randn(c, generator=gen))
                m.bias.copy_(0.3 * torch.randn(c, generator=gen))
    return model.eval()


def feed(step: torch.nn.Module, clip: torch.Tensor, packet: int) -> torch.Tensor:
    state = step.init_state(clip.shape[0])
    for start in range(0, clip.shape[-1], packet):
        logits, *state = step(clip[..., start:start + packet], *state)
    return logits


@pytest.mark.parametrize(
    "name,batch,packet", [("bcresnet1-causal", 1, 1), ("bcresnet1-causal", 3, 1), ("bcresnet8-causal", 3, 7)]
)
def test_step_form_reproduces_offline_logits_on_a_clip(name, batch, packet):
    model = randomize(create(name, num_classes=7), seed=batch + packet)
    with torch.no_grad():
        model.conv4.weight.mul_(5.0)  # logits of order 1
    step = to_streaming(model, packet_frames=packet)
    assert step.stream_spec.packet_frames == packet and step.clip_exact
    clip = 2.0 * torch.randn(batch, 40, 98, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        offline = model(clip[:, None])
        streamed = feed(step, clip, packet)
    assert streamed.shape == (batch, 7)
    err = (streamed - offline).abs().max().item()
    assert err < STEP_PARITY_ATOL, err  # measured ~1e-7
    assert offline.abs().max().item() > 0.1  # not a comparison of near-zero logits


def test_stream_clip_helper_agrees():
    model = randomize(create("bcresnet1-causal"), seed=5)
    clip = torch.randn(2, 40, 98, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        err = (stream_clip(to_streaming(model), clip) - model(clip[:, None])).abs().max().item()
    assert err < STEP_PARITY_ATOL


def test_stream_spec_of_bcresnet1_causal():
    step = to_streaming(create("bcresnet1-causal"))
    spec = step.stream_spec
    assert (spec.mode, spec.packet_frames, spec.delay_frames, spec.window_frames) == ("exact", 1, 0, 98)
    assert spec.feature_config.causal and spec.n_mfcc == 40 and spec.num_classes == 12
    shapes = {s.name: s.shape for s in spec.states}
    expected = {"state.conv1.conv": (1, 40, 4)}
    for name, width, context in [("block1_1", 8, 2), ("block1_2", 8, 2), ("block2_1", 12, 4), ("block2_2", 12, 4),
                                 ("block3_1", 16, 8), ("block3_2", 16, 8), ("block3_3", 16, 8), ("block3_4", 16, 8),
                                 ("block4_1", 20, 16), ("block4_2", 20, 16), ("block4_3", 20, 16), ("block4_4", 20, 16)]:
        expected[f"state.{name}.conv"] = (width, 1, context)  # temporal convs see the frequency-pooled row
    expected["state.conv2.conv"] = (20, 5, 4)
    expected["state.pool.pool"] = (12, 97)
    assert shapes == expected
    state = step.init_state(2)
    out = step(torch.zeros(2, 40, 1), *state)
    assert [tuple(t.shape) for t in out[1:]] == [tuple(t.shape) for t in state]


def test_reference_widths_stream_windowed_only():
    model = randomize(create("bcresnet1"), seed=1)
    with pytest.raises(ValueError, match="same"):
        to_streaming(model, mode="exact")
    step = to_streaming(model)
    assert step.stream_spec.mode == "windowed"
    clip = torch.randn(1, 40, 98, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = (feed(step, clip, 14) - model(clip[:, None])).abs().max().item()
    assert err < STEP_PARITY_ATOL  # the window recompute is the offline model on the last 98 frames


def test_stream_time_conv2d_matches_left_padded_offline_conv():
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(6, 6, (3, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 4), groups=3, bias=True)
    layer = StreamTimeConv2d(conv.weight, conv.bias, "c", in_rows=10, freq_stride=2, freq_padding=1, time_dilation=4,
                             groups=3)
    assert layer.state_spec.name == "state.c.conv" and layer.state_spec.shape == (6, 10, 8)
    x = torch.randn(2, 6, 10, 30, generator=gen)
    with torch.no_grad():
        offline = conv(F.pad(x, (8, 0)))
        state, outs = torch.zeros(2, 6, 10, 8), []
        for start in range(0, 30, 5):
            y, state = layer(x[..., start:start + 5], state)
            outs.append(y)
    assert (torch.cat(outs, -1) - offline).abs().max().item() < 1e-5


def test_subband_scale_shift_equals_subspectral_norm():
    from kwsdeploy.models.bcresnet import SubSpectralNorm

    ssn = randomize(torch.nn.Sequential(SubSpectralNorm(4)), seed=2)[0]
    x = torch.randn(2, 4, 10, 3)
    scale, shift = subband_scale_shift(ssn.bn, 4, 10)
    with torch.no_grad():
        assert (x * scale + shift - ssn(x)).abs().max().item() < 1e-5


def test_converter_refuses_a_same_padded_model():
    from kwsdeploy.streaming.bcresnet import StreamingBCResNet

    with pytest.raises(ValueError, match="causal"):
        StreamingBCResNet(create("bcresnet2"))


def test_onnx_export_reproduces_the_torch_step():
    ort = pytest.importorskip("onnxruntime")
    step = to_streaming(randomize(create("bcresnet1-causal"), seed=7))
    spec = step.stream_spec
    names_in, names_out = ["features", *spec.state_names], ["logits", *spec.new_state_names]
    buf = io.BytesIO()
    torch.onnx.export(
        step, (torch.zeros(1, 40, 1), *step.init_state(1)), buf, input_names=names_in, output_names=names_out,
        dynamic_axes={n: {0: "batch"} for n in names_in + names_out}, dynamo=False, opset_version=17,
    )
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(7)
    state = step.init_state(2)
    onnx_state = [s.numpy() for s in state]
    err = 0.0
    with torch.no_grad():
        for _ in range(12):
            x = torch.randn(2, 40, 1, generator=gen)
            logits, *state = step(x, *state)
            out = session.run(names_out, {"features": x.numpy(), **dict(zip(spec.state_names, onnx_state))})
            onnx_state = out[1:]
            err = max(err, float(np.abs(out[0] - logits.numpy()).max()))
    assert err < ONNX_PARITY_ATOL, err


@pytest.mark.parametrize("frames", [1, 3])
def test_frequency_mean_equals_the_mean_over_rows(frames):
    from kwsdeploy.streaming.bcresnet import frequency_mean

    x = torch.randn(4, 6, 10, frames, generator=torch.Generator().manual_seed(frames))
    got = frequency_mean(x)
    assert got.shape == (4, 6, 1, frames)
    assert float((got - x.mean(dim=2, keepdim=True)).abs().max()) < 1e-6


def test_one_frame_step_graph_reduces_over_a_last_axis_only():
    """With one frame per call no ReduceMean reduces a middle axis of [B, C, F, 1] (ONNX Runtime's
    slow general path): each frequency mean is a ReduceMean over the last axis of [B, C, F]."""
    import onnx
    import onnx.numpy_helper

    from kwsdeploy.exporters.onnx import export_step

    proto = onnx.shape_inference.infer_shapes(export_step(to_streaming(create("bcresnet1-causal").eval()), exporter="legacy"))
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(proto.graph.value_info) + list(proto.graph.input)}
    consts = {i.name: onnx.numpy_helper.to_array(i).tolist() for i in proto.graph.initializer}
    means = []
    for node in proto.graph.node:
        if node.op_type == "ReduceMean":  # axes: an input from opset 18, an attribute before
            attr = [list(a.ints) for a in node.attribute if a.name == "axes"]
            axes = attr[0] if attr else consts.get(node.input[1]) if len(node.input) > 1 else None
            means.append((ranks.get(node.input[0]), axes))
    block_means = [m for m in means if m[0] == 3]
    assert len(block_means) >= 12, means
    assert all(axes in ([-1], [2]) for _, axes in block_means), means
    assert not [m for m in means if m[0] == 4 and m[1] == [2]], means
