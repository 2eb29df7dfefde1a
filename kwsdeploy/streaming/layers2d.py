"""Stream layers for [B, C, F, T] tensors: time is streamed, frequency is left as it is.

`StreamTimeConv2d` is the step twin of a Conv2d that is causal in time (left-only time padding,
time stride 1): its state is its last (kernel_t - 1) * dilation_t input frames, all frequency rows
kept, named `state.<layer>.conv`: like the 1-D `StreamConv1d` it is a `RingBufferConv` of
`kwsdeploy.streaming.layers` (whose `StreamMeanPool` and `StepModule` serve 2-D step forms too;
BatchNorm folding is `kwsdeploy.streaming.fold`). `subband_scale_shift` turns an eval-mode SubSpectralNorm into a
per-(channel, frequency row) scale and shift. Plain tensor ops only, so step forms export to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy.contract import StateSpec
from kwsdeploy.streaming.fold import bn_scale_shift, fold_conv_bn
from kwsdeploy.streaming.layers import RingBufferConv


class StreamTimeConv2d(RingBufferConv):
    """`y, new_state = layer(x [B, C_in, F, P], state [B, C_in, F, r])` with r = (k_t - 1) * d_t.

    Output frame j reads the state and input frames up to j, exactly like the offline conv with r
    zero frames of left padding when fed from a zero state. Frequency stride, padding and dilation
    are the offline conv's.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        name: str,
        in_rows: int,
        freq_stride: int = 1,
        freq_padding: int = 0,
        freq_dilation: int = 1,
        time_dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(weight, bias, name, groups, context=(int(weight.shape[-1]) - 1) * int(time_dilation))
        self.in_rows = int(in_rows)
        self.stride = (int(freq_stride), 1)
        self.padding = (int(freq_padding), 0)
        self.dilation = (int(freq_dilation), int(time_dilation))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bn: nn.Module | None, name: str, in_rows: int) -> "StreamTimeConv2d":
        """Step twin of an offline Conv2d that is causal in time (its time padding is dropped), BN folded."""
        if conv.stride[1] != 1:
            raise ValueError(f"Layer {name!r}: StreamTimeConv2d needs time stride 1, got {conv.stride[1]}.")
        time_pad = getattr(conv, "time_pad", (conv.padding[1], conv.padding[1]))
        if time_pad[1] != 0:
            raise ValueError(
                f"Layer {name!r} pads time on the right ('same'); only causal convs stream exactly. "
                "Build the model's causal configuration or stream it in windowed mode."
            )
        weight, bias = fold_conv_bn(conv, bn)
        return cls(weight, bias, name, in_rows, conv.stride[0], conv.padding[0], conv.dilation[0],
                   conv.dilation[1], conv.groups)

    @property
    def state_spec(self) -> StateSpec | None:
        """[C_in, F_in, r] input history, or None for a conv without time context."""
        return self._history_spec(self.in_channels, self.in_rows, self.context)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.context == 0:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups), None
        window = torch.cat([state, x], dim=-1)
        y = F.conv2d(window, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return y, window[..., -self.context:]  # a constant start: no shape arithmetic in ONNX


def subband_scale_shift(bn: nn.Module, channels: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SubSpectralNorm (BatchNorm over C*S channels of a [C*S, F/S] view) as scale, shift [C, F, 1].

    Row f of channel c is normalised by BatchNorm channel c*S + f // (F/S).
    """
    scale, shift = bn_scale_shift(bn)
    bands = scale.numel() // channels
    if scale.numel() != channels * bands or rows % bands:
        raise ValueError(f"SubSpectralNorm with {scale.numel()} channels does not fit {channels} channels x {rows} rows.")

    def expand(t: torch.Tensor) -> torch.Tensor:
        return t.view(channels, bands).repeat_interleave(rows // bands, dim=1).unsqueeze(-1).float()

    return expand(scale), expand(shift)
