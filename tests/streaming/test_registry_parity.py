"""Streaming parity for every registry card, generated from the registry.

`exact` cards: the step form fed a 98-frame clip packet by packet from the zero state gives the
offline logits (after the declared delay) within STEP_PARITY_ATOL. `windowed` cards: the window
recompute equals the offline model on the clip, and on a longer stream on every window.
Forward parity skips the two largest sizes of a family (streaming mode) but never a whole family.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy import tolerances
from kwsdeploy.models import list_cards
from kwsdeploy.streaming.convert import to_streaming
from kwsdeploy.streaming.costs import HOP_FRAMES, step_costs
from kwsdeploy.streaming.windowed import WindowedStream

CARDS = list_cards()
FRAMES = 98


def _forward_cards(mode: str) -> list:
    """Cards of `mode`, without the two largest of each family (the smallest always stays)."""
    groups: dict[str, list] = defaultdict(list)
    for card in CARDS:
        if card.streaming == mode:
            groups[card.family].append(card)
    kept = []
    for family_cards in groups.values():
        ordered = sorted(family_cards, key=lambda c: c.expected_params or 0)
        kept += ordered[: max(1, len(ordered) - 2)]
    return kept


EXACT = _forward_cards("exact")
WINDOWED = _forward_cards("windowed")


def _randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                if m.affine:
                    m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                    m.bias.copy_(0.2 * torch.randn(n, generator=g))
    return model.eval()


def _build(card, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise_batchnorm(card.build(num_classes=12), seed + 1)


def _clip(batch: int, n_mfcc: int, frames: int = FRAMES, seed: int = 7) -> torch.Tensor:
    return torch.randn(batch, n_mfcc, frames, generator=torch.Generator().manual_seed(seed))


def test_every_family_is_covered():
    families = {(c.family, c.streaming) for c in CARDS}
    assert families == {(c.family, c.streaming) for c in EXACT + WINDOWED}


@pytest.mark.parametrize("card", EXACT, ids=[c.name for c in EXACT])
def test_exact_step_form_reproduces_offline_logits(card):
    model = _build(card)
    step = to_streaming(model)
    spec = step.stream_spec
    assert spec.mode == "exact" and spec.n_mfcc == card.n_mfcc and spec.num_classes == 12
    assert all(s.name.startswith("state.") and s.name.count(".") == 2 for s in spec.states)
    clip = _clip(2, card.n_mfcc)
    with torch.no_grad():
        offline = model(clip[:, None])
        packets = spec.warmup_packets
        fed = F.pad(clip, (0, packets * spec.packet_frames - FRAMES))  # the tail is zeros
        state = step.init_state(2)
        assert [tuple(s.shape[1:]) for s in state] == [s.shape for s in spec.states]
        for i in range(packets):
            logits, *state = step(fed[..., i * spec.packet_frames : (i + 1) * spec.packet_frames], *state)
            assert torch.isfinite(logits).all()
    assert logits.shape == (2, 12)
    err = (logits - offline).abs().max().item()
    assert err <= tolerances.STEP_PARITY_ATOL, f"{card.name}: max |step - offline| = {err:.3g}"


def _windowed_logits(stream: WindowedStream, features: torch.Tensor) -> list[torch.Tensor]:
    hop = stream.stream_spec.packet_frames
    (window,) = stream.init_state(features.shape[0])
    out = []
    for i in range(features.shape[-1] // hop):
        logits, window = stream(features[..., i * hop : (i + 1) * hop], window)
        out.append(logits)
    return out


@pytest.mark.parametrize("card", WINDOWED, ids=[c.name for c in WINDOWED])
def test_windowed_stream_equals_offline_on_every_window(card):
    model = _build(card)
    hop = 49  # two packets per clip keeps the large models fast; hop 10 is checked below
    stream = to_streaming(model, hop_frames=hop)
    assert isinstance(stream, WindowedStream) and stream.stream_spec.mode == "windowed"
    features = _clip(1, card.n_mfcc, FRAMES + 2 * hop)
    with torch.no_grad():
        got = _windowed_logits(stream, features)[1:]  # from the first full window on
        windows = torch.cat([features[..., k * hop : k * hop + FRAMES] for k in range(len(got))])
        want = model(windows[:, None])
    for k, logits in enumerate(got):
        err = (logits[0] - want[k]).abs().max().item()
        assert err <= tolerances.STEP_PARITY_ATOL, f"{card.name}, window {k}: {err:.3g}"


def test_windowed_default_hop_is_100ms_and_exact_on_each_window():
    card = min(WINDOWED, key=lambda c: c.expected_params or 0)
    model = _build(card)
    stream = to_streaming(model)
    assert stream.stream_spec.packet_frames == HOP_FRAMES
    assert stream.stream_spec.warmup_packets == math.ceil(FRAMES / HOP_FRAMES)
    features = _clip(2, card.n_mfcc, 140)  # 14 hops: windows end at frames 98 (padded), 100 .. 140
    with torch.no_grad():
        got = _windowed_logits(stream, features)
        padded = F.pad(features, (FRAMES, 0))  # before a full window, the ring buffer holds zeros
        for i, logits in enumerate(got):
            end = FRAMES + (i + 1) * HOP_FRAMES
            want = model(padded[..., end - FRAMES : end][:, None])
            assert (logits - want).abs().max().item() <= tolerances.STEP_PARITY_ATOL


@pytest.mark.parametrize("card", EXACT, ids=[c.name for c in EXACT])
def test_exact_step_costs_less_per_hop_than_recomputing_the_window(card):
    costs = step_costs(card, _build(card))
    assert costs["macs_per_hop_windowed"] > 0
    assert costs["macs_per_step"] > 0, f"{card.name}: the MAC counter saw nothing in the step form"
    assert costs["macs_per_hop"] == round(costs["macs_per_step"] * HOP_FRAMES / costs["packet_frames"])
    # A hop is 10 of the window's 98 frames: the step form should cost about 10/98 of a recompute.
    assert 0.05 < costs["step_vs_window_ratio"] < 0.5, costs


def test_windowed_cards_report_the_window_recompute():
    card = min(WINDOWED, key=lambda c: c.expected_params or 0)
    costs = step_costs(card, _build(card))
    assert costs["packet_frames"] == HOP_FRAMES
    assert costs["macs_per_hop"] == costs["macs_per_hop_windowed"] == costs["macs_per_step"] > 0
    assert costs["step_vs_window_ratio"] == 1.0


def test_every_step_form_is_a_step_module_with_the_one_signature():
    import inspect

    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.streaming.layers import StepModule
    from kwsdeploy.streaming.windowed import ReferenceWindowedStream

    small = {c.family: c for c in reversed(_forward_cards("exact"))}  # one (the smallest) per exact family
    steps = [to_streaming(create_small(c)) for c in small.values()]
    steps.append(to_streaming(create_small(_forward_cards("windowed")[0]), mode="windowed"))
    classes = {type(s) for s in steps} | {ReferenceWindowedStream}
    assert len(classes) == len(small) + 2
    for cls in classes:
        assert issubclass(cls, StepModule), cls
        init = list(inspect.signature(cls.__init__).parameters)[:4]
        assert init == ["self", "model", "packet_frames", "feature_config"], (cls, init)
        fwd = inspect.signature(cls.forward).parameters
        assert list(fwd)[:2] == ["self", "features"] and fwd["state"].kind is inspect.Parameter.VAR_POSITIONAL, cls
    for s in steps:
        state = s.init_state(2)
        assert [tuple(t.shape[1:]) for t in state] == [x.shape for x in s.stream_spec.states]
        logits, *new = s(torch.zeros(2, s.stream_spec.n_mfcc, s.stream_spec.packet_frames), *state)
        assert logits.shape == (2, s.stream_spec.num_classes) and len(new) == len(state)
    ref = to_streaming(create_small(_forward_cards("windowed")[0]), feature_config=FeatureConfig.reference())
    assert isinstance(ref, ReferenceWindowedStream) and ref.stream_spec.packet_frames == 10


def create_small(card):
    from kwsdeploy.models import create

    torch.manual_seed(0)
    return create(card.name, n_mfcc=40).eval()
