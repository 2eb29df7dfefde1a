"""BatchNorm folding: eval-mode BatchNorm after a conv becomes the conv's weight scale and bias.

Computed in float64 and returned as float32, so folding adds no error beyond float32 rounding.
"""

from __future__ import annotations

import torch
from torch import nn


def bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of an eval-mode BatchNorm: y = x * scale + shift (float64)."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"Expected a BatchNorm layer, got {type(bn).__name__}.")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("Cannot fold a BatchNorm without running statistics (track_running_stats=False).")
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
        shift = bn.bias.detach().double() - mean * scale
    else:
        shift = -mean * scale
    return scale, shift


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fold `bn` (acting on the output channels, axis 0 of `weight`) into a conv/linear weight and bias.

    weight: [C_out, ...]; bias: [C_out] or None. With `bn` None the tensors come back unchanged
    (as float32 copies). The result always has a bias when a BatchNorm was folded.
    """
    if bn is None:
        return weight.detach().float().clone(), None if bias is None else bias.detach().float().clone()
    scale, shift = bn_scale_shift(bn)
    if scale.shape[0] != weight.shape[0]:
        raise ValueError(f"BatchNorm has {scale.shape[0]} channels but the conv has {weight.shape[0]} outputs.")
    w = weight.detach().double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    b = shift if bias is None else bias.detach().double() * scale + shift
    return w.float(), b.float()


def fold_conv_bn(conv: nn.Module, bn: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of `conv` (any Conv1d/Conv2d/Linear) followed by eval-mode `bn`, folded."""
    return fold_bn(conv.weight, getattr(conv, "bias", None), bn)
