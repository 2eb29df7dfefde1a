"""The DET curve of a hand-made score stream, `fire` against the runtime detector, and the scoring of
annotated recordings (false alarms counted in the part where they fire)."""

from __future__ import annotations

import numpy as np
import pytest

from kwsdeploy.runtime.detect import KeywordDetector
from kwsdeploy.streaming.det import det_curve, detections, fire, operating_point, score_stream, summary
from kwsdeploy.streaming.recording import Part, digit_recording, keyword_recording, score_parts

LABELS = ["_silence_", "one", "two"]
HOP = 0.1


def _posteriors(n: int, events: dict[int, tuple[str, float]]) -> np.ndarray:
    """n packets of silence; at packet i (for i in events) label gets probability p, silence the rest."""
    p = np.full((n, 3), 1e-6)
    p[:, 0] = 1.0
    for i, (label, prob) in events.items():
        p[i] = 1e-6
        p[i, LABELS.index(label)] = prob
        p[i, 0] = 1.0 - prob
    return np.log(p / p.sum(1, keepdims=True))


def _hand_made():
    # 36 s: "one" said at 1.0-1.5 s (peak 0.95 at packet 12), "two" at 5.0-5.5 s (peak 0.9 at 52),
    # non-keyword speech 8-12 s where "one" blips to 0.8 (packet 95), noise 14-20 s where "two" blips to 0.6.
    logits = _posteriors(360, {12: ("one", 0.95), 52: ("two", 0.9), 95: ("one", 0.8), 160: ("two", 0.6)})
    parts = [Part("gap", 0, 1), Part("keyword", 1.0, 1.5, "one"), Part("gap", 1.5, 5), Part("keyword", 5, 5.5, "two"),
             Part("gap", 5.5, 8), Part("speech", 8, 12), Part("gap", 12, 14), Part("noise", 14, 20), Part("gap", 20, 36)]
    return score_stream(logits, LABELS, HOP, smoothing_packets=1), parts


def test_det_curve_of_a_hand_made_stream():
    stream, parts = _hand_made()
    curve = det_curve(stream, parts, 36.0, refractory_seconds=1.0, thresholds=[0.5, 0.7, 0.85, 0.925, 0.97])
    got = [(p.threshold, p.false_reject_rate, p.false_alarms) for p in curve]
    assert got == [(0.5, 0.0, 2), (0.7, 0.0, 1), (0.85, 0.0, 0), (0.925, 0.5, 0), (0.97, 1.0, 0)]
    assert curve[0].false_alarms_per_hour == pytest.approx(200.0)  # 2 in 36 s
    assert curve[0].false_alarms_by_part == {"speech": 1, "noise": 1, "gap": 0, "near_keyword": 0}
    assert curve[1].false_alarms_by_part["speech"] == 1 and curve[1].false_alarms_by_part["noise"] == 0
    assert curve[1].false_alarms_per_hour_by_part["speech"] == pytest.approx(900.0)  # 1 in 4 s of speech
    assert curve[3].per_keyword == {
        "one": {"false_reject_rate": 0.0, "false_alarms": 0, "false_alarms_per_hour": 0.0},
        "two": {"false_reject_rate": 1.0, "false_alarms": 0, "false_alarms_per_hour": 0.0}}
    assert operating_point(curve, 150.0).threshold == 0.7
    assert operating_point(curve, 0.0).threshold == 0.85
    # budgets count non-keyword audio: 35 s here (all but the keywords' 1 s)
    assert curve[1].non_keyword_false_alarms_per_hour == pytest.approx(3600 / 35)
    s = summary(curve, target_fa_per_hour=105.0, budgets=(0.5, 300.0))
    assert [b["threshold"] for b in s["at_budget"]] == [0.85, 0.5]
    assert s["target"]["threshold"] == 0.7 and s["target"]["false_reject_rate"] == 0.0
    assert operating_point(curve, 101.0).threshold == 0.85  # 102.9 per hour of non-keyword audio at 0.7
    assert operating_point(curve, 101.0, measure="all").threshold == 0.7  # 100 per hour of the whole recording


