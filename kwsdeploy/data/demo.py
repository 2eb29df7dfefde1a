"""The embedded demo corpus: a few hundred real FSDD digits, already prepared, inside the package.

`demo_corpus_dir()` is a prepared directory (labels.json: zero..nine + _silence_; train/valid/test
jsonl; speaker-disjoint: train george, nicolas, yweweler; valid theo; test jackson) whose clips
are 1 s, 16 kHz FLAC files beside it, so `kwsdeploy demo` and calibration work offline.
`build_demo_corpus(fsdd_root, out)` rebuilds it (deterministic, seed 0):
`python -m kwsdeploy.data.demo <fsdd_root> [out]`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from kwsdeploy.data.fsdd import ATTRIBUTION, DIGITS, NOISE_KINDS, TEST_SPEAKERS, VALID_SPEAKERS, find_recordings, fsdd_clip, synth_noise
from kwsdeploy.atomic import PREPARED, writing_dir
from kwsdeploy.data.prepared import SAMPLE_RATE, dumps_json

CLIPS_PER_SPEAKER = {"train": 16, "valid": 8, "test": 10}  # per digit; ~3.9 MB in all
NOISE_SECONDS = 3.0


def demo_corpus_dir() -> Path:
    """The prepared directory of the embedded demo corpus (read-only; do not write into it)."""
    path = Path(__file__).resolve().parent.parent / "assets" / "demo_corpus"
    if not (path / "labels.json").is_file():
        raise FileNotFoundError(f"the embedded demo corpus is missing at {path}: reinstall kwsdeploy "
                                "(or rebuild it with 'python -m kwsdeploy.data.demo <fsdd_root>').")
    return path


def _split_of(speaker: str) -> str:
    return "valid" if speaker in VALID_SPEAKERS else "test" if speaker in TEST_SPEAKERS else "train"


def build_demo_corpus(fsdd_root: Path, out: Path, seed: int = 0) -> Path:
    """Write the demo corpus (FLAC clips + prepared jsonl) from the five shared FSDD speakers to `out`."""
    import soundfile as sf

    from kwsdeploy.data.gsc import CORPUS_MARKER, prepare_gsc

    out = Path(out)
    recs = find_recordings(fsdd_root)
    rng = np.random.default_rng(seed)
    chosen = []
    for digit in range(10):
        for speaker in sorted({r[2] for r in recs}):
            mine = [r for r in recs if r[1] == digit and r[2] == speaker]
            n = CLIPS_PER_SPEAKER[_split_of(speaker)]
            chosen += [mine[i] for i in sorted(rng.permutation(len(mine))[:n])]
    with writing_dir(out, PREPARED, overwrite=True, inputs=[("fsdd_root", Path(fsdd_root))]) as tmp:
        lists: dict[str, list[str]] = {"valid": [], "test": []}
        for path, digit, speaker, idx in chosen:
            rel = f"{DIGITS[digit]}/{speaker}_nohash_{idx}.flac"
            (tmp / DIGITS[digit]).mkdir(exist_ok=True)
            sf.write(str(tmp / rel), fsdd_clip(path), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            if _split_of(speaker) != "train":
                lists[_split_of(speaker)].append(rel)
        (tmp / "validation_list.txt").write_text("".join(r + "\n" for r in sorted(lists["valid"])))
        (tmp / "testing_list.txt").write_text("".join(r + "\n" for r in sorted(lists["test"])))
        (tmp / "_background_noise_").mkdir()
        for kind in NOISE_KINDS:
            sf.write(str(tmp / "_background_noise_" / f"{kind}_noise.flac"), synth_noise(kind, NOISE_SECONDS, seed),
                     SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        (tmp / CORPUS_MARKER).write_text(dumps_json({"name": "fsdd_demo", "source": "Free Spoken Digit Dataset",
                                                     "licence": "CC BY-SA 4.0", "synthetic": ["_background_noise_"]}))
        prepared = prepare_gsc(tmp, source=tmp, keywords=list(DIGITS), out=tmp / "_prepared", seed=seed, allow_download=False)
        for f in prepared.iterdir():
            shutil.move(str(f), tmp / f.name)
        prepared.rmdir()
        meta = json.loads((tmp / "prepared.json").read_text())
        meta["audio_root"] = "."
        (tmp / "prepared.json").write_text(dumps_json(meta))
        (tmp / "LICENSE").write_text(ATTRIBUTION)
        (tmp / "README.md").write_text(
            "# kwsdeploy demo corpus\n\nReal recorded speech: "
            f"{len(chosen)} clips of the spoken digits zero..nine from the Free Spoken Digit Dataset\n"
            f"(per digit: {CLIPS_PER_SPEAKER['train']} clips of each training speaker george, nicolas, yweweler;\n"
            f"{CLIPS_PER_SPEAKER['valid']} of theo (validation); {CLIPS_PER_SPEAKER['test']} of jackson (test)), "
            "as 1 s 16 kHz FLAC.\nSynthetic: `_background_noise_/` (white, pink, brown noise and hum, seed "
            f"{seed}); the `_silence_` class is cut from it.\nRebuild: `python -m kwsdeploy.data.demo <fsdd_root>`.\n\n"
            + ATTRIBUTION)
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m kwsdeploy.data.demo <fsdd_root> [out]")
    target = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).resolve().parent.parent / "assets" / "demo_corpus"
    print(build_demo_corpus(Path(sys.argv[1]), target))
