"""KWS ConvMixer (Ng et al., "ConvMixer: Feature Interactive Convolution with Curriculum Learning
for Small Footprint and Noisy Far-field Keyword Spotting", 2022), as built by the reference TorchKWS
`networks/convmixer.py` (`KWSConvMixer(input_size=[98, 64])`).

Input [B, 1, F, T=98]; the frequency rows are the channels of the first 1-D convolution. Each mixer
block's time-mixing MLP acts on the whole 98-frame axis, so the model is tied to 98 frames and
cannot be made causal. Module and parameter names equal the reference's.
"""

from __future__ import annotations

import torch
from torch import nn

from kwsdeploy.contract import CLIP_FRAMES
from kwsdeploy.models.reference_weights import register_reference_map
from kwsdeploy.models.registry import ModelCard, register


class SeparableConv1d(nn.Module):
    """Depthwise 1-D conv over time, then (optionally) a pointwise conv; no biases."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int = 0, dilation: int = 1,
                 pointwise: bool = True) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(cin, cin, kernel, padding=padding, dilation=dilation, groups=cin, bias=False)
        self.pointwise = nn.Conv1d(cin, cout, 1, bias=False) if pointwise else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1d(x))


class SeparableConv2d(nn.Module):
    """Depthwise 2-D conv without pointwise part (the reference's default), no bias."""

    def __init__(self, channels: int, kernel: tuple[int, int], padding: tuple[int, int]) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(channels, channels, kernel, padding=padding, groups=channels, bias=False)
        self.pointwise = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x)


def conv_bn_swish(cin: int, cout: int, kernel: int, padding: int = 0, dilation: int = 1) -> nn.Sequential:
    """SeparableConv1d -> BatchNorm1d -> Swish (indices 0, 1, 2 as in the reference)."""
    return nn.Sequential(SeparableConv1d(cin, cout, kernel, padding, dilation), nn.BatchNorm1d(cout), nn.SiLU())


