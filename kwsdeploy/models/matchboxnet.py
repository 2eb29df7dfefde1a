"""MatchboxNet 3x2x64 (Majumdar & Ginsburg, Interspeech 2020), as the reference's `matchboxnet` builds it.

The reference's factory builds `EncDecBaseModel(num_mels=64, final_filter=128)` from
`networks/matchbox/` (a NeMo-style ConvASREncoder + classification decoder), not the separate
`networks/matchboxnet.py` class. Encoder: prologue (k=11, 128 ch), three residual blocks of two
time-channel separable sub-blocks (k=13/15/17, 64 ch), epilogue (k=29 dilation 2, 128 ch) and a
1x1 block (128 ch); each sub-block is depthwise conv -> pointwise conv -> BatchNorm(eps 1e-3),
ReLU between sub-blocks, residual 1x1 conv + BatchNorm added before the block's final ReLU.
Then global average pooling over time and a linear head. Reference bugs fixed: its masked convs
hard-code cuda:3 (the mask is all ones for full-length input, so ours has no mask), and its
`.squeeze()` turns batch 1 into a 2-D input (ours keeps the batch axis).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from kwsdeploy.models._time_conv import TimeConv1d
from kwsdeploy.models.reference_weights import ReferenceWeightsError, register_reference_map
from kwsdeploy.models.registry import ModelCard, register

FAMILY = "matchboxnet"
BN_EPS = 1e-3

# (out_channels, sub-blocks, kernel, dilation, residual) per encoder block, in order.
BLOCKS: tuple[tuple[int, int, int, int, bool], ...] = (
    (128, 1, 11, 1, False),
    (64, 2, 13, 1, True),
    (64, 2, 15, 1, True),
    (64, 2, 17, 1, True),
    (128, 1, 29, 2, False),
    (128, 1, 1, 1, False),
)
# The reference's named attributes for the same blocks (its state dict holds both spellings).
REFERENCE_BLOCK_NAMES = ("conv_block_1", "conv_res_block_1", "conv_res_block_2", "conv_res_block_3", "conv_block_2", "conv_block_3")


class SeparableConvBN(nn.Module):
    """Depthwise time conv -> pointwise 1x1 conv -> BatchNorm (no biases, as the reference)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, causal: bool) -> None:
        super().__init__()
        self.depthwise = TimeConv1d(in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels, causal=causal)
        self.pointwise = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm1d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise(self.depthwise(x)))


class MatchboxBlock(nn.Module):
    """Sub-blocks with ReLU between them, an optional 1x1 conv + BatchNorm residual, a final ReLU."""

    def __init__(self, in_channels: int, out_channels: int, repeat: int, kernel_size: int, dilation: int, residual: bool, causal: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SeparableConvBN(in_channels if i == 0 else out_channels, out_channels, kernel_size, dilation, causal)
            for i in range(repeat)
        )
        self.relu = nn.ReLU()
        if residual:
            self.res_conv: nn.Conv1d | None = nn.Conv1d(in_channels, out_channels, 1, bias=False)
            self.res_bn: nn.BatchNorm1d | None = nn.BatchNorm1d(out_channels, eps=BN_EPS)
        else:
            self.res_conv = None
            self.res_bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i, layer in enumerate(self.layers):
            out = layer(out)
            if i < len(self.layers) - 1:
                out = self.relu(out)
        if self.res_conv is not None:
            out = out + self.res_bn(self.res_conv(x))
        return self.relu(out)


