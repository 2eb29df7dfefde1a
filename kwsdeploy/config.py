"""Frozen configuration dataclasses shared by every part of kwsdeploy (torch-free).

`FeatureConfig` describes the MFCC frontend. Two presets matter:
- `FeatureConfig.reference()`: the reference's torchaudio MFCC with `top_db=80` relative to each
  clip's own maximum (not causal: it needs the whole clip first);
- `FeatureConfig.deployable()` (the default): the same MFCC, but the log floor is a fixed absolute
  floor, so a frame's features depend only on its own samples and streaming is exact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class FeatureConfig:
    """MFCC frontend settings; `frames(samples)` gives the frame count without centring."""

    sample_rate: int = 16000
    clip_samples: int = 16000
    n_mfcc: int = 40
    n_mels: int = 40
    n_fft: int = 480
    win_length: int = 480
    hop_length: int = 160
    f_min: float = 0.0
    f_max: float = 8000.0
    # Power spectrum floor before the log (torchaudio's amin for power: 1e-10).
    amin: float = 1e-10
    # "clip_top_db": clamp at (clip max - top_db) dB, per clip (the reference, not causal).
    # "fixed": clamp at `floor_db` absolute dB (causal, the deployable default).
    log_floor: str = "fixed"
    top_db: float = 80.0
    floor_db: float = -80.0

    def __post_init__(self) -> None:
        check_feature_config(self)

    @classmethod
    def reference(cls, n_mfcc: int = 40) -> "FeatureConfig":
        """The reference frontend: torchaudio MFCC, top_db 80 relative to each clip's maximum."""
        return cls(n_mfcc=n_mfcc, n_mels=max(40, n_mfcc), log_floor="clip_top_db")

    @classmethod
    def deployable(cls, n_mfcc: int = 40) -> "FeatureConfig":
        """The causal default: a fixed -80 dB floor replaces the clip-relative clamp."""
        return cls(n_mfcc=n_mfcc, n_mels=max(40, n_mfcc), log_floor="fixed")

    @property
    def causal(self) -> bool:
        """True for the fixed floor: each frame depends only on its own samples, so it streams."""
        return self.log_floor == "fixed"

    @property
    def clip_frames(self) -> int:
        """Frames of one clip (98 for 1 s at the defaults)."""
        return self.frames(self.clip_samples)

    def frames(self, samples: int) -> int:
        """Frames the MFCC makes of `samples` samples: n_fft-sample windows every hop, no centring."""
        if samples < self.n_fft:
            return 0
        return 1 + (samples - self.n_fft) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (checkpoint cards and bundle manifests)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureConfig":
        """Inverse of `to_dict`; an unknown field or floor mode is a one-line ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"Unknown feature-config field(s) {sorted(unknown)}; expected a subset of {sorted(known)}."
            )
        if data.get("log_floor", "fixed") not in ("fixed", "clip_top_db"):
            raise ValueError(f"log_floor must be 'fixed' or 'clip_top_db', got {data['log_floor']!r}.")
        return cls(**data)


MAX_SAMPLE_RATE = 192_000
MAX_MELS = 256


def check_feature_config(fc: FeatureConfig) -> None:
    """Raise one ValueError naming the first out-of-range field (a card or manifest read from disk
    is held to these, so `hop_length: 0` is a message, not a ZeroDivisionError)."""
    import math

    def bad(name: str, want: str) -> ValueError:
        return ValueError(f"feature config: {name} = {getattr(fc, name)!r}, expected {want}; "
                          "the card or manifest is damaged, or the option is out of range.")

    for name in ("sample_rate", "clip_samples", "n_mfcc", "n_mels", "n_fft", "win_length", "hop_length"):
        v = getattr(fc, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(name, "a positive integer")
    for name in ("f_min", "f_max", "amin", "top_db", "floor_db"):
        v = getattr(fc, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad(name, "a finite number")
    if fc.sample_rate > MAX_SAMPLE_RATE:
        raise bad("sample_rate", f"at most {MAX_SAMPLE_RATE}")
    if fc.n_mels > min(MAX_MELS, fc.n_fft // 2 + 1):
        raise bad("n_mels", f"at most {min(MAX_MELS, fc.n_fft // 2 + 1)} (n_fft // 2 + 1 frequency bins)")
    if fc.n_mfcc > fc.n_mels:
        raise bad("n_mfcc", f"at most n_mels = {fc.n_mels}")
    if fc.win_length > fc.n_fft:
        raise bad("win_length", f"at most n_fft = {fc.n_fft}")
    if fc.n_fft > fc.clip_samples:
        raise bad("n_fft", f"at most clip_samples = {fc.clip_samples}")
    if not 0 <= fc.f_min < fc.f_max <= fc.sample_rate / 2:
        raise bad("f_max", f"above f_min = {fc.f_min} and at most sample_rate / 2 = {fc.sample_rate / 2:g}")
    if fc.amin <= 0 or fc.top_db <= 0:
        raise bad("amin" if fc.amin <= 0 else "top_db", "a positive number")
    if fc.log_floor not in ("fixed", "clip_top_db"):
        raise bad("log_floor", "'fixed' or 'clip_top_db'")
