"""Exact step form of causal MatchboxNet (`matchboxnet-causal`).

Each separable sub-block becomes a ring-buffer depthwise `StreamConv1d` (kernel and dilation aware;
the k=1 block needs no state) followed by the pointwise conv with its BatchNorm folded in; the
residual 1x1 conv + BatchNorm is folded the same way; global average pooling becomes a mean over
the last 98 frames. The network has no stride, so a packet is 1 frame by default (any packet
length streams; clip parity needs the clip to be a whole number of packets).
"""

from __future__ import annotations

import torch
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import CLIP_FRAMES
from kwsdeploy.models.matchboxnet import MatchboxNet
from kwsdeploy.models.registry import display_name
from kwsdeploy.streaming.convert import register_converter
from kwsdeploy.streaming.layers import (
    StepModule,
    StreamConv1d,
    StreamMeanPool,
    collect_state_specs,
    exact_stream_spec,
    require_causal,
    resolve_packet_frames,
    step_layer,
)


class _StepBlock(nn.Module):
    """One encoder block: (depthwise, pointwise+BN) pairs and an optional folded residual conv."""

    def __init__(self, depthwise: list[StreamConv1d], pointwise: list[StreamConv1d], residual: StreamConv1d | None) -> None:
        super().__init__()
        self.depthwise = nn.ModuleList(depthwise)
        self.pointwise = nn.ModuleList(pointwise)
        self.residual = residual


class MatchboxNetStep(StepModule):
    """`logits, *new_state = step(features [B, n_mfcc, packet], *state)` for a causal MatchboxNet."""

    def __init__(
        self,
        model: MatchboxNet,
        packet_frames: int | None = None,
        feature_config: FeatureConfig | None = None,
        clip_frames: int = CLIP_FRAMES,
    ) -> None:
        super().__init__()
        require_causal(model, "MatchboxNet ('matchboxnet-causal')")
        model = model.eval()
        packet = resolve_packet_frames(packet_frames, 1, display_name(model))
        blocks = []
        layers: list[nn.Module] = []
        for i, block in enumerate(model.blocks):
            dws, pws = [], []
            for j, sub in enumerate(block.layers):
                dws.append(StreamConv1d.from_conv(sub.depthwise, None, name=f"block{i}_sub{j}_depthwise"))
                pws.append(StreamConv1d.from_conv(sub.pointwise, sub.bn, name=f"block{i}_sub{j}_pointwise"))
                layers += [dws[-1], pws[-1]]
            residual = None
            if block.res_conv is not None:
                residual = StreamConv1d.from_conv(block.res_conv, block.res_bn, name=f"block{i}_residual")
                layers.append(residual)
            blocks.append(_StepBlock(dws, pws, residual))
        self.blocks = nn.ModuleList(blocks)
        channels = model.head.in_features
        self.pool = StreamMeanPool(channels, window=clip_frames, name="pool")
        layers.append(self.pool)
        self.head = model.head  # shared with the offline model
        self.relu = nn.ReLU()
        self.stream_spec = exact_stream_spec(
            packet, clip_frames, model.in_features, model.head.out_features, collect_state_specs(layers), feature_config
        )
        # A zero-padded clip ends on the offline logits when its last packet ends on its last frame.
        self.clip_exact = clip_frames % packet == 0

    def forward(self, features: torch.Tensor, *state: torch.Tensor):
        states = iter(state)
        new: list[torch.Tensor] = []
        x = features
        for blk in self.blocks:
            h = x
            n = len(blk.depthwise)
            for j, (dw, pw) in enumerate(zip(blk.depthwise, blk.pointwise)):
                h = step_layer(pw, step_layer(dw, h, states, new), states, new)
                if j < n - 1:
                    h = self.relu(h)
            if blk.residual is not None:
                h = h + step_layer(blk.residual, x, states, new)
            x = self.relu(h)
        pooled = step_layer(self.pool, x, states, new)
        return (self.head(pooled), *new)


register_converter("matchboxnet", MatchboxNetStep)