class MatchboxNet(nn.Module):
    """[B, 1, n_mfcc, T] features -> [B, num_classes] logits (the reference's EncDecBaseModel)."""

    time_stride = 1  # no strided layer: one output frame per input frame

    def __init__(self, num_classes: int = 12, n_mfcc: int = 64, causal: bool = False) -> None:
        super().__init__()
        self.in_features = int(n_mfcc)
        self.causal = bool(causal)
        blocks = []
        channels = self.in_features
        for out_channels, repeat, kernel, dilation, residual in BLOCKS:
            blocks.append(MatchboxBlock(channels, out_channels, repeat, kernel, dilation, residual, causal))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference initialises conv and linear weights Xavier-uniform (biases keep torch's default).
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.in_features:
            raise ValueError(f"MatchboxNet expects features [B, 1, {self.in_features}, T], got {list(x.shape)}.")
        out = x.flatten(1, 2)
        for block in self.blocks:
            out = block(out)
        return self.head(out.mean(dim=-1))

    def forward_window(self, x: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Causal model: the logits a stream gives after all of `x`: the head on the mean of the last
        `clip_frames` output frames (the step form's pooling window)."""
        if not self.causal:
            raise RuntimeError("forward_window() is defined for the causal MatchboxNet only.")
        out = x.flatten(1, 2)
        for block in self.blocks:
            out = block(out)
        return self.head(out[..., -int(clip_frames):].mean(dim=-1))


def build_matchboxnet(num_classes: int = 12, n_mfcc: int = 64, causal: bool = False) -> MatchboxNet:
    """Registry builder."""
    return MatchboxNet(num_classes=num_classes, n_mfcc=n_mfcc, causal=causal)


def _map_block_key(block: int, rest: list[str]) -> str | None:
    """`mconv.<j>.…` / `res.0.<j>.…` inside one reference ConvBlock -> our key inside `blocks.<block>`."""
    if len(rest) >= 3 and rest[0] == "mconv" and rest[1].isdigit():
        j = int(rest[1])
        sub, slot = divmod(j, 5)  # per sub-block: dw conv, pw conv, BN, activation, dropout
        tail = rest[2:]
        if slot in (0, 1) and tail[0] == "conv":
            return ".".join(["blocks", str(block), "layers", str(sub), "depthwise" if slot == 0 else "pointwise", *tail[1:]])
        if slot == 2:
            return ".".join(["blocks", str(block), "layers", str(sub), "bn", *tail])
    if len(rest) >= 4 and rest[0] == "res" and rest[1] == "0":
        if rest[2] == "0" and rest[3] == "conv":
            return ".".join(["blocks", str(block), "res_conv", *rest[4:]])
        if rest[2] == "1":
            return ".".join(["blocks", str(block), "res_bn", *rest[3:]])
    return None


def map_reference_keys(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Reference EncDecBaseModel keys -> ours.

    The reference registers each block twice (`encoder.encoder.<i>.…` and `encoder.<name>.…`, the
    same tensors), so its state dict has both spellings; either alone also loads, and two spellings
    that disagree are an error. Unknown keys pass through so that strict loading names them.
    """
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for key, value in state.items():
        parts = key.split(".")
        new: str | None = None
        if len(parts) >= 3 and parts[0] == "encoder":
            if parts[1] == "encoder" and parts[2].isdigit():
                new = _map_block_key(int(parts[2]), parts[3:])
            elif parts[1] in REFERENCE_BLOCK_NAMES:
                new = _map_block_key(REFERENCE_BLOCK_NAMES.index(parts[1]), parts[2:])
        elif len(parts) == 4 and parts[:3] == ["decoder", "decoder_layers", "0"]:
            new = "head." + parts[3]
        new = new or key
        if new in out and not (out[new].shape == value.shape and torch.equal(out[new], value)):
            raise ReferenceWeightsError(
                f"Reference tensors {source[new]!r} and {key!r} are the same layer but hold different values; "
                "the state dict is corrupt or mixes two checkpoints."
            )
        out[new] = value
        source[new] = key
    return out


register_reference_map(FAMILY, map_reference_keys)

_REFERENCE = (
    "Majumdar & Ginsburg 2020, MatchboxNet 3x2x64; dhyzy123/KWM TorchKWS networks/matchbox/ "
    "(EncDecBaseModel(num_mels=64, final_filter=128), what select_model('matchboxnet') builds)"
)
_PARAMS_64 = 90_572
_PARAMS_40 = 87_236  # the prologue's depthwise (k=11) and pointwise convs shrink with 40 inputs
_MACS_64 = 8_537_728  # per 98-frame clip at 64 features (FACTS.md: 8.54 M)
_NOTES = (
    f"Native input 64 features ({_PARAMS_64:,} parameters); built with n_mfcc=40 it runs on the "
    f"standard 40-MFCC frontend with {_PARAMS_40:,} parameters (the reference crashes at 40). "
    "Reference bugs fixed: cuda:3 hard-coded in its masked conv (the mask is all ones at full length, "
    "so it is dropped), batch 1 squeezed to 2-D (ours gives [1, C])."
)

register(
    ModelCard(
        name="matchboxnet",
        family=FAMILY,
        builder=build_matchboxnet,
        config={"causal": False},
        n_mfcc=64,
        expected_params=_PARAMS_64,
        expected_macs=_MACS_64,
        streaming="windowed",
        reference=_REFERENCE,
        description="MatchboxNet 3x2x64, 'same' padding as the reference.",
        notes=_NOTES
        + " Reference 'same' padding: the depthwise convs pad zeros on both sides, and a step form "
        "from the zero state cannot reproduce the right-hand zeros of inner layers, so it streams in "
        "windowed mode; use 'matchboxnet-causal' for an exact step form.",
        aliases=("matchboxnet-3x2x64",),
        reference_name="matchboxnet",
    )
)

register(
    ModelCard(
        name="matchboxnet-causal",
        family=FAMILY,
        builder=build_matchboxnet,
        config={"causal": True},
        n_mfcc=64,
        expected_params=_PARAMS_64,
        expected_macs=_MACS_64,
        streaming="exact",
        reference="kwsdeploy: causal configuration of " + _REFERENCE,
        description="MatchboxNet 3x2x64 with left-only (causal) padding: same tensors, exact step form.",
        notes=_NOTES
        + " Every depthwise conv pads d*(k-1) zeros on the left only; total time stride 1, so the "
        "step form takes 1 frame per packet (ring-buffer convs with BatchNorm folded, mean over the "
        "last 98 frames). Reference weights load (same shapes) but the padding differs: fine-tune first.",
    )
)
