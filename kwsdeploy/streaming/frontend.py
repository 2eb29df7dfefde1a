"""Streaming MFCC: `frames, new_cache = f(audio_packet, cache)`, frame for frame equal to the offline MFCC.

Alignment: the cache holds the last `n_fft - hop` samples (320 by default). Each call takes
`hop * k` new samples and emits the k frames that end in them. Started from a zero cache, the
stream of frames equals the offline `MFCC` of `[zeros(n_fft - hop) + audio]`: the first
`(n_fft - hop) // hop` frames (2 by default) straddle the zero prefix, and stream frame `j + 2`
is offline frame `j` of the audio itself. Only the causal "fixed" floor can stream; the
reference's clip-relative top_db clamp needs the whole clip (use a windowed frontend for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import AUDIO, FEATURES, StateNames, StateSpec
from kwsdeploy.features import MFCC, is_exporting

FRONTEND_STATE = "state.frontend.samples"


@dataclass(frozen=True)
class FrontendStreamSpec(StateNames):
    """How the streaming frontend steps: `hop_samples` per frame, one sample-cache state.

    delay_frames: leading frames computed partly from the zero cache (stream frame j + delay_frames
    is offline frame j of the audio when (n_fft - hop) is a multiple of hop).
    """

    hop_samples: int
    cache_samples: int
    delay_frames: int
    n_mfcc: int
    states: tuple[StateSpec, ...]
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    input_name: str = AUDIO
    output_name: str = FEATURES

    def packet_samples(self, frames: int) -> int:
        """Audio samples per call that yield `frames` feature frames."""
        return self.hop_samples * int(frames)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "hop_samples": self.hop_samples,
            "cache_samples": self.cache_samples,
            "delay_frames": self.delay_frames,
            "n_mfcc": self.n_mfcc,
            "states": [s.to_dict() for s in self.states],
            "feature_config": self.feature_config.to_dict(),
            "input_name": self.input_name,
            "output_name": self.output_name,
        }


class _SampleCacheFrontend(nn.Module):
    """Framing shared by the step frontends: each call prepends the cached last `n_fft - hop` samples
    to `hop * k` new samples and computes the k frames that end in the new samples."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        if config.hop_length >= config.n_fft:
            raise ValueError(
                f"{type(self).__name__} needs hop_length < n_fft (frames that overlap, so the cache holds "
                f"n_fft - hop samples), got hop_length={config.hop_length}, n_fft={config.n_fft}."
            )
        self.mfcc = MFCC(config)
        self.config = config
        self.hop = config.hop_length
        self.cache_samples = config.n_fft - config.hop_length

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """The zero cache, as a one-tensor tuple (the frontend's only state)."""
        return (torch.zeros(batch, self.cache_samples, dtype=self.mfcc.mel_fb.dtype),)

    def frames_of(self, samples: torch.Tensor) -> torch.Tensor:
        """The frames of cache + packet samples [B, cache + hop*k] (subclasses choose MFCC or dB mel)."""
        raise NotImplementedError

    def forward(self, audio: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not is_exporting():
            name = type(self).__name__
            if audio.dim() != 2 or audio.shape[-1] == 0 or audio.shape[-1] % self.hop:
                raise ValueError(
                    f"{name} expects audio [B, {self.hop}*k] (k >= 1), got shape {tuple(audio.shape)}; "
                    f"cut packets into multiples of the hop ({self.hop} samples)."
                )
            if cache.shape != (audio.shape[0], self.cache_samples):
                raise ValueError(
                    f"{name}: cache must have shape [B, {self.cache_samples}] matching the audio batch, got "
                    f"{tuple(cache.shape)}; start from init_state(batch)."
                )
        buf = torch.cat([cache.to(audio.dtype), audio], dim=-1)
        return self.frames_of(buf), buf[:, -self.cache_samples :]


class StreamingMFCC(_SampleCacheFrontend):
    """Step form of `MFCC`: audio [B, hop*k] + cache [B, n_fft - hop] -> (frames [B, n_mfcc, k], new cache)."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        config = config or FeatureConfig.deployable()
        if not config.causal:
            raise ValueError(
                f"StreamingMFCC needs a causal feature config (log_floor='fixed'); got "
                f"log_floor={config.log_floor!r}, whose clamp depends on the whole clip. Use "
                f"FeatureConfig.deployable() (and a model trained with it), or stream in windowed mode."
            )
        super().__init__(config)
        self.stream_spec = FrontendStreamSpec(
            hop_samples=self.hop,
            cache_samples=self.cache_samples,
            delay_frames=self.cache_samples // self.hop,
            n_mfcc=config.n_mfcc,
            states=(StateSpec(FRONTEND_STATE, (self.cache_samples,)),),
            feature_config=config,
        )

    def frames_of(self, samples: torch.Tensor) -> torch.Tensor:
        """MFCC frames (fixed floor) of the cached + new samples."""
        return self.mfcc(samples)


class StreamingLogMel(_SampleCacheFrontend):
    """Step frontend of unclamped dB-mel frames (for `ReferenceWindowedStream`): the framing and cache
    of `StreamingMFCC`, without the floor and DCT, which need the whole window."""

    def frames_of(self, samples: torch.Tensor) -> torch.Tensor:
        """Unclamped dB mel frames [B, n_mels, k] of the cached + new samples."""
        return self.mfcc.log_mel_db(samples)
