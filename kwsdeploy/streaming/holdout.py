"""The hold-out guard of `tune` (numpy only): tune on one half of the tune recording, score on the other.

Why: ten thresholds (one per keyword) fitted to "at most the budget" on one recording sit each just
above that recording's own false alarms; on speech the tune never met the weaker models then fired
4-22 times per hour against a budget of 1. In-sample false rejects cannot see this; held-out ones can.

Folds (`fold_split`): the recording's timeline is cut into `HOLDOUT_BLOCKS` blocks of consecutive
keywords (each with the speech and noise before it; a cut lies `HIT_WINDOW_SECONDS` after a keyword, so
no keyword's window is split) and the blocks go alternately to two halves (as many keywords each, give
or take one), so each half holds keywords and speech from the whole recording. A half is scored as a
recording of its own: the stream is masked outside it (nothing fires there), its parts clipped to its blocks.

Selection (`holdout_guard`): a candidate is a tuning procedure, `tune_settings`' own search (smoothing,
temperature, threshold for the target) with one threshold or with thresholds per keyword (each alone),
followed by a margin: every threshold it chose moved `steps` places up the threshold grid
(`MARGIN_STEPS`; 0.025 a step below 0.95, ever finer towards 1). Each is fitted on one half and scored on
the other, both ways; its held-out figures pool the two held-out halves (misses over keywords, false
alarms on non-keyword audio over its hours). The budget is a constraint on audio the tune never heard,
so it is checked held out: an in-sample search that stops at the last threshold within the budget sits
just above the tune speech's own false alarms, and on new speech makes more (the winner's curse). Each
procedure takes the smallest margin whose pooled held-out false alarms stay within the target; those
that hold are ranked by held-out false rejects, and when none holds the fewest held-out false alarms win.
Ties go to one threshold, then to the smaller margin. The winner is searched again on the whole
recording and its thresholds raised by its margin. (A margin in grid steps rather than a stricter
in-sample budget: on a half of the tune recording, 1.5 hours, a budget of 1 per hour allows one false
alarm and any stricter one none, a jump from the edge of the tune speech to far above it.)
The test recording plays no part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from kwsdeploy.streaming.det import THRESHOLDS, DetPoint, ScoreStream, det_point
from kwsdeploy.streaming.recording import HIT_WINDOW_SECONDS, Part, score_parts

HOLDOUT_BLOCKS = 16  # alternating blocks of the timeline (8 per half)
MIN_HOLDOUT_KEYWORDS = 10  # per half; with fewer the guard is skipped (and `tuned` says so)
MARGIN_STEPS = (0, 1, 2, 3, 4, 6, 8, 12, 16)  # raises of the tuned thresholds tried, in places up the grid
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

    def raised(self, steps: int, grid: Sequence[float] = THRESHOLDS) -> tuple[float, dict[str, float] | None]:
        """(threshold, keyword thresholds) each moved `steps` places up `grid` (at most to its top)."""
        g = np.array(sorted({float(t) for t in grid}))

        def up(t: float) -> float:
            return float(g[min(int(np.searchsorted(g, t - 1e-12)) + steps, len(g) - 1)]) if steps else t

        kt = self.keyword_thresholds
        return up(self.threshold), (None if kt is None else {k: up(v) for k, v in kt.items()})


Streams = Mapping[tuple[float, float], ScoreStream]  # (temperature, smoothing seconds) -> score stream
FitFn = Callable[[Streams, Sequence[Part], float, float, bool], "Fit | None"]  # streams, parts, s, budget, per kw


def holdout_guard(fit: FitFn, streams: Streams, folds: tuple[Fold, Fold], target_fa_per_hour: float,
                  refractory_seconds: float, min_gap_seconds: float,
                  families: Sequence[bool] = (False, True)) -> tuple[bool, int, dict]:
    """(per keyword?, margin in grid steps, record) chosen by 2-fold hold-out (module docstring); `families`:
    the procedures to compare (False: one threshold, True: thresholds per keyword)."""
    views = [{k: f.view(s) for k, s in streams.items()} for f in folds]
    hours = [f.off_hours for f in folds]
    rows = []
    for per_keyword in families:
        fits = [fit(views[i], folds[i].parts, folds[i].seconds, target_fa_per_hour, per_keyword) for i in (0, 1)]
        if None in fits:
            continue  # nothing meets the target on a half: not a candidate
        seen = set()
        for steps in MARGIN_STEPS:
            raised = [f.raised(steps) for f in fits]
            key = tuple((th, tuple(sorted((kt or {}).items()))) for th, kt in raised)
            if key in seen:
                break  # every threshold at the top of the grid already
            seen.add(key)
            folds_out, misses, alarms = [], 0.0, 0.0
            for i, (f, (th, kt)) in enumerate(zip(fits, raised)):
                held = 1 - i
                p = det_point(views[held][(f.temperature, f.smoothing_seconds)], folds[held].parts,
                              folds[held].seconds, th, refractory_seconds, min_gap_seconds, kt)
                misses += p.false_reject_rate * folds[held].keywords
                alarms += p.non_keyword_false_alarms_per_hour * hours[held]
                folds_out.append([round(p.false_reject_rate, 4), round(p.non_keyword_false_alarms_per_hour, 3)])
            rows.append({"thresholds": "per_keyword" if per_keyword else "one", "margin_steps": steps,
                         "false_reject_rate": round(misses / (folds[0].keywords + folds[1].keywords), 4),
                         "non_keyword_false_alarms_per_hour": round(alarms / sum(hours), 3), "folds": folds_out})
            if rows[-1]["non_keyword_false_alarms_per_hour"] <= target_fa_per_hour:
                break  # the smallest margin that holds: a larger one only loses keywords
    if not rows:
        raise ValueError("no tuning procedure meets the budget on either half of the recording.")

    def rank(r: dict) -> tuple:
        over = r["non_keyword_false_alarms_per_hour"] > target_fa_per_hour
        return (over, r["non_keyword_false_alarms_per_hour"] if over else 0.0, r["false_reject_rate"],
                r["thresholds"] != "one", r["margin_steps"])

    best = min(rows, key=rank)
    record = {"folds": 2, "blocks": len(folds[0].spans) + len(folds[1].spans),
              "keywords": [folds[0].keywords, folds[1].keywords],
              "chosen": {"thresholds": best["thresholds"], "margin_steps": best["margin_steps"]},
              "candidates": rows}
    return best["thresholds"] == "per_keyword", best["margin_steps"], record
