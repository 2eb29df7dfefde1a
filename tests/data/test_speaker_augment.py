"""Speaker augmentation: lengths, levels relative to the clip, what each step does, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from kwsdeploy.data import speaker_augment as sa
from kwsdeploy.data.augment import augment_waveform
from kwsdeploy.data.dataset import KwsDataset
from kwsdeploy.data.demo import demo_corpus_dir
from kwsdeploy.train.presets import TrainConfig, get_preset

RATE = 16000


def _tone(freq: float, amp: float = 0.1) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(RATE) / RATE)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spec)])


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_vtlp_moves_formants_by_alpha():
    x = _tone(1000.0)
    assert abs(_peak_hz(sa.vtlp(x, 1.1)) - 1100.0) < 8
    assert abs(_peak_hz(sa.vtlp(x, 0.9)) - 900.0) < 8
    y = sa.vtlp(x, 1.0)
    assert np.max(np.abs(y[1000:-1000] - x[1000:-1000])) < 1e-4  # alpha 1 is the identity


def test_tempo_keeps_pitch_and_centres_the_word():
    x = _tone(1000.0)
    for rate in (0.6, 1.25):
        y = sa.time_stretch(x, rate)
        assert abs(len(y) - len(x) / rate) <= 1 and abs(_peak_hz(y) - 1000.0) < 5
        assert 0.8 < _rms(y[2000:-2000]) / _rms(x) < 1.1
    word = np.zeros(RATE, np.float32)
    word[6000:10000] = _tone(700.0)[:4000]
    aug = sa.SpeakerAugment(tempo=(0.6, 0.6), tempo_p=1.0)
    slow = sa.speaker_augment(word, aug, np.random.default_rng(0))
    loud = np.flatnonzero(np.abs(slow) > 0.05)
    assert slow.shape == (RATE,)
    assert abs((loud[0] + loud[-1]) / 2 - 8000) < 200 and 6000 < loud[-1] - loud[0] < 7000  # 4000 / 0.6 samples


def test_reverb_and_eq_keep_length_and_rms():
    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal(RATE)).astype(np.float32)
    for y in (sa.reverb(x, sa.room_impulse(rng)), sa.equalise(x, rng, 6.0, False), sa.equalise(x, rng, 0.0, True)):
        assert y.dtype == np.float32 and y.shape == x.shape
        assert abs(_rms(y) / _rms(x) - 1) < 1e-3
    rir = sa.room_impulse(np.random.default_rng(1))
    assert rir[0] == 1.0 and len(rir) == RATE // 2
    late = np.sum(rir[int(0.7 * RATE // 2):] ** 2) / np.sum(rir[1:] ** 2)
    assert late < 0.05  # it decays


def test_telephone_band_removes_lows_and_highs():
    x = _tone(150.0) + _tone(1000.0) + _tone(6000.0)
    y = sa.equalise(x, np.random.default_rng(0), 0.0, True)
    spec = np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(RATE, 1 / RATE)
    at = {hz: spec[np.argmin(np.abs(f - hz))] for hz in (150, 1000, 6000)}
    assert at[150] < 0.01 * at[1000] and at[6000] < 0.02 * at[1000]


def test_lowpass_slope_follows_its_order():
    x = _tone(250.0) + _tone(4000.0)
    f = np.fft.rfftfreq(RATE, 1 / RATE)
    for order, expect_db in ((1, -12.3), (2, -24.1), (8, -96.3)):  # 4 kHz is two octaves above a 1 kHz corner
        spec = np.abs(np.fft.rfft(sa.equalise(x, np.random.default_rng(0), 0.0, False, lowpass_hz=1000.0,
                                              lowpass_order=order)))
        hi, lo = (spec[np.argmin(np.abs(f - hz))] for hz in (4000, 250))
        ratio_db = 20 * np.log10(hi / lo) + 20 * np.log10(1 / np.sqrt(1 + 0.25 ** (2 * order)))  # the gain at 4 kHz
        assert abs(ratio_db - expect_db) < 0.5, (order, ratio_db)


def test_lowpass_corners_cover_dull_speakers():
    aug = sa.SpeakerAugment(lowpass_p=1.0)
    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal(RATE)).astype(np.float32)
    f = np.fft.rfftfreq(RATE, 1 / RATE)
    above = []
    for _ in range(200):
        y = sa.speaker_augment(x, aug, rng)
        p = np.abs(np.fft.rfft(y)) ** 2
        above.append(p[f > 1000].sum() / p.sum())
    # white noise keeps 94 % above 1 kHz; the dullest draws keep under 10 % (the test speaker: 4.8 %)
    assert min(above) < 0.10 and max(above) > 0.6


def test_gate_drops_quiet_frames_and_keeps_loud_ones():
    word = np.zeros(RATE, np.float32)
    word[4000:8000] = _tone(300.0, amp=0.3)[:4000]  # a loud vowel
    word[2000:4000] = _tone(3000.0, amp=0.3 * 10 ** (-18 / 20))[:2000]  # a fricative 18 dB under it
    gated = sa.gate(word, threshold_db=12.0, depth_db=40.0)
    loud = slice(4200, 7800)  # away from the ramps between frame centres
    np.testing.assert_allclose(gated[loud], word[loud], rtol=0, atol=1e-7)
    fric = slice(2200, 3800)
    assert _rms(gated[fric]) == pytest.approx(_rms(word[fric]) * 10 ** (-40 / 20), rel=1e-3)
    kept = sa.gate(word, threshold_db=24.0, depth_db=40.0)  # the fricative is over this threshold
    np.testing.assert_allclose(kept[fric], word[fric], rtol=0, atol=1e-7)
    assert np.max(np.abs(np.diff(gated))) < 0.06  # interpolated gain: no step, no click
    np.testing.assert_array_equal(sa.gate(np.zeros(RATE, np.float32), 12.0, 40.0), np.zeros(RATE, np.float32))
    always = sa.SpeakerAugment(gate_p=1.0)
    assert always.active
    faint = word.copy()
    faint[2000:4000] *= 10 ** (-16 / 20)  # now 34 dB under the vowel: under every threshold drawn (12-30 dB)
    for seed in range(5):
        y = sa.speaker_augment(faint, always, np.random.default_rng(seed))
        assert y.shape == word.shape and _rms(y[fric]) < 0.1 * _rms(faint[fric])  # >= 20 dB deep


def test_fricatives_softened_loud_or_quiet_vowel_kept():
    word = np.zeros(RATE, np.float32)
    word[6000:10000] = _tone(300.0, amp=0.3)[:4000]  # a vowel
    word[2000:5000] = _tone(3000.0, amp=0.3)[:3000]  # a fricative as loud as the vowel: the gate keeps it
    y = sa.soften_fricatives(word, depth_db=30.0)
    vowel, fric = slice(6600, 9400), slice(2600, 4400)  # away from the ramps between frame centres
    np.testing.assert_allclose(y[vowel], word[vowel], rtol=0, atol=1e-7)
    assert _rms(y[fric]) == pytest.approx(_rms(word[fric]) * 10 ** (-30 / 20), rel=1e-3)
    np.testing.assert_allclose(sa.gate(word, 12.0, 40.0)[fric], word[fric], rtol=0, atol=1e-7)
    assert np.max(np.abs(np.diff(y))) < 0.06  # interpolated gain: no click
    np.testing.assert_array_equal(sa.soften_fricatives(np.zeros(RATE, np.float32), 30.0), np.zeros(RATE, np.float32))
    hiss = np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    for level_db, kept in ((-40.0, False), (-70.0, True)):  # white: more energy above 2 kHz than below 1 kHz
        noisy = word + hiss * np.float32(0.3 * 10 ** (level_db / 20))
        z = sa.soften_fricatives(noisy, depth_db=30.0)
        gap = slice(11000, 15000)
        assert _rms(z[gap]) == pytest.approx(_rms(noisy[gap]) * (1.0 if kept else 10 ** (-30 / 20)), rel=0.02)
        np.testing.assert_allclose(z[vowel], noisy[vowel], rtol=0, atol=1e-6)
    assert len(sa.soften_fricatives(word[:400], 30.0)) == 400  # shorter than a frame: unchanged
    np.testing.assert_array_equal(sa.soften_fricatives(word[:400], 30.0), word[:400])
    always = sa.SpeakerAugment(fricative_p=1.0)
    assert always.active and not sa.SpeakerAugment().active
    for seed in range(5):  # depth drawn in 15-40 dB
        z = sa.speaker_augment(word, always, np.random.default_rng(seed))
        assert 10 ** (-41 / 20) < _rms(z[fric]) / _rms(word[fric]) < 10 ** (-14 / 20)
    with pytest.raises(ValueError, match="fricative_p"):
        sa.SpeakerAugment(fricative_p=1.5)


def test_shift_and_speed():
    x = np.zeros(RATE, np.float32)
    x[8000] = 1.0
    y = sa.shift(x, 0.1, np.random.default_rng(0))
    k = int(np.argmax(y)) - 8000
    assert y.max() == 1.0 and 0 < abs(k) <= 1600
    slow = sa.change_speed(_tone(1000.0), 1.25, 1.25, np.random.default_rng(0))
    assert slow.shape == (RATE,) and abs(_peak_hz(slow) - 800.0) < 8  # 1.25 x the samples: 1/1.25 the pitch


def test_speaker_augment_is_seeded_and_relative():
    aug = get_preset("speakers").speaker_augment()
    assert aug.active and aug.speed == (0.85, 1.15) and aug.vtlp == 0
    clip = _tone(500.0, amp=0.01)  # a quiet speaker stays quiet: no step adds an absolute level
    a = augment_waveform(clip, [], np.random.default_rng([0, 1, 2]), reference=False, speaker=aug)
    b = augment_waveform(clip, [], np.random.default_rng([0, 1, 2]), reference=False, speaker=aug)
    c = augment_waveform(clip, [], np.random.default_rng([0, 1, 3]), reference=False, speaker=aug)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (RATE,) and a.dtype == np.float32 and not np.array_equal(a, c)
    assert _rms(a) < 3 * _rms(clip)
    untouched = augment_waveform(clip, [], np.random.default_rng(0), reference=False, speaker=sa.SpeakerAugment())
    np.testing.assert_array_equal(untouched, clip)


def test_dataset_applies_it_per_seed_epoch_index():
    aug = sa.SpeakerAugment(speed=(0.9, 1.1), vtlp=0.1, reverb_p=0.5, eq_db=6, telephone_p=0.2, shift_s=0.1)
    ds = KwsDataset(demo_corpus_dir(), "train", augment=False, seed=3, speaker=aug)
    assert ds.augments
    x0 = ds[5][0].numpy()
    again = KwsDataset(demo_corpus_dir(), "train", augment=False, seed=3, speaker=aug)[5][0].numpy()
    np.testing.assert_array_equal(x0, again)
    ds.set_epoch(1)
    assert not np.array_equal(ds[5][0].numpy(), x0)
    assert not np.array_equal(x0, ds.clip(5))


def test_bad_settings_refused():
    with pytest.raises(ValueError, match="speed range"):
        TrainConfig(speed_range=(1.2, 1.0))
    with pytest.raises(ValueError, match="probability"):
        TrainConfig(reverb_p=1.5)
    with pytest.raises(ValueError, match="tempo range"):
        sa.SpeakerAugment(tempo=(0.2, 1.0), tempo_p=1.0)
    with pytest.raises(ValueError, match="vtlp"):
        sa.SpeakerAugment(vtlp=0.7)
    with pytest.raises(ValueError, match="gate_p"):
        TrainConfig(gate_p=-0.1)
    cfg = TrainConfig(speed_range=[0.9, 1.1])
    assert TrainConfig.from_dict(cfg.to_dict()).speed_range == (0.9, 1.1)
