"""Keyword detection on synthetic logit sequences: exact event times, refractory, smoothing, ignore."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kwsdeploy.contract import hop_seconds
from kwsdeploy.runtime.detect import Detection, KeywordDetector, softmax

LABELS = ["_silence_", "_unknown_", "yes", "no"]
HOP = 0.1


def _confident(label: str, n: int, margin: float = 12.0) -> np.ndarray:
    """n packets of logits that put ~all probability on `label`."""
    logits = np.zeros((n, len(LABELS)), dtype=np.float32)
    logits[:, LABELS.index(label)] = margin
    return logits


def _times(events: list[Detection]) -> list[tuple[str, float]]:
    return [(e.label, round(e.time, 9)) for e in events]


def test_events_fire_when_the_smoothed_posterior_crosses_the_threshold():
    det = KeywordDetector(LABELS, HOP, smoothing_packets=3, threshold=0.7, refractory_seconds=1.0)
    stream = np.concatenate([
        _confident("_silence_", 5), _confident("yes", 4), _confident("_silence_", 10), _confident("no", 4)
    ])
    events = [e for row in stream for e in det.update(row)]
    # "yes" starts at packet 6: the 3-packet mean is ~1/3 at packet 6, ~2/3 at 7, ~1 at 8 (t = 0.8 s).
    # "no" starts at packet 20 and fires at packet 22 (t = 2.2 s), 1.4 s after "yes".
    assert _times(events) == [("yes", 0.8), ("no", 2.2)]
    assert events[0].index == 2 and events[0].score > 0.999
    assert det.time == pytest.approx(2.3)


def test_refractory_period_spaces_repeated_events():
    det = KeywordDetector(LABELS, HOP, smoothing_packets=1, threshold=0.5, refractory_seconds=1.0)
    events = det.update(_confident("yes", 25))
    assert _times(events) == [("yes", 0.1), ("yes", 1.1), ("yes", 2.1)]
    det0 = KeywordDetector(LABELS, HOP, smoothing_packets=1, threshold=0.5, refractory_seconds=0.0)
    assert len(det0.update(_confident("no", 4))) == 4


def test_refractory_is_per_keyword_and_min_gap_applies_across_keywords():
    stream = np.concatenate([_confident("yes", 2), _confident("no", 6)])
    det = KeywordDetector(LABELS, HOP, smoothing_packets=1, threshold=0.5, refractory_seconds=0.5)
    assert _times(det.update(stream)) == [("yes", 0.1), ("no", 0.3), ("no", 0.8)]  # another keyword is not held back
    det = KeywordDetector(LABELS, HOP, smoothing_packets=1, threshold=0.5, refractory_seconds=0.5, min_gap_seconds=0.5)
    # yes at packet 1; "no" from packet 3 must wait until packet 6 (0.5 s = 5 packets later).
    assert _times(det.update(stream)) == [("yes", 0.1), ("no", 0.6)]


def test_silence_and_unknown_never_fire():
    det = KeywordDetector(LABELS, HOP, smoothing_packets=1, threshold=0.5)
    assert det.update(np.concatenate([_confident("_silence_", 20), _confident("_unknown_", 20)])) == []
    assert det.smoothed[1] > 0.99  # the posterior is tracked, only the event is suppressed


def test_a_one_packet_spike_is_smoothed_away():
    spike = np.concatenate([_confident("_silence_", 4), _confident("yes", 1), _confident("_silence_", 4)])
    assert KeywordDetector(LABELS, HOP, smoothing_packets=3, threshold=0.5).update(spike) == []
    assert _times(KeywordDetector(LABELS, HOP, smoothing_packets=1, threshold=0.5).update(spike)) == [("yes", 0.5)]


def test_smoothing_is_the_mean_of_the_last_packets_softmax_with_zeros_before_the_start():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4))
    det = KeywordDetector(LABELS, HOP, smoothing_packets=4, threshold=1.0)
    for i in range(7):
        det.update(logits[i])
        np.testing.assert_allclose(det.smoothed, softmax(logits[max(0, i - 3) : i + 1]).sum(0) / 4, atol=1e-12)
    np.testing.assert_allclose(softmax(np.array([1000.0, 0.0])), [1.0, 0.0])  # no overflow


def test_batched_update_equals_packet_by_packet_and_reset_restarts_time():
    stream = np.concatenate([_confident("_unknown_", 3), _confident("no", 5), _confident("_silence_", 12),
                             _confident("yes", 5)])
    one = KeywordDetector(LABELS, HOP)
    by_packet = [e for row in stream for e in one.update(row)]
    many = KeywordDetector(LABELS, HOP)
    assert many.update(stream) == by_packet
    assert _times(by_packet) == [("no", 0.6), ("yes", 2.3)]
    many.reset()
    assert many.time == 0.0 and many.smoothed is None
    assert _times(many.update(stream[3:8])) == [("no", 0.3)]


def test_time_offset_and_hop_from_packet_frames():
    assert hop_seconds(10) == pytest.approx(0.1)
    assert hop_seconds(8) == pytest.approx(0.08)
    det = KeywordDetector(LABELS, hop_seconds(8), smoothing_packets=1, threshold=0.5, time_offset=-0.5)
    assert _times(det.update(_confident("yes", 1))) == [("yes", -0.42)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(labels=[]), "non-empty"),
        (dict(labels=["a", "a"]), "distinct"),
        (dict(hop_seconds=0), "hop_seconds"),
        (dict(smoothing_packets=0), "smoothing_packets"),
        (dict(threshold=1.5), "threshold"),
        (dict(refractory_seconds=-1), "refractory"),
        (dict(min_gap_seconds=-1), "min_gap"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(labels=["_silence_", "_unknown_"]), "Every label is ignored"),
    ],
)
def test_bad_settings_are_refused_with_one_line(kwargs, message):
    args = dict(labels=LABELS, hop_seconds=HOP) | kwargs
    with pytest.raises(ValueError, match=message) as err:
        KeywordDetector(**args)
    assert "\n" not in str(err.value)


def test_bad_logits_are_refused():
    det = KeywordDetector(LABELS, HOP)
    with pytest.raises(ValueError, match=r"shape \[4\] or \[T, 4\]"):
        det.update(np.zeros(5))
    with pytest.raises(ValueError, match="NaN or infinity"):
        det.update(np.array([0.0, np.nan, 0.0, 0.0]))
    assert det.time == 0.0  # refused packets are not counted


def test_detect_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from kwsdeploy.runtime.detect import KeywordDetector\n"
        "print(len(KeywordDetector(['a', 'b'], 0.1, smoothing_packets=1, threshold=0.5).update([[5.0, 0.0]])))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_a_temperature_below_one_sharpens_the_posteriors_before_smoothing():
    # yes/no/silence at 0.6/0.3/0.1 (unknown ~0) for 4 packets: at temperature 1 the 2-packet mean of "yes"
    # reaches 0.6 and never 0.7; at 0.5, softmax(logits / 0.5) squares the probabilities: 0.36 / 0.46 = 0.7826.
    row = np.log(np.array([0.1, 1e-9, 0.6, 0.3]))
    logits = np.tile(row, (4, 1))
    assert KeywordDetector(LABELS, HOP, smoothing_packets=2, threshold=0.7).update(logits) == []
    sharp = KeywordDetector(LABELS, HOP, smoothing_packets=2, threshold=0.7, temperature=0.5)
    events = sharp.update(logits)
    assert _times(events) == [("yes", 0.2)] and events[0].score == pytest.approx(0.36 / 0.46, abs=1e-6)
    assert softmax(logits, 0.5)[0] == pytest.approx(softmax(2 * logits)[0])
    from kwsdeploy.contract import DetectionSettings

    tuned = KeywordDetector.from_settings(LABELS, HOP, DetectionSettings(threshold=0.7, smoothing_seconds=0.2,
                                                                          temperature=0.5))
    assert tuned.temperature == 0.5 and _times(tuned.update(logits)) == [("yes", 0.2)]
