"""ConvMixer streams only in windowed mode (its time-mixing MLP spans all 98 frames): the window
recompute equals the offline model on the last 98 frames, and an exact step form is refused."""

from __future__ import annotations

import pytest
import torch

from kwsdeploy.models import create, get_card
from kwsdeploy.models.registry import UnknownModelError
from kwsdeploy.streaming.convert import to_streaming
from kwsdeploy.tolerances import STEP_PARITY_ATOL


def test_card_says_why_it_is_windowed():
    card = get_card("convmixer")
    assert card.streaming == "windowed"
    assert "time_mix" in card.notes and "98 frames" in card.notes


def test_no_causal_configuration_is_registered():
    with pytest.raises(UnknownModelError):
        get_card("convmixer-causal")


def test_exact_mode_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="time_mix"):
        to_streaming(create("convmixer", n_mfcc=64), mode="exact")


@pytest.mark.parametrize("n_mfcc", [64, 40])
def test_window_recompute_equals_offline_on_the_last_window(n_mfcc):
    torch.manual_seed(n_mfcc)
    model = create("convmixer", n_mfcc=n_mfcc).eval()
    step = to_streaming(model, hop_frames=20)
    spec = step.stream_spec
    assert (spec.mode, spec.packet_frames, spec.window_frames, spec.n_mfcc) == ("windowed", 20, 98, n_mfcc)
    stream = torch.randn(2, n_mfcc, 140, generator=torch.Generator().manual_seed(1))
    state = step.init_state(2)
    with torch.no_grad():
        for start in range(0, 140, 20):
            logits, *state = step(stream[..., start:start + 20], *state)
        offline = model(stream[:, None, :, -98:])
    assert (logits - offline).abs().max().item() < STEP_PARITY_ATOL
    assert offline.abs().max().item() > 0.05
