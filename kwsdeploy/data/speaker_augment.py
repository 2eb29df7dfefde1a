"""Speaker augmentation of real clips (numpy + soxr): other voices, microphones and rooms, seeded.

Each step takes the clip and the per-item generator of the dataset (seeded by (seed, epoch,
index)), and keeps the length. Levels stay relative to the clip: nothing here adds sound at an
absolute volume (noise, in `augment.add_noise_snr`, is mixed at an SNR relative to the clip).
- `speed`: resample by U(lo, hi) (tempo, pitch and formants together), back to 1 s;
- `tempo`: with probability tempo_p, stretch time by a rate U(lo, hi) (> 1 faster) keeping pitch and
  formants (a phase vocoder), the middle second kept (or the clip centred in zeros): slow and fast talkers;
- `vtlp`: vocal-tract-length perturbation, the STFT's frequency axis warped by alpha in U(1-a, 1+a)
  (piecewise linear, fixed above 4.8 kHz as in Jaitly & Hinton 2013);
- `reverb`: with probability p, a synthetic room: exponentially decaying noise with RT60
  U(0.15, 0.7) s after a direct path, at a direct-to-reverberant ratio U(0, 12) dB;
- `eq`: a random smooth EQ curve of +-eq_db dB over log frequency, or with probability
  telephone_p a telephone band (300-3,400 Hz, soft edges); and with probability lowpass_p a
  low-pass with its corner log-uniform in 0.7-4 kHz and a slope of 6, 12, 24 or 48 dB an octave (a
  dull microphone, a distant or muffled talker, an 8 kHz recording); then the clip's RMS is restored;
- `gate`: with probability gate_p, a noise gate: the 10 ms frames more than U(12, 30) dB below the
  clip's loudest are attenuated by U(20, 60) dB (gain interpolated between frame centres): recording
  chains that drop a talker's quiet fricatives and onsets (the unseen test speaker's "six" is its vowel
  alone, his /s/ and /ks/ more than 35 dB down where the training speakers' are within 20 dB);
- `fricatives`: with probability fricative_p, the frames whose energy above 2 kHz exceeds their
  energy below 1 kHz (/s/, /f/, /sh/, the burst of /k/ and /t/) lose U(15, 40) dB whatever their level
  (gain interpolated between frame centres); the gate above misses a loud /s/, this does not:
  talkers and microphones that carry the vowel but hardly the fricatives;
- `shift`: move by U(-s, s) seconds, zero-filled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from kwsdeploy.contract import SAMPLE_RATE

RT60_RANGE = (0.15, 0.7)
DRR_DB_RANGE = (0.0, 12.0)
RIR_SECONDS = 0.5
VTLP_FHI = 4800.0
EQ_POINTS = 6
TELEPHONE_BAND = (300.0, 3400.0)
LOWPASS_RANGE = (700.0, 4000.0)  # corner frequency, drawn log-uniform
LOWPASS_ORDERS = (1, 2, 4, 8)  # slope: 6 * order dB an octave above the corner
# Measured on FSDD: the unseen test speaker holds 4.8 % of his energy above 1 kHz (training speakers
# 3.5-20 %); a model trained with corners >= 1.5 kHz only got 30 % of his clips low-passed at 1 kHz.
N_FFT, HOP = 512, 128
GATE_THRESHOLD_DB = (12.0, 30.0)  # below the loudest frame
GATE_DEPTH_DB = (20.0, 60.0)  # attenuation of the frames under the threshold
GATE_FRAME_S = 0.01
FRICATIVE_BANDS_HZ = (1000.0, 2000.0)  # a frame is fricative when its energy above the second exceeds that below the first
FRICATIVE_DEPTH_DB = (15.0, 40.0)
SPEED_STEPS = 200  # speed factors rounded to 1/200, as in augment.change_speed (soxr designs them faster)


@dataclass(frozen=True)
class SpeakerAugment:
    """Which speaker steps run, and how strongly (all off by default)."""

    speed: Optional[tuple[float, float]] = None
    tempo: Optional[tuple[float, float]] = None
    tempo_p: float = 0.0
    vtlp: float = 0.0
    reverb_p: float = 0.0
    eq_db: float = 0.0
    telephone_p: float = 0.0
    lowpass_p: float = 0.0
    gate_p: float = 0.0
    fricative_p: float = 0.0
    shift_s: float = 0.0

    def __post_init__(self) -> None:
        if self.speed is not None:
            lo, hi = (float(v) for v in self.speed)
            if not 0.5 <= lo <= hi <= 2.0:
                raise ValueError(f"speed range must be LO,HI with 0.5 <= LO <= HI <= 2, got {self.speed!r}.")
            object.__setattr__(self, "speed", (lo, hi))
        if self.tempo is not None:
            lo, hi = (float(v) for v in self.tempo)
            if not 0.4 <= lo <= hi <= 2.5:
                raise ValueError(f"tempo range must be LO,HI with 0.4 <= LO <= HI <= 2.5, got {self.tempo!r}.")
            object.__setattr__(self, "tempo", (lo, hi))
        if not 0 <= self.vtlp < 0.5:
            raise ValueError(f"vtlp must be in [0, 0.5), got {self.vtlp}.")
        for name in ("reverb_p", "telephone_p", "tempo_p", "lowpass_p", "gate_p", "fricative_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}.")
        if self.eq_db < 0 or self.shift_s < 0:
            raise ValueError("eq_db and shift_s must be >= 0.")

    @property
    def active(self) -> bool:
        return bool(self.speed or (self.tempo and self.tempo_p) or self.vtlp or self.reverb_p or self.eq_db or self.telephone_p or self.lowpass_p
                    or self.gate_p or self.fricative_p or self.shift_s)


def change_speed(x: np.ndarray, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """Resample by a factor U(lo, hi) (rounded to 1/200, soxr HQ), cut or zero-padded to the length."""
    import soxr

    steps = int(round(rng.uniform(lo, hi) * SPEED_STEPS))
    y = np.asarray(soxr.resample(x.astype(np.float32, copy=False), SPEED_STEPS, steps, quality="HQ"), np.float32)
    return y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))


def _stft(x: np.ndarray) -> np.ndarray:
    win = np.hanning(N_FFT + 1)[:-1]
    pad = np.pad(x, (N_FFT // 2, N_FFT // 2 + HOP))
    frames = np.lib.stride_tricks.sliding_window_view(pad, N_FFT)[::HOP]
    return np.fft.rfft(frames * win, axis=1)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add (window / sum of squared windows), vectorised over hops."""
    k = N_FFT // HOP
    win = np.hanning(N_FFT + 1)[:-1]
    frames = (np.fft.irfft(spec, n=N_FFT, axis=1) * win).reshape(len(spec), k, HOP)
    wins = (win**2).reshape(k, HOP)
    blocks = np.zeros((len(spec) + k - 1, HOP))
    norm = np.zeros_like(blocks)
    for j in range(k):
        blocks[j: j + len(spec)] += frames[:, j]
        norm[j: j + len(spec)] += wins[j]
    out = (blocks / np.maximum(norm, 1e-8)).reshape(-1)
    return out[N_FFT // 2: N_FFT // 2 + length]


def vtlp(x: np.ndarray, alpha: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Warp the frequency axis by `alpha` (> 1 moves formants up), piecewise linear up to VTLP_FHI.

    Magnitudes are moved to the warped bins and each bin's phase advance (its instantaneous
    frequency, as in a phase vocoder) is scaled by the same warp, so a tone at f comes out at alpha f."""
    if alpha == 1.0:
        return np.asarray(x, dtype=np.float32).copy()
    spec = _stft(x.astype(np.float64))
    frames, bins = spec.shape
    nyq = rate / 2
    f = np.linspace(0.0, nyq, bins)
    knee = VTLP_FHI * min(alpha, 1.0) / alpha
    # the source frequency that lands on each target frequency (inverse of the warp)
    src = np.where(f <= knee * alpha, f / alpha,
                   knee + (f - knee * alpha) * (nyq - knee) / max(nyq - knee * alpha, 1e-6))
    ratio = np.where(src > 0, f / np.maximum(src, 1e-9), alpha)
    pos = np.clip(src / nyq * (bins - 1), 0, bins - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, bins - 1)
    w = pos - i0
    mag, phase = np.abs(spec), np.angle(spec)
    omega = 2 * np.pi * f / rate * HOP  # expected phase advance per hop of each bin
    dphi = np.diff(phase, axis=0, prepend=phase[:1]) - omega
    advance = omega + (dphi + np.pi) % (2 * np.pi) - np.pi  # true advance per hop
    advance[0] = phase[0]
    new_mag = mag[:, i0] * (1 - w) + mag[:, i1] * w
    near = np.where(w < 0.5, i0, i1)
    new_adv = advance[:, near] * ratio
    new_adv[0] = phase[0, near]
    new_phase = np.cumsum(new_adv, axis=0)
    return _istft(new_mag * np.exp(1j * new_phase), len(x)).astype(np.float32)


def time_stretch(x: np.ndarray, rate: float) -> np.ndarray:
    """Phase-vocoder time stretch: `rate` > 1 is faster (shorter); pitch and formants stay."""
    spec = _stft(x.astype(np.float64))
    frames, bins = spec.shape
    steps = np.arange(0.0, frames - 1, rate)
    omega = 2 * np.pi * np.arange(bins) * HOP / N_FFT  # expected phase advance per hop of each bin
    i0 = steps.astype(int)
    w = (steps - i0)[:, None]
    mag = np.abs(spec[i0]) * (1 - w) + np.abs(spec[i0 + 1]) * w
    dphi = np.angle(spec[i0 + 1]) - np.angle(spec[i0]) - omega
    advance = omega + (dphi + np.pi) % (2 * np.pi) - np.pi
    phase = np.angle(spec[0]) + np.concatenate([np.zeros((1, bins)), np.cumsum(advance[:-1], axis=0)])
    n_out = int(round(len(x) / rate))
    return _istft(mag * np.exp(1j * phase), n_out).astype(np.float32)


def centre_fit(x: np.ndarray, samples: int) -> np.ndarray:
    """The middle `samples` of a longer clip, or a shorter one centred in zeros."""
    if len(x) >= samples:
        start = (len(x) - samples) // 2
        return x[start: start + samples]
    out = np.zeros(samples, dtype=x.dtype)
    start = (samples - len(x)) // 2
    out[start: start + len(x)] = x
    return out


def room_impulse(rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then decaying noise (RT60, DRR drawn)."""
    rt60 = rng.uniform(*RT60_RANGE)
    drr_db = rng.uniform(*DRR_DB_RANGE)
    n = int(RIR_SECONDS * rate)
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    tail[: int(0.002 * rate)] = 0.0  # first reflections arrive after ~2 ms
    energy = float(np.sum(tail**2))
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / max(energy, 1e-12))
    tail[0] = 1.0
    return tail


