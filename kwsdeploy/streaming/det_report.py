"""One detector report on one annotated recording (numpy only): the events at the given settings,
the DET curve over thresholds (overall and per keyword), false reject rates at the false-alarm
budgets, and the threshold that meets a target; `tune_settings` picks the smoothing and threshold
that meet a target with the fewest false rejects."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kwsdeploy.contract import DetectionSettings
from kwsdeploy.streaming.det import curve_to_json, det_curve, detections, operating_point, score_stream, summary
from kwsdeploy.streaming.recording import Part, score_parts

SMOOTHING_CHOICES_S = (0.1, 0.2, 0.4)


def report(logits: np.ndarray, labels: Sequence[str], hop_seconds: float, parts: Sequence[Part],
           total_seconds: float, settings: DetectionSettings, target_fa_per_hour: float | None = None) -> dict:
    """Scores at `settings` and the DET curve of the same score stream."""
    stream = score_stream(logits, labels, hop_seconds, settings.smoothing_packets(hop_seconds))
    found = detections(stream, settings.threshold, settings.refractory_seconds, settings.min_gap_seconds)
    at = score_parts(found, parts, total_seconds)
    curve = det_curve(stream, parts, total_seconds, settings.refractory_seconds, settings.min_gap_seconds)
    return {"settings": settings.to_dict(), "at_settings": at.to_dict(),
            "det": summary(curve, target_fa_per_hour), "curve": curve_to_json(curve), "_curve": curve}


def tune_settings(logits: np.ndarray, labels: Sequence[str], hop_seconds: float, parts: Sequence[Part],
                  total_seconds: float, target_fa_per_hour: float, base: DetectionSettings,
                  smoothing_choices: Sequence[float] = SMOOTHING_CHOICES_S) -> tuple[DetectionSettings, dict]:
    """The smoothing (of `smoothing_choices`) and threshold meeting the target with the lowest false reject
    rate (ties: the higher threshold); refractory and gap from `base`. Raises if no setting meets it."""
    best = None
    tried = []
    for smoothing in smoothing_choices:
        stream = score_stream(logits, labels, hop_seconds, max(1, int(round(smoothing / hop_seconds))))
        curve = det_curve(stream, parts, total_seconds, base.refractory_seconds, base.min_gap_seconds)
        p = operating_point(curve, target_fa_per_hour)
        tried.append({"smoothing_seconds": smoothing, "threshold": p.threshold if p else None,
                      "false_reject_rate": p.false_reject_rate if p else 1.0})
        if p is not None and (best is None or (p.false_reject_rate, -p.threshold) < (best[1].false_reject_rate,
                                                                                       -best[1].threshold)):
            best = (smoothing, p)
    if best is None:
        raise ValueError(f"no threshold meets {target_fa_per_hour:g} false alarms per hour on this recording "
                         f"(tried smoothing {', '.join(f'{s:g}' for s in smoothing_choices)} s); raise the target.")
    smoothing, p = best
    tuned = {"target_fa_per_hour": target_fa_per_hour, "budget_counts": "non_keyword",
             "false_reject_rate": p.false_reject_rate, "false_alarms_per_hour": p.false_alarms_per_hour,
             "non_keyword_false_alarms_per_hour": p.non_keyword_false_alarms_per_hour, "tried": tried}
    return DetectionSettings(threshold=p.threshold, smoothing_seconds=smoothing,
                             refractory_seconds=base.refractory_seconds, min_gap_seconds=base.min_gap_seconds,
                             tuned=tuned), tuned
