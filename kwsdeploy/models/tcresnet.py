"""TC-ResNet (Choi et al., Interspeech 2019): temporal 1-D convs with the MFCC coefficients as channels.

Reproduces `networks/tcresnet.py` of the reference (dhyzy123/KWM, TorchKWS): a k=3 stem conv, then
residual blocks of two k=9 convs (stride 2 and a 1x1 conv + BatchNorm + ReLU shortcut where the
width changes), ReLU after the sum, global average pooling over time and a linear head. The
reference writes its convs as Conv2d with (1, k) kernels; ours are Conv1d (same numbers, the key
map reshapes). `causal=True` pads every conv on the left only (same tensors), which makes the step
form exact (`kwsdeploy.streaming.tcresnet`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from kwsdeploy.models._time_conv import TimeConv1d
from kwsdeploy.models.reference_weights import register_reference_map
from kwsdeploy.models.registry import ModelCard, register

FAMILY = "tcresnet"
STEM_KERNEL = 3
BLOCK_KERNEL = 9

WIDTHS: dict[str, tuple[int, ...]] = {
    "tcresnet8": (16, 24, 32, 48),
    "tcresnet14": (16, 24, 24, 32, 32, 48, 48),
    "tcresnet8-1.5": (24, 36, 48, 72),
    "tcresnet14-1.5": (24, 36, 36, 48, 48, 72, 72),
}


class TCResidualBlock(nn.Module):
    """Two k=9 time convs with BatchNorm; stride 2 and a projected shortcut where the width changes."""

    def __init__(self, in_channels: int, out_channels: int, causal: bool = False) -> None:
        super().__init__()
        self.stride = 2 if in_channels != out_channels else 1
        self.conv1 = TimeConv1d(in_channels, out_channels, BLOCK_KERNEL, stride=self.stride, causal=causal)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = TimeConv1d(out_channels, out_channels, BLOCK_KERNEL, causal=causal)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU()
        if self.stride != 1:
            # The reference's shortcut is conv -> BatchNorm -> ReLU (kept as it is).
            self.shortcut_conv: nn.Conv1d | None = nn.Conv1d(in_channels, out_channels, 1, stride=self.stride, bias=False)
            self.shortcut_bn: nn.BatchNorm1d | None = nn.BatchNorm1d(out_channels)
        else:
            self.shortcut_conv = None
            self.shortcut_bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut_conv is not None:
            res = self.relu(self.shortcut_bn(self.shortcut_conv(x)))
        else:
            res = x
        return self.relu(out + res)


class TCResNet(nn.Module):
    """[B, 1, n_mfcc, T] features -> [B, num_classes] logits."""

    def __init__(self, num_classes: int = 12, n_mfcc: int = 40, channels: Sequence[int] = WIDTHS["tcresnet8"], causal: bool = False) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"TC-ResNet needs at least two widths (stem + one block), got {channels}.")
        self.in_features = int(n_mfcc)
        self.channels = channels
        self.causal = bool(causal)
        self.stem = TimeConv1d(n_mfcc, channels[0], STEM_KERNEL, causal=causal)
        self.blocks = nn.ModuleList(TCResidualBlock(i, o, causal) for i, o in zip(channels[:-1], channels[1:]))
        self.head = nn.Linear(channels[-1], num_classes)

    @property
    def time_stride(self) -> int:
        """Input frames per output frame of the last block."""
        stride = 1
        for block in self.blocks:
            stride *= block.stride
        return stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.in_features:
            raise ValueError(f"TC-ResNet expects features [B, 1, {self.in_features}, T], got {list(x.shape)}.")
        return self.head(self._trunk(x).mean(dim=-1))

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x.flatten(1, 2))
        for block in self.blocks:
            out = block(out)
        return out

    def forward_window(self, x: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Causal model: the logits a stream gives after all of `x`: the head on the mean of the last
        ceil(clip_frames / time_stride) output frames (the step form's pooling window)."""
        if not self.causal:
            raise RuntimeError("forward_window() is defined for the causal TC-ResNet only.")
        window = -(-int(clip_frames) // self.time_stride)
        return self.head(self._trunk(x)[..., -window:].mean(dim=-1))


def build_tcresnet(num_classes: int = 12, n_mfcc: int = 40, channels: Sequence[int] = WIDTHS["tcresnet8"], causal: bool = False) -> TCResNet:
    """Registry builder."""
    return TCResNet(num_classes=num_classes, n_mfcc=n_mfcc, channels=channels, causal=causal)


def map_reference_keys(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Reference TCResNet keys (`conv`, `layers.i.{conv1,bn1,conv2,bn2,residual.0/1}`, `linear`) -> ours.

    (1, k) Conv2d kernels [O, I, 1, k] become Conv1d kernels [O, I, k]; unknown keys pass through
    unchanged so that strict loading names them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "conv":
            new = "stem." + ".".join(parts[1:])
        elif parts[0] == "linear":
            new = "head." + ".".join(parts[1:])
        elif parts[0] == "layers" and len(parts) >= 4:
            rest = parts[2:]
            if rest[0] == "residual" and rest[1] in ("0", "1"):
                rest = ["shortcut_conv" if rest[1] == "0" else "shortcut_bn", *rest[2:]]
            new = ".".join(["blocks", parts[1], *rest])
        else:
            new = key
        if value.dim() == 4 and value.shape[2] == 1 and new.endswith("weight"):
            value = value.squeeze(2)
        out[new] = value
    return out


register_reference_map(FAMILY, map_reference_keys)

_REFERENCE = "Choi et al. 2019, TC-ResNet; dhyzy123/KWM TorchKWS networks/tcresnet.py (TCResNet)"
_SAME_NOTE = (
    "Reference 'same' padding: every k=9/k=3 conv pads zeros on both sides, and a step form from the "
    "zero state cannot reproduce the right-hand zeros of inner layers (a stream has real future frames "
    "there), so it streams in windowed mode; use the '-causal' variant for an exact step form. "
    "Reference bugs fixed: none needed (batch 1 already gives [1, C])."
)
_PARAMS = {"tcresnet8": 65_148, "tcresnet14": 135_836, "tcresnet8-1.5": 144_228, "tcresnet14-1.5": 302_964}
# Exact conv + linear MAC counts per 98-frame clip (FACTS.md: 1.52 M and 3.03 M for the 1x widths).
_MACS = {"tcresnet8": 1_522_560, "tcresnet14": 3_030_528, "tcresnet8-1.5": 3_284_208, "tcresnet14-1.5": 6_677_136}

for _name, _widths in WIDTHS.items():
    register(
        ModelCard(
            name=_name,
            family=FAMILY,
            builder=build_tcresnet,
            config={"channels": _widths, "causal": False},
            n_mfcc=40,
            expected_params=_PARAMS[_name],
            expected_macs=_MACS[_name],
            streaming="windowed",
            reference=_REFERENCE,
            description=f"TC-ResNet, widths {list(_widths)}, 'same' padding as the reference.",
            notes=_SAME_NOTE + ("" if _name in ("tcresnet8", "tcresnet14") else " MACs computed here (not in FACTS.md)."),
            reference_name=_name,
        )
    )

for _name in ("tcresnet8", "tcresnet14"):
    register(
        ModelCard(
            name=f"{_name}-causal",
            family=FAMILY,
            builder=build_tcresnet,
            config={"channels": WIDTHS[_name], "causal": True},
            n_mfcc=40,
            expected_params=_PARAMS[_name],
            expected_macs=_MACS[_name],
            streaming="exact",
            reference="kwsdeploy: causal configuration of " + _REFERENCE,
            description=f"{_name} with left-only (causal) padding: same tensors, exact step form.",
            notes=(
                "Every conv pads d*(k-1) zeros on the left only, so no output looks ahead; parameter "
                "and MAC counts equal the reference size's. Step form: ring-buffer convs (BatchNorm "
                "folded), packet = the total time stride (8 frames), "
                "mean over the last 13 pooled frames. Reference weights load (same shapes) but the "
                "padding differs, so fine-tune them before use."
            ),
        )
    )
