"""Synthetic speakers: the fixed voice/sentence split, deterministic rendering and trees, refusals."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kwsdeploy.cli.main import app
from kwsdeploy.data import synth
from kwsdeploy.data.synth import SynthError, Voice, voice_split

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (apt-get install flite)")


def test_voice_split_is_a_fixed_rule():
    assert voice_split(Voice("espeak-ng", "en-us+f3")) == "train"
    assert voice_split(Voice("espeak-ng", "en-us+f4")) == "held_out"  # held-out variant
    assert voice_split(Voice("espeak-ng", "en-us-nyc+f3")) == "held_out"  # held-out base
    assert voice_split(Voice("espeak-ng", "en")) == "train"
    assert voice_split(Voice("flite", "rms")) == "held_out"
    assert voice_split(Voice("flite", "slt")) == "train"
    assert voice_split(Voice("festival", "kal_diphone")) == "train"


def test_sentences_are_digit_free_and_disjoint():
    assert not set(synth.TRAIN_SENTENCES) & set(synth.HELD_OUT_SENTENCES)
    assert len(synth.TRAIN_SENTENCES) == 80 and len(synth.HELD_OUT_SENTENCES) == 60
    for text in synth.TRAIN_SENTENCES + synth.HELD_OUT_SENTENCES:
        assert not set(re.findall(r"[a-z']+", text)) & set(synth.HOMOPHONES), text
    assert not set(synth.HARD_NEGATIVES) & set(synth.HOMOPHONES)


@needs_espeak
def test_render_is_deterministic_16k_float():
    a = synth.render("seven", "en-us+f3", speed=1.1, pitch=0.9)
    b = synth.render("seven", "espeak-ng:en-us+f3", speed=1.1, pitch=0.9)
    assert a.dtype == np.float32 and a.ndim == 1
    np.testing.assert_array_equal(a, b)
    assert 0.2 < len(a) / 16000 < 1.2 and np.abs(a).max() > 0.05
    slow = synth.render("seven", "en-us+f3", speed=0.8, pitch=0.9)
    assert len(slow) > 1.2 * len(a)  # 1.1 / 0.8 = 1.375 x longer, give or take the engine's rounding


@needs_espeak
def test_unknown_voice_refused_in_one_line():
    for bad in ("en-us+nosuchvariant", "klingon", "flite:bob", "nosuchengine:x"):
        with pytest.raises(SynthError) as err:
            synth.parse_voice(bad)
        assert "\n" not in str(err.value) and "unknown voice" in str(err.value)
    with pytest.raises(SynthError, match="held out"):
        synth.resolve_voices("en-us+f4")


@needs_espeak
def test_cli_refuses_unknown_voice(tmp_path):
    res = CliRunner().invoke(app, ["data", "synth", "--words", "zero", "--voices", "en-us+zz", "--out", str(tmp_path / "t")])
    assert res.exit_code == 2
    assert "unknown voice 'en-us+zz'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "t").exists()


@needs_espeak
@needs_flite
def test_synth_tree_deterministic_for_a_seed(tmp_path):
    kw = dict(voices="en-us+f3,flite:slt", per_voice=2, unknown_per_voice=2)
    a = synth.synth_tree(["zero", "one"], tmp_path / "a", seed=3, **kw)
    b = synth.synth_tree(["zero", "one"], tmp_path / "b", seed=3, **kw)
    c = synth.synth_tree(["zero", "one"], tmp_path / "c", seed=4, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*.wav"))
    assert len(files) == 2 * (2 * 2 + 2)  # voices x (words x per_voice + unknown)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.wav"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any(not (c / f).is_file() or (a / f).read_bytes() != (c / f).read_bytes() for f in files)
    x, rate = sf.read(str(a / "zero" / "syn-flite-slt_nohash_0.wav"), dtype="int16")
    assert rate == 16000 and x.shape == (16000,)
    peak_db = 20 * np.log10(np.abs(x).max() / 32768)
    assert synth.PEAK_DBFS_RANGE[0] - 0.1 <= peak_db <= synth.PEAK_DBFS_RANGE[1] + 0.1
    assert (a / "validation_list.txt").read_text() == "" and (a / "testing_list.txt").read_text() == ""
    assert "SYNTHETIC" in (a / "README.md").read_text()


@needs_espeak
def test_speed_range_changes_word_lengths_and_is_recorded(tmp_path):
    import json

    def lengths(root):
        return [int(np.count_nonzero(np.abs(sf.read(str(p), dtype="int16")[0]) > 30)) for p in sorted(root.rglob("zero/*.wav"))]

    kw = dict(voices="en-us+f3,en-us+m3", per_voice=3, unknown_per_voice=0, seed=0)
    slow = synth.synth_tree(["zero"], tmp_path / "slow", speed_range=(0.6, 0.6), **kw)
    fast = synth.synth_tree(["zero"], tmp_path / "fast", speed_range=(1.3, 1.3), **kw)
    assert json.loads((slow / "kwsdeploy_corpus.json").read_text())["ranges"]["speed"] == [0.6, 0.6]
    ratio = np.median(lengths(slow)) / np.median(lengths(fast))
    assert 1.4 < ratio < 3.0, ratio  # a rate of 0.6 against 1.3 says the word about twice as long
    res = CliRunner().invoke(app, ["data", "synth", "--words", "zero", "--speed", "1.5,0.5", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "--speed must be LO,HI" in res.output and not (tmp_path / "bad").exists()


@needs_espeak
@needs_flite
def test_accent_variants_add_espeak_clips_only_and_only_mode_drops_plain_words(tmp_path):
    import json

    kw = dict(voices="en-us+f3,flite:slt", per_voice=1, unknown_per_voice=0, seed=1)
    add = synth.synth_tree(["six", "one"], tmp_path / "add", accents="add", **kw)
    names = sorted(str(p.relative_to(add)) for p in add.rglob("*.wav"))
    n_six, n_one = len(synth.ACCENT_VARIANTS["six"]), len(synth.ACCENT_VARIANTS["one"])
    assert len(names) == 2 * 2 + n_six + n_one  # both voices' plain words + espeak-ng's variants
    assert "six/syn-esp-en-us-f3_nohash_a2x0.wav" in names and not any("flite" in n and "_a" in n for n in names)
    meta = json.loads((add / "kwsdeploy_corpus.json").read_text())
    assert meta["accents"] == "add" and meta["accent_variants"]["six"] == list(synth.ACCENT_VARIANTS["six"])
    only = synth.synth_tree(["six"], tmp_path / "only", accents="only", **kw)
    assert sorted(p.name for p in only.rglob("*.wav")) == [f"syn-esp-en-us-f3_nohash_a{k}x0.wav" for k in range(n_six)]
    with pytest.raises(SynthError, match="--accents must be one of off, add, only"):
        synth.synth_tree(["six"], tmp_path / "bad", accents="yes", **kw)
    assert not (tmp_path / "bad").exists()


def _second_formant_hz(x: np.ndarray, rate: int = 16000) -> float:
    """The strongest peak at 1.1-2.7 kHz of the loudest voiced frames (a rough F2)."""
    n, hop = 512, 80
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), n)[::hop] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, 2048)) ** 2
    freqs = np.fft.rfftfreq(2048, 1.0 / rate)
    voiced = np.argsort(power[:, (freqs > 200) & (freqs < 1000)].sum(axis=1))[-4:]
    spectrum = np.convolve(10 * np.log10(power[voiced].mean(axis=0) + 1e-12), np.ones(9) / 9, "same")
    band = (freqs > 1100) & (freqs < 2700)
    return float(freqs[band][np.argmax(spectrum[band])])


@needs_espeak
def test_accent_variants_move_the_vowel_not_just_the_voice():
    say = {ph: synth.render(f"[[{ph}]]", "en-us+m3") for ph in ("s'i:ks", "s'@ks")}
    assert _second_formant_hz(say["s'i:ks"]) - _second_formant_hz(say["s'@ks"]) > 300.0
