"""Accuracy and false alarms per hour of a row's own runner, when `--data` names a prepared corpus.

Streaming rows (step, windowed): the split's clips joined by gaps of the corpus's background noise
(silence without one) into one long recording,
streamed through the runner from the zero state, detections scored against where the words are
(kwsdeploy.streaming.stream_eval). Offline rows: top-1 accuracy over the clips (no false alarms).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

THRESHOLD, SMOOTHING_S, REFRACTORY_S, MIN_GAP_S = 0.7, 0.2, 1.2, 0.5  # the `kwsdeploy stream` defaults


@dataclass(frozen=True)
class Corpus:
    clips: list[tuple[np.ndarray, str]]
    recording: np.ndarray
    events: list
    sample_rate: int = 16000


def load_corpus(data: Path, split: str = "test", clips: int = 20, seed: int = 0) -> Corpus:
    """Up to `clips` clips of a prepared split and the long recording made of them."""
    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.prepared import load_labels
    from kwsdeploy.streaming.stream_eval import build_long_recording

    ds = KwsDataset(data, split)
    labels = load_labels(data)
    order = np.random.default_rng(seed).permutation(len(ds))[: max(1, clips)]
    pairs = []
    for i in order:
        wave, y = ds[int(i)]
        pairs.append((np.asarray(wave, dtype=np.float32), labels[int(y)]))
    audio, events = build_long_recording(pairs, noise=_noise(Path(data)), seed=seed)
    return Corpus(clips=pairs, recording=audio, events=events)


def _noise(data: Path) -> np.ndarray | None:
    """The corpus's first background-noise recording (the gaps between clips, as `eval-stream` makes them)."""
    from kwsdeploy.audio import load_audio

    folder = data / "_background_noise_"
    for f in sorted(folder.iterdir()) if folder.is_dir() else ():
        if f.suffix.lower() in (".wav", ".flac"):
            return load_audio(f)[0]
    return None


def score(runner, subject, corpus: Corpus) -> dict:
    """{'accuracy', 'fa_per_hour'} of one runner (batch 1) on the corpus."""
    if subject.key.mode == "offline":
        hits = 0
        for wave, label in corpus.clips:
            x = _offline_input(subject, wave)
            pred = subject.labels[int(np.argmax(runner.step(x)[0]))]
            hits += pred == label
        return {"accuracy": hits / len(corpus.clips), "fa_per_hour": None}
    from kwsdeploy.contract import smoothing_packets
    from kwsdeploy.runtime.detect import KeywordDetector
    from kwsdeploy.streaming.stream_eval import score_detections

    packets = subject.packets(corpus.recording, _calls(subject, corpus.recording))
    runner.reset()
    logits = np.stack([runner.step(p)[0] for p in packets])
    hop = subject.audio_seconds_per_call
    det = KeywordDetector(subject.labels, hop, smoothing_packets=smoothing_packets(SMOOTHING_S, hop),
                          threshold=THRESHOLD, refractory_seconds=REFRACTORY_S, min_gap_seconds=MIN_GAP_S)
    found = det.update(logits)
    s = score_detections([(e.label, e.time) for e in found], corpus.events, len(corpus.recording) / corpus.sample_rate)
    return {"accuracy": s.accuracy, "fa_per_hour": s.false_alarms_per_hour}


def _calls(subject, audio: np.ndarray) -> int:
    from kwsdeploy.contract import packet_samples

    per_call = packet_samples(subject.packet_frames, subject.feature_config)
    return len(audio) // per_call


def _offline_input(subject, wave: np.ndarray) -> np.ndarray:
    from kwsdeploy.audio import fit_clip
    from kwsdeploy.features import compute_features

    fc = subject.feature_config
    clip = fit_clip(wave, fc.clip_samples).astype(np.float32)
    if subject.key.frontend:
        return clip[None]
    return compute_features(clip, fc).numpy()[None, None]
