"""MFCC frontend in plain torch, exportable to ONNX / TensorRT (no torch.stft, no complex tensors).

The pipeline equals torchaudio's `MFCC(melkwargs=dict(center=False, ...))` at its defaults:
periodic Hann window, power spectrum, HTK mel filterbank (no norm), 10*log10(max(P, amin)),
a floor, then an orthonormal DCT-II. The STFT is a strided conv1d with a fixed real DFT basis
(cosine and sine kernels with the window folded in). The floor is set by `FeatureConfig.log_floor`:
- "clip_top_db": clamp at (max dB of that clip's whole [n_mels, frames] map - top_db), per clip,
  also in a batch (torchaudio on a batch would clamp against the batch maximum);
- "fixed": clamp at `floor_db` absolute (causal: a frame depends only on its own samples).
"""

from __future__ import annotations

import functools
import math
from typing import Union

import numpy as np
import torch
from torch import nn

from kwsdeploy.config import FeatureConfig

__all__ = [
    "MFCC",
    "compute_features",
    "dft_basis",
    "dct_matrix",
    "mel_filterbank",
    "hann_window",
    "is_exporting",
]


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window of `win_length`, zero-padded centred to `n_fft` (torch.stft's rule), float64."""
    n = np.arange(win_length, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * math.pi * n / win_length)
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft, dtype=np.float64)
    out[left : left + win_length] = w
    return out


def dft_basis(n_fft: int, win_length: int) -> np.ndarray:
    """Windowed real DFT kernels [2 * (n_fft // 2 + 1), n_fft]: cosine rows, then sine rows (float64)."""
    n_freq = n_fft // 2 + 1
    k = np.arange(n_freq, dtype=np.float64)[:, None]
    n = np.arange(n_fft, dtype=np.float64)[None, :]
    # Reduce k*n modulo n_fft before scaling: exact integer phase, no large-argument trig error.
    phase = 2.0 * math.pi * ((k * n) % n_fft) / n_fft
    w = hann_window(win_length, n_fft)[None, :]
    return np.concatenate([np.cos(phase) * w, -np.sin(phase) * w], axis=0)


def mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """HTK-scale triangular mel filterbank [n_freqs, n_mels] without normalisation (float64)."""
    all_freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
    m_pts = np.linspace(_hz_to_mel(np.float64(f_min)), _hz_to_mel(np.float64(f_max)), n_mels + 2)
    f_pts = _mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II as [n_mels, n_mfcc] (torchaudio create_dct(norm='ortho') layout), float64."""
    n = np.arange(n_mels, dtype=np.float64)[None, :]
    k = np.arange(n_mfcc, dtype=np.float64)[:, None]
    dct = np.cos(math.pi / n_mels * (n + 0.5) * k)
    dct[0] *= 1.0 / math.sqrt(2.0)
    dct *= math.sqrt(2.0 / n_mels)
    return dct.T.copy()


def is_exporting() -> bool:
    """True while torch.export / dynamo or the legacy tracer runs: skip Python-side shape checks."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing())


def _validate(config: FeatureConfig) -> None:
    """One-line ValueError for a config the MFCC cannot compute."""
    if config.log_floor not in ("fixed", "clip_top_db"):
        raise ValueError(f"log_floor must be 'fixed' or 'clip_top_db', got {config.log_floor!r}.")
    if not 0 < config.win_length <= config.n_fft:
        raise ValueError(f"win_length must be in 1..n_fft={config.n_fft}, got {config.win_length}.")
    if config.hop_length <= 0:
        raise ValueError(f"hop_length must be positive, got {config.hop_length}.")
    if config.n_mfcc > config.n_mels:
        raise ValueError(f"n_mfcc ({config.n_mfcc}) cannot exceed n_mels ({config.n_mels}); raise n_mels.")
    if not 0.0 <= config.f_min < config.f_max <= config.sample_rate / 2:
        raise ValueError(
            f"Need 0 <= f_min < f_max <= sample_rate/2, got f_min={config.f_min}, f_max={config.f_max}."
        )


