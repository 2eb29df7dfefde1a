"""The hold-out guard of `tune_settings`: the fold split (keywords and speech in each half), per-keyword
thresholds dropped when they win only in-sample and kept when they win held out, the in-sample budget
tightened when held-out false alarms run over the target, and determinism."""

from __future__ import annotations

import numpy as np

from kwsdeploy.contract import DetectionSettings
from kwsdeploy.streaming.det import score_stream
from kwsdeploy.streaming.det_report import tune_settings
from kwsdeploy.streaming.holdout import fold_split
from kwsdeploy.streaming.recording import HIT_WINDOW_SECONDS, Part, keyword_recording

LABELS = ["_silence_", "one", "two"]
HOP = 0.1
SLOTS = 32  # 6 s each: gap 0-1, keyword 1-1.5 ("one" in even slots, "two" in odd ones), gap, speech 3-5, gap
SLOT = 60  # packets
BASE = DetectionSettings(refractory_seconds=1.0, min_gap_seconds=0.0)


def _keyword_half(s: int) -> int:
    return (s // 2) % 2  # 16 blocks of two keywords, alternately to the halves


def _speech_half(s: int) -> int:
    # a cut lies 1 s after a block's last keyword: that slot's speech goes to the next block (the last to the last)
    return min((s + 1) // 2, SLOTS // 2 - 1) % 2


def _recording(two_scores, blips):
    """`two_scores(s)`: the score of slot s's "two"; `blips(s)`: [(label, prob)] fired in slot s's speech.
    "one" is said at 0.95 everywhere."""
    p = np.full((SLOTS * SLOT, 3), 1e-6)
    p[:, 0] = 1.0
    parts = []
    for s in range(SLOTS):
        t0, i0 = 6.0 * s, SLOT * s
        label = "one" if s % 2 == 0 else "two"
        p[i0 + 12] = [0.05 if label == "one" else 1 - two_scores(s), 0.0, 0.0]
        p[i0 + 12, LABELS.index(label)] = 0.95 if label == "one" else two_scores(s)
        for k, (lab, prob) in enumerate(blips(s)):
            p[i0 + 35 + 5 * k] = [1 - prob, 0.0, 0.0]
            p[i0 + 35 + 5 * k, LABELS.index(lab)] = prob
        parts += [Part("gap", t0, t0 + 1), Part("keyword", t0 + 1, t0 + 1.5, label), Part("gap", t0 + 1.5, t0 + 3),
                  Part("speech", t0 + 3, t0 + 5), Part("gap", t0 + 5, t0 + 6)]
    p = np.maximum(p, 1e-6)
    return np.log(p / p.sum(1, keepdims=True)), parts, 6.0 * SLOTS


def _twos(s):  # "two" is said weakly, spread over 0.63-0.77 within each half
    return (0.63, 0.67, 0.73, 0.77)[(s // 4) % 4]


def _tune(logits, parts, seconds, target=0.0, **kw):
    return tune_settings(logits, LABELS, HOP, parts, seconds, target, BASE, smoothing_choices=(0.1,),
                         temperature_choices=(1.0,), **kw)


def test_the_halves_alternate_blocks_and_each_holds_keywords_and_speech():
    rng = np.random.default_rng(0)
    keywords = [(rng.standard_normal(8000).astype(np.float32) * 0.1, ("one", "two")[i % 2]) for i in range(40)]
    speech = [rng.standard_normal(16000 * 3).astype(np.float32) * 0.1 for _ in range(60)]
    noise = [rng.standard_normal(16000 * 10).astype(np.float32)]
    _, parts = keyword_recording(keywords, speech, noise, seed=1)
    total = parts[-1].end
    a, b = fold_split(parts, total)
    assert fold_split(parts, total) == (a, b)  # deterministic
    assert (a.keywords, b.keywords) == (20, 20) and len(a.spans) == len(b.spans) == 8
    for half in (a, b):
        hours = {k: sum(p.end - p.start for p in half.parts if p.kind == k) for k in ("speech", "noise")}
        assert hours["speech"] > 0.3 * sum(p.end - p.start for p in parts if p.kind == "speech")
        assert hours["noise"] > 0 and {p.label for p in half.parts if p.kind == "keyword"} == {"one", "two"}
    # the halves tile the recording, alternate in time, and no keyword's hit window crosses a cut
    spans = sorted(a.spans + b.spans)
    assert spans[0][0] == 0.0 and spans[-1][1] == total and all(x[1] == y[0] for x, y in zip(spans, spans[1:]))
    assert [s in a.spans for s in spans] == [True, False] * 8
    assert abs(a.seconds + b.seconds - total) < 1e-9
    for k in (p for p in parts if p.kind == "keyword"):
        inside = [h for h in (a, b) for s0, s1 in h.spans if s0 <= k.start and k.end + HIT_WINDOW_SECONDS <= s1]
        assert len(inside) == 1
    # a half's view fires nothing outside it
    logits = np.zeros((int(total / HOP), 3))
    view = a.view(score_stream(logits, LABELS, HOP, 1))
    ends = (np.arange(len(view.score)) + 1) * HOP
    inside = np.zeros(len(ends), bool)
    for s0, s1 in a.spans:
        inside |= (ends >= s0) & (ends < s1)
    assert (view.score[~inside] < 0).all() and (view.score[inside] > 0).all()


def test_per_keyword_thresholds_that_win_only_in_sample_give_way_to_one_threshold():
    # "one" blips to 0.8 on every speech part: one threshold must sit above 0.8 and hears no "two".
    # "two" blips to 0.59 on one half's speech and to 0.69 on the other's: tuned on the first half, the
    # threshold of "two" (0.625) fires on the second half's speech.
    def blips(s):
        return [("one", 0.8), ("two", 0.59 if _speech_half(s) == 0 else 0.69)]

    logits, parts, seconds = _recording(_twos, blips)
    a, b = fold_split(parts, seconds)
    assert all(any(s0 <= 6 * s + 3 and 6 * s + 5 <= s1 for s0, s1 in (a, b)[_speech_half(s)].spans)
               for s in range(SLOTS))
    pk, tuned_pk = _tune(logits, parts, seconds, holdout=False)
    assert tuned_pk["thresholds"] == "per_keyword" and tuned_pk["false_reject_rate"] == 0.25  # in-sample winner
    assert pk.keyword_thresholds["two"] == 0.725 and "holdout" not in tuned_pk
    s, tuned = _tune(logits, parts, seconds)
    assert s.keyword_thresholds is None and s.threshold == 0.8 and tuned["false_reject_rate"] == 0.5  # 0.8 (less 1e-6) is below
    guard = tuned["holdout"]
    assert guard["chosen"] == {"thresholds": "one", "fit_budget_fraction": 1.0} and guard["keywords"] == [16, 16]
    rows = {r["thresholds"]: r for r in guard["candidates"]}
    assert len(guard["candidates"]) == 2  # a budget of 0 allows no false alarm at every fraction
    assert rows["one"]["false_reject_rate"] == 0.5 and rows["one"]["non_keyword_false_alarms_per_hour"] == 0.0
    # tuned on half 0 (0.625 for "two") it hears every "two" of half 1 and fires on its 17 speech parts;
    # tuned on half 1 (0.725) it hears half of half 0's "two"s
    assert rows["per_keyword"]["folds"][0][0] == 0.0 and rows["per_keyword"]["folds"][1] == [0.25, 0.0]
    assert rows["per_keyword"]["non_keyword_false_alarms_per_hour"] == round(17 / ((seconds - SLOTS * 0.5) / 3600), 3)


def test_per_keyword_thresholds_that_win_held_out_are_kept():
    def blips(s):
        return [("one", 0.8), ("two", 0.59)]

    logits, parts, seconds = _recording(_twos, blips)
    s, tuned = _tune(logits, parts, seconds)
    assert tuned["thresholds"] == "per_keyword" and tuned["false_reject_rate"] == 0.0
    assert s.keyword_thresholds == {"one": 0.925, "two": 0.625}  # each raised back under its keywords
    rows = {r["thresholds"]: r for r in tuned["holdout"]["candidates"]}
    assert rows["per_keyword"]["folds"] == [[0.0, 0.0], [0.0, 0.0]] and rows["one"]["false_reject_rate"] == 0.5
    assert tuned["holdout"]["chosen"]["thresholds"] == "per_keyword"
    assert _tune(logits, parts, seconds) == (s, tuned)  # deterministic
    one, tuned_one = _tune(logits, parts, seconds, per_keyword=False)
    assert one.keyword_thresholds is None and [r["thresholds"] for r in tuned_one["holdout"]["candidates"]] == ["one"]


def test_held_out_false_alarms_over_the_target_tighten_the_in_sample_budget():
    # one threshold only; "two" keywords at 0.63-0.77. Half 0's speech: "one" blips to 0.66 once; half 1's:
    # to 0.64 once and to 0.6 four times. At the full budget (one false alarm per half) half 0's tune goes
    # to the bottom of the grid and half 1's five blips fire held out; at half the budget (none per half)
    # 0.675 and 0.65 let one false alarm through held out. On the whole recording half the budget allows
    # one false alarm instead of three: 0.65 instead of 0.6 (a blip's 0.6 less 1e-6 is below 0.6).
    def blips(s):
        return {0: [("one", 0.66)], 9: [("one", 0.64)]}.get(s, [("one", 0.6)] if s in (1, 2, 5, 6) else [])

    logits, parts, seconds = _recording(_twos, blips)
    half_hours = min(h.off_hours for h in fold_split(parts, seconds))
    target = 1.5 / half_hours  # one false alarm allowed per half at the full budget, three on the whole
    s, tuned = _tune(logits, parts, seconds, target=target, per_keyword=False)
    rows = {r["fit_budget_fraction"]: r for r in tuned["holdout"]["candidates"]}
    assert [_speech_half(s) for s in (0, 9, 1, 2, 5, 6)] == [0, 1, 1, 1, 1, 1]
    hours = (seconds - SLOTS * 0.5) / 3600
    assert sorted(rows) == [0.5, 1.0]
    assert rows[1.0]["non_keyword_false_alarms_per_hour"] == round(6 / hours, 3) > target
    assert rows[0.5]["non_keyword_false_alarms_per_hour"] == round(1 / hours, 3) <= target
    assert rows[0.5]["false_reject_rate"] == 6 / 32 and rows[0.5]["folds"][0] == [0.25, 0.0]
    assert tuned["holdout"]["chosen"]["fit_budget_fraction"] == 0.5
    assert tuned["holdout"]["fit_budget_fa_per_hour"] == 0.5 * target
    loose, tuned_loose = _tune(logits, parts, seconds, target=target, per_keyword=False, holdout=False)
    assert (s.threshold, loose.threshold) == (0.65, 0.6)
    assert (tuned["false_reject_rate"], tuned_loose["false_reject_rate"]) == (4 / 32, 0.0)  # the four 0.63s
