"""Strict WAV reading for GSC-layout data: 16 kHz, mono, readable, non-empty, else a one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kwsdeploy.data.prepared import SAMPLE_RATE


class ClipError(ValueError):
    """A clip is unreadable, empty, not 16 kHz or not mono."""


def _info(path: Path):
    import soundfile as sf

    if not path.is_file():
        raise ClipError(f"{path} not found: the tree changed since it was prepared; prepare the data again.")
    try:
        return sf.info(str(path))
    except Exception as exc:  # libsndfile raises RuntimeError/LibsndfileError for corrupt files
        raise ClipError(f"cannot read {path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                        "it is corrupt or not audio; delete or replace it, then run again.") from None


def check_clip_header(path: Path, sample_rate: int = SAMPLE_RATE) -> None:
    """Raise ClipError unless `path` is a readable, non-empty mono file at `sample_rate`."""
    info = _info(Path(path))
    if info.frames <= 0:
        raise ClipError(f"{path} is empty (0 samples): delete or replace it, then run again.")
    if info.samplerate != sample_rate:
        raise ClipError(f"{path} is {info.samplerate} Hz, expected {sample_rate} Hz: resample the tree to "
                        f"{sample_rate} Hz mono (prepare-fsdd does this for FSDD), then run again.")
    if info.channels != 1:
        raise ClipError(f"{path} has {info.channels} channels, expected mono: convert the tree to mono, then run again.")


def read_int16(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Samples of a mono clip at `sample_rate` as int16, after the header checks."""
    import soundfile as sf

    path = Path(path)
    check_clip_header(path, sample_rate)
    try:
        x, _ = sf.read(str(path), dtype="int16", always_2d=False)
    except Exception as exc:
        raise ClipError(f"cannot decode {path} ({exc}): it is truncated or corrupt; delete or replace it, then run again.") from None
    if x.size == 0:
        raise ClipError(f"{path} is empty (0 samples): delete or replace it, then run again.")
    return np.ascontiguousarray(x, dtype=np.int16)


def read_noise(path: Path) -> np.ndarray:
    """A background-noise file as int16; it must not be all zeros."""
    x = read_int16(path)
    if not np.any(x):
        raise ClipError(f"{path} is all zeros: silence is cut from it, so it must be real noise; replace it.")
    return x
