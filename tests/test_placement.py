"""Clip placement (`eval --folder`, `predict`): a word is centred in 1 s whatever its offset and the
clip's length, as the training clips were made; a long clip keeps its loudest second."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kwsdeploy.audio import load_audio, save_wav_atomic
from kwsdeploy.cli.main import app
from kwsdeploy.placement import place_clip, placed, resolve_placement, trim_edges

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


def _burst(n: int = 4800) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)


def _centre_of_energy(x: np.ndarray) -> float:
    e = x.astype(np.float64) ** 2
    return float((np.arange(len(x)) * e).sum() / e.sum())


@pytest.mark.parametrize("total", [6000, 16000, 40000])
@pytest.mark.parametrize("offset", [0, 333, 1600, 1199])
def test_a_word_is_centred_whatever_its_offset_and_the_clip_length(total, offset):
    x = np.zeros(total, np.float32)
    word = _burst()
    offset = min(offset, total - len(word))
    x[offset: offset + len(word)] = word
    y = place_clip(x)
    assert y.shape == (16000,)
    assert abs(_centre_of_energy(y) - 8000) <= 80  # within half a 10 ms trimming frame
    assert np.isclose(np.sum(y**2), np.sum(word.astype(np.float64) ** 2), rtol=1e-6)  # the whole word kept


def test_frame_aligned_offsets_give_the_same_window():
    word = _burst()
    windows = []
    for offset, total in ((0, 4800), (1600, 9600), (8000, 16000), (16000, 48000)):
        x = np.zeros(total, np.float32)
        x[offset: offset + len(word)] = word
        windows.append(place_clip(x))
    for w in windows[1:]:
        assert np.array_equal(w, windows[0])


def test_a_long_clip_keeps_its_loudest_second():
    rng = np.random.default_rng(0)
    x = (0.02 * rng.standard_normal(48000)).astype(np.float32)  # 3 s of audible noise: nothing is trimmed
    x[33600: 33600 + 4800] += _burst()  # the word at 2.1 s
    assert len(trim_edges(x)) == len(x)
    y = place_clip(x)
    assert y.shape == (16000,)
    assert np.sum(y**2) >= 0.99 * np.sum(x[33600: 38400].astype(np.float64) ** 2)


def test_pad_is_the_reference_placement_and_auto_picks_it_for_imports():
    x = _burst(3000)
    assert np.array_equal(placed(x, 16000, "pad")[:3000], x)
    assert resolve_placement("auto", {"imported_from": "reference"}) == "pad"
    assert resolve_placement("auto", {"model": "tcresnet8-causal"}) == "centre"
    with pytest.raises(ValueError, match="unknown placement"):
        placed(x, 16000, "middle")


def test_predict_gives_one_answer_for_a_real_word_at_any_offset(tmp_path):
    """A real FSDD word (jackson, 'five', 0.34 s) with 0 / 0.3 / 0.7 s of silence before it, in clips of
    0.6, 1.0 and 1.8 s: centred placement gives the same logits for all; padding at the end does not."""
    word, _ = load_audio(FIXTURES / "fsdd" / "5_jackson_20.wav")
    files = []
    for lead, total in ((0.0, 0.6), (0.3, 1.0), (0.7, 1.8)):
        x = np.zeros(int(total * 16000), np.float32)
        a = int(lead * 16000)
        x[a: a + len(word)] = word
        files.append(str(save_wav_atomic(tmp_path / f"five_{lead}_{total}.wav", x, 16000)))
    outs = {}
    for placement in ("centre", "pad"):
        r = runner.invoke(app, ["predict", "--model", "tcresnet8-causal", "--json", "--placement", placement, *files])
        assert r.exit_code == 0, r.output
        outs[placement] = json.loads(r.output)
    centre = np.array([o["logits"] for o in outs["centre"]])
    assert np.abs(centre - centre[0]).max() < 1e-3  # int16 WAV rounding only
    assert [o["label"] for o in outs["centre"]] == ["five"] * 3
    pad = np.array([o["logits"] for o in outs["pad"]])
    assert np.abs(pad - pad[0]).max() > 0.5
    assert "placed as in training" in outs["centre"][0]["notes"][-1]


def test_unknown_placement_is_a_one_line_error():
    r = runner.invoke(app, ["predict", "--model", "tcresnet8-causal", "--placement", "middle",
                            str(FIXTURES / "fsdd" / "5_jackson_20.wav")])
    assert r.exit_code == 2
    assert "--placement 'middle' is not one of auto, centre, pad" in r.output