def test_a_substitution_on_a_keyword_is_a_miss_not_spent_from_the_budget():
    # "one" is said at 1.0-1.5 s but "two" fires there (0.9): a substitution; nothing fires elsewhere
    logits = _posteriors(360, {12: ("two", 0.9), 52: ("two", 0.95)})
    parts = [Part("gap", 0, 1), Part("keyword", 1.0, 1.5, "one"), Part("gap", 1.5, 5), Part("keyword", 5, 5.5, "two"),
             Part("speech", 5.5, 36)]
    curve = det_curve(score_stream(logits, LABELS, HOP, 1), parts, 36.0, refractory_seconds=1.0, thresholds=[0.5, 0.93])
    assert curve[0].false_reject_rate == 0.5 and curve[0].false_alarms_by_part["near_keyword"] == 1
    assert curve[0].false_alarms_per_hour == pytest.approx(100.0)  # 1 in 36 s
    assert curve[0].non_keyword_false_alarms_per_hour == 0.0
    assert operating_point(curve, 1.0).threshold == 0.5
    assert operating_point(curve, 1.0, measure="all").threshold == 0.93
    with pytest.raises(ValueError, match="budget measure"):
        operating_point(curve, 1.0, measure="speech")


def test_no_threshold_meets_a_budget_below_what_the_top_threshold_gives():
    stream, parts = _hand_made()
    curve = det_curve(stream, parts, 36.0, refractory_seconds=1.0, thresholds=[0.5, 0.7])
    assert operating_point(curve, 50.0) is None
    assert summary(curve, budgets=(50.0,))["at_budget"][0]["false_reject_rate"] == 1.0


@pytest.mark.parametrize("threshold,smoothing,refractory,gap,temperature", [
    (0.5, 1, 0.0, 0.0, 1.0), (0.6, 3, 1.0, 0.0, 1.0), (0.4, 2, 0.5, 0.3, 1.0), (0.8, 5, 1.2, 0.5, 1.0),
    (0.3, 1, 0.2, 1.0, 1.0), (0.8, 5, 1.2, 0.5, 0.5), (0.6, 3, 0.5, 0.3, 2.0)])
def test_fire_gives_exactly_the_detectors_events(threshold, smoothing, refractory, gap, temperature):
    rng = np.random.default_rng(int(threshold * 100) + smoothing)
    logits = rng.normal(size=(600, 5))
    i = 0
    while i < 600:  # runs of 1-15 packets dominated by one class, by a random margin
        n = int(rng.integers(1, 16))
        logits[i: i + n, rng.integers(5)] += rng.uniform(0, 9)
        i += n
    labels = ["_silence_", "a", "b", "c", "_unknown_"]
    det = KeywordDetector(labels, HOP, smoothing_packets=smoothing, threshold=threshold,
                          refractory_seconds=refractory, min_gap_seconds=gap, temperature=temperature)
    expected = [(e.label, round(e.time, 9)) for e in det.update(logits)]
    stream = score_stream(logits, labels, HOP, smoothing, temperature=temperature)
    got = [(lab, round(t, 9)) for lab, t in detections(stream, threshold, refractory, gap)]
    assert len(expected) > 5
    assert got == expected


def test_refractory_is_per_keyword_and_the_gap_across_keywords():
    logits = _posteriors(40, {i: ("one", 0.9) for i in range(0, 3)} | {i: ("two", 0.9) for i in range(3, 6)}
                         | {i: ("one", 0.9) for i in range(8, 10)})
    det = KeywordDetector(LABELS, HOP, smoothing_packets=1, threshold=0.5, refractory_seconds=1.0)
    # "two" fires 0.3 s after "one" (another keyword); "one" again at 0.9 s is inside its own refractory.
    assert [(e.label, round(e.time, 6)) for e in det.update(logits)] == [("one", 0.1), ("two", 0.4)]
    gap = KeywordDetector(LABELS, HOP, smoothing_packets=1, threshold=0.5, refractory_seconds=1.0, min_gap_seconds=0.5)
    # the gap holds "two" back until 0.5 s after "one" (its last packet, ending at 0.6 s)
    assert [(e.label, round(e.time, 6)) for e in gap.update(logits)] == [("one", 0.1), ("two", 0.6)]
    stream = score_stream(logits, LABELS, HOP, 1)
    assert fire(stream, 0.5, 1.0) == [(0, 1), (3, 2)]


