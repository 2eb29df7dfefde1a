"""The hold-out guard of `tune` (numpy only): tune on one half of the tune recording, score on the other.

Why: ten thresholds (one per keyword) fitted to "at most the budget" on one recording sit each just
above that recording's own false alarms; on speech the tune never met the weaker models then fired
4-22 times per hour against a budget of 1. In-sample false rejects cannot see this; held-out ones can.

Folds (`fold_split`): the recording's timeline is cut into `HOLDOUT_BLOCKS` blocks of consecutive
keywords (each with the speech and noise before it; a cut lies `HIT_WINDOW_SECONDS` after a keyword, so
no keyword's window is split) and the blocks go alternately to two halves (as many keywords each, give
or take one), so each half holds keywords and speech from the whole recording. A half is scored as a recording of its own: the stream is masked
outside it (nothing fires there) and its parts are clipped to its blocks.

Selection (`holdout_guard`): a candidate is a tuning procedure, `tune_settings`' own search (smoothing,
temperature, threshold) restricted to one threshold or allowed thresholds per keyword, run with an
in-sample budget of a fraction of the target (`FIT_BUDGET_FRACTIONS`). Each is fitted on one half and
scored on the other, both ways; its held-out figures pool the two held-out halves (misses over keywords,
false alarms on non-keyword audio over its hours). The budget is a constraint on audio the tune never
heard, so it is checked held out: candidates whose pooled held-out false alarms stay within the target
are ranked by held-out false rejects; when none does, the fewest held-out false alarms win. Ties go to
one threshold, then to the larger in-sample budget. The in-sample budget is thus the margin, chosen by
cross-validation rather than by hand: a procedure whose thresholds let held-out false alarms over the
target must fit to a stricter budget (higher thresholds). The winner is refitted on the whole recording.
The test recording plays no part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from kwsdeploy.streaming.det import DetPoint, ScoreStream, det_point
from kwsdeploy.streaming.recording import HIT_WINDOW_SECONDS, Part, score_parts

HOLDOUT_BLOCKS = 16  # alternating blocks of the timeline (8 per half)
MIN_HOLDOUT_KEYWORDS = 10  # per half; with fewer the guard is skipped (and `tuned` says so)
FIT_BUDGET_FRACTIONS = (1.0, 0.5, 0.25, 0.0)  # in-sample budgets tried, as fractions of the target
_MASKED = -1.0  # the score of a packet outside a half: below every threshold


@dataclass(frozen=True)
class Fold:
    """One half of a recording: its time spans, its parts clipped to them, and its length in seconds."""

    spans: tuple[tuple[float, float], ...]
    parts: tuple[Part, ...]
    seconds: float

    @property
    def keywords(self) -> int:
        return sum(p.kind == "keyword" for p in self.parts)

    @property
    def off_hours(self) -> float:
        """Hours of non-keyword audio, summed as `det_point` sums them (the budget's denominator)."""
        return sum(score_parts([], self.parts, self.seconds).hours_by_part.values())

    def view(self, stream: ScoreStream) -> ScoreStream:
        """`stream` with every packet firing outside this half masked."""
        ends = (np.arange(len(stream.score)) + 1) * stream.hop_seconds  # a packet fires at its end
        keep = np.zeros(len(ends), bool)
        for a, b in self.spans:
            keep |= (ends >= a) & (ends < b)
        return dataclasses.replace(stream, score=np.where(keep, stream.score, _MASKED))


def _clip(parts: Sequence[Part], a: float, b: float) -> list[Part]:
    return [Part(p.kind, max(p.start, a), min(p.end, b), p.label) for p in parts if p.start < b and p.end > a]


def fold_split(parts: Sequence[Part], total_seconds: float, blocks: int = HOLDOUT_BLOCKS,
               window_seconds: float = HIT_WINDOW_SECONDS) -> tuple[Fold, Fold]:
    """Two halves of alternating blocks of consecutive keywords (see the module docstring)."""
    keys = sorted((p for p in parts if p.kind == "keyword"), key=lambda p: p.start)
    n = len(keys)
    pairs = min(blocks // 2, n // 2)
    if pairs < 1:
        raise ValueError("a hold-out split needs at least two keywords in the recording.")
    firsts = []  # the first keyword of each block; a pair of blocks splits its keywords evenly, an odd one
    for k in range(pairs):  # going to the first half in even pairs and to the second in odd ones
        lo, hi = k * n // pairs, (k + 1) * n // pairs
        firsts += [lo, lo + (hi - lo + 1 - k % 2) // 2]
    cuts = [0.0]
    for i in firsts[1:]:
        prev, nxt = keys[i - 1], keys[i]
        cuts.append(max(prev.end, min(prev.end + window_seconds, nxt.start)))
    cuts.append(float(total_seconds))
    halves = []
    for half in (0, 1):
        spans = tuple((cuts[j], cuts[j + 1]) for j in range(half, 2 * pairs, 2))
        clipped = [q for a, b in spans for q in _clip(parts, a, b)]
        halves.append(Fold(spans, tuple(clipped), float(sum(b - a for a, b in spans))))
    return halves[0], halves[1]


@dataclass(frozen=True)
class Fit:
    """What one tuning procedure chose on one recording, and its scores there."""

    point: DetPoint
    smoothing_seconds: float
    temperature: float
    threshold: float
    keyword_thresholds: dict[str, float] | None


Streams = Mapping[tuple[float, float], ScoreStream]  # (temperature, smoothing seconds) -> score stream
FitFn = Callable[[Streams, Sequence[Part], float, float, bool], "Fit | None"]  # streams, parts, s, budget, per kw


def _allowed(budget: float, hours: float) -> int:
    """The most false alarms within `budget` per hour over `hours` (as the budget check divides)."""
    n = int(budget * hours) + 1
    while n > 0 and n / hours > budget:
        n -= 1
    return n


def holdout_guard(fit: FitFn, streams: Streams, folds: tuple[Fold, Fold], target_fa_per_hour: float,
                  refractory_seconds: float, min_gap_seconds: float,
                  families: Sequence[bool] = (False, True)) -> tuple[bool, float, dict]:
    """(per keyword?, in-sample budget, record) chosen by 2-fold hold-out (module docstring); `families`:
    the procedures to compare (False: one threshold, True: thresholds per keyword allowed)."""
    views = [{k: f.view(s) for k, s in streams.items()} for f in folds]
    hours = [f.off_hours for f in folds]
    fitted: dict[tuple[int, bool, int], Fit | None] = {}
    rows = []
    for per_keyword in families:
        for fraction in FIT_BUDGET_FRACTIONS:
            budget = fraction * target_fa_per_hour
            keys = [(i, per_keyword, _allowed(budget, hours[i])) for i in (0, 1)]
            if all(k in fitted for k in keys):
                continue  # the same false-alarm allowance on both halves as a looser budget: the same fits
            folds_out, misses, alarms = [], 0.0, 0.0
            for i, key in enumerate(keys):
                if key not in fitted:
                    fitted[key] = fit(views[i], folds[i].parts, folds[i].seconds, budget, per_keyword)
                f, held = fitted[key], 1 - i
                if f is None:
                    break
                p = det_point(views[held][(f.temperature, f.smoothing_seconds)], folds[held].parts,
                              folds[held].seconds, f.threshold, refractory_seconds, min_gap_seconds,
                              f.keyword_thresholds)
                misses += p.false_reject_rate * folds[held].keywords
                alarms += p.non_keyword_false_alarms_per_hour * hours[held]
                folds_out.append([round(p.false_reject_rate, 4), round(p.non_keyword_false_alarms_per_hour, 3)])
            if len(folds_out) < 2:
                continue  # nothing meets this budget on a half: not a candidate
            rows.append({"thresholds": "per_keyword" if per_keyword else "one", "fit_budget_fraction": fraction,
                         "false_reject_rate": round(misses / (folds[0].keywords + folds[1].keywords), 4),
                         "non_keyword_false_alarms_per_hour": round(alarms / sum(hours), 3), "folds": folds_out})
    if not rows:
        raise ValueError("no tuning procedure meets the budget on either half of the recording.")

    def rank(r: dict) -> tuple:
        over = r["non_keyword_false_alarms_per_hour"] > target_fa_per_hour
        return (over, r["non_keyword_false_alarms_per_hour"] if over else 0.0, r["false_reject_rate"],
                r["thresholds"] != "one", -r["fit_budget_fraction"])

    best = min(rows, key=rank)
    record = {"folds": 2, "blocks": len(folds[0].spans) + len(folds[1].spans),
              "keywords": [folds[0].keywords, folds[1].keywords],
              "chosen": {"thresholds": best["thresholds"], "fit_budget_fraction": best["fit_budget_fraction"]},
              "candidates": rows}
    return best["thresholds"] == "per_keyword", best["fit_budget_fraction"] * target_fa_per_hour, record
