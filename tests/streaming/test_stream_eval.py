import numpy as np
import pytest

from kwsdeploy.streaming.stream_eval import Event, build_long_recording, score_detections


def test_long_recording_places_events_where_the_clips_are():
    clips = [(np.full(1600, 0.5, np.float32), "one"), (np.full(800, -0.5, np.float32), "two")]
    audio, events = build_long_recording(clips, noise=None, gap_seconds=(0.5, 0.5))
    assert [e.label for e in events] == ["one", "two"]
    assert events[0].start == pytest.approx(0.5) and events[0].end == pytest.approx(0.6)
    assert events[1].start == pytest.approx(1.1) and events[1].end == pytest.approx(1.15)
    s = int(events[1].start * 16000)
    assert np.all(audio[s : s + 800] == -0.5)
    assert len(audio) == 8000 + 1600 + 8000 + 800 + 8000


def test_noise_gaps_are_scaled_noise_not_zeros():
    noise = np.random.default_rng(1).standard_normal(32000).astype(np.float32)
    audio, events = build_long_recording([(np.zeros(160, np.float32), "a")], noise=noise, noise_gain=0.1)
    gap = audio[: int(events[0].start * 16000)]
    assert 0 < np.max(np.abs(gap)) <= 0.1 + 1e-6


def test_scoring_counts_hits_misses_confusions_and_false_alarms():
    events = [Event("one", 1.0, 2.0), Event("two", 4.0, 5.0), Event("_silence_", 7.0, 8.0), Event("three", 10, 11)]
    detections = [("one", 1.5), ("one", 2.5), ("four", 4.2), ("two", 7.5), ("three", 11.7)]
    score = score_detections(detections, events, total_seconds=3600.0, tolerance=0.75)
    # one: hit (twice, counted once); two: confused with four; three at 11.7 is inside end + 0.75
    assert score.keyword_events == 3
    assert score.detected == 2 and score.missed == 1 and score.confused == 1
    # false alarms: 'four' in two's window (wrong label) + 'two' during silence
    assert score.false_alarms == 2
    assert score.accuracy == pytest.approx(2 / 3)
    assert score.false_alarms_per_hour == pytest.approx(2.0)
    assert score.per_label_recall == {"one": 1.0, "three": 1.0, "two": 0.0}
