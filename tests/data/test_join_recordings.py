"""`detection_sets.join_recordings`: recordings played one after the other keep every part, shifted by the
seconds before it, and one description that sums them; `recording_names` refuses unknown or repeated names."""

from __future__ import annotations

import numpy as np
import pytest

from kwsdeploy.contract import samples_to_seconds
from kwsdeploy.data.detection_sets import join_recordings, recording_names
from kwsdeploy.streaming.recording import Part


def _piece(name: str, seconds: float, parts: list[Part], keywords: int, **extra):
    audio = np.full(int(round(seconds * 16000)), 0.25 if name == "keywords" else -0.5, np.float32)
    info = {"recording": name, "data": "tree", "split": "valid", "keywords": keywords, "seed": 0,
            "seconds": seconds, **extra}
    return audio, parts, info


def test_join_shifts_the_second_recordings_parts_by_the_first_ones_length():
    first = _piece("keywords", 2.5, [Part("speech", 0.0, 1.0), Part("keyword", 1.0, 1.6, "one"),
                                      Part("noise", 1.6, 2.5)], 1, speech_set="tune", voices=3)
    second = _piece("digits", 1.5, [Part("keyword", 0.25, 0.75, "two"), Part("gap", 0.75, 1.5)], 1,
                    pause_seconds=0.5)
    audio, parts, info = join_recordings([first, second])
    assert len(audio) == len(first[0]) + len(second[0])
    assert audio[len(first[0]) - 1] == 0.25 and audio[len(first[0])] == -0.5  # the second starts where the first ends
    assert parts[:3] == first[1]
    assert parts[3:] == [Part("keyword", 2.75, 3.25, "two"), Part("gap", 3.25, 4.0)]
    assert info["recording"] == "keywords+digits" and info["split"] == "valid" and info["keywords"] == 2
    assert info["seconds"] == pytest.approx(samples_to_seconds(len(audio))) == pytest.approx(4.0)
    assert info["seconds_by_part"] == {"keyword": pytest.approx(1.1), "speech": 1.0, "noise": pytest.approx(0.9),
                                       "gap": pytest.approx(0.75)}
    assert info["speech_set"] == "tune" and info["voices"] == 3  # the held-out speech's description is kept
    assert [i["recording"] for i in info["recordings"]] == ["keywords", "digits"]


def test_one_recording_is_returned_as_it_is():
    piece = _piece("digits", 1.0, [Part("keyword", 0.1, 0.5, "six")], 1)
    assert join_recordings([piece]) is piece
    with pytest.raises(ValueError, match="at least one"):
        join_recordings([])


def test_recording_names():
    assert recording_names("keywords") == ["keywords"]
    assert recording_names(" keywords , digits ") == ["keywords", "digits"]
    for bad in ("", "clips", "keywords,keywords", "keywords,speech"):
        with pytest.raises(ValueError, match="choose a comma list of keywords, digits, each once"):
            recording_names(bad)