class FeedForward(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout on the last axis."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MixerBlock(nn.Module):
    """MLP-Mixer on [B, C, T]: an MLP across time (all T frames), then one across channels."""

    def __init__(self, time_dim: int, channels: int) -> None:
        super().__init__()
        self.time_mix = nn.Sequential(nn.LayerNorm(time_dim), FeedForward(time_dim, time_dim // 4))
        self.freq_mix = nn.Sequential(nn.LayerNorm(channels), FeedForward(channels, channels // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.time_mix(x)
        return x + self.freq_mix(x.transpose(1, 2)).transpose(1, 2)


class ConvMixerBlock(nn.Module):
    """2-D 'frequency' encoding on [C, T] as an image, 1-D temporal encoding, mixer, double skip."""

    def __init__(self, time_dim: int, channels: int, time_kernel: int, freq_kernel: int, filters: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.frequency_domain_encoding = nn.Sequential(
            nn.Conv2d(1, filters, 3, padding=1, bias=False),
            nn.SiLU(),
            SeparableConv2d(filters, (freq_kernel, 1), (freq_kernel // 2, 0)),
            nn.SiLU(),
            nn.Conv2d(filters, 1, 1, bias=False),
            nn.BatchNorm2d(1),
            nn.SiLU(),
        )
        self.temporal_domain_encoding = conv_bn_swish(channels, channels, time_kernel, time_kernel // 2)
        self.dropout = nn.Dropout(dropout)
        self.mixer = nn.Sequential(MixerBlock(time_dim, channels), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded = self.dropout(self.frequency_domain_encoding(x.unsqueeze(1)).squeeze(1))
        out = self.mixer(self.dropout(self.temporal_domain_encoding(encoded)))
        return x + encoded + out


class PreConvBlock(nn.Module):
    """Two separable conv / BN / Swish layers (kernel 7, then 1) with a skip."""

    def __init__(self, channels: int, kernel: int = 7, dropout: float = 0.0) -> None:
        super().__init__()
        self.temporal_domain_encoding = nn.Sequential(
            *conv_bn_swish(channels, channels, kernel, kernel // 2), *conv_bn_swish(channels, channels, 1)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.temporal_domain_encoding(x))


# (time kernel, frequency kernel, 2-D filters) of the four mixer blocks
MIXER_BLOCKS = ((9, 5, 64), (11, 5, 32), (13, 7, 16), (15, 7, 8))


class KWSConvMixer(nn.Module):
    """ConvMixer: [B, 1, n_mfcc, 98] -> [B, num_classes].

    `channel_norm`: subtract each window's own mean over time from every cepstral coefficient but c0
    (cepstral mean normalisation, level kept), so a fixed microphone or room colouring (an offset per
    coefficient) does not reach the network. The model sees whole windows (it streams 'windowed'), so
    the mean is the same in training, on clips and in a stream. No parameters (a state dict loads
    either way)."""

    def __init__(self, num_classes: int = 12, n_mfcc: int = 64, time_frames: int = CLIP_FRAMES,
                 feat_dim: int = 64, dropout: float = 0.0, channel_norm: bool = False) -> None:
        super().__init__()
        self.time_frames = time_frames
        self.channel_norm = bool(channel_norm)
        mask = torch.ones(1, 1, n_mfcc, 1)
        mask[:, :, 0] = 0.0  # c0 (the level) is kept
        self.register_buffer("norm_mask", mask, persistent=False)
        self.conv1 = conv_bn_swish(n_mfcc, feat_dim, 5, 2)
        self.preConvMixer = PreConvBlock(feat_dim, 7, dropout)
        for i, (tk, fk, filters) in enumerate(MIXER_BLOCKS, start=1):
            self.add_module(f"convMixer{i}", ConvMixerBlock(time_frames, feat_dim, tk, fk, filters, dropout))
        self.conv2 = conv_bn_swish(feat_dim, 2 * feat_dim, 17, 8)
        self.conv3 = conv_bn_swish(2 * feat_dim, 2 * feat_dim, 19, 18, dilation=2)
        self.conv4 = conv_bn_swish(2 * feat_dim, 2 * feat_dim, 1)
        self.pooling = nn.AdaptiveMaxPool1d(1)
        self.mlp_head = nn.Sequential(nn.Linear(2 * feat_dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != self.time_frames:
            raise ValueError(
                f"ConvMixer expects features [B, 1, n_mfcc, {self.time_frames}], got {tuple(x.shape)}; "
                "its time-mixing MLP is built for exactly that many frames."
            )
        if self.channel_norm:
            x = x - x.mean(dim=-1, keepdim=True) * self.norm_mask
        x = self.conv1(x.flatten(1, 2))
        x = self.preConvMixer(x)
        for i in range(1, len(MIXER_BLOCKS) + 1):
            x = getattr(self, f"convMixer{i}")(x)
        x = self.conv4(self.conv3(self.conv2(x)))
        return self.mlp_head(self.pooling(x).flatten(1))


def build_convmixer(num_classes: int = 12, n_mfcc: int = 64, time_frames: int = CLIP_FRAMES,
                    feat_dim: int = 64, dropout: float = 0.0, channel_norm: bool = False) -> KWSConvMixer:
    """Registry builder."""
    return KWSConvMixer(num_classes, n_mfcc, time_frames, feat_dim, dropout, channel_norm)


def map_reference_keys(state: dict, model: nn.Module) -> dict:
    """Reference keys equal ours (same module names); a DataParallel 'module.' prefix is dropped."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


register_reference_map("convmixer", map_reference_keys)

register(
    ModelCard(
        name="convmixer",
        family="convmixer",
        builder=build_convmixer,
        config={},
        n_mfcc=64,
        expected_params=119_620,
        expected_macs=21_970_000,
        streaming="windowed",
        reference="ConvMixer (Ng et al. 2022); TorchKWS networks/convmixer.py",
        description="Separable convolutions + MLP-Mixer blocks, global max pooling",
        notes=(
            "Counts are at the reference's own input [98, 64] (64 features; the reference crashes when "
            "fed 40). It also builds and runs at 40 MFCC (create('convmixer', n_mfcc=40)): only conv1's "
            "input width changes, 117,964 parameters. Streams only 'windowed' and has no causal "
            "configuration: the time_mix MLP of every mixer block (LayerNorm(98) + Linear 98->24->98) "
            "mixes all 98 frames of the clip, so no output frame exists before the whole window; the "
            "convolutions also pad 'same' in time. channel_norm=True (no parameters) subtracts each window's "
            "mean over time from every cepstral coefficient but c0 before conv1: a fixed microphone or room "
            "colouring does not reach the network."
        ),
        reference_name="convmixer",
    )
)
