"""Exact step form of causal TC-ResNet (`tcresnet8-causal`, `tcresnet14-causal`).

Every conv becomes a ring-buffer `StreamConv1d` with its BatchNorm folded in; the stride-2 1x1
shortcut takes every other frame of the packet; global average pooling becomes a mean over the last
`window` output frames (13 for a 98-frame clip). A packet is the network's total time stride
(8 frames) by default, so each call emits exactly one pooled frame; `packet_frames=8m` emits m
pooled frames per call and returns the logits after the last one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import CLIP_FRAMES
from kwsdeploy.models._time_conv import conv_output_frames
from kwsdeploy.models.registry import display_name
from kwsdeploy.models.tcresnet import TCResNet
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
    """One residual block's stream layers (shortcut is None for identity)."""

    def __init__(self, conv1: StreamConv1d, conv2: StreamConv1d, shortcut: StreamConv1d | None) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2
        self.shortcut = shortcut


class TCResNetStep(StepModule):
    """`logits, *new_state = step(features [B, n_mfcc, packet], *state)` for a causal TCResNet."""

    def __init__(
        self,
        model: TCResNet,
        packet_frames: int | None = None,
        feature_config: FeatureConfig | None = None,
        clip_frames: int = CLIP_FRAMES,
    ) -> None:
        super().__init__()
        require_causal(model, "TC-ResNet (e.g. 'tcresnet8-causal')")
        model = model.eval()
        stride = model.time_stride
        packet = resolve_packet_frames(packet_frames, stride, display_name(model))
        self.stem = StreamConv1d.from_conv(model.stem, None, name="stem")
        blocks = []
        frames = conv_output_frames(clip_frames, model.stem.kernel_size[0], causal=True)
        for i, b in enumerate(model.blocks):
            shortcut = None
            if b.shortcut_conv is not None:
                shortcut = StreamConv1d.from_conv(b.shortcut_conv, b.shortcut_bn, name=f"block{i}_shortcut")
            blocks.append(
                _StepBlock(
                    StreamConv1d.from_conv(b.conv1, b.bn1, name=f"block{i}_conv1"),
                    StreamConv1d.from_conv(b.conv2, b.bn2, name=f"block{i}_conv2"),
                    shortcut,
                )
            )
            frames = conv_output_frames(frames, b.conv1.kernel_size[0], stride=b.stride, causal=True)
        self.blocks = nn.ModuleList(blocks)
        # The offline model averages `frames` pooled frames of a clip; the stream averages the last `frames`.
        self.pool = StreamMeanPool(model.channels[-1], window=frames, name="pool")
        self.head = model.head  # shared with the offline model
        self.relu = nn.ReLU()
        layers: list[nn.Module] = [self.stem]
        for blk in self.blocks:
            layers += [blk.conv1, blk.conv2] + ([blk.shortcut] if blk.shortcut is not None else [])
        layers.append(self.pool)
        self.stream_spec = exact_stream_spec(
            packet, clip_frames, model.in_features, model.head.out_features, collect_state_specs(layers), feature_config
        )
        # Clip parity holds when the zero-padded clip yields exactly `frames` pooled frames.
        self.clip_exact = math.ceil(clip_frames / packet) * packet // stride == frames

    def forward(self, features: torch.Tensor, *state: torch.Tensor):
        states = iter(state)
        new: list[torch.Tensor] = []
        x = step_layer(self.stem, features, states, new)
        for blk in self.blocks:
            h = self.relu(step_layer(blk.conv1, x, states, new))
            h = step_layer(blk.conv2, h, states, new)
            res = x if blk.shortcut is None else self.relu(step_layer(blk.shortcut, x, states, new))
            x = self.relu(h + res)
        pooled = step_layer(self.pool, x, states, new)
        return (self.head(pooled), *new)


register_converter("tcresnet", TCResNetStep)