def reverb(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with `rir` (direct path at 0, so the word stays in place), keep the length and RMS."""
    n = len(x) + len(rir) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[: len(x)]
    return _match_rms(y, x)


def _match_rms(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    r_ref = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64))))
    r_y = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    if r_y <= 1e-12:
        return y.astype(np.float32)
    return (y * (r_ref / r_y)).astype(np.float32)


def eq_curve(freqs: np.ndarray, rng: np.random.Generator, eq_db: float, telephone: bool) -> np.ndarray:
    """Linear gain per frequency: a telephone band, or a smooth random curve of +-eq_db dB."""
    if telephone:
        lo, hi = TELEPHONE_BAND
        f = np.maximum(freqs, 1.0)
        high_pass = 1.0 / np.sqrt(1.0 + (lo / f) ** 16)  # 8th-order-like edges: -48 dB an octave out
        low_pass = 1.0 / np.sqrt(1.0 + (f / hi) ** 16)
        return high_pass * low_pass
    grid = np.log(np.geomspace(50.0, freqs[-1], EQ_POINTS))
    gains_db = rng.uniform(-eq_db, eq_db, EQ_POINTS)
    curve_db = np.interp(np.log(np.maximum(freqs, 50.0)), grid, gains_db)
    return 10.0 ** (curve_db / 20.0)


def equalise(x: np.ndarray, rng: np.random.Generator, eq_db: float, telephone: bool, rate: int = SAMPLE_RATE,
             lowpass_hz: Optional[float] = None, lowpass_order: int = 8) -> np.ndarray:
    """Filter by `eq_curve` (and a Butterworth-like low-pass at `lowpass_hz` of `lowpass_order`, 6 dB an
    octave per order; zero phase, whole clip at once), RMS restored."""
    spec = np.fft.rfft(x.astype(np.float64))
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    gain = eq_curve(freqs, rng, eq_db, telephone) if (eq_db > 0 or telephone) else np.ones_like(freqs)
    if lowpass_hz is not None:
        gain = gain / np.sqrt(1.0 + (freqs / lowpass_hz) ** (2 * lowpass_order))
    y = np.fft.irfft(spec * gain, len(x))
    return _match_rms(y, x)


def gate(x: np.ndarray, threshold_db: float, depth_db: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A noise gate: 10 ms frames more than `threshold_db` below the loudest lose `depth_db` dB; the gain
    moves linearly between frame centres, so nothing clicks. Same length; silence stays silence."""
    hop = max(1, int(GATE_FRAME_S * rate))
    n = len(x) // hop
    if n < 2:
        return x
    energy = np.square(x[: n * hop].astype(np.float64)).reshape(n, hop).mean(axis=1)
    if energy.max() <= 0:
        return x
    open_ = energy >= energy.max() * 10.0 ** (-threshold_db / 10.0)
    frame_gain = np.where(open_, 1.0, 10.0 ** (-depth_db / 20.0))
    centres = (np.arange(n) + 0.5) * hop
    gain = np.interp(np.arange(len(x)), centres, frame_gain)
    return (x * gain).astype(np.float32)


def soften_fricatives(x: np.ndarray, depth_db: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The frames (N_FFT window, HOP apart) with more energy above 2 kHz than below 1 kHz lose
    `depth_db` dB, the gain interpolated between frame centres; voiced frames and those over 60 dB
    under the loudest keep theirs (a broadband hiss between words above that is softened too)."""
    if len(x) < N_FFT:
        return x
    power = np.abs(_stft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / rate)
    low = power[:, freqs < FRICATIVE_BANDS_HZ[0]].sum(axis=1)
    high = power[:, freqs > FRICATIVE_BANDS_HZ[1]].sum(axis=1)
    audible = power.sum(axis=1) > power.sum(axis=1).max() * 1e-6
    frame_gain = np.where((high > low) & audible, 10.0 ** (-depth_db / 20.0), 1.0)
    centres = np.arange(len(power)) * HOP  # _stft pads N_FFT // 2 in front: frame j is centred at j * HOP
    return (x * np.interp(np.arange(len(x)), centres, frame_gain)).astype(np.float32)


def shift(x: np.ndarray, seconds: float, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Move by U(-seconds, seconds), zero-filled, same length."""
    k = int(rng.uniform(-seconds, seconds) * rate)
    if k == 0:
        return x
    out = np.zeros_like(x)
    if k > 0:
        out[k:] = x[:-k]
    else:
        out[:k] = x[-k:]
    return out


def speaker_augment(x: np.ndarray, aug: SpeakerAugment, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The enabled steps in order speed, tempo, VTLP, reverb, EQ/telephone/low-pass, gate, fricatives, shift; float32,
    same length."""
    x = np.asarray(x, dtype=np.float32)
    if aug.speed is not None:
        x = change_speed(x, aug.speed[0], aug.speed[1], rng)
    if aug.tempo is not None and aug.tempo_p > 0 and rng.random() < aug.tempo_p:
        x = centre_fit(time_stretch(x, float(rng.uniform(*aug.tempo))), len(x))
    if aug.vtlp > 0:
        x = vtlp(x, float(rng.uniform(1.0 - aug.vtlp, 1.0 + aug.vtlp)), rate)
    if aug.reverb_p > 0 and rng.random() < aug.reverb_p:
        x = reverb(x, room_impulse(rng, rate))
    if aug.eq_db > 0 or aug.telephone_p > 0 or aug.lowpass_p > 0:
        tel = aug.telephone_p > 0 and rng.random() < aug.telephone_p
        low, order = None, 8
        if aug.lowpass_p > 0 and rng.random() < aug.lowpass_p:
            low = float(np.exp(rng.uniform(*np.log(LOWPASS_RANGE))))
            order = int(LOWPASS_ORDERS[int(rng.integers(0, len(LOWPASS_ORDERS)))])
        if tel or aug.eq_db > 0 or low is not None:
            x = equalise(x, rng, aug.eq_db, tel, rate, lowpass_hz=low, lowpass_order=order)
    if aug.gate_p > 0 and rng.random() < aug.gate_p:
        x = gate(x, float(rng.uniform(*GATE_THRESHOLD_DB)), float(rng.uniform(*GATE_DEPTH_DB)), rate)
    if aug.fricative_p > 0 and rng.random() < aug.fricative_p:
        x = soften_fricatives(x, float(rng.uniform(*FRICATIVE_DEPTH_DB)), rate)
    if aug.shift_s > 0:
        x = shift(x, aug.shift_s, rng, rate)
    return np.clip(x, -1.0, 1.0).astype(np.float32)
