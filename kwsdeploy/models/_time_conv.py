"""Time convolutions with explicit padding, shared by the offline models and their step forms.

A conv with kernel ``k`` and dilation ``d`` reads ``r = d * (k - 1)`` frames of context. 'same'
(the reference's choice) pads ``r // 2`` zeros on the left and the rest on the right; causal pads
``r`` zeros on the left only, so output ``t`` of a stride-``s`` conv reads frames ``t*s - r .. t*s``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def time_padding(kernel_size: int, dilation: int = 1, causal: bool = False) -> tuple[int, int]:
    """(left, right) zero frames of a time conv: 'same' splits r in two, causal puts r on the left."""
    context = dilation * (kernel_size - 1)
    return (context, 0) if causal else (context // 2, context - context // 2)


def conv_output_frames(frames: int, kernel_size: int, stride: int = 1, dilation: int = 1, causal: bool = False) -> int:
    """Frames out of a `TimeConv1d` fed `frames` frames."""
    left, right = time_padding(kernel_size, dilation, causal)
    return (frames + left + right - dilation * (kernel_size - 1) - 1) // stride + 1


class TimeConv1d(nn.Conv1d):
    """`nn.Conv1d` over time with 'same' (symmetric, reference) or causal (left-only) zero padding.

    Its state dict is a plain Conv1d's (`weight`, optional `bias`), so checkpoints do not depend on
    the padding mode: a causal and a 'same' model of one size share every tensor shape.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        causal: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias
        )
        self.causal = causal
        self.time_pad = time_padding(kernel_size, dilation, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad != (0, 0):
            x = F.pad(x, self.time_pad)
        return super().forward(x)
