"""MFCC frontend in plain torch, exportable to ONNX / TensorRT (no torch.stft, no complex tensors).

The pipeline equals torchaudio's `MFCC(melkwargs=dict(center=False, ...))` at its defaults:
periodic Hann window, power spectrum, HTK mel filterbank (no norm), 10*log10(max(P, amin)),
a floor, then an orthonormal DCT-II. The windowed DFT is two small MatMul stages (a Cooley-Tukey
split n_fft = N2 x N1 in real arithmetic, twiddles folded into the second stage, Hermitian halves
dropped, `factorised_dft`): about 1/5 of the MACs and 1/20 of the constants of the direct
480 x 482 DFT, in ops TensorRT parses (no DFT/STFT op). Where n_fft has no such split or is not a
multiple of the hop, the STFT is a strided conv1d with the full real DFT basis. The floor is set by
`FeatureConfig.log_floor`:
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
    "dft_factors",
    "frontend_macs_per_frame",
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


def dft_factors(n_fft: int, hop_length: int, n_mels: int = 40) -> tuple[int, int] | None:
    """(N2, N1) with n_fft = N2 * N1, N2 even, with the fewest constants (both DFT stages and the mel
    matrix over their bins; then fewest MACs); None when n_fft is not a multiple of the hop (framing is
    a reshape) or has no such split."""
    if n_fft % hop_length or n_fft < 16:
        return None
    best = None
    for n2 in range(4, n_fft // 2 + 1, 2):
        if n_fft % n2:
            continue
        n1 = n_fft // n2
        if n1 < 2:
            continue
        k2 = n2 // 2 + 1
        consts = 2 * k2 * n2 + 2 * k2 * n1 * 2 * n1 + k2 * n1 * n_mels  # stage 1, stage 2, mel over its bins
        macs = 2 * k2 * n2 * n1 + 2 * k2 * n1 * 2 * n1
        key = (consts, macs)
        if best is None or key < best[0]:
            best = (key, (n2, n1))
    return best[1] if best else None


def factorised_dft(n_fft: int, win_length: int, n2: int, n1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two stages of the windowed real DFT of length n_fft = n2 * n1, float64.

    A windowed frame x[n], n = i1 + n1 * i2, is reshaped to [n2, n1]. Stage 1 (`m1` [2 * K2, n2],
    K2 = n2 // 2 + 1) is the length-n2 DFT over the coarse index i2, rows (k2, Re/Im) interleaved, so
    its output [2 * K2, n1] reshapes to [K2, 2 * n1] (Re of i1 = 0..n1-1, then Im) without a
    transpose; the other k2 are conjugates. Stage 2 (`m2` [K2, 2 * n1, 2 * n1]) is, per k2, the
    length-n1 DFT over i1 with the twiddle folded in: X[k2 + n2 * k1] = sum_i1 A[k2, i1] W^(i1 (k2 + n2 k1)),
    outputs (k1, Re/Im) interleaved. `window` [n_fft] multiplies the frame first. `bins` [K2 * n1]: the
    spectrum bin (0..n_fft // 2) of each stage-2 output (k2-major), or -1 for a duplicate (bin b and
    its mirror n_fft - b have the same power)."""
    if n2 * n1 != n_fft or n2 % 2:
        raise ValueError(f"need n_fft = n2 * n1 with n2 even, got {n_fft} = {n2} x {n1}.")
    k2n = n2 // 2 + 1
    ph1 = 2.0 * math.pi * ((np.arange(k2n)[:, None] * np.arange(n2)[None, :]) % n2) / n2
    m1 = np.stack([np.cos(ph1), -np.sin(ph1)], axis=1).reshape(2 * k2n, n2)
    i1 = np.arange(n1)[None, :, None]
    k = np.arange(k2n)[:, None, None] + n2 * np.arange(n1)[None, None, :]  # [K2, 1, n1]: bin of (k2, k1)
    ph2 = 2.0 * math.pi * ((i1 * k) % n_fft) / n_fft  # [K2, i1, k1]
    c, sn = np.cos(ph2), np.sin(ph2)
    # Z = sum (Ar + i Ai)(cos - i sin): Re = Ar cos + Ai sin, Im = Ai cos - Ar sin.
    m2 = np.zeros((k2n, 2 * n1, n1, 2))
    m2[:, :n1, :, 0], m2[:, :n1, :, 1] = c, -sn
    m2[:, n1:, :, 0], m2[:, n1:, :, 1] = sn, c
    m2 = m2.reshape(k2n, 2 * n1, 2 * n1)
    half = n_fft // 2
    bins = np.full(k2n * n1, -1, dtype=np.int64)
    seen: set[int] = set()
    for j, kk in enumerate(k.reshape(-1)):
        b = int(kk) if kk <= half else n_fft - int(kk)
        if b not in seen:
            seen.add(b)
            bins[j] = b
    if seen != set(range(half + 1)):
        raise AssertionError(f"factorised DFT {n2} x {n1} misses bins {sorted(set(range(half + 1)) - seen)[:5]}")
    return m1, m2, hann_window(win_length, n_fft), bins


