"""The recordings a detector is tuned and tested on (torch-free): keywords of one split's speaker
between non-keyword speech from held-out TTS voices and sentences and noise parts, and the split's
digits said with 0.5 s pauses.

Held-out speech (`kwsdeploy.data.synth`: voices and sentences no training step uses) is halved by
a fixed rule: `test` takes the odd-numbered held-out voices and sentences, `tune` the even ones, so
a threshold tuned on `tune` (with the validation speaker's keywords) is measured on speech it never
met. All of that speech is SYNTHETIC; the keywords are the prepared tree's real clips, trimmed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from kwsdeploy.contract import samples_to_seconds
from kwsdeploy.streaming.recording import Part, digit_recording, keyword_recording

SPEECH_SETS = ("test", "tune")
RECORDINGS = ("keywords", "digits")
FILLER = ("_silence_", "_unknown_")
SPEED_RANGE = (0.9, 1.1)
TAKE = re.compile(r"_nohash_(\d+)")


def split_keywords(prepared: Path, split: str) -> list[tuple[np.ndarray, str, str]]:
    """(trimmed word float32, label, clip path) of every keyword clip of a prepared split."""
    from kwsdeploy.data.dataset import decode_entry
    from kwsdeploy.data.prepared import audio_root, load_meta, read_jsonl
    from kwsdeploy.placement import trim_edges

    prepared = Path(prepared)
    root = audio_root(prepared, load_meta(prepared))
    out = []
    for e in read_jsonl(prepared / f"{split}.jsonl"):
        if e["label"] in FILLER or "offset" in e:
            continue
        x = decode_entry(e, root).astype(np.float32) / 32768.0
        out.append((trim_edges(x), e["label"], e["path"]))
    if not out:
        raise ValueError(f"{prepared} [{split}] holds no keyword clips; pass a prepared tree with keywords.")
    return out


def split_noises(prepared: Path) -> list[np.ndarray]:
    """The prepared tree's background-noise recordings (float32)."""
    from kwsdeploy.data.prepared import audio_root, load_meta
    from kwsdeploy.data.wavcheck import read_int16

    meta = load_meta(Path(prepared))
    root = audio_root(Path(prepared), meta)
    return [read_int16(root / f).astype(np.float32) / 32768.0 for f in meta.get("noise_files", [])]


