"""Keyword events from a stream of logits: posterior smoothing, a threshold and a refractory period.

Torch-free (numpy only), so it runs beside the ONNX Runtime step runner on a device. Each
`update` consumes the logits of one packet (or a [T, classes] run of packets): softmax (of the logits
divided by `temperature`; below 1 sharpens, so the average rewards a keyword named packet after packet), moving
average over the last `smoothing_packets` packets (before the stream's start they count as zero, so
the first event needs as much evidence as any later one), then an event when the best keyword's smoothed
probability reaches `threshold` (or that keyword's own, `keyword_thresholds`), that keyword has not fired within the last `refractory_seconds`
(per keyword: digits said a second apart are all heard) and no keyword fired within the last
`min_gap_seconds` (across keywords: one word does not fire twice under two names).
Labels in `ignore` (silence, unknown) never fire. Event times are the end of the packet that
triggered them, in seconds from the start of the stream (plus `time_offset`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from kwsdeploy.contract import DetectionSettings

DEFAULT_IGNORE = ("_silence_", "_unknown_")


@dataclass(frozen=True)
class Detection:
    """One keyword event: the label, its index, when (s) and the smoothed probability that fired it."""

    label: str
    index: int
    time: float
    score: float

    def to_dict(self) -> dict:
        """JSON-ready dict of the event."""
        return {"label": self.label, "index": self.index, "time": self.time, "score": self.score}


def packets_for(seconds: float, hop_seconds: float) -> int:
    """Whole packets covering `seconds` (rounded up; integer counts keep event times exact)."""
    return int(np.ceil(seconds / hop_seconds - 1e-9))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of `logits / temperature` over the last axis (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    if temperature != 1.0:
        z = z / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def label_thresholds(labels: Sequence[str], threshold: float,
                     keyword_thresholds: "dict[str, float] | None" = None) -> np.ndarray:
    """The threshold of each label index: its own from `keyword_thresholds`, else `threshold`."""
    own = dict(keyword_thresholds or {})
    strange = sorted(set(own) - set(labels))
    if strange:
        raise ValueError(f"keyword thresholds for label(s) {strange} that are not among {list(labels)}.")
    if any(not 0.0 < float(v) <= 1.0 for v in own.values()):
        raise ValueError(f"keyword thresholds are probabilities in (0, 1], got {own}.")
    return np.array([float(own.get(x, threshold)) for x in labels])


class KeywordDetector:
    """Stateful detector: `detector.update(logits) -> list[Detection]`; `reset()` starts a new stream."""

    def __init__(
        self,
        labels: Sequence[str],
        hop_seconds: float,
        smoothing_packets: int = 3,
        threshold: float = 0.7,
        refractory_seconds: float = 1.0,
        ignore: Iterable[str] = DEFAULT_IGNORE,
        time_offset: float = 0.0,
        min_gap_seconds: float = 0.0,
        keyword_thresholds: "dict[str, float] | None" = None,
        temperature: float = 1.0,
    ) -> None:
        self.labels = [str(x) for x in labels]
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be a non-empty list of distinct names, got {list(labels)!r}.")
        if not hop_seconds > 0:
            raise ValueError(f"hop_seconds must be > 0, got {hop_seconds}.")
        if int(smoothing_packets) != smoothing_packets or smoothing_packets < 1:
            raise ValueError(f"smoothing_packets must be a whole number >= 1, got {smoothing_packets}.")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold is a probability in (0, 1], got {threshold}.")
        if not refractory_seconds >= 0:
            raise ValueError(f"refractory_seconds must be >= 0, got {refractory_seconds}.")
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0 (1: plain softmax), got {temperature}.")
        if not min_gap_seconds >= 0:
            raise ValueError(f"min_gap_seconds must be >= 0, got {min_gap_seconds}.")
        ignored = set(ignore)
        self.keyword_indices = np.array([i for i, x in enumerate(self.labels) if x not in ignored], dtype=np.int64)
        if self.keyword_indices.size == 0:
            raise ValueError(f"Every label is ignored ({sorted(ignored)}); nothing could ever be detected.")
        self.hop_seconds = float(hop_seconds)
        self.smoothing_packets = int(smoothing_packets)
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.thresholds = label_thresholds(self.labels, threshold, keyword_thresholds)  # per label index
        self.refractory_packets = packets_for(refractory_seconds, self.hop_seconds)
        self.gap_packets = packets_for(min_gap_seconds, self.hop_seconds)
        self.time_offset = float(time_offset)
        self.reset()

    @classmethod
    def from_settings(cls, labels: Sequence[str], hop_seconds: float, settings: "DetectionSettings",
                      **kwargs: Any) -> "KeywordDetector":
        """A detector with a bundle's (or the default) `kwsdeploy.contract.DetectionSettings`."""
        return cls(labels, hop_seconds, smoothing_packets=settings.smoothing_packets(hop_seconds),
                   threshold=settings.threshold, refractory_seconds=settings.refractory_seconds,
                   min_gap_seconds=settings.min_gap_seconds,
                   keyword_thresholds=getattr(settings, "keyword_thresholds", None),
                   temperature=float(getattr(settings, "temperature", 1.0)), **kwargs)

    def reset(self) -> None:
        """Forget the history: the next packet is the first of a new stream."""
        self._history: deque[np.ndarray] = deque(maxlen=self.smoothing_packets)
        self._packets = 0
        self._last_event_packet: int | None = None  # any keyword
        self._last_by_label: dict[int, int] = {}
        self.smoothed: np.ndarray | None = None

    @property
    def time(self) -> float:
        """Seconds of stream consumed so far (end of the last packet), plus `time_offset`."""
        return self._packets * self.hop_seconds + self.time_offset

    def update(self, logits: np.ndarray) -> list[Detection]:
        """Consume one packet's logits [classes] (or [T, classes]: T packets in order); return new events."""
        arr = np.asarray(logits)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != len(self.labels):
            raise ValueError(
                f"Expected logits of shape [{len(self.labels)}] or [T, {len(self.labels)}] (one per label), "
                f"got {tuple(np.shape(logits))}."
            )
        if not np.isfinite(arr).all():
            raise ValueError("Logits contain NaN or infinity; check the model and its input features.")
        events = []
        for probs in softmax(arr, self.temperature):
            event = self._step(probs)
            if event is not None:
                events.append(event)
        return events

    def _step(self, probs: np.ndarray) -> Detection | None:
        self._packets += 1
        self._history.append(probs)
        self.smoothed = np.sum(np.stack(self._history), axis=0) / self.smoothing_packets
        scores = self.smoothed[self.keyword_indices]
        best = int(self.keyword_indices[int(np.argmax(scores))])
        score = float(self.smoothed[best])
        if score < self.thresholds[best]:
            return None
        last = self._last_by_label.get(best)
        if last is not None and self._packets - last < self.refractory_packets:
            return None
        if self._last_event_packet is not None and self._packets - self._last_event_packet < self.gap_packets:
            return None
        self._last_event_packet = self._last_by_label[best] = self._packets
        return Detection(self.labels[best], best, self.time, score)

