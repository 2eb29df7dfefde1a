"""Continuous-stream evaluation: clips joined by noise gaps into one long recording, streamed, and
the detections scored against where the keywords really are (numpy only).

Scoring: a keyword event counts as detected when a detection of its label falls in
[start, end + tolerance] (tolerance 1 s by default: a model that looks at the last second may fire
at any time while the word is in its window); a detection inside no event window, or of the wrong label, is a false
alarm. Reported: detection accuracy over keyword events, misses, confusions, false alarms per hour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from kwsdeploy.contract import SAMPLE_RATE

FILLER_LABELS = ("_silence_", "_unknown_")


@dataclass(frozen=True)
class Event:
    """One keyword spoken in a long recording: its label and where it lies (seconds)."""
    label: str
    start: float  # seconds
    end: float


@dataclass
class StreamScore:
    """Detection scores of one source on a long recording."""
    keyword_events: int
    detected: int
    missed: int
    confused: int
    false_alarms: int
    hours: float
    accuracy: float
    false_alarms_per_hour: float
    per_label_recall: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict of every score."""
        return asdict(self)


def build_long_recording(
    clips: Sequence[tuple[np.ndarray, str]],
    noise: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    gap_seconds: tuple[float, float] = (1.0, 2.0),
    noise_gain: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, list[Event]]:
    """Join clips with gaps of noise (or silence) between them; events say where each clip's label lies."""
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    events: list[Event] = []
    t = 0

    def gap() -> np.ndarray:
        n = int(rng.uniform(*gap_seconds) * sample_rate)
        if noise is None or len(noise) == 0:
            return np.zeros(n, dtype=np.float32)
        start = int(rng.integers(0, max(1, len(noise) - n)))
        seg = np.resize(noise[start : start + n], n).astype(np.float32)
        peak = float(np.max(np.abs(seg))) or 1.0
        return seg / peak * noise_gain

    for audio, label in clips:
        g = gap()
        pieces.append(g)
        t += len(g)
        audio = np.asarray(audio, dtype=np.float32)
        events.append(Event(label, t / sample_rate, (t + len(audio)) / sample_rate))
        pieces.append(audio)
        t += len(audio)
    pieces.append(gap())
    return np.concatenate(pieces), events


def score_detections(
    detections: Iterable[tuple[str, float]],
    events: Sequence[Event],
    total_seconds: float,
    tolerance: float = 1.0,
) -> StreamScore:
    """Score (label, time) detections against events; filler-label events are not keywords."""
    keyword_events = [e for e in events if e.label not in FILLER_LABELS]
    hit = [False] * len(keyword_events)
    confused = [False] * len(keyword_events)
    false_alarms = 0
    for label, time in detections:
        idx = next(
            (i for i, e in enumerate(keyword_events) if e.start <= time <= e.end + tolerance), None
        )
        if idx is None:
            false_alarms += 1
        elif label == keyword_events[idx].label:
            hit[idx] = True
        else:
            confused[idx] = True
            false_alarms += 1
    n = len(keyword_events)
    detected = sum(hit)
    hours = total_seconds / 3600.0
    recall: dict[str, list[bool]] = {}
    for e, h in zip(keyword_events, hit):
        recall.setdefault(e.label, []).append(h)
    return StreamScore(
        keyword_events=n,
        detected=detected,
        missed=n - detected,
        confused=sum(c and not h for c, h in zip(confused, hit)),
        false_alarms=false_alarms,
        hours=hours,
        accuracy=detected / n if n else 0.0,
        false_alarms_per_hour=false_alarms / hours if hours > 0 else 0.0,
        per_label_recall={k: float(np.mean(v)) for k, v in sorted(recall.items())},
    )
