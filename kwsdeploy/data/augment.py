"""The reference's training augmentation, seeded: waveform steps (in the dataset) and SpecAugment.

Waveform, in the reference's order: pad 10 % each side and random-crop 1 s; with p 0.8 add a
random 1 s cut of background noise at volume U(0, 0.1) (clipped to [-1, 1]); time shift by
U(-0.1, 0.1) s filling the gap with U(-0.001, 0.001) noise; speed U(0.85, 1.15) by resampling,
then cut or zero-padded back to 1 s (like the reference's librosa.resample + fix_length). SpecAugment: 2 time masks of 0-24 frames and 2 frequency
masks of 0-6 coefficients set to 0, per example.

Opt-in level augmentation for level-varying real speech (off in the reference recipe): a random
gain of U(-gain_db, +gain_db) dB first, and noise mixed at a random SNR U(lo, hi) dB relative to
the clip's own power instead of the absolute volume (see `augment_waveform`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from kwsdeploy.contract import SAMPLE_RATE

PAD_FRACTION = 0.1
NOISE_PROB = 0.8
NOISE_VOLUME = 0.1
SHIFT_SECONDS = 0.1
SHIFT_FILL = 0.001
SPEED_RANGE = (0.85, 1.15)
SPEED_STEPS = 200  # the factor is rounded to 1/200: soxr designs rational-ratio filters 2x faster
TIME_MASKS, TIME_MASK_MAX = 2, 24
FREQ_MASKS, FREQ_MASK_MAX = 2, 6


def fix_length(x: np.ndarray, samples: int) -> np.ndarray:
    """Cut the end, or zero-pad at the end, to exactly `samples`."""
    if len(x) >= samples:
        return x[:samples]
    return np.concatenate([x, np.zeros(samples - len(x), dtype=x.dtype)])


def pad_and_crop(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad 10 % of the length on each side, then take a random window of the original length."""
    n = len(x)
    pad = int(n * PAD_FRACTION)
    padded = np.concatenate([np.zeros(pad, x.dtype), x, np.zeros(pad, x.dtype)])
    off = int(rng.integers(0, 2 * pad + 1))
    return padded[off: off + n]


