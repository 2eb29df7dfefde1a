"""Audio I/O: read any WAV/FLAC as float32 mono at the model's rate, fit clips, write atomically.

`load_audio` reads int PCM as int/full-scale (int16 / 32768), averages channels to mono and
resamples with soxr ('HQ'). Errors are `AudioError` (a `ValueError`) with a one-line message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Union

import numpy as np

from kwsdeploy.contract import CLIP_SAMPLES, SAMPLE_RATE

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


def _existing_file(path: PathLike) -> Path:
    """`path` as a Path, or AudioError when it is missing, a directory or empty."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"Audio file not found: {p}. Check the path (relative paths start at {Path.cwd()}).")
    if p.is_dir():
        raise AudioError(f"Expected an audio file but {p} is a directory. Give the path of a .wav file.")
    if p.stat().st_size == 0:
        raise AudioError(f"Audio file {p} is empty (0 bytes). Re-record or re-export it.")
    return p


def load_audio(path: PathLike, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, AudioInfo]:
    """Read `path` as float32 mono in [-1, 1] at `sample_rate` (soxr 'HQ' resampling if needed)."""
    p = _existing_file(path)
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


BLOCK_SECONDS = 10.0  # audio read per block when streaming a file: memory stays flat whatever its length


class BlockReader:
    """A recording read in blocks: float32 mono at `sample_rate` (soxr stream resampling), with what
    `load_audio` would say about it in `notes` and its length in `seconds` (None for a pipe).

    Non-finite samples are zeroed (so they never reach a model's state) and counted in a note."""

    def __init__(self, blocks: Iterator[np.ndarray], rate: int, channels: int, sample_rate: int,
                 seconds: float | None, notes: list[str]) -> None:
        self._blocks, self.rate, self.channels, self.sample_rate = blocks, rate, channels, sample_rate
        self.seconds, self.notes = seconds, notes
        self.samples = 0  # output samples yielded so far
        self.nonfinite = 0
        self.peak = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        resampler = None
        if self.rate != self.sample_rate:
            import soxr

            resampler = soxr.ResampleStream(self.rate, self.sample_rate, 1, dtype="float32", quality="HQ")
        for block in self._blocks:
            mono = block.mean(axis=1, dtype=np.float64).astype(np.float32) if block.ndim == 2 and block.shape[1] > 1 \
                else np.ascontiguousarray(block.reshape(-1), dtype=np.float32)
            bad = ~np.isfinite(mono)
            if bad.any():
                self.nonfinite += int(bad.sum())
                mono = np.where(bad, np.float32(0.0), mono)
            if resampler is not None:
                mono = resampler.resample_chunk(mono)
            yield from self._emit(mono)
        if resampler is not None:
            yield from self._emit(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        if self.nonfinite:
            self.notes.append(f"{self.nonfinite} NaN or infinite samples were replaced by silence")
        if self.peak > 1.0:
            self.notes.append(f"peak {self.peak:.3f} exceeds full scale (left unclipped)")

    def _emit(self, x: np.ndarray) -> Iterator[np.ndarray]:
        if x.size:
            self.samples += int(x.size)
            self.peak = max(self.peak, float(np.max(np.abs(x))))
            yield np.asarray(x, dtype=np.float32)


def read_blocks(path: PathLike, sample_rate: int = SAMPLE_RATE, block_seconds: float = BLOCK_SECONDS) -> BlockReader:
    """A sound file as a `BlockReader` (checked like `load_audio`: missing, empty, unreadable)."""
    import soundfile as sf

    p = _existing_file(path)
    try:
        info = sf.info(str(p))
    except (RuntimeError, sf.LibsndfileError, TypeError) as exc:
        detail = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__).rstrip(". ")
        raise AudioError(f"Cannot read audio file {p}: {detail}. Give a valid WAV/FLAC/OGG file "
                         f"(re-export it, e.g. `sox in.wav -b 16 out.wav`).") from None
    if info.samplerate <= 0 or info.frames == 0:
        raise AudioError(f"Audio file {p} holds no samples or reports rate {info.samplerate}. Give a clip with speech in it.")
    notes = []
    cut = wav_truncation(p)
    if cut:
        notes.append(cut)
    if info.channels > 1:
        notes.append(f"averaged {info.channels} channels to mono")
    if info.samplerate != sample_rate:
        notes.append(f"resampled {info.samplerate} Hz -> {sample_rate} Hz (soxr HQ)")
    int_pcm = (info.subtype or "") in ("PCM_16", "PCM_S8", "PCM_U8")
    frames = max(1, int(block_seconds * info.samplerate))

    def blocks() -> Iterator[np.ndarray]:
        try:
            for b in sf.blocks(str(p), blocksize=frames, dtype="int16" if int_pcm else "float32", always_2d=True):
                yield b.astype(np.float32) / np.float32(32768.0) if int_pcm else b
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise AudioError(f"Reading {p} failed part-way ({str(exc).splitlines()[0] if str(exc) else exc!r}): "
                             "re-export the file.") from None

    return BlockReader(blocks(), int(info.samplerate), int(info.channels), sample_rate,
                       info.frames / float(info.samplerate), notes)


def read_pcm_blocks(stream: BinaryIO, rate: int = SAMPLE_RATE, channels: int = 1, sample_rate: int = SAMPLE_RATE,
                    block_seconds: float = 0.1) -> BlockReader:
    """Raw signed 16-bit little-endian PCM from a pipe (e.g. `arecord -f S16_LE -r 16000 -c 1`), read in
    blocks of `block_seconds` as they arrive: a `BlockReader` of unknown length."""
    if rate <= 0 or channels <= 0:
        raise AudioError(f"--rate and --channels must be positive, got {rate} and {channels}.")
    frame_bytes = 2 * channels
    want = max(1, int(block_seconds * rate)) * frame_bytes

    def blocks() -> Iterator[np.ndarray]:
        rest = b""
        read = getattr(stream, "read1", None) or stream.read  # read1: return what has arrived, not wait for all
        while True:
            chunk = read(want)
            if not chunk:
                break
            data = rest + chunk
            usable = len(data) - len(data) % frame_bytes
            rest = data[usable:]
            if usable:
                yield (np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / np.float32(32768.0)
                       ).reshape(-1, channels)

    notes = [f"raw PCM s16le, {rate} Hz, {channels} channel(s)"]
    return BlockReader(blocks(), rate, channels, sample_rate, None, notes)


def fit_clip(x: np.ndarray, samples: int = CLIP_SAMPLES) -> np.ndarray:
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

    from kwsdeploy.atomic import writing_file

    p = Path(path)
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise AudioError(f"save_wav_atomic expects a non-empty [samples] or [samples, channels] array, got {arr.shape}.")
    with writing_file(p, suffix=".wav") as tmp:
        sf.write(str(tmp), np.clip(arr, -1.0, 32767.0 / 32768.0), int(sample_rate), subtype="PCM_16", format="WAV")
    return p
