"""False rejects against false alarms per hour over thresholds (a DET curve) from one stream of logits.

The score stream is what `KeywordDetector` sees before its threshold: the smoothed posteriors of
every packet and the best keyword's index and score. `fire` returns exactly the packets at which the
detector would fire at a threshold (same per-keyword refractory and cross-keyword gap; tested
against it), so a threshold read off the curve behaves the same in `stream` and on a device.
Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from kwsdeploy.runtime.detect import DEFAULT_IGNORE, label_thresholds, packets_for, softmax
from kwsdeploy.streaming.recording import HIT_WINDOW_SECONDS, NEAR_KEYWORD, Part, score_parts

# Thresholds of the curve: coarse steps, then ever closer to 1 (a confident model's false alarms live there).
THRESHOLDS = tuple(float(t) for t in np.unique(np.round(np.concatenate(
    [np.arange(0.10, 0.95, 0.025), 1.0 - np.logspace(np.log10(0.05), -4, 27)]), 6)))
FA_BUDGETS = (0.5, 1.0, 5.0)  # false alarms per hour at which the false reject rate is reported
# A false-alarm budget counts what fires on non-keyword audio (speech, noise, gaps), per hour of that
# audio, as wake-word tools measure it. A wrong keyword fired on a keyword (a substitution, 'near_keyword')
# is a miss of that keyword (in the false reject rate) and is reported beside, not spent from the budget.
BUDGET_MEASURES = ("non_keyword", "all")


@dataclass(frozen=True)
class ScoreStream:
    """Per packet: the best keyword's label index and its smoothed probability; packet length in s."""

    best: np.ndarray  # [T] int label index
    score: np.ndarray  # [T] float64
    hop_seconds: float
    labels: tuple[str, ...]
    keyword_indices: tuple[int, ...]


def smoothed_posteriors(logits: np.ndarray, smoothing_packets: int, temperature: float = 1.0) -> np.ndarray:
    """[T, C] mean softmax (of logits / `temperature`) over the last `smoothing_packets` packets (zeros before
    the start), as the detector."""
    p = softmax(np.asarray(logits), temperature)
    out = np.zeros_like(p)
    for lag in range(smoothing_packets - 1, -1, -1):  # oldest first, like the detector's sum
        out[lag:] = out[lag:] + p[: len(p) - lag]
    return out / smoothing_packets


def score_stream(logits: np.ndarray, labels: Sequence[str], hop_seconds: float, smoothing_packets: int,
                 ignore: Sequence[str] = DEFAULT_IGNORE, temperature: float = 1.0) -> ScoreStream:
    """The detector's view of a stream of logits [T, C]: best keyword and its smoothed probability per packet
    (softmax of logits / `temperature`, as the detector's)."""
    labels = tuple(str(x) for x in labels)
    keys = np.array([i for i, x in enumerate(labels) if x not in set(ignore)], dtype=np.int64)
    smooth = smoothed_posteriors(logits, smoothing_packets, temperature)[:, keys]
    pick = np.argmax(smooth, axis=1)
    return ScoreStream(keys[pick], smooth[np.arange(len(pick)), pick], float(hop_seconds), labels,
                       tuple(int(k) for k in keys))


def packet_thresholds(stream: ScoreStream, threshold: float,
                      keyword_thresholds: Mapping[str, float] | None = None) -> np.ndarray | float:
    """The threshold each packet's best keyword must reach: `threshold`, or per packet from the keyword's own."""
    if not keyword_thresholds:
        return threshold
    return label_thresholds(stream.labels, threshold, keyword_thresholds)[stream.best]


