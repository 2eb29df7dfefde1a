"""Stream layers: ring-buffer convs equal offline causal convs; the windowed pool equals the mean; folding is exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy.streaming.fold import fold_conv_bn
from kwsdeploy.models._time_conv import TimeConv1d, conv_output_frames, time_padding
from kwsdeploy.streaming.layers import StreamConv1d, StreamMeanPool
from kwsdeploy.tolerances import STEP_PARITY_ATOL


def _random_bn(channels: int, gen: torch.Generator) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(channels).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
        bn.weight.copy_(torch.randn(channels, generator=gen))
        bn.bias.copy_(torch.randn(channels, generator=gen))
    return bn


def test_padding_conventions():
    assert time_padding(9, 1, causal=False) == (4, 4)
    assert time_padding(9, 1, causal=True) == (8, 0)
    assert time_padding(29, 2, causal=True) == (56, 0)
    assert conv_output_frames(98, 9, stride=2, causal=True) == 49
    assert conv_output_frames(98, 9, stride=2, causal=False) == 49
    assert conv_output_frames(25, 1, stride=2) == 13


@pytest.mark.parametrize(
    "kernel,stride,dilation,groups,packet",
    [(9, 2, 1, 1, 8), (3, 1, 1, 1, 1), (29, 1, 2, 1, 1), (13, 1, 1, 16, 4), (1, 2, 1, 1, 2), (5, 4, 3, 2, 4)],
)
def test_stream_conv_equals_offline_causal_conv_with_folded_bn(kernel, stride, dilation, groups, packet):
    gen = torch.Generator().manual_seed(kernel * 100 + stride)
    out_ch = 16 if groups > 1 else 8
    conv = TimeConv1d(16, out_ch, kernel, stride=stride, dilation=dilation, groups=groups, causal=True, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
    bn = _random_bn(out_ch, gen)
    x = torch.randn(3, 16, 96, generator=gen)
    with torch.no_grad():
        offline = bn(conv.eval()(x))
        step = StreamConv1d.from_conv(conv, bn, name="layer")
        spec = step.state_spec
        state = None if spec is None else torch.zeros(3, *spec.shape)
        outs = []
        for i in range(0, 96, packet):
            y, state = step(x[..., i : i + packet], state)
            outs.append(y)
    streamed = torch.cat(outs, dim=-1)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max().item() < STEP_PARITY_ATOL
    if kernel > 1:
        assert spec.name == "state.layer.conv" and spec.shape == (16, dilation * (kernel - 1))


def test_same_padded_conv_is_refused():
    with pytest.raises(ValueError, match="causal"):
        StreamConv1d.from_conv(TimeConv1d(4, 4, 3, causal=False), None, name="c")


def test_stream_mean_pool_equals_mean_of_last_window():
    x = torch.randn(2, 5, 20)
    pool = StreamMeanPool(5, window=7, name="head")
    state = torch.zeros(2, 5, 6)
    for i in range(0, 20, 2):
        pooled, state = pool(x[..., i : i + 2], state)
    assert pool.state_spec.name == "state.head.pool"
    assert (pooled - x[..., -7:].mean(-1)).abs().max().item() < 1e-6


def test_fold_matches_conv_then_bn():
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv1d(6, 4, 3)
    bn = _random_bn(4, gen)
    x = torch.randn(2, 6, 10, generator=gen)
    w, b = fold_conv_bn(conv, bn)
    with torch.no_grad():
        err = (torch.nn.functional.conv1d(x, w, b) - bn(conv(x))).abs().max().item()
    assert err < 1e-5


@pytest.mark.parametrize("stride,dilation,groups", [(1, 1, 1), (2, 1, 1), (1, 3, 1), (1, 1, 4), (2, 2, 8)])
def test_batch_as_height_conv_equals_conv1d(stride, dilation, groups):
    from kwsdeploy.streaming.layers import batch_as_height_conv1d

    gen = torch.Generator().manual_seed(stride * 100 + dilation * 10 + groups)
    x = torch.randn(5, 8, 23, generator=gen)
    w, b = torch.randn(16, 8 // groups, 3, generator=gen), torch.randn(16, generator=gen)
    want = F.conv1d(x, w, b, stride=stride, dilation=dilation, groups=groups)
    got = batch_as_height_conv1d(x, w, b, stride, dilation, groups)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 1e-5
    assert float((batch_as_height_conv1d(x, w, None, stride, dilation, groups) - (want - b[:, None])).abs().max()) < 1e-5


@pytest.mark.parametrize("name", ["tcresnet8-causal", "matchboxnet-causal"])
def test_step_graph_convs_run_the_batch_as_one_image(name):
    """Every Conv of the exported step graph is 2-D over [1, C, B, T] (one GEMM for all streams),
    none a 1-D Conv over [B, C, T] (one small GEMM per stream); a dense conv with one output frame
    per call is a Gemm."""
    from kwsdeploy.exporters.onnx import export_step
    from kwsdeploy.models import create
    from kwsdeploy.streaming.convert import to_streaming

    step = to_streaming(create(name).eval(), packet_frames=8)
    proto = export_step(step, exporter="legacy")
    weights = {i.name: len(i.dims) for i in proto.graph.initializer}
    ranks = [weights[n.input[1]] for n in proto.graph.node if n.op_type == "Conv"]
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]  # the head, and one-frame dense convs
    assert set(ranks) == {4}, ranks
    assert len(ranks) + len(gemms) - 1 == sum(1 for m in step.modules() if isinstance(m, StreamConv1d))


class _OneConvStep(nn.Module):
    """One StreamConv1d as a step graph: (x, state) -> (y, new state)."""

    def __init__(self, layer: StreamConv1d) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x, state):
        y, new_state = self.layer(x, state)
        return y, x[..., :0] if new_state is None else new_state


@pytest.mark.parametrize(
    "kernel,stride,dilation,groups,packet,bias,op",
    [
        (3, 1, 1, 1, 1, True, "linear"),  # one output frame, the window is the taps
        (3, 1, 2, 1, 1, True, "linear"),  # dilated: a strided Slice of the taps
        (9, 2, 1, 1, 2, False, "linear"),  # strided: the window is longer than the taps
        (1, 2, 1, 1, 2, True, "linear"),  # kernel 1 with stride: the input's every 2nd frame
        (9, 2, 1, 1, 8, True, "Conv"),  # more than one output frame
        (5, 1, 2, 4, 1, True, "Conv"),  # grouped: never a Gemm
        (11, 1, 1, 8, 1, False, "Conv"),  # depthwise
    ],
)
def test_exported_step_conv_equals_the_eager_conv1d_at_any_batch(kernel, stride, dilation, groups, packet, bias, op):
    """Every form an export traces (one output frame of a dense conv: a Gemm of the taps, a MatMul
    without bias; else the batch-as-height 2-D Conv) gives eager torch's F.conv1d under ONNX Runtime
    at batch sizes other than the export's example (1, 3, 70)."""
    import io

    import numpy as np
    import onnx
    import onnxruntime as ort

    from kwsdeploy.tolerances import ONNX_PARITY_ATOL

    gen = torch.Generator().manual_seed(kernel * 1000 + stride * 100 + dilation * 10 + groups)
    w = torch.randn(16, 8 // groups, kernel, generator=gen) * 0.3
    layer = StreamConv1d(w, torch.randn(16, generator=gen) if bias else None, "c", stride, dilation, groups).eval()
    context = max(layer.context, 1)  # a kernel-1 conv has no state: feed a dummy frame
    buf = io.BytesIO()
    torch.onnx.export(
        _OneConvStep(layer), (torch.randn(2, 8, packet), torch.zeros(2, 8, context)), buf, dynamo=False,
        input_names=["x", "s"], output_names=["y", "ns"], opset_version=18,
        dynamic_axes={n: {0: "batch"} for n in ("x", "s", "y", "ns")},
    )
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    linear = {"Gemm", "MatMul"}
    assert ops & ({"Conv"} if op == "Conv" else linear) and not ops & (linear if op == "Conv" else {"Conv"}), ops
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    feeds = {i.name for i in sess.get_inputs()}  # a kernel-1 conv's dummy state is not an input
    for batch in (1, 3, 70):
        x, s = torch.randn(batch, 8, packet, generator=gen), torch.randn(batch, 8, context, generator=gen)
        with torch.no_grad():
            want, want_state = layer(x, s if layer.context else None)
        got = sess.run(None, {k: v.numpy() for k, v in (("x", x), ("s", s)) if k in feeds})
        assert got[0].shape == tuple(want.shape)
        assert float(np.abs(got[0] - want.numpy()).max()) < ONNX_PARITY_ATOL
        if want_state is not None:
            assert np.array_equal(got[1], want_state.numpy())
