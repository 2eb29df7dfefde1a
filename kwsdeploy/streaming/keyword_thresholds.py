"""A threshold per keyword for a false-alarm budget (numpy only).

With one threshold for every keyword, the keyword whose false alarms score highest sets it for all:
on the shipped tcresnet8-causal's tune recording one false alarm of one keyword forced 0.9, where
most keywords never fire on non-keyword speech above 0.6. Here each keyword gets its own threshold:
starting with every keyword at the top of the grid, the move that buys the most keywords heard per
false alarm added (lowering one keyword's threshold one grid step) is taken while the recording stays
within the budget; steps that add nothing but cost nothing slide down flat stretches; at the end each
threshold is raised back as far as it goes without losing a keyword heard, for margin on new audio.
Events are cut exactly as the detector cuts them (`det.fire`: refractory, cross-keyword gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from kwsdeploy.streaming.det import THRESHOLDS, DetPoint, ScoreStream, det_point
from kwsdeploy.streaming.recording import Part


@dataclass
class KeywordThresholds:
    """Each keyword's threshold and the recording's scores at them."""

    thresholds: dict[str, float]
    point: DetPoint  # the detector at these thresholds on the tuning recording


def tune_keyword_thresholds(stream: ScoreStream, parts: Sequence[Part], total_seconds: float,
                            target_fa_per_hour: float, refractory_seconds: float, min_gap_seconds: float = 0.0,
                            grid: Sequence[float] = THRESHOLDS) -> KeywordThresholds | None:
    """Per-keyword thresholds (of `grid`) with the fewest false rejects whose non-keyword false alarms per
    hour stay within the target; None when even the top of the grid does not."""
    keys = [stream.labels[k] for k in stream.keyword_indices]
    steps = sorted({float(t) for t in grid}, reverse=True)
    pos = {k: 0 for k in keys}

    def at(moved: dict[str, int] | None = None) -> DetPoint:
        p = {**pos, **(moved or {})}
        kt = {k: steps[i] for k, i in p.items()}
        return det_point(stream, parts, total_seconds, steps[0], refractory_seconds, min_gap_seconds, kt)

    def fa(p: DetPoint) -> float:
        return p.non_keyword_false_alarms_per_hour

    now = at()
    if fa(now) > target_fa_per_hour:
        return None
    while True:
        best = None
        for k in keys:
            if pos[k] + 1 >= len(steps):
                continue
            p = at({k: pos[k] + 1})
            gain = now.false_reject_rate - p.false_reject_rate
            if fa(p) > target_fa_per_hour or gain <= 0:
                continue
            ratio = gain / (max(fa(p) - fa(now), 0.0) + 1e-3)
            if best is None or ratio > best[0]:
                best = (ratio, k, p)
        if best is not None:
            pos[best[1]] += 1
            now = best[2]
            continue
        slid = False  # nothing gains: slide every keyword that can go down for free (flat stretches)
        for k in keys:
            if pos[k] + 1 < len(steps):
                p = at({k: pos[k] + 1})
                if fa(p) <= fa(now) and p.false_reject_rate <= now.false_reject_rate:
                    pos[k] += 1
                    now, slid = p, True
        if not slid:
            break
    for k in keys:  # raise each back while nothing heard is lost: margin for audio the tune never met
        while pos[k] > 0:
            p = at({k: pos[k] - 1})
            if p.false_reject_rate > now.false_reject_rate or fa(p) > fa(now):
                break
            pos[k] -= 1
            now = p
    return KeywordThresholds({k: steps[i] for k, i in pos.items()}, now)
