"""Exact step form of causal BC-ResNet (`bcresnet*-causal`): one or more feature frames per call.

BatchNorm is folded into the convolution before it; SubSpectralNorm becomes a per-(channel,
frequency row) scale and shift. Each time convolution (conv1, the temporal depthwise conv of every
block, conv2) keeps its last input frames as state; frequency rows pass through untouched. conv3
and conv4 are linear without bias, so they are merged into one per-frame classifier, and the
global time mean becomes a mean over the last 98 per-frame outputs (state `state.pool.window`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.models.bcresnet import BCResNet, BroadcastedBlock, TransitionBlock, frequency_sizes
from kwsdeploy.streaming.convert import register_converter
from kwsdeploy.streaming.layers2d import StreamTimeConv2d, StreamWindowMean, batchnorm_affine, fold_batchnorm
from kwsdeploy.streaming.spec import StateSpec, StreamSpec

CLIP_FRAMES = 98


def _ssn_affine(ssn: nn.Module, channels: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SubSpectralNorm as scale and shift of shape [C, F, 1] (channel c, row f -> BN index c*S + f // (F/S))."""
    scale, shift = batchnorm_affine(ssn.bn)
    per_band = rows // ssn.sub_bands
    expand = lambda t: t.view(channels, ssn.sub_bands).repeat_interleave(per_band, dim=1).unsqueeze(-1)
    return expand(scale), expand(shift)


class StepBlock(nn.Module):
    """One BC-ResNet block (either kind) as a step: `y, new_cache = block(x, cache)`."""

    def __init__(self, block: nn.Module, rows_out: int) -> None:
        super().__init__()
        self.transition = isinstance(block, TransitionBlock)
        planes = block.freq_dw_conv.out_channels
        if self.transition:
            w, b = fold_batchnorm(block.conv1x1_1.weight, None, block.bn1)
            self.register_buffer("in_weight", w)
            self.register_buffer("in_bias", b)
            ssn, bn, conv1x1 = block.ssn, block.bn2, block.conv1x1_2
        else:
            ssn, bn, conv1x1 = block.ssn1, block.bn, block.conv1x1
        self.register_buffer("freq_weight", block.freq_dw_conv.weight.detach().clone())
        self.freq_stride = block.freq_dw_conv.stride[0]
        self.groups = planes
        scale, shift = _ssn_affine(ssn, planes, rows_out)
        self.register_buffer("ssn_scale", scale)
        self.register_buffer("ssn_shift", shift)
        self.temporal = StreamTimeConv2d.from_conv(block.temp_dw_conv, bn)
        self.register_buffer("out_weight", conv1x1.weight.detach().clone())

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(F.conv2d(x, self.in_weight, self.in_bias)) if self.transition else x
        aux = F.conv2d(out, self.freq_weight, None, (self.freq_stride, 1), (1, 0), 1, self.groups)
        aux = aux * self.ssn_scale + self.ssn_shift
        temporal, cache = self.temporal(aux.mean(dim=2, keepdim=True), cache)
        temporal = F.conv2d(F.silu(temporal), self.out_weight)
        if self.transition:
            return F.relu(aux + temporal), cache
        return F.relu(x + aux + temporal), cache


class StreamingBCResNet(nn.Module):
    """Step form: `logits, *new_state = step(features [B, n_mfcc, P], *state)`; P frames per call."""

    def __init__(self, model: BCResNet, window_frames: int = CLIP_FRAMES,
                 feature_config: FeatureConfig | None = None) -> None:
        super().__init__()
        if not model.causal:
            raise ValueError(
                "Only a causal BC-ResNet (bcresnet1-causal, bcresnet8-causal, or causal=True) has an exact "
                "step form; the reference's 'same' time padding needs future frames. Use mode='windowed'."
            )
        model = model.eval()
        n_mfcc = int(getattr(model, "n_mfcc", 40))
        num_classes = model.conv4.out_channels
        rows = frequency_sizes(n_mfcc)
        self.conv1 = StreamTimeConv2d.from_conv(model.conv1)
        names, blocks = [], []
        for i, (name, block) in enumerate(model.blocks()):
            names.append(name)
            blocks.append(StepBlock(block, rows[i + 1]))
        self.block_names = names
        self.blocks = nn.ModuleList(blocks)
        self.conv2 = StreamTimeConv2d.from_conv(model.conv2)
        # conv3 and conv4 are bias-free 1x1 convs: their product classifies each frame.
        head = model.conv4.weight.detach().flatten(1).double() @ model.conv3.weight.detach().flatten(1).double()
        self.register_buffer("head_weight", head.float())
        self.pool = StreamWindowMean(window_frames)

        states = [StateSpec("state.conv1.cache", self.conv1.cache_shape(n_mfcc))]
        for i, name in enumerate(names):
            channels = self.blocks[i].temporal.weight.shape[0]
            states.append(StateSpec(f"state.{name}.cache", (channels, 1, self.blocks[i].temporal.cache_frames)))
        states.append(StateSpec("state.conv2.cache", self.conv2.cache_shape(rows[-2])))
        states.append(StateSpec("state.pool.window", (num_classes, window_frames - 1)))
        self.stream_spec = StreamSpec(
            mode="exact",
            packet_frames=1,  # BC-ResNet never strides in time
            delay_frames=0,
            window_frames=window_frames,
            n_mfcc=n_mfcc,
            num_classes=num_classes,
            states=tuple(states),
            feature_config=feature_config or FeatureConfig.deployable(n_mfcc),
        )

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero state: the offline model's zero time padding before the first frame."""
        return tuple(torch.zeros((batch, *s.shape)) for s in self.stream_spec.states)

    def forward(self, features: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, conv1_cache = self.conv1(features.unsqueeze(1), state[0])
        new_state = [conv1_cache]
        for i, block in enumerate(self.blocks):
            out, cache = block(out, state[1 + i])
            new_state.append(cache)
        out, conv2_cache = self.conv2(out, state[-2])
        new_state.append(conv2_cache)
        per_frame = torch.matmul(self.head_weight, out.flatten(1, 2))  # [B, classes, P]
        logits, window = self.pool(per_frame, state[-1])
        new_state.append(window)
        return (logits, *new_state)


def convert_bcresnet(model: nn.Module, **options) -> StreamingBCResNet:
    """Registered converter for family 'bcresnet' (causal configurations only)."""
    return StreamingBCResNet(model, **options)


register_converter("bcresnet", convert_bcresnet)