def _by_keyword(stream: ScoreStream) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per keyword index: (packets, in time order, where it is the best keyword with a score above 0, their
    scores); kept on the stream, so the many thresholds of a tune split it once."""
    split = stream.__dict__.get("_by_keyword")
    if split is None:
        split = {}
        for k in stream.keyword_indices:
            t = np.flatnonzero((stream.best == k) & (stream.score > 0))
            split[k] = (t, stream.score[t])
        object.__setattr__(stream, "_by_keyword", split)
    return split


def fire(stream: ScoreStream, threshold: float, refractory_seconds: float,
         min_gap_seconds: float = 0.0, keyword_thresholds: Mapping[str, float] | None = None) -> list[tuple[int, int]]:
    """(packet index, label index) of every event the detector fires at `threshold` (a keyword with its own
    threshold in `keyword_thresholds` at that one), in time order."""
    refractory = max(1, packets_for(refractory_seconds, stream.hop_seconds))
    gap = max(1, packets_for(min_gap_seconds, stream.hop_seconds))
    own = label_thresholds(stream.labels, threshold, keyword_thresholds)
    if min(own[k] for k in stream.keyword_indices) > 0:  # each keyword's packets that can fire, split once
        times = {k: t[s >= own[k]] for k, (t, s) in _by_keyword(stream).items()}
    else:
        above = stream.score >= packet_thresholds(stream, threshold, keyword_thresholds)
        times = {k: np.flatnonzero(above & (stream.best == k)) for k in stream.keyword_indices}
    times = {k: t for k, t in times.items() if len(t)}
    last = {k: -(10**12) for k in times}
    last_any = -(10**12)
    events = []
    while True:
        nxt = None
        for k, t in times.items():
            i = int(np.searchsorted(t, max(last[k] + refractory, last_any + gap)))
            if i < len(t) and (nxt is None or t[i] < nxt[0]):
                nxt = (int(t[i]), k)
        if nxt is None:
            return events
        events.append(nxt)
        last[nxt[1]] = last_any = nxt[0]


def detections(stream: ScoreStream, threshold: float, refractory_seconds: float,
               min_gap_seconds: float = 0.0, keyword_thresholds: Mapping[str, float] | None = None
               ) -> list[tuple[str, float]]:
    """(label, time) of the events at `threshold`; time = end of the firing packet, as the detector's."""
    return [(stream.labels[k], (t + 1) * stream.hop_seconds)
            for t, k in fire(stream, threshold, refractory_seconds, min_gap_seconds, keyword_thresholds)]


@dataclass
class DetPoint:
    """One threshold of the curve: false rejects and false alarms, overall and per keyword."""

    threshold: float
    false_reject_rate: float
    false_alarms: int
    false_alarms_per_hour: float
    false_alarms_by_part: dict[str, int]
    false_alarms_per_hour_by_part: dict[str, float]
    per_keyword: dict[str, dict[str, float]] = field(default_factory=dict)
    non_keyword_false_alarms_per_hour: float = 0.0  # false alarms off the keywords per hour of non-keyword audio

    def budget_fa_per_hour(self, measure: str = "non_keyword") -> float:
        """The false alarms per hour a budget is checked against (`BUDGET_MEASURES`)."""
        if measure not in BUDGET_MEASURES:
            raise ValueError(f"budget measure {measure!r} is not one of {', '.join(BUDGET_MEASURES)}.")
        return self.non_keyword_false_alarms_per_hour if measure == "non_keyword" else self.false_alarms_per_hour


def det_point(stream: ScoreStream, parts: Sequence[Part], total_seconds: float, threshold: float,
              refractory_seconds: float, min_gap_seconds: float = 0.0,
              keyword_thresholds: Mapping[str, float] | None = None, tolerance: float = HIT_WINDOW_SECONDS) -> DetPoint:
    """False rejects and false alarms of the detector at `threshold` (and `keyword_thresholds`) on one recording."""
    hours = total_seconds / 3600.0
    found = detections(stream, threshold, refractory_seconds, min_gap_seconds, keyword_thresholds)
    s = score_parts(found, parts, total_seconds, tolerance)
    off_hours = sum(s.hours_by_part.values())
    off_alarms = s.false_alarms - s.false_alarms_by_part.get(NEAR_KEYWORD, 0)
    return DetPoint(
        threshold=float(threshold), false_reject_rate=1.0 - s.recall, false_alarms=s.false_alarms,
        false_alarms_per_hour=s.false_alarms / hours if hours > 0 else 0.0,
        false_alarms_by_part=s.false_alarms_by_part, false_alarms_per_hour_by_part=s.false_alarms_per_hour_by_part,
        per_keyword={k: {"false_reject_rate": 1.0 - r, "false_alarms": s.false_alarms_by_label.get(k, 0),
                         "false_alarms_per_hour": s.false_alarms_by_label.get(k, 0) / hours if hours > 0 else 0.0}
                     for k, r in s.recall_by_label.items()},
        non_keyword_false_alarms_per_hour=off_alarms / off_hours if off_hours > 0 else 0.0,
    )


