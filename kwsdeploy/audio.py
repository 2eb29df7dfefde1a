"""Audio I/O: read any WAV/FLAC as float32 mono at the model's rate, fit clips, write atomically.

`load_audio` reads int PCM as int/full-scale (int16 / 32768), averages channels to mono and
resamples with soxr ('HQ'). Errors are `AudioError` (a `ValueError`) with a one-line message.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]


class AudioError(ValueError):
    """A file that cannot be used as audio; the message says what went wrong and what to do."""


@dataclass(frozen=True)
class AudioInfo:
    """What the file held before conversion: its rate, channel count, frame count, and notes."""

    original_rate: int
    channels: int
    frames: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def duration_s(self) -> float:
        """Length of the file in seconds at its original rate."""
        return self.frames / float(self.original_rate) if self.original_rate else 0.0


def _read(path: Path) -> tuple[np.ndarray, int]:
    """(float32 [frames, channels], rate) of a sound file; int PCM scaled by 1/32768."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        subtype = info.subtype or ""
        # int PCM read as int16 scales by 1/32768 exactly; everything else as float32 from soundfile.
        dtype = "int16" if subtype in ("PCM_16", "PCM_S8", "PCM_U8") else "float32"
        data, rate = sf.read(str(path), dtype=dtype, always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError) as exc:  # soundfile raises these
        detail = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__).rstrip(". ")
        raise AudioError(
            f"Cannot read audio file {path}: {detail}. Give a valid WAV/FLAC/OGG file "
            f"(re-export it, e.g. `sox in.wav -b 16 out.wav`)."
        ) from None
    if dtype == "int16":
        data = data.astype(np.float32) / np.float32(32768.0)
    return np.asarray(data, dtype=np.float32), int(rate)


def wav_truncation(path: Path) -> str | None:
    """A note when a RIFF/WAVE file holds fewer audio bytes than its header promises (a cut-off copy
    or an interrupted recording: libsndfile reads what is there without a word), else None."""
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                cid, clen = struct.unpack("<4sI", f.read(8))
                if cid == b"data":
                    have = size - pos - 8
                    if clen in (0, 0xFFFFFFFF) or have >= clen:  # 0 / max: a streamed header, no promise
                        return None
                    return (f"truncated: the WAV header promises {clen} bytes of audio but the file holds {have} "
                            f"({100 * have / clen:.0f}%); the end of the recording is missing")
                pos += 8 + clen + (clen & 1)
    except (OSError, struct.error):
        return None
    return None


def load_audio(path: PathLike, sample_rate: int = 16000) -> tuple[np.ndarray, AudioInfo]:
    """Read `path` as float32 mono in [-1, 1] at `sample_rate` (soxr 'HQ' resampling if needed)."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"Audio file not found: {p}. Check the path (relative paths start at {Path.cwd()}).")
    if p.is_dir():
        raise AudioError(f"Expected an audio file but {p} is a directory. Give the path of a .wav file.")
    if p.stat().st_size == 0:
        raise AudioError(f"Audio file {p} is empty (0 bytes). Re-record or re-export it.")
    data, rate = _read(p)
    frames, channels = data.shape
    if frames == 0:
        raise AudioError(f"Audio file {p} holds no samples (zero-length audio). Give a clip with speech in it.")
    if rate <= 0:
        raise AudioError(f"Audio file {p} reports an invalid sample rate {rate}. Re-export it with a valid rate.")
    notes: list[str] = []
    cut = wav_truncation(p)
    if cut:
        notes.append(cut)
    if channels > 1:
        mono = data.mean(axis=1, dtype=np.float64).astype(np.float32)
        notes.append(f"averaged {channels} channels to mono")
    else:
        mono = data[:, 0].copy()
    if rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
        notes.append(f"resampled {rate} Hz -> {sample_rate} Hz (soxr HQ)")
    if not np.all(np.isfinite(mono)):
        raise AudioError(f"Audio file {p} contains NaN or infinite samples. Re-export it as PCM.")
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    if peak > 1.0:
        notes.append(f"peak {peak:.3f} exceeds full scale (left unclipped)")
    info = AudioInfo(original_rate=rate, channels=int(channels), frames=int(frames), notes=tuple(notes))
    return np.ascontiguousarray(mono, dtype=np.float32), info


def fit_clip(x: np.ndarray, samples: int = 16000) -> np.ndarray:
    """Zero-pad `x` at the end, or cut it, to exactly `samples` samples (1-D float32)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"fit_clip expects a 1-D mono waveform, got shape {tuple(x.shape)}. Average channels first.")
    if samples <= 0:
        raise AudioError(f"fit_clip needs a positive sample count, got {samples}.")
    if x.shape[0] >= samples:
        return x[:samples].copy()
    out = np.zeros(samples, dtype=np.float32)
    out[: x.shape[0]] = x
    return out


def save_wav_atomic(path: PathLike, x: np.ndarray, sample_rate: int) -> Path:
    """Write float waveform `x` ([samples] or [samples, channels]) as 16-bit PCM WAV via temp + rename."""
    import soundfile as sf

    from kwsdeploy.atomic import umask

    p = Path(path)
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise AudioError(f"save_wav_atomic expects a non-empty [samples] or [samples, channels] array, got {arr.shape}.")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp.wav", dir=str(p.parent))
    os.close(fd)
    try:
        sf.write(tmp, np.clip(arr, -1.0, 32767.0 / 32768.0), int(sample_rate), subtype="PCM_16", format="WAV")
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp made it 0600
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p
