"""Helpers of the data tests: small GSC-layout trees built from the embedded demo corpus (real FSDD speech)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from kwsdeploy.data.demo import demo_corpus_dir
from kwsdeploy.labels import GSC35

COMMANDS = list(GSC35[:10])
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPEAKERS = {"george": "train", "nicolas": "train", "yweweler": "train", "theo": "valid", "jackson": "test"}
PER_SPEAKER = 3


def build_tree(root: Path, words: dict[str, str], per_speaker: int = PER_SPEAKER, drop: dict[str, int] | None = None) -> Path:
    """Write a GSC-layout tree: word folder -> WAVs from the demo clips of `words[word]` (a digit)."""
    demo = demo_corpus_dir()
    root.mkdir(parents=True)
    lists = {"valid": [], "test": []}
    for word, digit in words.items():
        (root / word).mkdir()
        for speaker, split in SPEAKERS.items():
            clips = sorted((demo / digit).glob(f"{speaker}_nohash_*.flac"))[:per_speaker]
            if drop and split == "train" and speaker == "george":
                clips = clips[: max(0, per_speaker - drop.get(word, 0))]
            for n, clip in enumerate(clips):
                x, sr = sf.read(str(clip), dtype="int16")
                name = f"{word}/{speaker}_nohash_{n}.wav"
                sf.write(str(root / name), x, sr, subtype="PCM_16")
                if split != "train":
                    lists[split].append(name)
    (root / "validation_list.txt").write_text("".join(n + "\n" for n in lists["valid"]))
    (root / "testing_list.txt").write_text("".join(n + "\n" for n in lists["test"]))
    (root / "_background_noise_").mkdir()
    for f in sorted((demo / "_background_noise_").glob("*.flac")):
        x, sr = sf.read(str(f), dtype="int16")
        sf.write(str(root / "_background_noise_" / (f.stem + ".wav")), x, sr, subtype="PCM_16")
    return root


def sub_words() -> dict[str, str]:
    """The ten commands (voiced by the ten digits) plus two other words for _unknown_."""
    words = dict(zip(COMMANDS, DIGITS))
    words.update({"bed": "zero", "cat": "one"})
    return words


def all_files(path: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `path`."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))