def frontend_macs_per_frame(config: FeatureConfig) -> int:
    """Multiply-accumulates of one MFCC frame as `MFCC(config)` computes it (DFT, power, mel, DCT)."""
    n_freq = config.n_fft // 2 + 1
    factors = dft_factors(config.n_fft, config.hop_length, config.n_mels)
    if factors is None:
        dft, bins = 2 * n_freq * config.n_fft, n_freq
        power = 2 * n_freq
    else:
        n2, n1 = factors
        k2n = n2 // 2 + 1
        dft = config.n_fft + 2 * k2n * n2 * n1 + 2 * k2n * n1 * 2 * n1  # window, stage 1, stage 2
        bins = k2n * n1
        power = 2 * bins  # squares
    return dft + power + bins * config.n_mels + config.n_mels * config.n_mfcc


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


DB_PER_NEPER = 10.0 / math.log(10.0)  # 10 * log10(x) = log(x) * this
GATHER_MAX_FRAMES = 10  # up to 100 ms of frames per call, framing is one Gather with a constant (int32) index


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
        fb = mel_filterbank(self.n_freq, config.sample_rate, config.n_mels, config.f_min, config.f_max)
        self.factors = dft_factors(config.n_fft, config.hop_length, config.n_mels)
        if self.factors is None:
            basis = dft_basis(config.n_fft, config.win_length)
            self.register_buffer("dft_kernel", torch.from_numpy(basis[:, None, :]).float(), persistent=False)
        else:
            m1, m2, window, bins = factorised_dft(config.n_fft, config.win_length, *self.factors)
            self.register_buffer("dft_stage1", torch.from_numpy(m1).float(), persistent=False)
            self.register_buffer("dft_stage2", torch.from_numpy(m2).float(), persistent=False)
            self.register_buffer("dft_window", torch.from_numpy(window).float(), persistent=False)
            # The mel matrix over the stage-2 outputs, per k2 (duplicates weigh 0): [K2, N1, n_mels].
            fb_bins = np.where(bins[:, None] >= 0, fb[np.maximum(bins, 0)], 0.0).reshape(m2.shape[0], -1, fb.shape[1])
            self.register_buffer("mel_bins", torch.from_numpy(fb_bins).float(), persistent=False)
        # Stored [n_mels, n_freq] so the projection is a matmul on [B, n_freq, frames].
        self.register_buffer("mel_fb", torch.from_numpy(fb.T.copy()).float(), persistent=False)
        # Stored [n_mfcc, n_mels]: mfcc = dct @ db.
        self.register_buffer("dct", torch.from_numpy(dct_matrix(config.n_mfcc, config.n_mels).T.copy()).float(),
                             persistent=False)

    def frames(self, samples: int) -> int:
        """Frames produced for `samples` input samples (no centring)."""
        return self.config.frames(samples)

    def power_spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> power spectrum [B, n_fft // 2 + 1, frames] (the direct DFT: conv1d with the DFT basis)."""
        kernel = torch.from_numpy(dft_basis(self.config.n_fft, self.config.win_length)[:, None, :]).to(
            self.mel_fb.dtype) if self.factors is not None else self.dft_kernel
        x = wave.to(kernel.dtype).unsqueeze(1)
        spec = torch.nn.functional.conv1d(x, kernel, stride=self.config.hop_length)
        re, im = spec[:, : self.n_freq], spec[:, self.n_freq :]
        return re * re + im * im

    def _mel_factorised(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> mel power [B, frames, n_mels] through the factorised DFT.

        A packet of few frames (a step) is cut into N1-sample chunks and each frame's [N2, N1] matrix
        gathered from them (one Gather; `_mel_gathered`). A long input (a whole clip) is framed by hop
        blocks instead (a constant index per frame would be large): stage 1 is one GEMM over every
        frame, stage 2 one per k2, the mel one GEMM over all of them. Sizes are Python ints:
        constants in an exported graph, where only the batch axis varies."""
        cfg = self.config
        n2, n1 = self.factors
        k2n = n2 // 2 + 1
        per = cfg.n_fft // cfg.hop_length
        hops = int(wave.shape[-1]) // cfg.hop_length
        frames = hops - per + 1
        if hops * cfg.hop_length != int(wave.shape[-1]):  # a step's input is whole hops: no Slice node
            wave = wave[:, : hops * cfg.hop_length]
        if frames <= GATHER_MAX_FRAMES and cfg.hop_length % n1 == 0:
            return self._mel_gathered(wave, hops, frames)
        blocks = wave.reshape(-1, hops, cfg.hop_length)
        x = torch.cat([blocks[:, i : i + frames] for i in range(per)], dim=-1) * self.dft_window
        x = x.reshape(-1, n2, n1).transpose(0, 1).reshape(n2, -1)  # [N2, (b, f, i1)]
        a = torch.matmul(self.dft_stage1, x)  # [2*K2 (k2, Re/Im), (b, f, i1)]
        a = a.reshape(k2n, 2, -1, n1).transpose(1, 2).reshape(k2n, -1, 2 * n1)  # [K2, (b, f), (Re/Im, i1)]
        z = torch.matmul(a, self.dft_stage2)  # [K2, (b, f), (k1, Re/Im)]
        z = z.reshape(k2n, -1, n1, 2)
        power = (z * z).sum(dim=-1)  # [K2, (b, f), k1] (one ReduceSumSquare once simplified)
        power = power.transpose(0, 1).reshape(-1, k2n * n1)  # [(b, f), (k2, k1)]
        return torch.matmul(power, self.mel_bins.reshape(k2n * n1, -1)).reshape(-1, frames, cfg.n_mels)

    def _mel_gathered(self, wave: torch.Tensor, hops: int, frames: int) -> torch.Tensor:
        """The step path of `_mel_factorised` (a packet of at most GATHER_MAX_FRAMES frames): the same
        sums, laid out for ONNX Runtime's fast kernels at batch 1 and at large batches alike.

        The audio is transposed once ([samples, B]: a 2-D transpose, ONNX Runtime's fast one) and cut
        into N1-sample chunks [J, N1, B]; one Gather of whole [N1, B] rows frames it frame-outer
        ([F, N2, N1, B]), so the window is a broadcast of one value over each row of B streams, and
        stage 1 is one GEMM per frame over every stream ([2*K2, N2] x [N2, (i1, b)]). One block transpose
        then puts the frames beside the streams ([K2, (Re/Im, i1), (f, b)]): stage 2 is one GEMM per k2 over
        every frame and stream (its outputs a Re block and an Im block, so a power is two halves added)
        and the mel projection a single GEMM ([n_mels, (k2, k1)] x [(k2, k1), (f, b)]). The frame-major
        layout before this one ran stage 1 as one [2*K2, N2] x [N2, N1] GEMM per frame and stream and
        the mel as a GEMM per k2 summed over k2: side by side, this layout takes 0.88-0.89x its CPU time
        at batch 1 and 0.62-0.75x at batch 64 (1- and 8-frame packets;
        benchmarks/results/amd-epyc-avx2-2c/frontend_layout.md), with the same constants."""
        cfg = self.config
        n2, n1 = self.factors
        k2n = n2 // 2 + 1
        step = cfg.hop_length // n1
        rows = wave.transpose(0, 1).reshape(hops * step, n1, -1)  # [J, N1, B]: chunk j, sample i1, stream b
        index = torch.from_numpy((step * np.arange(frames)[:, None] + np.arange(n2)[None, :]).astype(np.int32))
        x = rows[index] * self.dft_window.reshape(1, n2, n1, 1)  # [F, N2, N1, B]: frame f's sample i1 + N1 * i2
        a = torch.matmul(self.dft_stage1, x.reshape(frames, n2, -1))  # [F, 2*K2 (k2, Re/Im), (i1, b)]
        a = a.reshape(frames, k2n, 2 * n1, -1).permute(1, 2, 0, 3).reshape(k2n, 2 * n1, -1)  # [K2, (Re/Im, i1), (f, b)]
        # Stage 2 transposed, its outputs reordered (Re of k1 = 0..N1-1, then Im): one constant once exported
        # (not a second buffer: the module's constants stay within the 100 KB budget); the mel matrix likewise.
        m2 = self.dft_stage2.reshape(k2n, 2 * n1, n1, 2).permute(0, 3, 2, 1).reshape(k2n, 2 * n1, 2 * n1)
        z = torch.matmul(m2, a)  # [K2, (Re/Im, k1), (f, b)]
        squares = z * z
        # [(k2, k1), (f, b)]: two Slices (ONNX Runtime fuses them into one Split) and one Add
        power = (squares[:, :n1] + squares[:, n1:]).reshape(k2n * n1, -1)
        mel = torch.matmul(self.mel_bins.reshape(k2n * n1, -1).transpose(0, 1), power)  # [n_mels, (f, b)]
        return mel.reshape(cfg.n_mels, frames, -1).permute(2, 1, 0)  # [B, F, n_mels]

    def log_mel_db(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> unclamped dB mel spectrogram [B, n_mels, frames]: 10*log10(max(mel, amin))."""
        wave = self._as_batch(wave)
        if self.factors is None:
            mel = torch.matmul(self.mel_fb, self.power_spectrum(wave))
        else:
            mel = self._mel_factorised(wave.to(self.mel_bins.dtype)).transpose(-1, -2)
        return torch.log(torch.clamp(mel, min=self.config.amin)) * DB_PER_NEPER  # 10 log10: one Mul, not Div + Mul

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
