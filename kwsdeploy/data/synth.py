"""Synthetic speakers from offline text-to-speech (espeak-ng, flite, festival): all of it SYNTHETIC speech.

Public API (torch-free): `parse_voice` / `Voice`, `installed_voices`, `voice_split`, `train_voices`,
`held_out_voices`, `render(text, voice, speed, pitch) -> float32 16 kHz`, the sentence sets
`TRAIN_SENTENCES` / `HELD_OUT_SENTENCES` and `HARD_NEGATIVES`. `synth_tree` (behind `kwsdeploy data
synth`) writes a GSC-layout tree of keyword clips and `_unknown_` material, for training only.

Voice names: `espeak-ng:<base>[+<variant>]` (a bare `en-us+f3` means espeak-ng), `flite:<voice>`,
`festival:<voice>`. The split is fixed by rule, never by what happens to be installed:
- an espeak-ng voice is HELD OUT when its base is in `HELD_OUT_ESPEAK_BASES` or its variant is in
  `HELD_OUT_ESPEAK_VARIANTS` (so training never hears a held-out accent nor a held-out timbre);
- flite `rms` is held out; the other flite voices and festival's are TRAIN.
Held-out voices and `HELD_OUT_SENTENCES` are never used by any training step: they make the unseen
false-alarm test speech. No sentence holds a digit word or a homophone of one (to, too, for, won,
ate, ...), so any detection in them is a false alarm.

`pitch` scales pitch and formants together (the waveform is read as if sampled `pitch` times
faster, then resampled; a vocal-tract-like shift); `speed` scales the tempo (the engine's own
rate, compensated for the pitch step). Rendering is deterministic for the same text, voice,
speed and pitch.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from kwsdeploy.atomic import CORPUS_TREE, writing_dir
from kwsdeploy.data._synth_texts import HARD_NEGATIVES, HELD_OUT_SENTENCES, HOMOPHONES, TRAIN_SENTENCES  # noqa: F401 (part of this module's API)
from kwsdeploy.data.prepared import CLIP_SAMPLES, SAMPLE_RATE, dumps_json
from kwsdeploy.data.synth_voices import (  # noqa: F401 (part of this module's API)
    ENGINES, ESPEAK_BASES, FESTIVAL_VOICES, FLITE_VOICES, HELD_OUT_ESPEAK_BASES, HELD_OUT_ESPEAK_VARIANTS,
    HELD_OUT_FESTIVAL, HELD_OUT_FLITE, SynthError, Voice, _require_engine, _voice_key, espeak_variants,
    held_out_voices, installed_voices, parse_voice, resolve_voices, train_voices, voice_split, voices_json,
)

log = logging.getLogger("kwsdeploy.data")

ESPEAK_WPM = 175  # espeak-ng's default rate, speed 1.0

# Accent variants of the digit words (`synth_tree(accents=True)`, `data synth --accents`): the vowels
# (and a few consonants) of English accents that the voices' own dictionaries never say, as espeak-ng
# phoneme strings (`[[...]]` input; flite and festival cannot take them). VTLP and pitch shifts move every
# formant by one factor; a different vowel moves F1 and F2 apart. The unseen FSDD speaker says "six"
# with F1/F2 near 480/1650 Hz (his "seven" 590/1530) where the training speakers' "six" sit at 340-470 /
# 1890-2160 Hz (benchmarks/results/speakers_ablation.md, session 6).
ACCENT_VARIANTS: dict[str, tuple[str, ...]] = {
    "zero": ("z'I@r@U", "z'i:ro:"),
    "one": ("w'0n", "w'Un"),
    "two": ("t'u:", "t'U"),
    "three": ("Tr'I", "Tr'i:"),
    "four": ("f'o:r", "f'O:"),
    "five": ("f'A:v", "f'OIv"),
    "six": ("s'Eks", "s'@ks", "s'i:ks"),
    "seven": ("s'Evn", "s'Iv@n"),
    "eight": ("'aIt", "'e:t"),
    "nine": ("n'A:n", "n'OIn"),
}

ACCENT_MODES = ("off", "add", "only")

SPEED_RANGE = (0.8, 1.25)  # the default speed draws per clip (data synth --speed LO,HI; the shipped runs use 0.55,1.3)
PITCH_RANGE = (0.86, 1.18)
ESPEAK_PITCH_RANGE = (25, 75)  # espeak-ng -p (0-99, default 50): base pitch on top of the shift
PEAK_DBFS_RANGE = (-32.0, -3.0)  # level of each written clip (FSDD speakers peak near -23 dBFS)
TRIM_DB = 40.0  # a word is trimmed where its 10 ms frames fall this far below the loudest frame
TRIM_MARGIN_S = 0.03



def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1), int(rate)


def _run_engine(text: str, voice: Voice, native_speed: float, espeak_pitch: int, wav: Path) -> None:
    binary = _require_engine(voice.engine)
    if voice.engine == "espeak-ng":
        wpm = int(round(ESPEAK_WPM * native_speed))
        cmd = [binary, "-v", voice.name, "-s", str(wpm), "-p", str(int(espeak_pitch)), "-w", str(wav), text]
        stdin = None
    elif voice.engine == "flite":
        cmd = [binary, "-voice", voice.name, "--setf", f"duration_stretch={1.0 / native_speed:.4f}",
               "-t", text, "-o", str(wav)]
        stdin = None
    else:
        stretch = f"(Parameter.set 'Duration_Stretch {1.0 / native_speed:.4f})"
        cmd = [binary, "-eval", f"(voice_{voice.name})", "-eval", stretch, "-o", str(wav)]
        stdin = text
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not wav.is_file() or wav.stat().st_size <= 44:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SynthError(f"{voice.engine} failed to say {text!r} with voice {voice.name} ({detail}).")


def render(text: str, voice: "Voice | str", speed: float = 1.0, pitch: float = 1.0,
           espeak_pitch: int = 50, rate: int = SAMPLE_RATE) -> np.ndarray:
    """SYNTHETIC speech: `text` said by `voice` as float32 mono at `rate` Hz (the engine's own level).

    `speed` > 1 is faster; `pitch` > 1 raises pitch and formants together; `espeak_pitch` is
    espeak-ng's base pitch (0-99), ignored by the other engines.
    """
    import soxr

    v = parse_voice(voice) if isinstance(voice, str) else voice
    if not text.strip():
        raise SynthError("nothing to say: the text is empty.")
    if not (0.3 <= speed <= 3.0 and 0.5 <= pitch <= 2.0):
        raise SynthError(f"speed must be in 0.3..3 and pitch in 0.5..2, got speed {speed}, pitch {pitch}.")
    with tempfile.TemporaryDirectory(prefix="kws-synth-") as tmp:
        wav = Path(tmp) / "say.wav"
        _run_engine(text, v, speed / pitch, espeak_pitch, wav)
        x, native = _read_wav(wav)
    y = soxr.resample(x.astype(np.float32), native * pitch, rate, quality="HQ")
    return np.ascontiguousarray(y, dtype=np.float32)


def trim_word(x: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut leading/trailing silence: keep the 10 ms frames within TRIM_DB of the loudest, plus a margin."""
    hop = rate // 100
    n = len(x) // hop
    if n == 0:
        return x
    energy = np.square(x[: n * hop].astype(np.float64)).reshape(n, hop).mean(axis=1)
    loud = np.flatnonzero(energy >= energy.max() * 10.0 ** (-TRIM_DB / 10.0))
    margin = int(TRIM_MARGIN_S * rate)
    start = max(0, loud[0] * hop - margin)
    end = min(len(x), (loud[-1] + 1) * hop + margin)
    return x[start:end]


def set_peak(x: np.ndarray, peak_dbfs: float) -> np.ndarray:
    """Scale so the largest |sample| is at `peak_dbfs` dB full scale (silence stays silence)."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= 0:
        return x.astype(np.float32)
    return (x * np.float32(10.0 ** (peak_dbfs / 20.0) / peak)).astype(np.float32)


def _draw(rng: np.random.Generator, speed_range: tuple[float, float] = SPEED_RANGE) -> dict:
    return {"speed": float(rng.uniform(*speed_range)), "pitch": float(rng.uniform(*PITCH_RANGE)),
            "espeak_pitch": int(rng.integers(ESPEAK_PITCH_RANGE[0], ESPEAK_PITCH_RANGE[1] + 1)),
            "peak_dbfs": float(rng.uniform(*PEAK_DBFS_RANGE))}


def _sentence_cut(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random 1 s window of a (trimmed) sentence; a short one is centred."""
    from kwsdeploy.data.fsdd import centre_clip

    if len(x) <= CLIP_SAMPLES:
        return centre_clip(x)
    off = int(rng.integers(0, len(x) - CLIP_SAMPLES + 1))
    return x[off: off + CLIP_SAMPLES].copy()



def synth_tree(
    words: Sequence[str],
    out: Path,
    voices: "str | Sequence[str] | None" = None,
    per_voice: int = 1,
    unknown_per_voice: int = 2,
    seed: int = 0,
    progress: Optional[Callable[[int, int], None]] = None,
    overwrite: bool = False,
    speed_range: tuple[float, float] = SPEED_RANGE,
    accents: str = "off",
) -> Path:
    """Write a GSC-layout tree of SYNTHETIC speech (training only) to `out` (temp dir + swap; an older
    tree is replaced only with `overwrite`, anything else at `out` never).

    Per voice: `per_voice` clips of each word (trimmed, centred in 1 s), and `unknown_per_voice`
    `_unknown_` clips (a hard negative from HARD_NEGATIVES or a 1 s cut of a TRAIN_SENTENCES
    sentence, half each), each with its own speed, pitch and level drawn from (seed, voice, clip).
    `accents` 'add': each espeak-ng voice also says `per_voice` clips of every ACCENT_VARIANTS entry of
    each word (in the word's folder; the other engines cannot read phonemes); 'only': those and no plain
    words (nor `_unknown_` from the other engines); 'off': none.
    """
    import soundfile as sf

    from kwsdeploy.data.fsdd import centre_clip, to_int16

    words = [w.strip() for w in words if w.strip()]
    if not words or len(set(words)) != len(words):
        raise SynthError("--words must be a comma-separated list of distinct words, e.g. zero,one,two.")
    bad = [w for w in words if not re.fullmatch(r"[a-z][a-z' -]*", w)]
    if bad:
        raise SynthError(f"word '{bad[0]}' is not plain lower-case text: give words as they are spoken, e.g. 'seven'.")
    if per_voice < 1 or unknown_per_voice < 0:
        raise SynthError("--per-voice must be >= 1 and --unknown-per-voice >= 0.")
    if len(speed_range) != 2 or not 0.3 <= speed_range[0] <= speed_range[1] <= 3.0:
        raise SynthError(f"--speed must be LO,HI with 0.3 <= LO <= HI <= 3 (speaking-rate factors), got {speed_range}.")
    if accents not in ACCENT_MODES:
        raise SynthError(f"--accents must be one of {', '.join(ACCENT_MODES)}, got {accents!r}.")
    vs = resolve_voices(voices)
    if accents == "only":
        vs = [v for v in vs if v.engine == "espeak-ng"]
        if not vs:
            raise SynthError("--accents only needs espeak-ng voices (flite and festival cannot say phonemes).")
    negatives = [w for w in HARD_NEGATIVES if w not in words]
    jobs = []  # (voice index, voice, folder, text, kind, n)
    for vi, v in enumerate(vs):
        for w in words:
            if accents != "only":
                jobs += [(vi, v, w, w, "word", n) for n in range(per_voice)]
            if accents != "off" and v.engine == "espeak-ng":
                jobs += [(vi, v, w, f"[[{ph}]]", ("accent", k), n) for k, ph in enumerate(ACCENT_VARIANTS.get(w, ()))
                         for n in range(per_voice)]
        jobs += [(vi, v, None, None, "unknown", n) for n in range(unknown_per_voice)]
    out = Path(out)
    counts: dict[str, int] = {}
    with writing_dir(out, CORPUS_TREE, overwrite) as tmp:
        for i, (vi, v, folder, text, kind, n) in enumerate(jobs):
            if isinstance(kind, tuple):  # an accent variant: its own draws, apart from the word's
                rng = np.random.default_rng([seed, _voice_key(v), 2, words.index(folder), kind[1], n])
            else:
                rng = np.random.default_rng([seed, _voice_key(v), 0 if kind == "word" else 1,
                                             words.index(text) if kind == "word" else 0, n])
            if kind == "unknown":
                if rng.random() < 0.5:
                    text = negatives[int(rng.integers(0, len(negatives)))]
                    folder = text
                else:
                    text = TRAIN_SENTENCES[int(rng.integers(0, len(TRAIN_SENTENCES)))]
                    folder = "sentences"
            d = _draw(rng, speed_range)
            x = render(text, v, d["speed"], d["pitch"], d["espeak_pitch"])
            x = trim_word(x)
            clip = _sentence_cut(x, rng) if folder == "sentences" else centre_clip(x)
            clip = set_peak(clip, d["peak_dbfs"])
            (tmp / folder).mkdir(exist_ok=True)
            idx = n if kind == "word" else f"u{n}" if kind == "unknown" else f"a{kind[1]}x{n}"
            sf.write(str(tmp / folder / f"{v.speaker}_nohash_{idx}.wav"), to_int16(clip), SAMPLE_RATE,
                     subtype="PCM_16")
            counts[folder] = counts.get(folder, 0) + 1
            if progress:
                progress(i + 1, len(jobs))
        (tmp / "validation_list.txt").write_text("")
        (tmp / "testing_list.txt").write_text("")
        (tmp / "kwsdeploy_corpus.json").write_text(dumps_json({
            "name": "synth", "source": "SYNTHETIC speech (espeak-ng, flite, festival), training only",
            "synthetic": ["everything"], "words": list(words), "voices": [v.id for v in vs],
            "per_voice": per_voice, "unknown_per_voice": unknown_per_voice, "seed": seed, "clips": counts,
            "accents": accents, "accent_variants": {w: list(ACCENT_VARIANTS.get(w, ())) for w in words} if accents != "off" else None,
            "ranges": {"speed": list(speed_range), "pitch": PITCH_RANGE, "espeak_pitch": ESPEAK_PITCH_RANGE,
                       "peak_dbfs": PEAK_DBFS_RANGE},
        }))
        (tmp / "README.md").write_text(
            "SYNTHETIC speech (not recordings), made by `kwsdeploy data synth` with offline text-to-speech\n"
            f"(espeak-ng, flite, festival): {len(vs)} training voices, words {', '.join(words)}; other folders\n"
            "(hard negatives, `sentences`) become `_unknown_` when prepared with --keywords. Every clip is\n"
            "16 kHz, 1 s, with its own speed, pitch and level. Training only: both list files are empty, and\n"
            "no held-out voice or sentence of kwsdeploy.data.synth is used.\n")
    log.info("wrote %d synthetic clips (%d voices) to %s", len(jobs), len(vs), out)
    return out
