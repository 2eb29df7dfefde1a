"""`to_streaming(model, packet_frames=k)` for every exact card, generated from the registry.

For every exact card: the spec says k, bad k fail with one line, and a k-frame call equals k/natural
natural calls on a random stream from a random state (logits and every state tensor). For the
smallest card of each family: a 98-frame clip streamed from the zero state in k-frame packets (tail
zero-padded) ends on the offline logits, for the natural packet and a larger one; and the k-frame
step exports to ONNX as straight-line code that ONNX Runtime runs to the same numbers.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy import tolerances
from kwsdeploy.models import list_cards
from kwsdeploy.streaming.convert import to_streaming

FRAMES = 98
EXACT = [c for c in list_cards() if c.streaming == "exact"]
_BY_FAMILY: dict[str, list] = defaultdict(list)
for _card in EXACT:
    _BY_FAMILY[_card.family].append(_card)
SMALL = [min(cards, key=lambda c: c.expected_params or 0) for cards in _BY_FAMILY.values()]


@functools.lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    """A random-init model with non-trivial BatchNorm statistics (conv nets) or perturbed parameters (KWM)."""
    card = next(c for c in EXACT if c.name == name)
    torch.manual_seed(0)
    model = card.build(num_classes=12)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
        if card.family == "kwm":
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _natural(card) -> int:
    return to_streaming(_model(card.name)).stream_spec.packet_frames


def _larger(natural: int) -> int:
    """The larger packet of the equivalence test: 10 frames (100 ms) for 1-frame nets, 2 packets otherwise."""
    return 10 if natural == 1 else 2 * natural


def test_every_exact_family_is_covered():
    assert {c.family for c in SMALL} == {c.family for c in EXACT} == {"tcresnet", "matchboxnet", "bcresnet", "kwm"}
    assert {c.name: _natural(c) for c in SMALL} == {
        "tcresnet8-causal": 8, "matchboxnet-causal": 1, "bcresnet1-causal": 1, "kwm-causal-64-4": 1
    }


@pytest.mark.parametrize("card", EXACT, ids=[c.name for c in EXACT])
def test_spec_says_k_and_bad_k_fail_in_one_line(card):
    model = _model(card.name)
    base = to_streaming(model)
    n = base.stream_spec.packet_frames
    for k in (n, 2 * n, 13 * n):
        step = to_streaming(model, packet_frames=k)
        spec = step.stream_spec
        assert spec.packet_frames == k and spec.warmup_packets == math.ceil(FRAMES / k)
        assert spec.states == base.stream_spec.states  # the state does not depend on k
        out = step(torch.zeros(2, spec.n_mfcc, k), *step.init_state(2))
        assert out[0].shape == (2, 12) and [o.shape for o in out[1:]] == [s.shape for s in step.init_state(2)]
    bad = [0, -n, 2.5, True, "8"] + ([n + 4, n // 2] if n > 1 else [])
    for k in bad:
        with pytest.raises(ValueError, match=r"^packet_frames must be a positive (integer|multiple of \d+ \(.*\)), got .*\.$") as err:
            to_streaming(model, packet_frames=k)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("card", EXACT, ids=[c.name for c in EXACT])
def test_k_frame_call_equals_k_natural_calls_on_a_random_stream(card):
    model = _model(card.name)
    one = to_streaming(model)
    n = one.stream_spec.packet_frames
    k = _larger(n)
    many = to_streaming(model, packet_frames=k)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, one.stream_spec.n_mfcc, 3 * k, generator=g)
    state0 = tuple(0.3 * torch.randn(s.shape, generator=g) for s in one.init_state(2))  # mid-stream state
    s1, sk = state0, state0
    worst = 0.0
    with torch.no_grad():
        for i in range(3):
            for j in range(k // n):
                start = i * k + j * n
                logits_1, *s1 = one(x[..., start : start + n], *s1)
            logits_k, *sk = many(x[..., i * k : (i + 1) * k], *sk)
            errs = [(logits_k - logits_1).abs().max().item()]
            errs += [(a - b).abs().max().item() for a, b in zip(sk, s1)]
            worst = max(worst, *errs)
    assert len(sk) == len(state0)
    assert worst <= tolerances.STEP_PARITY_ATOL, f"{card.name}, k={k}: max |k-frame - {k // n} x {n}-frame| = {worst:.3g}"
    assert logits_1.abs().max().item() > 1e-2  # not a comparison of vanishing numbers


def _second_parity_packet(model: nn.Module, natural: int) -> int:
    """2 x natural if a zero-padded clip still ends on the offline logits, else the whole padded clip in one call.

    TC-ResNet: 16-frame packets would pool stride-8 frames 1..13 of a 112-frame padded clip, not 0..12.
    """
    padded = math.ceil(FRAMES / natural) * natural
    return next(k for k in (2 * natural, padded) if to_streaming(model, packet_frames=k).clip_exact)


@pytest.mark.parametrize("card", SMALL, ids=[c.name for c in SMALL])
def test_clip_streamed_in_k_frame_packets_equals_offline(card):
    model = _model(card.name)
    n = _natural(card)
    packets = [n, _second_parity_packet(model, n)]
    assert packets[1] == (104 if n == 8 else 2)
    clip = torch.randn(2, card.n_mfcc, FRAMES, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        offline = model(clip[:, None])
        for k in packets:
            step = to_streaming(model, packet_frames=k)
            assert step.clip_exact
            calls = step.stream_spec.warmup_packets
            fed = F.pad(clip, (0, calls * k - FRAMES))  # the tail is zeros
            state = step.init_state(2)
            for i in range(calls):
                logits, *state = step(fed[..., i * k : (i + 1) * k], *state)
            err = (logits - offline).abs().max().item()
            assert err <= tolerances.STEP_PARITY_ATOL, f"{card.name}, k={k}: max |step - offline| = {err:.3g}"
    assert offline.abs().max().item() > 1e-2


@pytest.mark.parametrize("card", SMALL, ids=[c.name for c in SMALL])
def test_clip_exact_is_false_where_padding_reaches_the_logits(card):
    """A packet that does not end on the clip's last frame (10 frames; 16 for TC-ResNet) reads padding."""
    model = _model(card.name)
    k = _larger(_natural(card))
    step = to_streaming(model, packet_frames=k)
    assert not step.clip_exact
    clip = torch.randn(1, card.n_mfcc, FRAMES, generator=torch.Generator().manual_seed(4))
    fed = F.pad(clip, (0, step.stream_spec.warmup_packets * k - FRAMES))
    state = step.init_state(1)
    with torch.no_grad():
        for i in range(step.stream_spec.warmup_packets):
            logits, *state = step(fed[..., i * k : (i + 1) * k], *state)
        err = (logits - model(clip[:, None])).abs().max().item()
    assert err > 2 * tolerances.STEP_PARITY_ATOL, err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notice
@pytest.mark.parametrize("card", SMALL, ids=[c.name for c in SMALL])
def test_k_frame_step_exports_to_straight_line_onnx(card):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = _model(card.name)
    k = _larger(_natural(card))
    step = to_streaming(model, packet_frames=k)
    spec = step.stream_spec
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, spec.n_mfcc, k, generator=g)
    state = tuple(0.3 * torch.randn(s.shape, generator=g) for s in step.init_state(1))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step, (x, *state), buf, input_names=["features", *spec.state_names],
            output_names=["logits", *spec.new_state_names], opset_version=17, dynamo=False,
        )
    graph = onnx.load_from_string(buf.getvalue()).graph
    assert not {n.op_type for n in graph.node} & {"Loop", "Scan", "If"}
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, spec.n_mfcc, k]  # a fixed packet per graph
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": x.numpy(), **{n: s.numpy() for n, s in zip(spec.state_names, state)}})
    with torch.no_grad():
        want = step(x, *state)
    err = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(got, want))
    assert err <= tolerances.ONNX_PARITY_ATOL, f"{card.name}, k={k}: max |ORT - torch| = {err:.3g}"
