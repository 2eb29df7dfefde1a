"""A user's own non-keyword recordings (`prepare-gsc --negatives DIR`) cut into 1 s `_unknown_` clips.

Any WAV/FLAC/OGG under DIR (recursively, any rate, any channel count) is read at 16 kHz mono; a
file up to 1 s is centred in 1 s, a longer one is cut into consecutive 1 s windows (a last piece of
at least half a second is zero-padded). Windows quieter than SILENT_PEAK_DBFS are skipped.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from kwsdeploy.data.prepared import CLIP_SAMPLES, SAMPLE_RATE

SUFFIXES = (".wav", ".flac", ".ogg")
SILENT_PEAK_DBFS = -60.0
SPEAKER = "negatives"


def recording_windows(x: np.ndarray) -> list[np.ndarray]:
    """1 s windows of a 16 kHz recording (see the module docstring), silent ones skipped."""
    from kwsdeploy.data.fsdd import centre_clip

    x = np.asarray(x, dtype=np.float32)
    if len(x) <= CLIP_SAMPLES:
        wins = [centre_clip(x)]
    else:
        wins = []
        for start in range(0, len(x), CLIP_SAMPLES):
            piece = x[start: start + CLIP_SAMPLES]
            if len(piece) < CLIP_SAMPLES // 2:
                break
            wins.append(np.pad(piece, (0, CLIP_SAMPLES - len(piece))))
    floor = 10.0 ** (SILENT_PEAK_DBFS / 20.0)
    return [w for w in wins if np.abs(w).max() >= floor]


def cut_negatives(src: Path, out_dir: Path) -> list[Path]:
    """Write the 1 s clips of every recording under `src` into `out_dir`; returns their paths, sorted."""
    import soundfile as sf

    from kwsdeploy.audio import load_audio
    from kwsdeploy.data.fsdd import to_int16

    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"--negatives {src} is not a directory: pass a folder of your own non-keyword recordings.")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"--negatives {src} holds no .wav/.flac/.ogg files: add recordings of speech without keywords.")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        x, _ = load_audio(f, SAMPLE_RATE)
        rel = f.relative_to(src).as_posix()
        tag = re.sub(r"[^A-Za-z0-9]+", "-", Path(rel).stem).strip("-")[:40] or "clip"
        tag += "-" + hashlib.sha1(rel.encode()).hexdigest()[:6]
        for k, w in enumerate(recording_windows(x)):
            path = out_dir / f"{SPEAKER}_nohash_{tag}-{k}.wav"
            sf.write(str(path), to_int16(w), SAMPLE_RATE, subtype="PCM_16")
            written.append(path)
    if not written:
        raise ValueError(f"every recording under --negatives {src} is silent: add recordings of speech without keywords.")
    return sorted(written)