def _noise_cut(n: int, noises: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray | None:
    """With p 0.8, a random `n`-sample cut of a random noise (int16 array) as float32; else None.

    Shared by both noise modes, with the same random draws in the same order."""
    if not noises or rng.random() >= NOISE_PROB:
        return None
    noise = noises[int(rng.integers(0, len(noises)))]
    off = int(rng.integers(0, max(len(noise) - n, 0) + 1))
    return fix_length(noise[off: off + n].astype(np.float32) / np.float32(32768.0), n)


def add_noise(x: np.ndarray, noises: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """With p 0.8, add a random 1 s cut of a random noise (int16 array) at volume U(0, 0.1)."""
    seg = _noise_cut(len(x), noises, rng)
    if seg is None:
        return x
    volume = np.float32(rng.uniform(0.0, NOISE_VOLUME))
    return np.clip(x + volume * seg, -1.0, 1.0)


def random_gain(x: np.ndarray, gain_db: float, rng: np.random.Generator) -> np.ndarray:
    """Scale by U(-gain_db, +gain_db) dB, clipped to [-1, 1]."""
    db = rng.uniform(-gain_db, gain_db)
    return np.clip(x * np.float32(10.0 ** (db / 20.0)), -1.0, 1.0).astype(np.float32)


def add_noise_snr(
    x: np.ndarray, noises: Sequence[np.ndarray], snr_db: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """With p 0.8, add a random 1 s noise cut at an SNR of U(lo, hi) dB relative to the clip's power.

    The clip's power is its mean square over the whole clip; a silent clip or a silent cut gets no
    noise (nothing to be relative to).
    """
    seg = _noise_cut(len(x), noises, rng)
    if seg is None:
        return x
    snr = rng.uniform(*snr_db)
    p_signal = float(np.mean(np.square(x, dtype=np.float64)))
    p_noise = float(np.mean(np.square(seg, dtype=np.float64)))
    if p_signal <= 1e-12 or p_noise <= 1e-12:
        return x
    scale = np.float32(np.sqrt(p_signal / (p_noise * 10.0 ** (snr / 10.0))))
    return np.clip(x + scale * seg, -1.0, 1.0).astype(np.float32)


def time_shift(x: np.ndarray, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Shift by U(-0.1, 0.1) s; the uncovered part gets faint U(-0.001, 0.001) noise."""
    start = int(rng.uniform(-SHIFT_SECONDS * sample_rate, SHIFT_SECONDS * sample_rate))
    fill = rng.uniform(-SHIFT_FILL, SHIFT_FILL, abs(start)).astype(np.float32)
    if start >= 0:
        return np.concatenate([x[start:], fill])
    return np.concatenate([fill, x[:start]])


def change_speed(x: np.ndarray, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample by a factor U(0.85, 1.15) (rounded to 1/200; soxr HQ), back to the same length."""
    import soxr

    steps = int(round(rng.uniform(*SPEED_RANGE) * SPEED_STEPS))
    y = soxr.resample(x.astype(np.float32, copy=False), SPEED_STEPS, steps, quality="HQ")
    return fix_length(np.asarray(y, dtype=np.float32), len(x))


def augment_waveform(
    x: np.ndarray,
    noises: Sequence[np.ndarray],
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
    *,
    reference: bool = True,
    gain_db: float = 0.0,
    noise_snr_db: Optional[tuple[float, float]] = None,
    speaker: "Optional[SpeakerAugment]" = None,  # noqa: F821
) -> np.ndarray:
    """The waveform steps; `x` float32 [samples], returns a new array.

    `reference`: pad/crop, noise at volume U(0, 0.1), shift, speed (the reference's order; with the
    defaults the random draws are exactly the reference pipeline's). `gain_db` > 0 first scales by
    U(-gain_db, gain_db) dB; `noise_snr_db` (lo, hi) mixes noise at U(lo, hi) dB SNR instead of the
    absolute volume (also when `reference` is off). `speaker` (a `speaker_augment.SpeakerAugment`)
    runs its steps (speed, VTLP, reverb, EQ/telephone, shift) after the gain, before the noise.
    """
    x = np.asarray(x, dtype=np.float32)
    if gain_db > 0:
        x = random_gain(x, gain_db, rng)
    if speaker is not None and speaker.active:
        from kwsdeploy.data.speaker_augment import speaker_augment

        x = speaker_augment(x, speaker, rng, sample_rate)
    if reference:
        x = pad_and_crop(x, rng)
    if noise_snr_db is not None:
        x = add_noise_snr(x, noises, noise_snr_db, rng)
    elif reference:
        x = add_noise(x, noises, rng)
    if reference:
        x = time_shift(x, rng, sample_rate)
        x = change_speed(x, rng, sample_rate)
    return np.ascontiguousarray(x, dtype=np.float32)


def parse_snr_range(value: "str | Sequence[float] | None") -> Optional[tuple[float, float]]:
    """'5,30' / '10' / (5, 30) -> (lo, hi) in dB with lo <= hi; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parts = [float(v) for v in value.replace(":", ",").split(",") if v.strip()]
        except ValueError:
            parts = []
    else:
        parts = [float(v) for v in value]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(np.isfinite(parts)) or parts[0] > parts[1]:
        raise ValueError(f"noise SNR range must be 'LO,HI' dB with LO <= HI (e.g. '5,30'), got {value!r}.")
    return (parts[0], parts[1])


def spec_augment(features, generator: Optional["torch.Generator"] = None):  # noqa: F821
    """2 time masks (0-24 frames) + 2 frequency masks (0-6 coefficients) per example, set to 0.

    `features` is [B, F, T] or [B, 1, F, T] (any device); returns a masked copy. Mask positions
    come from `generator` (a CPU torch.Generator), so a seeded generator repeats them.
    """
    if features.dim() not in (3, 4):
        raise ValueError(f"spec_augment expects [B, F, T] or [B, 1, F, T] features, got shape {tuple(features.shape)}.")
    keep = spec_augment_keep(features.shape[0], features.shape[-2], features.shape[-1], generator)
    if features.dim() == 4:
        keep = keep.unsqueeze(1)
    return features.masked_fill(~keep.to(features.device), 0.0)


def spec_augment_keep(b: int, f: int, t: int, generator: Optional["torch.Generator"] = None):  # noqa: F821
    """The [B, F, T] bool mask (True: kept) that `spec_augment` applies, drawn in the same order, so a
    trainer can draw it for a whole global batch and give each rank its rows."""
    import torch

    def masks(count: int, max_width: int, size: int) -> "torch.Tensor":
        width = torch.randint(0, max_width + 1, (b, count), generator=generator)
        width = torch.minimum(width, torch.tensor(size))
        start = (torch.rand((b, count), generator=generator) * (size - width + 1)).floor().long()
        pos = torch.arange(size).view(1, 1, size)
        hit = (pos >= start.unsqueeze(-1)) & (pos < (start + width).unsqueeze(-1))
        return hit.any(dim=1)  # [B, size]

    time_hit = masks(TIME_MASKS, TIME_MASK_MAX, t)
    freq_hit = masks(FREQ_MASKS, FREQ_MASK_MAX, f)
    return ~(freq_hit.unsqueeze(-1) | time_hit.unsqueeze(-2))
