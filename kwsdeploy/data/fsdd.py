"""`prepare-fsdd`: the Free Spoken Digit Dataset as a GSC-layout tree of real recorded speech.

FSDD clips (8 kHz, trimmed to the word, `<digit>_<speaker>_<n>.wav`) become 16 kHz (soxr,
band-limited) 1 s clips, the word centred (a longer clip keeps its loudest second), in folders
`zero`..`nine` named `<speaker>_nohash_<n>.wav`. Splits are by speaker: validation = theo,
testing = jackson, training = george, nicolas, yweweler. Synthetic (not recorded) parts: the
`_background_noise_` folder (white, pink, brown noise and mains hum, generated with a fixed seed).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from kwsdeploy.atomic import CORPUS_TREE, writing_dir
from kwsdeploy.data.prepared import CLIP_SAMPLES, SAMPLE_RATE, dumps_json
from kwsdeploy.placement import centre_clip  # noqa: F401  (re-exported: the training clips' placement)

log = logging.getLogger("kwsdeploy.data")

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPEAKERS = ("george", "jackson", "nicolas", "theo", "yweweler")
VALID_SPEAKERS = ("theo",)
TEST_SPEAKERS = ("jackson",)
NOISE_KINDS = ("white", "pink", "brown", "hum")
NOISE_SECONDS = 60
NOISE_RMS = 0.1
NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
EXTRA_SPEAKERS = ("refuse", "train", "skip")  # what prepare-fsdd does with speakers beyond SPEAKERS
ATTRIBUTION = (
    "Speech: Free Spoken Digit Dataset (FSDD) by Zohar Jackson, César Souza, Jason Flaks, Yuxin Pan,\n"
    "Hereman Nicolas and Adhish Thite (github.com/Jakobovski/free-spoken-digit-dataset), licensed\n"
    "CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). Adapted: resampled from 8 kHz to\n"
    "16 kHz with soxr, centred in 1 s, renamed into a Speech-Commands-style layout. The adaptations are\n"
    "under the same licence.\n"
)


class FsddError(ValueError):
    """The FSDD folder is missing, empty or holds unexpected files."""


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float [-1, 1] to int16 with rounding and clipping."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def fsdd_clip(path: Path) -> np.ndarray:
    """One FSDD recording as a 1 s, 16 kHz int16 clip (soxr resampling, word centred)."""
    from kwsdeploy.audio import load_audio

    x, _ = load_audio(path, SAMPLE_RATE)
    return to_int16(centre_clip(x))


def synth_noise(kind: str, seconds: float = NOISE_SECONDS, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Synthetic background noise as int16 at RMS 0.1: white, pink (1/f), brown (1/f^2) or 50 Hz hum."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind '{kind}': choose one of {', '.join(NOISE_KINDS)}.")
    n = int(round(seconds * rate))
    rng = np.random.default_rng([seed, NOISE_KINDS.index(kind)])
    white = rng.standard_normal(n)
    if kind == "white":
        y = white
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1.0 / rate)
        f[0] = f[1]
        spec /= np.sqrt(f) if kind == "pink" else f
        spec[f < 20.0] = 0.0  # no DC drift
        y = np.fft.irfft(spec, n)
    else:  # mains hum: 50 Hz and harmonics with random phases, over a faint white floor
        t = np.arange(n) / rate
        phases = rng.uniform(0, 2 * np.pi, 4)
        y = sum(np.sin(2 * np.pi * 50 * (h + 1) * t + phases[h]) / (h + 1) for h in range(4)) + 0.05 * white
    y = y / np.sqrt(np.mean(y**2)) * NOISE_RMS
    return to_int16(np.clip(y, -0.99, 0.99))


def recordings_dir(fsdd_root: Path) -> Path:
    """The folder holding the .wav files: `<root>/recordings` when present, else the root."""
    fsdd_root = Path(fsdd_root)
    rec = fsdd_root / "recordings" if (fsdd_root / "recordings").is_dir() else fsdd_root
    if not rec.is_dir():
        raise FsddError(f"{fsdd_root} is not a directory: pass the FSDD folder (with recordings/) as --fsdd-root.")
    return rec


def speaker_counts(fsdd_root: Path) -> dict[str, int]:
    """Clips per speaker of every `<digit>_<speaker>_<n>.wav` in the FSDD folder."""
    counts: dict[str, int] = {}
    for p in recordings_dir(fsdd_root).glob("*.wav"):
        m = NAME.match(p.name)
        if m:
            counts[m.group(2)] = counts.get(m.group(2), 0) + 1
    return dict(sorted(counts.items()))


def find_recordings(fsdd_root: Path, speakers: Sequence[str] = SPEAKERS) -> list[tuple[Path, int, str, int]]:
    """(path, digit, speaker, index) of every FSDD recording of `speakers`, sorted."""
    rec = recordings_dir(fsdd_root)
    out = []
    for p in sorted(rec.glob("*.wav")):
        m = NAME.match(p.name)
        if m and m.group(2) in speakers:
            out.append((p, int(m.group(1)), m.group(2), int(m.group(3))))
    if not out:
        raise FsddError(f"no FSDD recordings (<digit>_<speaker>_<n>.wav) of {', '.join(speakers)} in {rec}: "
                        "pass the FSDD folder as --fsdd-root.")
    missing = sorted(set(speakers) - {s for _, _, s, _ in out})
    if missing:
        raise FsddError(f"no recordings of speaker(s) {', '.join(missing)} in {rec}: check --fsdd-root.")
    return sorted(out, key=lambda r: (r[1], r[2], r[3]))


def extra_speakers_of(fsdd_root: Path, speakers: Sequence[str], policy: str) -> tuple[list[str], dict[str, int]]:
    """(speakers to train on besides `speakers`, clips skipped per speaker) under `policy`
    (refuse | train | skip); `refuse` raises naming the speakers and the two choices."""
    if policy not in EXTRA_SPEAKERS:
        raise FsddError(f"--extra-speakers must be one of {', '.join(EXTRA_SPEAKERS)}, got {policy!r}.")
    extra = {s: n for s, n in speaker_counts(fsdd_root).items() if s not in speakers}
    if not extra:
        return [], {}
    if policy == "refuse":
        listed = ", ".join(f"{s} ({n} clips)" for s, n in extra.items())
        raise FsddError(f"{recordings_dir(fsdd_root)} has recordings of speaker(s) {listed} beyond the five that "
                        "kwsdeploy's splits name: pass --extra-speakers train to add them to the training split, "
                        "or --extra-speakers skip to leave them out.")
    return (sorted(extra), {}) if policy == "train" else ([], extra)


def prepare_fsdd(
    fsdd_root: Path,
    out: Path,
    speakers: Sequence[str] = SPEAKERS,
    valid_speakers: Sequence[str] = VALID_SPEAKERS,
    test_speakers: Sequence[str] = TEST_SPEAKERS,
    noise_seconds: float = NOISE_SECONDS,
    seed: int = 0,
    progress=None,
    overwrite: bool = False,
    extra_speakers: str = "refuse",
) -> Path:
    """Write the GSC-layout tree of FSDD to `out` (temp dir + swap); returns `out`.

    An existing tree at `out` is replaced only with `overwrite` and only when prepare-fsdd wrote it;
    `out` equal to, inside or around `fsdd_root` is refused. Speakers beyond `speakers` are handled
    by `extra_speakers` (refuse, train or skip; never dropped silently)."""
    import soundfile as sf

    if set(valid_speakers) & set(test_speakers):
        raise ValueError("a speaker cannot be in both the validation and the test split.")
    out = Path(out)
    with writing_dir(out, CORPUS_TREE, overwrite, [("--fsdd-root", Path(fsdd_root))]) as tmp:
        added, skipped = extra_speakers_of(fsdd_root, speakers, extra_speakers)
        speakers = tuple(speakers) + tuple(added)
        recs = find_recordings(fsdd_root, speakers)
        lists: dict[str, list[str]] = {"valid": [], "test": []}
        for i, (path, digit, speaker, idx) in enumerate(recs):
            rel = f"{DIGITS[digit]}/{speaker}_nohash_{idx}.wav"
            (tmp / DIGITS[digit]).mkdir(exist_ok=True)
            sf.write(str(tmp / rel), fsdd_clip(path), SAMPLE_RATE, subtype="PCM_16")
            if speaker in valid_speakers:
                lists["valid"].append(rel)
            elif speaker in test_speakers:
                lists["test"].append(rel)
            if progress:
                progress(i + 1, len(recs))
        (tmp / "validation_list.txt").write_text("".join(r + "\n" for r in sorted(lists["valid"])))
        (tmp / "testing_list.txt").write_text("".join(r + "\n" for r in sorted(lists["test"])))
        noise = tmp / "_background_noise_"
        noise.mkdir()
        for kind in NOISE_KINDS:
            sf.write(str(noise / f"{kind}_noise.wav"), synth_noise(kind, noise_seconds, seed), SAMPLE_RATE, subtype="PCM_16")
        (noise / "README.md").write_text(
            f"Synthetic noise (not recordings), {noise_seconds:g} s each at 16 kHz, RMS 0.1, numpy seed {seed}:\n"
            "white (Gaussian), pink (1/f), brown (1/f^2; both without content under 20 Hz) and hum (50 Hz\n"
            "and three harmonics over a faint white floor). Made by kwsdeploy.data.fsdd.synth_noise.\n")
        train = sorted(set(speakers) - set(valid_speakers) - set(test_speakers))
        (tmp / "kwsdeploy_corpus.json").write_text(dumps_json({
            "name": "fsdd", "source": "Free Spoken Digit Dataset", "licence": "CC BY-SA 4.0",
            "speakers": {"train": train, "valid": sorted(valid_speakers), "test": sorted(test_speakers)},
            "clips": len(recs), "synthetic": ["_background_noise_"], "seed": seed,
            "skipped_speakers": skipped,
        }))
        (tmp / "LICENSE").write_text(ATTRIBUTION)
        (tmp / "README.md").write_text(
            "Free Spoken Digit Dataset in the layout of Google Speech Commands, made by `kwsdeploy data\n"
            f"prepare-fsdd`. Words zero..nine; splits by speaker: train {', '.join(train)}; validation\n"
            f"{', '.join(valid_speakers)}; test {', '.join(test_speakers)}. Speech is real (recorded);\n"
            "_background_noise_/ is synthetic (see its README).\n\n" + ATTRIBUTION)
    log.info("wrote %d FSDD clips to %s", len(recs), out)
    return out
