"""Long recordings for detection tests, annotated part by part, and their scoring (numpy only).

`keyword_recording`: keywords placed between parts of non-keyword speech and of noise, with short
gaps of a quiet noise floor between all parts and the floor under everything. `digit_recording`:
sequences of words said with a fixed pause between them (digits about a second apart). Each part
is a `Part(kind, start, end, label)`, kinds keyword | speech | noise | gap, tiling the recording.

Scoring (`score_parts`): a detection hits a keyword of its label whose window [start, end +
tolerance] holds it and that no earlier detection hit; any other detection is a false alarm,
counted in the part where it fires ('near_keyword' when it falls in any keyword's window: a
confusion or a second event for one word; in a gap less than `tolerance` after a speech or noise
part, that part, whose sound is still in the model's window), so the false alarms on non-keyword
speech and on noise are separate numbers with their own hours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from kwsdeploy.contract import SAMPLE_RATE

PART_KINDS = ("keyword", "speech", "noise", "gap")
NEAR_KEYWORD = "near_keyword"
HIT_WINDOW_SECONDS = 1.0  # a detection up to this long after a keyword ends still hears it


@dataclass(frozen=True)
class Part:
    """One stretch of a long recording: what it holds, where (seconds) and, for a keyword, its label."""

    kind: str
    start: float
    end: float
    label: str = ""


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2))) if len(x) else 0.0


def _cut(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    start = int(rng.integers(0, max(1, len(noise) - n)))
    return np.resize(np.asarray(noise[start: start + n], np.float32), n)


class _Tape:
    """Pieces appended in order, each annotated as a Part."""

    def __init__(self, rate: int) -> None:
        self.rate, self.pieces, self.parts, self.n = rate, [], [], 0

    def add(self, x: np.ndarray, kind: str, label: str = "") -> None:
        x = np.asarray(x, np.float32)
        if not len(x):
            return
        self.pieces.append(x)
        self.parts.append(Part(kind, self.n / self.rate, (self.n + len(x)) / self.rate, label))
        self.n += len(x)

    def audio(self, floor: np.ndarray | None, floor_rms: float, rng: np.random.Generator) -> np.ndarray:
        out = np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)
        if floor is not None and len(out) and floor_rms > 0:
            bed = _cut(floor, len(out), rng)
            out = out + bed / max(_rms(bed), 1e-12) * floor_rms
        return out.astype(np.float32)


def keyword_recording(
    keywords: Sequence[tuple[np.ndarray, str]],
    speech: Sequence[np.ndarray],
    noises: Sequence[np.ndarray],
    sample_rate: int = SAMPLE_RATE,
    seed: int = 0,
    speech_level_db: tuple[float, float] = (-6.0, 6.0),
    noise_snr_db: tuple[float, float] = (10.0, 25.0),
    noise_seconds: tuple[float, float] = (3.0, 8.0),
    noise_every: int = 3,
    gap_seconds: tuple[float, float] = (0.4, 1.0),
    floor_db: float = -45.0,
) -> tuple[np.ndarray, list[Part]]:
    """Keywords (trimmed words) between speech parts (the sentences spread over the slots between
    keywords) and a noise part every `noise_every` slots. Levels are relative to the keywords' median
    RMS: speech within `speech_level_db`, noise parts `noise_snr_db` below, the floor `floor_db` below."""
    if not keywords:
        raise ValueError("keyword_recording needs at least one keyword clip.")
    rng = np.random.default_rng(seed)
    ref = float(np.median([_rms(a) for a, _ in keywords])) or 0.1
    slots: list[list[np.ndarray]] = [[] for _ in range(len(keywords) + 1)]
    for i, s in enumerate(speech):
        slots[i % len(slots)].append(s)
    tape = _Tape(sample_rate)

    def gap() -> None:
        tape.add(np.zeros(int(rng.uniform(*gap_seconds) * sample_rate), np.float32), "gap")

    for i, slot in enumerate(slots):
        for s in slot:
            gap()
            level = ref * 10 ** (rng.uniform(*speech_level_db) / 20)
            tape.add(np.asarray(s, np.float32) / max(_rms(s), 1e-12) * level, "speech")
        if noises and i % noise_every == noise_every - 1:
            gap()
            n = int(rng.uniform(*noise_seconds) * sample_rate)
            seg = _cut(noises[int(rng.integers(len(noises)))], n, rng)
            tape.add(seg / max(_rms(seg), 1e-12) * ref * 10 ** (-rng.uniform(*noise_snr_db) / 20), "noise")
        gap()
        if i < len(keywords):
            audio, label = keywords[i]
            tape.add(audio, "keyword", label)
    gap()
    floor = noises[0] if noises else rng.standard_normal(10 * sample_rate).astype(np.float32)
    return tape.audio(floor, ref * 10 ** (floor_db / 20), rng), tape.parts


def digit_recording(
    sequences: Sequence[Sequence[tuple[np.ndarray, str]]],
    sample_rate: int = SAMPLE_RATE,
    pause_seconds: float = 0.5,
    between_seconds: float = 2.0,
    floor: np.ndarray | None = None,
    floor_db: float = -45.0,
    seed: int = 0,
) -> tuple[np.ndarray, list[Part]]:
    """Each sequence's words with `pause_seconds` between them, `between_seconds` between sequences."""
    rng = np.random.default_rng(seed)
    words = [a for seq in sequences for a, _ in seq]
    if not words:
        raise ValueError("digit_recording needs at least one word.")
    ref = float(np.median([_rms(a) for a in words])) or 0.1
    tape = _Tape(sample_rate)
    for seq in sequences:
        tape.add(np.zeros(int(between_seconds * sample_rate), np.float32), "gap")
        for j, (audio, label) in enumerate(seq):
            if j:
                tape.add(np.zeros(int(pause_seconds * sample_rate), np.float32), "gap")
            tape.add(audio, "keyword", label)
    tape.add(np.zeros(int(between_seconds * sample_rate), np.float32), "gap")
    if floor is None:
        floor = rng.standard_normal(10 * sample_rate).astype(np.float32)
    return tape.audio(floor, ref * 10 ** (floor_db / 20), rng), tape.parts


