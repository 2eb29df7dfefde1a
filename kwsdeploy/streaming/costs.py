"""What one more hop of audio costs: MACs of the step form vs recomputing the whole window.

A hop is 10 feature frames (100 ms). `exact` cards are counted on their step module (one call on
one packet from the zero state, scaled to a hop); `windowed` cards recompute the 98-frame window
once per hop, so both figures are the offline model's MACs per clip.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kwsdeploy.contract import CLIP_FRAMES, WINDOW_HOP_FRAMES
from kwsdeploy.models.macs import forward_macs, macs_per_clip
from kwsdeploy.models.registry import kws_info

HOP_FRAMES = WINDOW_HOP_FRAMES  # costs are per 100 ms hop


def step_macs(step: nn.Module) -> int:
    """MACs of one call of a step module on one packet (batch 1, zero state)."""
    spec = step.stream_spec
    tensors = [*step.parameters(), *step.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    packet = torch.zeros(1, spec.n_mfcc, spec.packet_frames, device=device)
    state = tuple(s.to(device) for s in step.init_state(1))
    return forward_macs(step, packet, *state, frames=spec.packet_frames)


def step_costs(card: Any, model: nn.Module) -> dict[str, Any]:
    """MACs per step call and per 100 ms hop for the step form and for a windowed recompute.

    Keys: packet_frames, macs_per_step, macs_per_hop, macs_per_hop_windowed,
    step_vs_window_ratio (step MACs per hop / windowed MACs per hop; 1.0 for windowed cards).
    """
    n_mfcc = kws_info(model).n_mfcc
    frames = CLIP_FRAMES
    windowed = macs_per_clip(model, n_mfcc, frames=frames)
    costs: dict[str, Any] = {
        "packet_frames": HOP_FRAMES,
        "macs_per_step": windowed,
        "macs_per_hop": windowed,
        "macs_per_hop_windowed": windowed,
        "step_vs_window_ratio": 1.0,
    }
    if card.streaming != "exact":
        return costs
    from kwsdeploy.streaming.convert import to_streaming

    was_training = model.training
    try:
        step = to_streaming(model)  # puts the (shared) model in eval mode
    finally:
        model.train(was_training)
    packet = int(step.stream_spec.packet_frames)
    per_step = step_macs(step)
    per_hop = round(per_step * HOP_FRAMES / packet)
    costs.update(
        packet_frames=packet,
        macs_per_step=per_step,
        macs_per_hop=per_hop,
        step_vs_window_ratio=per_hop / windowed if windowed else None,
    )
    return costs
