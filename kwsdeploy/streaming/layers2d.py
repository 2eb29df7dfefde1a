"""Stream layers for [B, C, F, T] tensors: time is streamed, frequency is left as it is.

- `StreamTimeConv2d`: a Conv2d whose time axis is causal and whose past lives in an explicit cache
  of its last (kernel_t - 1) * dilation_t input frames (time stride 1); frequency stride, padding
  and dilation are kept.
- `StreamWindowMean`: the mean over the last `window` frames, with the previous window - 1 frames
  as state; it replaces a global time mean.
- `batchnorm_affine` / `fold_batchnorm`: eval-mode BatchNorm as a per-channel scale and shift, and
  folded into the convolution before it.
All are plain tensor ops with no Python-side state, so step modules built from them export to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) such that bn(x) == x * scale + shift per channel in eval mode."""
    scale = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    return scale.float(), shift.float()


def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of conv-then-BatchNorm as one convolution (eval statistics)."""
    scale, shift = batchnorm_affine(bn)
    view = (-1,) + (1,) * (weight.dim() - 1)
    folded_w = (weight.detach().double() * scale.double().view(view)).float()
    folded_b = shift.double() if bias is None else bias.detach().double() * scale.double() + shift.double()
    return folded_w, folded_b.float()


class StreamTimeConv2d(nn.Module):
    """Causal-in-time Conv2d step: `y, new_cache = layer(x [B, C, F, P], cache [B, C, F, k_t - 1 frames])`.

    Output frame j depends on the cache and input frames up to j, exactly like a left-zero-padded
    offline convolution fed from a zero cache.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        freq_stride: int = 1,
        freq_padding: int = 0,
        freq_dilation: int = 1,
        time_dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone().float())
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float())
        self.stride = (int(freq_stride), 1)
        self.padding = (int(freq_padding), 0)
        self.dilation = (int(freq_dilation), int(time_dilation))
        self.groups = int(groups)
        self.cache_frames = (weight.shape[-1] - 1) * int(time_dilation)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm | None = None) -> "StreamTimeConv2d":
        """From an offline Conv2d (time stride 1; its time padding is dropped), BatchNorm folded in."""
        if conv.stride[1] != 1:
            raise ValueError(f"StreamTimeConv2d needs time stride 1, got {conv.stride[1]}.")
        weight, bias = conv.weight, conv.bias
        if bn is not None:
            weight, bias = fold_batchnorm(weight, bias, bn)
        return cls(weight, bias, conv.stride[0], conv.padding[0], conv.dilation[0], conv.dilation[1], conv.groups)

    def cache_shape(self, in_rows: int) -> tuple[int, int, int]:
        """State shape (without batch) for an input with `in_rows` frequency rows."""
        return (self.weight.shape[1] * self.groups, in_rows, self.cache_frames)

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = torch.cat([cache, x], dim=-1)
        y = F.conv2d(full, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return y, full[..., full.shape[-1] - self.cache_frames:]


class StreamWindowMean(nn.Module):
    """Mean over the last `window` frames: `mean, new_buffer = pool(x [..., P], buffer [..., window - 1])`.

    From a zero buffer, after at least `window` frames the mean is exactly that of the last `window`
    frames (the offline global mean on a clip of `window` frames).
    """

    def __init__(self, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}.")
        self.window = int(window)

    def forward(self, x: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = torch.cat([buffer, x], dim=-1)
        total = full.shape[-1]
        mean = full[..., total - self.window:].mean(dim=-1)
        return mean, full[..., total - (self.window - 1):]