class MFCC(nn.Module):
    """Waveform [B, samples] (or [samples]) at `config.sample_rate` -> MFCC [B, n_mfcc, frames]."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        super().__init__()
        config = config or FeatureConfig()
        _validate(config)
        self.config = config
        self.n_freq = config.n_fft // 2 + 1
        basis = dft_basis(config.n_fft, config.win_length)
        fb = mel_filterbank(self.n_freq, config.sample_rate, config.n_mels, config.f_min, config.f_max)
        self.register_buffer("dft_kernel", torch.from_numpy(basis[:, None, :]).float(), persistent=False)
        # Stored [n_mels, n_freq] so the projection is a matmul on [B, n_freq, frames].
        self.register_buffer("mel_fb", torch.from_numpy(fb.T.copy()).float(), persistent=False)
        # Stored [n_mfcc, n_mels]: mfcc = dct @ db.
        self.register_buffer("dct", torch.from_numpy(dct_matrix(config.n_mfcc, config.n_mels).T.copy()).float(),
                             persistent=False)

    def frames(self, samples: int) -> int:
        """Frames produced for `samples` input samples (no centring)."""
        return self.config.frames(samples)

    def power_spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> power spectrum [B, n_fft // 2 + 1, frames] (conv1d with the DFT basis)."""
        x = wave.to(self.dft_kernel.dtype).unsqueeze(1)
        spec = torch.nn.functional.conv1d(x, self.dft_kernel, stride=self.config.hop_length)
        re, im = spec[:, : self.n_freq], spec[:, self.n_freq :]
        return re * re + im * im

    def log_mel_db(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> unclamped dB mel spectrogram [B, n_mels, frames]: 10*log10(max(mel, amin))."""
        wave = self._as_batch(wave)
        mel = torch.matmul(self.mel_fb, self.power_spectrum(wave))
        return 10.0 * torch.log10(torch.clamp(mel, min=self.config.amin))

    def from_log_mel_db(self, db: torch.Tensor) -> torch.Tensor:
        """dB mel [B, n_mels, frames] -> MFCC [B, n_mfcc, frames]: the configured floor, then DCT-II."""
        if self.config.log_floor == "clip_top_db":
            # Per-clip maximum over that clip's whole map (or over this window, for a windowed stream).
            peak = torch.amax(db, dim=(-2, -1), keepdim=True)
            db = torch.maximum(db, peak - self.config.top_db)
        else:
            db = torch.clamp(db, min=self.config.floor_db)
        return torch.matmul(self.dct, db)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """MFCC [B, n_mfcc, frames] of [B, samples] ([n_mfcc, frames] of [samples])."""
        if wave.dim() == 1:
            return self.forward(wave.unsqueeze(0)).squeeze(0)
        return self.from_log_mel_db(self.log_mel_db(wave))

    def _as_batch(self, wave: torch.Tensor) -> torch.Tensor:
        """[samples] -> [1, samples]; a one-line error for other ranks or less than one window."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(
                f"MFCC expects a waveform [B, samples] or [samples], got shape {tuple(wave.shape)}; "
                f"squeeze the channel axis of mono audio first."
            )
        if not is_exporting() and wave.shape[-1] < self.config.n_fft:
            raise ValueError(
                f"Waveform has {wave.shape[-1]} samples, fewer than one window ({self.config.n_fft}); "
                f"pad it (kwsdeploy.audio.fit_clip) to at least {self.config.n_fft} samples."
            )
        return wave


@functools.lru_cache(maxsize=8)
def _cached_mfcc(config: FeatureConfig) -> MFCC:
    return MFCC(config).eval()


def compute_features(
    waveform: Union[torch.Tensor, np.ndarray], config: FeatureConfig | None = None
) -> torch.Tensor:
    """MFCC of a waveform ([B, samples] or [samples], numpy or torch) under `config`, without gradients."""
    config = config or FeatureConfig()
    wave = torch.as_tensor(np.asarray(waveform, dtype=np.float32)) if isinstance(waveform, np.ndarray) else waveform
    with torch.no_grad():
        return _cached_mfcc(config)(wave.float())