def test_scoring_attributes_false_alarms_to_their_part():
    parts = [Part("gap", 0, 1), Part("keyword", 1, 1.5, "one"), Part("speech", 1.5, 10), Part("noise", 10, 20),
             Part("keyword", 20, 20.4, "two"), Part("gap", 20.4, 30)]
    parts = parts[:-1] + [Part("gap", 20.4, 22), Part("speech", 22, 25), Part("gap", 25, 30)]
    dets = [("one", 1.4), ("one", 2.0), ("two", 2.2), ("one", 5.0), ("two", 15.0), ("two", 20.5), ("one", 25.8),
            ("one", 28.0)]
    s = score_parts(dets, parts, 30.0, tolerance=1.0)
    # one@1.4 hits; one@2.0 a second event for that word; two@2.2 a confusion (window ends at 2.5 s);
    # one@25.8 fires in a gap 0.8 s after speech: charged to the speech; one@28.0 to the gap
    assert s.detected == 2 and s.recall == 1.0
    assert s.false_alarms_by_part == {"speech": 2, "noise": 1, "gap": 1, "near_keyword": 2}
    assert s.false_alarms_by_label == {"one": 4, "two": 2}
    assert s.hours_by_part["speech"] == pytest.approx(11.5 / 3600)


def test_recordings_place_their_parts_where_they_say():
    word = np.full(3200, 0.3, np.float32)
    audio, parts = digit_recording([[(word, "one"), (word, "two")]], pause_seconds=0.5, between_seconds=2.0, floor_db=-200)
    keys = [p for p in parts if p.kind == "keyword"]
    assert [(k.label, k.start, k.end) for k in keys] == [("one", 2.0, 2.2), ("two", 2.7, 2.9)]
    assert len(audio) == int(4.9 * 16000) and np.allclose(audio[32000:35200], 0.3, atol=1e-6)
    speech = [np.random.default_rng(i).standard_normal(8000).astype(np.float32) for i in range(5)]
    noise = [np.random.default_rng(9).standard_normal(160000).astype(np.float32)]
    audio, parts = keyword_recording([(word, "one"), (word, "two")], speech, noise, seed=1)
    assert [p.label for p in parts if p.kind == "keyword"] == ["one", "two"]
    assert sum(p.kind == "speech" for p in parts) == 5 and sum(p.kind == "noise" for p in parts) == 1
    assert parts[0].start == 0 and all(a.end == pytest.approx(b.start) for a, b in zip(parts, parts[1:]))
    assert parts[-1].end == pytest.approx(len(audio) / 16000)


