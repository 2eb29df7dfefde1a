"""BC-ResNet (Kim et al., "Broadcasted Residual Learning for Efficient Keyword Spotting", 2021),
as built by the reference TorchKWS `networks/bcresnet.py`, plus a causal configuration that streams.

Input [B, 1, F, T] MFCC. Frequency is strided (conv1 and two transition blocks), time never is.
Every time convolution pads symmetrically in the reference ('same'), so the reference model needs
look-ahead; `causal=True` moves all time padding to the left (same weights, same parameter count).
Module and parameter names equal the reference's, so a reference state dict loads key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy.models._time_conv import time_padding
from kwsdeploy.models.reference_weights import register_reference_map
from kwsdeploy.models.registry import ModelCard, register

SUB_BANDS = 5  # SubSpectralNorm sub-bands, as in the reference


class TimePaddedConv2d(nn.Conv2d):
    """Conv2d on [B, C, F, T] whose time padding is explicit: 'same' (reference) or left-only (causal).

    Frequency padding stays inside the convolution; the weight shape is that of a plain Conv2d.
    """

    def __init__(self, *args, causal: bool = False, **kwargs) -> None:
        padding = kwargs.pop("padding", (0, 0))
        super().__init__(*args, padding=(padding[0], 0), **kwargs)
        self.causal = causal
        self.time_pad = time_padding(self.kernel_size[1], self.dilation[1], causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.time_pad):
            x = F.pad(x, self.time_pad)
        return super().forward(x)


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics per (channel, frequency sub-band)."""

    def __init__(self, channels: int, sub_bands: int = SUB_BANDS, eps: float = 1e-5) -> None:
        super().__init__()
        self.sub_bands = sub_bands
        self.bn = nn.BatchNorm2d(channels * sub_bands, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, f, t = x.shape
        return self.bn(x.reshape(n, c * self.sub_bands, f // self.sub_bands, t)).reshape(n, c, f, t)


class _BlockBase(nn.Module):
    """Shared f2 (frequency) / f1 (temporal) parts of both block kinds."""

    def _temporal(self, pooled: torch.Tensor, bn: nn.BatchNorm2d, conv1x1: nn.Conv2d) -> torch.Tensor:
        out = F.silu(bn(self.temp_dw_conv(pooled)))
        return self.channel_drop(conv1x1(out))


class BroadcastedBlock(_BlockBase):
    """Normal BC-ResNet block: out = relu(x + f2(x) + broadcast(f1(freq_mean(f2(x)))))."""

    def __init__(self, planes: int, dilation: int = 1, causal: bool = False) -> None:
        super().__init__()
        self.freq_dw_conv = nn.Conv2d(planes, planes, (3, 1), padding=(1, 0), groups=planes, bias=False)
        self.ssn1 = SubSpectralNorm(planes)
        self.temp_dw_conv = TimePaddedConv2d(
            planes, planes, (1, 3), groups=planes, dilation=(1, dilation), bias=False, causal=causal
        )
        self.bn = nn.BatchNorm2d(planes)
        self.channel_drop = nn.Dropout2d(p=0.1)
        self.conv1x1 = nn.Conv2d(planes, planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        aux = self.ssn1(self.freq_dw_conv(x))
        temporal = self._temporal(aux.mean(2, keepdim=True), self.bn, self.conv1x1)
        return F.relu(x + aux + temporal)


class TransitionBlock(_BlockBase):
    """Channel-changing block (optionally frequency-strided); no identity shortcut."""

    def __init__(
        self, inplanes: int, planes: int, dilation: int = 1, freq_stride: int = 1, causal: bool = False
    ) -> None:
        super().__init__()
        self.conv1x1_1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.freq_dw_conv = nn.Conv2d(
            planes, planes, (3, 1), stride=(freq_stride, 1), padding=(1, 0), groups=planes, bias=False
        )
        self.ssn = SubSpectralNorm(planes)
        # The reference also gives this conv stride (2, 1); it acts on a single (pooled) frequency
        # row, where a frequency stride changes nothing, so it is left out.
        self.temp_dw_conv = TimePaddedConv2d(
            planes, planes, (1, 3), groups=planes, dilation=(1, dilation), bias=False, causal=causal
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.channel_drop = nn.Dropout2d(p=0.1)
        self.conv1x1_2 = nn.Conv2d(planes, planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1x1_1(x)))
        aux = self.ssn(self.freq_dw_conv(out))
        temporal = self._temporal(aux.mean(2, keepdim=True), self.bn2, self.conv1x1_2)
        return F.relu(aux + temporal)


# (name, kind, in width, out width (x scale), time dilation, frequency stride)
STAGES: tuple[tuple[str, str, int, int, int, int], ...] = (
    ("block1_1", "transition", 16, 8, 1, 1),
    ("block1_2", "broadcast", 8, 8, 1, 1),
    ("block2_1", "transition", 8, 12, 2, 2),
    ("block2_2", "broadcast", 12, 12, 2, 1),
    ("block3_1", "transition", 12, 16, 4, 2),
    ("block3_2", "broadcast", 16, 16, 4, 1),
    ("block3_3", "broadcast", 16, 16, 4, 1),
    ("block3_4", "broadcast", 16, 16, 4, 1),
    ("block4_1", "transition", 16, 20, 8, 1),
    ("block4_2", "broadcast", 20, 20, 8, 1),
    ("block4_3", "broadcast", 20, 20, 8, 1),
    ("block4_4", "broadcast", 20, 20, 8, 1),
)
HEAD_GROUPS = 20  # the reference's conv2 uses 20 groups at every width (paper: depthwise, 20*scale)


def frequency_sizes(n_mfcc: int) -> list[int]:
    """Frequency rows after conv1, after each stage, and after conv2 (kernel 5, no padding)."""
    rows = (n_mfcc - 1) // 2 + 1  # conv1: kernel 5, padding 2, stride 2
    sizes = [rows]
    for _, _, _, _, _, stride in STAGES:
        rows = (rows - 1) // stride + 1
        sizes.append(rows)
    sizes.append(rows - 4)
    return sizes


class BCResNet(nn.Module):
    """BC-ResNet-`scale`: [B, 1, n_mfcc, T] -> [B, num_classes] (batch 1 included)."""

    def __init__(self, num_classes: int = 12, n_mfcc: int = 40, scale: int = 1, causal: bool = False) -> None:
        super().__init__()
        sizes = frequency_sizes(n_mfcc)
        if sizes[-1] != 1 or any(s % SUB_BANDS for s in sizes[1:-1]):
            raise ValueError(
                f"BC-ResNet needs frequency rows divisible into {SUB_BANDS} sub-bands that its head reduces "
                f"to one row; n_mfcc={n_mfcc} gives rows {sizes}. Use n_mfcc=40."
            )
        self.scale = scale
        self.causal = causal
        self.conv1 = TimePaddedConv2d(1, 16 * scale, 5, stride=(2, 1), padding=(2, 2), causal=causal)
        for name, kind, cin, cout, dil, fstride in STAGES:
            if kind == "transition":
                block = TransitionBlock(cin * scale, cout * scale, dil, fstride, causal)
            else:
                block = BroadcastedBlock(cout * scale, dil, causal)
            self.add_module(name, block)
        width = 20 * scale
        self.conv2 = TimePaddedConv2d(width, width, 5, groups=HEAD_GROUPS, padding=(0, 2), causal=causal)
        self.conv3 = nn.Conv2d(width, 32 * scale, 1, bias=False)
        self.conv4 = nn.Conv2d(32 * scale, num_classes, 1, bias=False)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """The twelve residual blocks, in order."""
        return [(name, getattr(self, name)) for name, *_ in STAGES]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self._trunk(x))).mean(-1, keepdim=True)
        return self.conv4(out).flatten(1)  # [B, classes]; the reference's squeeze() lost batch 1

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for _, block in self.blocks():
            out = block(out)
        return out

    def forward_window(self, x: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Causal model: the logits a stream gives after all of `x`: the time mean over the last
        `clip_frames` output frames (the step form's pooling window)."""
        if not self.causal:
            raise RuntimeError("forward_window() is defined for the causal BC-ResNet only.")
        out = self.conv3(self.conv2(self._trunk(x)))[..., -int(clip_frames):].mean(-1, keepdim=True)
        return self.conv4(out).flatten(1)


def build_bcresnet(num_classes: int = 12, n_mfcc: int = 40, scale: int = 1, causal: bool = False) -> BCResNet:
    """Registry builder."""
    return BCResNet(num_classes=num_classes, n_mfcc=n_mfcc, scale=scale, causal=causal)


def map_reference_keys(state: dict, model: nn.Module) -> dict:
    """Reference keys equal ours (same module names); a DataParallel 'module.' prefix is dropped."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


register_reference_map("bcresnet", map_reference_keys)

# Parameter counts (12 classes, 40 MFCC) with the reference's groups=20 head, and the paper's.
_COUNTS = {1: (9_160, 9_160), 2: (28_152, 27_152), 3: (56_976, 53_976), 6: (202_440, 187_440), 8: (348_576, 320_576)}
_MACS = {1: 2_410_000, 2: 7_200_000, 3: 14_400_000, 6: 50_300_000, 8: 86_100_000}
_WINDOWED_WHY = (
    "Streams only 'windowed': every time convolution (conv1 5x5, the temporal depthwise conv of each of "
    "the 12 blocks, conv2) pads 'same' in time, so each output frame needs up to 58 future frames "
    "that a step form does not have yet."
)
_CAUSAL_WHY = (
    "Causal configuration (kwsdeploy): every time convolution pads on the left only (receptive field "
    "117 past frames); same weights and parameter count as the reference, so reference weights load, "
    "but it must be trained causally to be accurate. Streams 'exact' one frame per step; the global "
    "time mean becomes a mean over the last 98 output frames."
)


def _notes(scale: int) -> str:
    ours, paper = _COUNTS[scale]
    head = "conv1 has a bias and no BN/ReLU after it."
    if ours == paper:
        return f"{head} Parameter count equals the paper's ({paper:,})."
    return (
        f"Reference bug kept: conv2 uses groups=20, not 20*scale, so this width has {ours:,} parameters "
        f"(paper: {paper:,}). {head}"
    )


for _scale in (1, 2, 3, 6, 8):
    register(
        ModelCard(
            name=f"bcresnet{_scale}",
            family="bcresnet",
            builder=build_bcresnet,
            config={"scale": _scale, "causal": False},
            n_mfcc=40,
            expected_params=_COUNTS[_scale][0],
            expected_macs=_MACS[_scale],
            streaming="windowed",
            reference="BC-ResNet (Kim et al. 2021); TorchKWS networks/bcresnet.py",
            description=f"Broadcasted residual network, width x{_scale}, SubSpectralNorm",
            notes=f"{_notes(_scale)} {_WINDOWED_WHY}",
            reference_name=f"bcresnet{_scale}",
        )
    )

for _scale in (1, 8):
    register(
        ModelCard(
            name=f"bcresnet{_scale}-causal",
            family="bcresnet",
            builder=build_bcresnet,
            config={"scale": _scale, "causal": True},
            n_mfcc=40,
            expected_params=_COUNTS[_scale][0],
            expected_macs=_MACS[_scale],
            streaming="exact",
            reference="kwsdeploy (causal BC-ResNet)",
            description=f"BC-ResNet-{_scale} with left-only time padding, streams frame by frame",
            notes=f"{_notes(_scale)} {_CAUSAL_WHY}",
        )
    )