def det_curve(stream: ScoreStream, parts: Sequence[Part], total_seconds: float, refractory_seconds: float,
              min_gap_seconds: float = 0.0, thresholds: Sequence[float] = THRESHOLDS,
              tolerance: float = HIT_WINDOW_SECONDS) -> list[DetPoint]:
    """The DET curve of one recording: a point per threshold (false alarms per hour over the whole recording)."""
    return [det_point(stream, parts, total_seconds, th, refractory_seconds, min_gap_seconds, tolerance=tolerance)
            for th in thresholds]


def keyword_curve(curve: Sequence[DetPoint], keyword: str) -> list[DetPoint]:
    """One keyword's DET curve (its false rejects, the false alarms carrying its label)."""
    return [DetPoint(p.threshold, p.per_keyword[keyword]["false_reject_rate"], p.per_keyword[keyword]["false_alarms"],
                     p.per_keyword[keyword]["false_alarms_per_hour"], {}, {},
                     non_keyword_false_alarms_per_hour=p.per_keyword[keyword]["false_alarms_per_hour"]) for p in curve]


def operating_point(curve: Sequence[DetPoint], target_fa_per_hour: float,
                    measure: str = "non_keyword") -> DetPoint | None:
    """The lowest threshold at and above which every point stays within the budget (None: none does);
    `measure` says which false alarms the budget counts (`BUDGET_MEASURES`, default non-keyword audio)."""
    best = None
    for p in sorted(curve, key=lambda p: -p.threshold):
        if p.budget_fa_per_hour(measure) > target_fa_per_hour:
            break
        best = p
    return best


def summary(curve: Sequence[DetPoint], target_fa_per_hour: float | None = None,
            budgets: Sequence[float] = FA_BUDGETS) -> dict:
    """False reject rate at each false-alarm budget (overall and per keyword) and the target's threshold."""
    def at(budget: float) -> dict:
        p = operating_point(curve, budget)
        if p is None:
            return {"fa_per_hour_budget": budget, "threshold": None, "false_reject_rate": 1.0,
                    "note": "no threshold of the curve meets this budget"}
        return {"fa_per_hour_budget": budget, "threshold": p.threshold, "false_reject_rate": p.false_reject_rate,
                "false_alarms_per_hour": p.false_alarms_per_hour,
                "non_keyword_false_alarms_per_hour": p.non_keyword_false_alarms_per_hour,
                "false_alarms_per_hour_by_part": p.false_alarms_per_hour_by_part,
                "per_keyword_false_reject_rate": {k: v["false_reject_rate"] for k, v in p.per_keyword.items()}}

    out: dict = {"at_budget": [at(b) for b in budgets]}
    if target_fa_per_hour is not None:
        out["target"] = at(target_fa_per_hour)
    return out


def curve_to_json(curve: Sequence[DetPoint]) -> list[dict]:
    """JSON-ready list of the curve's points."""
    from dataclasses import asdict

    return [asdict(p) for p in curve]


def plot_det(curves: Mapping[str, Sequence[DetPoint]], path, title: str = "") -> object:
    """A DET PNG (false reject rate vs false alarms per hour; the first curve in black); None without matplotlib."""
    from kwsdeploy.plotting import pyplot

    plt = pyplot()
    if plt is None:
        return None
    from pathlib import Path

    from kwsdeploy.atomic import writing_file

    fig, ax = plt.subplots(figsize=(6, 4.5))
    colours = plt.get_cmap("tab10")
    for i, (name, curve) in enumerate(curves.items()):
        pts = sorted(curve, key=lambda p: p.false_alarms_per_hour)
        style = dict(color="black", linewidth=2.2) if i == 0 else dict(color=colours((i - 1) % 10), linewidth=0.9)
        ax.plot([max(p.false_alarms_per_hour, 0.1) for p in pts], [100 * p.false_reject_rate for p in pts],
                marker=".", label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour (0 drawn at 0.1)")
    ax.set_ylabel("false reject rate (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        with writing_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path