def test_det_png_with_matplotlib_and_none_without(tmp_path, monkeypatch):
    from kwsdeploy.streaming.det import plot_det

    stream, parts = _hand_made()
    curve = det_curve(stream, parts, 36.0, refractory_seconds=1.0, thresholds=[0.5, 0.7, 0.85])
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import fails as without the extra
    assert plot_det({"all": curve}, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    png = plot_det({"all": curve}, tmp_path / "det.png", title="hand-made")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_keywords_curve_counts_its_own_false_alarms():
    from kwsdeploy.streaming.det import keyword_curve

    stream, parts = _hand_made()
    curve = det_curve(stream, parts, 36.0, refractory_seconds=1.0, thresholds=[0.5, 0.7])
    one = keyword_curve(curve, "one")
    two = keyword_curve(curve, "two")
    assert [(p.false_reject_rate, p.false_alarms) for p in one] == [(0.0, 1), (0.0, 1)]  # the 0.8 blip in speech
    assert [(p.false_reject_rate, p.false_alarms) for p in two] == [(0.0, 1), (0.0, 0)]  # the 0.6 blip in noise


@pytest.mark.parametrize("own", [{"a": 0.3, "c": 0.9}, {"b": 0.95}, {"a": 0.5, "b": 0.2, "c": 0.7}])
def test_per_keyword_thresholds_fire_exactly_the_detectors_events(own):
    rng = np.random.default_rng(len(own))
    logits = rng.normal(size=(600, 5))
    i = 0
    while i < 600:
        n = int(rng.integers(1, 16))
        logits[i: i + n, rng.integers(5)] += rng.uniform(0, 9)
        i += n
    labels = ["_silence_", "a", "b", "c", "_unknown_"]
    det = KeywordDetector(labels, HOP, smoothing_packets=2, threshold=0.6, refractory_seconds=0.5,
                          min_gap_seconds=0.2, keyword_thresholds=own)
    expected = [(e.label, round(e.time, 9)) for e in det.update(logits)]
    stream = score_stream(logits, labels, HOP, 2)
    got = [(lab, round(t, 9)) for lab, t in detections(stream, 0.6, 0.5, 0.2, own)]
    one = [(lab, round(t, 9)) for lab, t in detections(stream, 0.6, 0.5, 0.2)]
    assert len(expected) > 5 and got == expected and got != one
    with pytest.raises(ValueError, match="not among"):
        KeywordDetector(labels, HOP, keyword_thresholds={"z": 0.5})


def test_per_keyword_tuning_keeps_each_keyword_above_its_own_false_alarms():
    from kwsdeploy.streaming.keyword_thresholds import tune_keyword_thresholds

    # "one" said at 1.0 s (0.95) and blips to 0.8 on speech; "two" said at 5.0 s at only 0.7, blips to 0.6 on noise
    logits = _posteriors(360, {12: ("one", 0.95), 52: ("two", 0.7), 95: ("one", 0.8), 160: ("two", 0.6)})
    parts = [Part("gap", 0, 1), Part("keyword", 1.0, 1.5, "one"), Part("gap", 1.5, 5), Part("keyword", 5, 5.5, "two"),
             Part("gap", 5.5, 8), Part("speech", 8, 12), Part("gap", 12, 14), Part("noise", 14, 20), Part("gap", 20, 36)]
    stream = score_stream(logits, LABELS, HOP, smoothing_packets=1)
    grid = [0.5, 0.55, 0.65, 0.75, 0.85, 0.9, 0.97]
    curve = det_curve(stream, parts, 36.0, refractory_seconds=1.0, thresholds=grid)
    one = operating_point(curve, 0.0)
    assert one.threshold == 0.85 and one.false_reject_rate == 0.5  # one threshold: above 0.8, so "two" is lost
    kt = tune_keyword_thresholds(stream, parts, 36.0, 0.0, refractory_seconds=1.0, grid=grid)
    assert kt.point.false_reject_rate == 0.0 and kt.point.non_keyword_false_alarms_per_hour == 0.0
    # each raised back as far as nothing heard is lost: "one" at 0.9 (<= 0.95, above 0.8), "two" at 0.65 (> 0.6)
    assert kt.thresholds == {"one": 0.9, "two": 0.65}
    loose = tune_keyword_thresholds(stream, parts, 36.0, 200.0, refractory_seconds=1.0, grid=grid)
    assert loose.point.false_reject_rate == 0.0 and loose.point.non_keyword_false_alarms_per_hour == 0.0
    assert tune_keyword_thresholds(stream, parts, 36.0, 0.0, refractory_seconds=1.0, grid=[0.5]) is None


def test_tune_settings_prefers_per_keyword_thresholds_when_they_hear_more():
    from kwsdeploy.contract import DetectionSettings
    from kwsdeploy.streaming.det_report import tune_settings

    logits = _posteriors(360, {12: ("one", 0.95), 52: ("two", 0.7), 95: ("one", 0.8), 160: ("two", 0.6)})
    parts = [Part("gap", 0, 1), Part("keyword", 1.0, 1.5, "one"), Part("gap", 1.5, 5), Part("keyword", 5, 5.5, "two"),
             Part("gap", 5.5, 8), Part("speech", 8, 12), Part("gap", 12, 14), Part("noise", 14, 20), Part("gap", 20, 36)]
    base = DetectionSettings(refractory_seconds=1.0, min_gap_seconds=0.0)
    s, tuned = tune_settings(logits, LABELS, HOP, parts, 36.0, 0.0, base, smoothing_choices=(0.1,))
    assert tuned["thresholds"] == "per_keyword" and tuned["false_reject_rate"] == 0.0
    assert 0.6 < s.threshold_for("two") <= 0.7 and 0.8 < s.threshold_for("one") <= 0.95
    back = DetectionSettings.from_dict(s.to_dict())
    assert back.keyword_thresholds == s.keyword_thresholds and back.threshold == s.threshold
    assert "per keyword" in back.threshold_text()
    s1, tuned1 = tune_settings(logits, LABELS, HOP, parts, 36.0, 0.0, base, smoothing_choices=(0.1,), per_keyword=False)
    assert s1.keyword_thresholds is None and tuned1["false_reject_rate"] == 0.5 and tuned1["thresholds"] == "one"
    with pytest.raises(ValueError, match="keyword thresholds"):
        DetectionSettings(keyword_thresholds={"one": 1.5})


def test_tune_settings_tries_a_sharper_softmax_and_keeps_it_only_when_it_hears_more():
    from kwsdeploy.contract import DetectionSettings
    from kwsdeploy.streaming.det_report import tune_settings

    # "one" said at 1.0-1.5 s is named at 0.6 for 3 packets (two 0.3, silence 0.1): its 0.3 s mean is 0.6 at
    # temperature 1 and 0.36 / 0.46 = 0.783 at 0.5 (softmax(logits / 0.5) squares and renormalises).
    p = np.full((360, 3), 1e-6)
    p[:, 0] = 1.0
    p[11:14] = [0.1, 0.6, 0.3]
    parts = [Part("gap", 0, 1), Part("keyword", 1.0, 1.5, "one"), Part("gap", 1.5, 8), Part("speech", 8, 12),
             Part("gap", 12, 36)]
    base = DetectionSettings(refractory_seconds=1.0, min_gap_seconds=0.0)

    def tune(blip, **kw):
        q = p.copy()
        q[95:98] = blip  # 0.3 s of non-keyword speech
        return tune_settings(np.log(q / q.sum(1, keepdims=True)), LABELS, HOP, parts, 36.0, 0.0, base,
                             smoothing_choices=(0.3,), per_keyword=False, **kw)

    # "two" at 0.44 (silence 0.56) in the speech: 0.44 at temperature 1, 0.382 at 0.5: both hear "one" at 0 FA/h
    s, tuned = tune([0.56, 1e-6, 0.44])
    assert s.temperature == 1.0 and tuned["false_reject_rate"] == 0.0 and 0.44 < s.threshold <= 0.6
    assert [(r["temperature"], r["false_reject_rate"]) for r in tuned["tried"]] == [(1.0, 0.0), (0.5, 0.0)]
    assert "temperature" not in s.to_dict()
    # "two" at 0.62 (silence 0.38): above "one" at temperature 1 (nothing heard at 0 FA/h); at 0.5 it is
    # 0.3844 / 0.5288 = 0.727 < 0.783, so a threshold between them hears "one" and no false alarm
    s, tuned = tune([0.38, 1e-6, 0.62])
    assert s.temperature == 0.5 and tuned["false_reject_rate"] == 0.0 and 0.727 < s.threshold <= 0.783
    assert [(r["temperature"], r["false_reject_rate"]) for r in tuned["tried"]] == [(1.0, 1.0), (0.5, 0.0)]
    assert DetectionSettings.from_dict(s.to_dict()) == s and s.to_dict()["temperature"] == 0.5
    s, tuned = tune([0.38, 1e-6, 0.62], temperature_choices=(1.0,))
    assert s.temperature == 1.0 and tuned["false_reject_rate"] == 1.0
    with pytest.raises(ValueError, match="temperature"):
        DetectionSettings(temperature=-1.0)
