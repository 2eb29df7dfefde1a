"""`KwsDataset`: a torch Dataset over a prepared split, decoded once into an int16 cache.

Every distinct clip (a file, or a noise cut for silence) is decoded once into an int16 array
[n_clips, 16000]: in memory for small sets, for large ones a memory-mapped `.npy` under
`<prepared>/.cache/` (keyed by the jsonl's sha256, written to a temp file and renamed), so an
epoch costs no WAV decoding. Augmentation (training only: the reference steps and/or the opt-in
random gain, SNR noise and speaker steps) is seeded per (seed, epoch, index).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from kwsdeploy.atomic import writing_file
from kwsdeploy.data.augment import augment_waveform, parse_snr_range
from kwsdeploy.data.prepared import (
    CLIP_SAMPLES, SAMPLE_RATE, SILENCE, SPLITS, PreparedError, audio_root, load_labels, load_meta, read_jsonl,
)  # fmt: skip
from kwsdeploy.data.wavcheck import ClipError, read_int16
from kwsdeploy.hashing import sha256_bytes

log = logging.getLogger("kwsdeploy.data")

DISK_CACHE_MIN_CLIPS = 4000  # smaller sets stay in memory (nothing written next to them)
CACHE_VERSION = 1

__all__ = ["KwsDataset", "load_labels", "decode_entry"]


def decode_entry(entry: dict, root: Path, noise_cache: Optional[dict] = None) -> np.ndarray:
    """One jsonl entry as int16 [16000]: a clip padded/cut at the end, or a scaled noise cut."""
    path = root / entry["path"]
    if "offset" in entry:  # silence: a cut of a background-noise file, scaled by its gain
        noise = noise_cache.get(path) if noise_cache is not None else None
        if noise is None:
            noise = read_int16(path)
            if noise_cache is not None:
                noise_cache[path] = noise
        off = int(entry["offset"])
        seg = noise[off: off + CLIP_SAMPLES].astype(np.float32) * np.float32(entry.get("gain", 1.0))
        out = np.zeros(CLIP_SAMPLES, np.int16)
        out[: len(seg)] = np.clip(np.round(seg), -32768, 32767).astype(np.int16)
        return out
    x = read_int16(path)
    out = np.zeros(CLIP_SAMPLES, np.int16)
    n = min(len(x), CLIP_SAMPLES)
    out[:n] = x[:n]
    return out


def _source_key(entry: dict) -> tuple:
    return (entry["path"], entry.get("offset"), entry.get("gain"))


class KwsDataset:
    """Prepared split -> (waveform float32 tensor [16000], label index); augmentation only if asked."""

    def __init__(self, prepared_dir: Path, split: str, augment: bool = False, seed: int = 0, cache: str = "auto",
                 gain_db: float = 0.0, noise_snr_db: Optional[tuple[float, float]] = None,
                 speaker=None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}.")
        if cache not in ("auto", "memory", "disk"):
            raise ValueError(f"cache must be 'auto', 'memory' or 'disk', got '{cache}'.")
        self.prepared_dir = Path(prepared_dir)
        if gain_db < 0:
            raise ValueError(f"gain_db must be >= 0 (the range is +-gain_db), got {gain_db}.")
        self.split, self.augment, self.seed, self.epoch = split, augment, int(seed), 0
        self.gain_db, self.noise_snr_db = float(gain_db), parse_snr_range(noise_snr_db)
        self.speaker = speaker if speaker is not None and speaker.active else None  # a SpeakerAugment
        self.labels = load_labels(self.prepared_dir)
        self.meta = load_meta(self.prepared_dir)
        self.root = audio_root(self.prepared_dir, self.meta)
        jsonl = self.prepared_dir / f"{split}.jsonl"
        self.entries = read_jsonl(jsonl)
        if not self.entries:
            raise PreparedError(f"{jsonl} is empty: prepare the data again (every split needs clips).")
        index = {lab: i for i, lab in enumerate(self.labels)}
        unknown = sorted({e["label"] for e in self.entries} - set(index))
        if unknown:
            raise PreparedError(f"{jsonl} has label '{unknown[0]}' that labels.json lacks: prepare the data again.")
        self.targets = [index[e["label"]] for e in self.entries]
        keys: dict[tuple, int] = {}
        self.source_index = np.array([keys.setdefault(_source_key(e), len(keys)) for e in self.entries], dtype=np.int64)
        self._unique = [None] * len(keys)
        for e in self.entries:
            k = keys[_source_key(e)]
            if self._unique[k] is None:
                self._unique[k] = e
        digest = sha256_bytes(jsonl.read_bytes() + str(self.root).encode())[:16]
        use_disk = cache == "disk" or (cache == "auto" and len(keys) >= DISK_CACHE_MIN_CLIPS)
        self.clips = self._load_cache(digest, use_disk)
        self._noises: Optional[list[np.ndarray]] = None

    def _decode_all(self) -> np.ndarray:
        out = np.empty((len(self._unique), CLIP_SAMPLES), dtype=np.int16)
        noise_cache: dict = {}
        for i, e in enumerate(self._unique):
            out[i] = decode_entry(e, self.root, noise_cache)
        return out

    def _load_cache(self, digest: str, use_disk: bool) -> np.ndarray:
        if not use_disk:
            return self._decode_all()
        cache_dir = self.prepared_dir / ".cache"
        path = cache_dir / f"{self.split}-v{CACHE_VERSION}-{digest}.int16.npy"
        if path.is_file():
            arr = np.load(path, mmap_mode="r")
            if arr.shape == (len(self._unique), CLIP_SAMPLES) and arr.dtype == np.int16:
                return arr
        with contextlib.ExitStack() as stack:
            try:
                cache_dir.mkdir(exist_ok=True)
                tmp = stack.enter_context(writing_file(path, suffix=".tmp", mode=0o644))
            except OSError:
                log.warning("cannot write a cache under %s: decoding %s into memory", self.prepared_dir, self.split)
                return self._decode_all()
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(len(self._unique), CLIP_SAMPLES))
            noise_cache: dict = {}
            for i, e in enumerate(self._unique):
                arr[i] = decode_entry(e, self.root, noise_cache)
            arr.flush()
            del arr
            for old in cache_dir.glob(f"{self.split}-v*.int16.npy"):  # then the rename, on leaving the block
                old.unlink(missing_ok=True)
        return np.load(path, mmap_mode="r")

    def __getstate__(self) -> dict:
        """Pickled for spawned DataLoader workers: a disk cache travels as its path and is mapped
        again there (pickling the memmap itself would copy the whole array into every worker)."""
        state = dict(self.__dict__)
        if isinstance(self.clips, np.memmap) and self.clips.filename:
            state["clips"] = ("__mmap__", str(self.clips.filename))
        return state

    def __setstate__(self, state: dict) -> None:
        clips = state.get("clips")
        if isinstance(clips, tuple) and clips[0] == "__mmap__":
            state["clips"] = np.load(clips[1], mmap_mode="r")
        self.__dict__.update(state)

    def noises(self) -> list[np.ndarray]:
        """The background-noise recordings (int16) that augmentation mixes in."""
        if self._noises is None:
            files = [self.root / f for f in self.meta.get("noise_files", [])]
            self._noises = [read_int16(f) for f in files]
        return self._noises

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of `epoch` (call before iterating each epoch)."""
        self.epoch = int(epoch)

    @property
    def augments(self) -> bool:
        """Whether items are augmented (reference steps, random gain or SNR noise)."""
        return self.augment or self.gain_db > 0 or self.noise_snr_db is not None or self.speaker is not None

    def __len__(self) -> int:
        return len(self.entries)

    def clip(self, index: int) -> np.ndarray:
        """The cached clip of item `index` as float32 in [-1, 1], never augmented."""
        return self.clips[self.source_index[index]].astype(np.float32) / np.float32(32768.0)

    def __getitem__(self, index: int):
        import torch

        x = self.clip(index)
        if self.augments:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            x = augment_waveform(x, self.noises(), rng, SAMPLE_RATE, reference=self.augment,
                                 gain_db=self.gain_db, noise_snr_db=self.noise_snr_db, speaker=self.speaker)
        return torch.from_numpy(x), self.targets[index]

    def class_counts(self) -> dict[str, int]:
        """Items per class in this split, in label order."""
        counts = {lab: 0 for lab in self.labels}
        for t in self.targets:
            counts[self.labels[t]] += 1
        return counts

    @property
    def silence_index(self) -> Optional[int]:
        """Index of the silence class, if the set has one."""
        return self.labels.index(SILENCE) if SILENCE in self.labels else None


_ = ClipError  # re-exported for callers catching clip errors from the dataset
