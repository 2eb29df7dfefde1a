"""Exact step form of causal BC-ResNet (`bcresnet*-causal`): one or more feature frames per call.

BatchNorm is folded into the convolution before it; SubSpectralNorm becomes a per-(channel,
frequency row) scale and shift. Each time convolution (conv1, the temporal depthwise conv of every
block, conv2) keeps its last input frames as state; frequency rows pass through untouched. conv3
and conv4 are linear without bias, so they merge into one per-frame classifier, and the global
time mean becomes the mean over the last 98 per-frame outputs (state `state.pool.pool`).
`packet_frames=k` (default 1) feeds k frames per call and returns the logits after the last one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import CLIP_FRAMES
from kwsdeploy.models.bcresnet import BCResNet, TransitionBlock, frequency_sizes
from kwsdeploy.models.registry import display_name, kws_info
from kwsdeploy.streaming.convert import register_converter
from kwsdeploy.streaming.fold import fold_conv_bn
from kwsdeploy.streaming.layers import (
    StepModule,
    StreamMeanPool,
    collect_state_specs,
    exact_stream_spec,
    resolve_packet_frames,
)
from kwsdeploy.streaming.layers2d import StreamTimeConv2d, subband_scale_shift


class StepBlock(nn.Module):
    """One BC-ResNet block (either kind) as a step: `y, new_state = block(x, state)`."""

    def __init__(self, block: nn.Module, name: str, rows_in: int, rows_out: int) -> None:
        super().__init__()
        self.transition = isinstance(block, TransitionBlock)
        planes = block.freq_dw_conv.out_channels
        if self.transition:
            w, b = fold_conv_bn(block.conv1x1_1, block.bn1)
            self.register_buffer("in_weight", w)
            self.register_buffer("in_bias", b)
            ssn, bn, conv1x1 = block.ssn, block.bn2, block.conv1x1_2
        else:
            ssn, bn, conv1x1 = block.ssn1, block.bn, block.conv1x1
        self.register_buffer("freq_weight", block.freq_dw_conv.weight.detach().float().clone())
        self.freq_stride = int(block.freq_dw_conv.stride[0])
        self.groups = int(planes)
        scale, shift = subband_scale_shift(ssn.bn, planes, rows_out)
        self.register_buffer("ssn_scale", scale)
        self.register_buffer("ssn_shift", shift)
        self.temporal = StreamTimeConv2d.from_conv(block.temp_dw_conv, bn, name, in_rows=1)
        self.register_buffer("out_weight", conv1x1.weight.detach().float().clone())

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(F.conv2d(x, self.in_weight, self.in_bias)) if self.transition else x
        aux = F.conv2d(out, self.freq_weight, None, (self.freq_stride, 1), (1, 0), 1, self.groups)
        aux = aux * self.ssn_scale + self.ssn_shift
        temporal, state = self.temporal(frequency_mean(aux), state)
        temporal = F.conv2d(F.silu(temporal), self.out_weight)
        residual = aux + temporal if self.transition else x + aux + temporal
        return F.relu(residual), state


def frequency_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the frequency axis of x [B, C, F, T], keeping it: [B, C, 1, T].

    With one frame per call (T = 1, the natural packet) this is a mean over the last axis of
    [B, C, F]: ONNX Runtime's ReduceMean over axis 2 of [B, C, F, 1] takes its slow general path
    (bcresnet1-causal at batch 64: ReduceMean 1,041 of 2,370 us per call, 67 us in this form;
    benchmarks/results/<machine>/step_graph_batch_layout.md)."""
    channels, rows, frames = (int(d) for d in x.shape[1:])
    if frames == 1:
        return x.reshape(-1, channels, rows).mean(dim=-1).reshape(-1, channels, 1, 1)
    return x.mean(dim=2, keepdim=True)


class StreamingBCResNet(StepModule):
    """Step form: `logits, *new_state = step(features [B, n_mfcc, P], *state)`, any P >= 1."""

    def __init__(self, model: BCResNet, packet_frames: int | None = None,
                 feature_config: FeatureConfig | None = None, window_frames: int = CLIP_FRAMES) -> None:
        super().__init__()
        if not getattr(model, "causal", False):
            raise ValueError(
                "Only a causal BC-ResNet (bcresnet1-causal, bcresnet8-causal, or causal=True) has an exact "
                "step form; the reference's 'same' time padding needs future frames. Use mode='windowed'."
            )
        model = model.eval()
        packet = resolve_packet_frames(packet_frames, 1, display_name(model))
        n_mfcc = kws_info(model).n_mfcc
        num_classes = int(model.conv4.out_channels)
        rows = frequency_sizes(n_mfcc)  # after conv1, after each block, after conv2
        self.conv1 = StreamTimeConv2d.from_conv(model.conv1, None, "conv1", in_rows=n_mfcc)
        self.blocks = nn.ModuleList(
            StepBlock(block, name, rows[i], rows[i + 1]) for i, (name, block) in enumerate(model.blocks())
        )
        self.conv2 = StreamTimeConv2d.from_conv(model.conv2, None, "conv2", in_rows=rows[-2])
        # conv3 and conv4 are bias-free 1x1 convs: their product classifies each frame.
        head = model.conv4.weight.detach().flatten(1).double() @ model.conv3.weight.detach().flatten(1).double()
        self.register_buffer("head_weight", head.float())
        self.pool = StreamMeanPool(num_classes, window_frames, name="pool")
        layers = [self.conv1, *(b.temporal for b in self.blocks), self.conv2, self.pool]
        # BC-ResNet never strides in time: any packet is exact.
        self.stream_spec = exact_stream_spec(
            packet, window_frames, n_mfcc, num_classes, collect_state_specs(layers), feature_config
        )
        # A zero-padded clip ends on the offline logits when its last packet ends on its last frame.
        self.clip_exact = window_frames % packet == 0

    def forward(self, features: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, conv1_state = self.conv1(features.unsqueeze(1), state[0])
        new_state = [conv1_state]
        for i, block in enumerate(self.blocks):
            out, block_state = block(out, state[1 + i])
            new_state.append(block_state)
        out, conv2_state = self.conv2(out, state[-2])
        new_state.append(conv2_state)
        per_frame = torch.matmul(self.head_weight, out.flatten(1, 2))  # [B, classes, P]
        logits, pool_state = self.pool(per_frame, state[-1])
        new_state.append(pool_state)
        return (logits, *new_state)


register_converter("bcresnet", StreamingBCResNet)