def _cause(parts: Sequence[Part], part_starts: np.ndarray, t: float, tolerance: float) -> str:
    """The kind of part a false alarm at `t` is charged to: the part it fires in, or, in a gap, the
    speech or noise part that ended less than `tolerance` before (still in the model's window)."""
    i = int(np.searchsorted(part_starts, t, side="right")) - 1
    if not 0 <= i < len(parts):
        return "gap"
    j = i
    while j >= 0 and parts[j].kind == "gap":
        j -= 1
    if parts[i].kind == "gap" and j >= 0 and parts[j].kind in ("speech", "noise") and parts[j].end >= t - tolerance:
        return parts[j].kind
    return "gap" if parts[i].kind == "keyword" else parts[i].kind


@dataclass
class PartsScore:
    """Hits and false alarms of one run of the detector over an annotated recording."""

    keyword_events: int
    detected: int
    recall: float
    false_alarms: int
    hours: float
    false_alarms_by_part: dict[str, int]
    hours_by_part: dict[str, float]
    false_alarms_per_hour_by_part: dict[str, float]
    recall_by_label: dict[str, float] = field(default_factory=dict)
    false_alarms_by_label: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict of every score."""
        return asdict(self)


def score_parts(detections: Iterable[tuple[str, float]], parts: Sequence[Part], total_seconds: float,
                tolerance: float = HIT_WINDOW_SECONDS) -> PartsScore:
    """Score (label, time) detections against the annotated parts (see the module docstring)."""
    keys = [p for p in parts if p.kind == "keyword"]
    starts = np.array([p.start for p in keys])
    ends = np.array([p.end + tolerance for p in keys])
    key_labels = np.array([p.label for p in keys], dtype=object)
    hit = np.zeros(len(keys), bool)
    part_starts = np.array([p.start for p in parts])
    fa_part = {k: 0 for k in ("speech", "noise", "gap", NEAR_KEYWORD)}
    fa_label: dict[str, int] = {}
    for label, t in sorted(detections, key=lambda d: d[1]):
        inside = (starts <= t) & (t <= ends) if len(keys) else np.zeros(0, bool)
        match = np.flatnonzero(inside & (key_labels == label) & ~hit)
        if len(match):
            hit[match[0]] = True
            continue
        fa_label[label] = fa_label.get(label, 0) + 1
        if inside.any():
            fa_part[NEAR_KEYWORD] += 1
        else:
            fa_part[_cause(parts, part_starts, t, tolerance)] += 1
    seconds_part = {k: 0 for k in ("speech", "noise", "gap")}  # one pass; each kind summed in order, as sum()
    for p in parts:
        if p.kind in seconds_part:
            seconds_part[p.kind] += p.end - p.start
    hours_part = {k: v / 3600.0 for k, v in seconds_part.items()}
    recall: dict[str, list[bool]] = {}
    for p, h in zip(keys, hit):
        recall.setdefault(p.label, []).append(bool(h))
    n = len(keys)
    return PartsScore(
        keyword_events=n, detected=int(hit.sum()), recall=float(hit.mean()) if n else 0.0,
        false_alarms=int(sum(fa_part.values())), hours=total_seconds / 3600.0,
        false_alarms_by_part=fa_part, hours_by_part=hours_part,
        false_alarms_per_hour_by_part={k: fa_part[k] / h for k, h in hours_part.items() if h > 0},
        recall_by_label={k: float(np.mean(v)) for k, v in sorted(recall.items())},
        false_alarms_by_label=dict(sorted(fa_label.items())),
    )
