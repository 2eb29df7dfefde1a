"""One detector report on one annotated recording (numpy only): the events at the given settings,
the DET curve over thresholds (overall and per keyword), false reject rates at the false-alarm
budgets, and the threshold that meets a target; `tune_settings` picks the smoothing, softmax temperature
and threshold (one, or one per keyword) that meet a target with the fewest false rejects."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kwsdeploy.contract import DetectionSettings, smoothing_packets
from kwsdeploy.streaming.det import curve_to_json, det_curve, det_point, detections, operating_point, score_stream, summary
from kwsdeploy.streaming.holdout import MIN_HOLDOUT_KEYWORDS, Fit, Streams, fold_split, holdout_guard
from kwsdeploy.streaming.keyword_thresholds import tune_keyword_thresholds
from kwsdeploy.streaming.recording import Part, score_parts

SMOOTHING_CHOICES_S = (0.1, 0.2, 0.4, 0.6)
# Softmax temperatures `tune` tries (1: plain softmax). Chosen on the tune recording (validation speaker +
# the tune half of held-out synthetic speech; benchmarks/results/detection/score-study.md): 0.5 with 0.6 s
# smoothing heard 6 more points of the keywords at 1 FA/h for kwm, nothing for tcresnet8-causal, so it
# is tried, not imposed.
TEMPERATURE_CHOICES = (1.0, 0.5)


def report(logits: np.ndarray, labels: Sequence[str], hop_seconds: float, parts: Sequence[Part],
           total_seconds: float, settings: DetectionSettings, target_fa_per_hour: float | None = None) -> dict:
    """Scores at `settings` and the DET curve of the same score stream."""
    stream = score_stream(logits, labels, hop_seconds, settings.smoothing_packets(hop_seconds),
                          temperature=settings.temperature)
    found = detections(stream, settings.threshold, settings.refractory_seconds, settings.min_gap_seconds,
                       settings.keyword_thresholds)
    at = score_parts(found, parts, total_seconds)
    curve = det_curve(stream, parts, total_seconds, settings.refractory_seconds, settings.min_gap_seconds)
    return {"settings": settings.to_dict(), "at_settings": at.to_dict(),
            "det": summary(curve, target_fa_per_hour), "curve": curve_to_json(curve), "_curve": curve}


def _fit(streams: Streams, parts: Sequence[Part], total_seconds: float, target_fa_per_hour: float,
         base: DetectionSettings, per_keyword: bool, tried: list | None = None, only: bool = False) -> Fit | None:
    """`tune_settings`' search on one recording (None: nothing meets the target); rows into `tried`; with
    `only` (and `per_keyword`) thresholds per keyword whatever one threshold would hear."""
    best = None  # (false reject rate, tie-break, Fit)
    for (temperature, smoothing), stream in streams.items():
        curve = det_curve(stream, parts, total_seconds, base.refractory_seconds, base.min_gap_seconds)
        p = operating_point(curve, target_fa_per_hour)
        row = {"smoothing_seconds": smoothing, "temperature": temperature, "threshold": p.threshold if p else None,
               "false_reject_rate": p.false_reject_rate if p else 1.0}
        sharpened = temperature != 1.0
        candidates = [] if p is None or (only and per_keyword) else [(p.false_reject_rate, (sharpened, 0, -p.threshold),
                                            Fit(p, smoothing, temperature, p.threshold, None))]
        if per_keyword:
            kt = tune_keyword_thresholds(stream, parts, total_seconds, target_fa_per_hour, base.refractory_seconds,
                                         base.min_gap_seconds)
            row["per_keyword"] = None if kt is None else {"thresholds": kt.thresholds,
                                                          "false_reject_rate": kt.point.false_reject_rate}
            if kt is not None:  # the one threshold kept beside them: this smoothing's, else the highest of theirs
                scalar = p.threshold if p is not None else max(kt.thresholds.values())
                candidates.append((kt.point.false_reject_rate, (sharpened, 1, 0.0),
                                   Fit(kt.point, smoothing, temperature, scalar, kt.thresholds)))
        if tried is not None:
            tried.append(row)
        for c in candidates:
            if best is None or c[:2] < best[:2]:
                best = c
    return None if best is None else best[2]


def tune_settings(logits: np.ndarray, labels: Sequence[str], hop_seconds: float, parts: Sequence[Part],
                  total_seconds: float, target_fa_per_hour: float, base: DetectionSettings,
                  smoothing_choices: Sequence[float] = SMOOTHING_CHOICES_S,
                  per_keyword: bool = True,
                  temperature_choices: Sequence[float] = TEMPERATURE_CHOICES,
                  holdout: bool = True) -> tuple[DetectionSettings, dict]:
    """The smoothing (of `smoothing_choices`), softmax temperature (of `temperature_choices`) and threshold
    meeting the target with the lowest false reject rate (ties: temperature 1, then one threshold before
    per-keyword ones, then the higher threshold); with `per_keyword`, each smoothing also tries a threshold
    per keyword (`keyword_thresholds`). With `holdout` (`streaming/holdout.py`), a 2-fold hold-out on the
    recording decides first whether thresholds per keyword are kept and how many grid steps the chosen
    thresholds are raised for margin; `tuned["holdout"]` records it. Refractory and gap from `base`. Raises if no setting
    meets the target."""
    streams = {(t, s): score_stream(logits, labels, hop_seconds, smoothing_packets(s, hop_seconds), temperature=t)
               for t in temperature_choices for s in smoothing_choices}
    steps, guard = 0, None
    if holdout:
        folds = fold_split(parts, total_seconds) if sum(p.kind == "keyword" for p in parts) >= 2 else None
        if folds is None or min(f.keywords for f in folds) < MIN_HOLDOUT_KEYWORDS or min(f.off_hours for f in folds) <= 0:
            guard = {"skipped": f"fewer than {MIN_HOLDOUT_KEYWORDS} keywords (or no non-keyword audio) in a half"}
        else:
            families = (False, True) if per_keyword else (False,)
            per_keyword, steps, guard = holdout_guard(
                lambda st, pa, sec, b, pk: _fit(st, pa, sec, b, base, pk, only=True), streams, folds,
                target_fa_per_hour, base.refractory_seconds, base.min_gap_seconds, families)
    tried = []  # with the guard, the family it chose alone (its margin was measured for that family)
    best = _fit(streams, parts, total_seconds, target_fa_per_hour, base, per_keyword, tried,
                only="chosen" in (guard or {}))
    if best is None:
        raise ValueError(f"no threshold meets {target_fa_per_hour:g} false alarms per hour on this recording "
                         f"(tried smoothing {', '.join(f'{s:g}' for s in smoothing_choices)} s, temperature "
                         f"{', '.join(f'{t:g}' for t in temperature_choices)}); raise the target.")
    if steps:  # the margin the hold-out asked for, on the whole recording's choice
        threshold, kt = best.raised(steps)
        point = det_point(streams[(best.temperature, best.smoothing_seconds)], parts, total_seconds, threshold,
                          base.refractory_seconds, base.min_gap_seconds, kt)
        best = Fit(point, best.smoothing_seconds, best.temperature, threshold, kt)
    p, thresholds = best.point, best.keyword_thresholds
    tuned = {"target_fa_per_hour": target_fa_per_hour, "budget_counts": "non_keyword",
             "thresholds": "per_keyword" if thresholds else "one",
             "false_reject_rate": p.false_reject_rate, "false_alarms_per_hour": p.false_alarms_per_hour,
             "non_keyword_false_alarms_per_hour": p.non_keyword_false_alarms_per_hour, "tried": tried}
    if guard is not None:
        tuned["holdout"] = guard
    return DetectionSettings(threshold=best.threshold, smoothing_seconds=best.smoothing_seconds,
                             refractory_seconds=base.refractory_seconds, min_gap_seconds=base.min_gap_seconds,
                             tuned=tuned, keyword_thresholds=thresholds, temperature=best.temperature), tuned