def held_out_speech(speech_set: str, minutes: float, seed: int = 0, progress=None) -> tuple[list[np.ndarray], dict]:
    """SYNTHETIC non-keyword speech: held-out sentences said by held-out voices until `minutes` are reached."""
    from kwsdeploy.data import synth

    if speech_set not in SPEECH_SETS:
        raise ValueError(f"speech set {speech_set!r} is not one of {', '.join(SPEECH_SETS)}.")
    first = 1 if speech_set == "test" else 0
    voices = synth.held_out_voices()[first::2]
    sentences = list(synth.HELD_OUT_SENTENCES[first::2])
    if not voices:
        raise ValueError("no held-out TTS voice is installed (espeak-ng, flite): apt-get install espeak-ng.")
    rng = np.random.default_rng([seed, first])
    order = rng.permutation(len(voices))
    out, seconds, used = [], 0.0, set()
    i = 0
    while seconds < minutes * 60:
        voice = voices[int(order[i % len(voices)])]
        text = sentences[(i + i // len(sentences)) % len(sentences)]
        x = synth.render(text, voice, speed=float(rng.uniform(*SPEED_RANGE)))
        out.append(x)
        seconds += len(x) / synth.SAMPLE_RATE
        used.add(str(voice))
        i += 1
        if progress is not None:
            progress(min(seconds / (minutes * 60), 1.0))
    info = {"speech_set": speech_set, "synthetic": True, "sentences": len(sentences), "voices": len(used),
            "utterances": len(out), "speech_seconds": round(seconds, 2)}
    return out, info


def digit_sequences(words: Sequence[tuple[np.ndarray, str, str]], labels_order: Sequence[str]
                    ) -> list[list[tuple[np.ndarray, str]]]:
    """Words grouped by take (`..._nohash_<n>`), each group in label order: 'zero one two ...' per take."""
    rank = {lab: i for i, lab in enumerate(labels_order)}
    takes: dict[str, list] = {}
    for audio, label, path in words:
        m = TAKE.search(Path(path).stem)
        takes.setdefault(m.group(1) if m else Path(path).stem, []).append((rank.get(label, 99), audio, label))
    return [[(a, lab) for _, a, lab in sorted(g, key=lambda w: w[0])]
            for _, g in sorted(takes.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)]


def build(recording: str, prepared: Path, split: str, speech_set: str = "test", minutes: float = 32.0,
          seed: int = 0, pause_seconds: float = 0.5, progress=None) -> tuple[np.ndarray, list[Part], dict]:
    """One recording ('keywords' or 'digits') from a prepared split: (audio, parts, description)."""
    from kwsdeploy.data.prepared import load_labels

    words = split_keywords(prepared, split)
    noises = split_noises(prepared)
    info: dict = {"recording": recording, "data": Path(prepared).name, "split": split, "keywords": len(words),
                  "seed": seed}  # the folder's name only: results name no machine path
    if recording == "keywords":
        speech, sinfo = held_out_speech(speech_set, minutes, seed, progress)
        order = np.random.default_rng(seed).permutation(len(words))
        audio, parts = keyword_recording([(words[i][0], words[i][1]) for i in order], speech, noises, seed=seed)
        info.update(sinfo)
    elif recording == "digits":
        seqs = digit_sequences(words, load_labels(prepared))
        audio, parts = digit_recording(seqs, pause_seconds=pause_seconds, floor=noises[0] if noises else None, seed=seed)
        info.update(sequences=len(seqs), pause_seconds=pause_seconds)
    else:
        raise ValueError(f"recording {recording!r} is not one of {', '.join(RECORDINGS)}.")
    info["seconds"] = round(samples_to_seconds(len(audio)), 2)
    info["seconds_by_part"] = seconds_by_part(parts)
    return audio, parts, info


def seconds_by_part(parts: Sequence[Part]) -> dict[str, float]:
    """Seconds of keyword, speech, noise and gap parts of a recording (its description's `seconds_by_part`)."""
    return {k: round(sum(p.end - p.start for p in parts if p.kind == k), 2) for k in ("keyword", "speech", "noise", "gap")}


def recording_names(recordings: str) -> list[str]:
    """`keywords,digits` -> ["keywords", "digits"]; a one-line ValueError for an unknown or repeated name."""
    names = [r.strip() for r in recordings.split(",") if r.strip()]
    bad = [r for r in names if r not in RECORDINGS]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"--recording {recordings!r}: choose a comma list of {', '.join(RECORDINGS)}, each once.")
    return names


def join_recordings(pieces: Sequence[tuple[np.ndarray, list[Part], dict]]) -> tuple[np.ndarray, list[Part], dict]:
    """Recordings played one after the other as one recording (a stream never reset between them): the audio
    concatenated, each recording's parts shifted by the seconds of those before it; the description sums
    keywords, seconds and seconds by part and keeps each recording's own under `recordings`."""
    if not pieces:
        raise ValueError("join_recordings needs at least one recording.")
    if len(pieces) == 1:
        return pieces[0]
    audio, parts, offset = [], [], 0.0
    for wave, wave_parts, _ in pieces:
        audio.append(np.asarray(wave, np.float32))
        parts += [dataclasses.replace(p, start=p.start + offset, end=p.end + offset) for p in wave_parts]
        offset += samples_to_seconds(len(wave))
    infos = [info for _, _, info in pieces]
    joined = np.concatenate(audio)
    info = {"recording": "+".join(i["recording"] for i in infos), "data": infos[0].get("data"),
            "split": infos[0].get("split"), "keywords": sum(i.get("keywords", 0) for i in infos),
            "seed": infos[0].get("seed"), "seconds": round(samples_to_seconds(len(joined)), 2),
            "seconds_by_part": seconds_by_part(parts),
            "recordings": infos}
    for key in ("speech_set", "synthetic", "sentences", "voices", "utterances", "speech_seconds"):
        if any(key in i for i in infos):  # the held-out speech's description (the keywords recording's)
            info[key] = next(i[key] for i in infos if key in i)
    return joined, parts, info
