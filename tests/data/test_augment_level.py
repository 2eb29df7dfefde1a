"""Opt-in level augmentation: random gain in dB and noise at an SNR relative to the clip (measured),
seeded per (seed, epoch, index), off by default and in the reference preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kwsdeploy.data import augment as A
from kwsdeploy.data.dataset import KwsDataset
from kwsdeploy.data.demo import demo_corpus_dir
from kwsdeploy.train.presets import REFERENCE, TrainConfig, get_preset


@pytest.fixture(scope="module")
def demo():
    return demo_corpus_dir()


def _db(p: float) -> float:
    return 10.0 * np.log10(p)


def _speech(seed: int = 0) -> np.ndarray:
    """A speech-like clip well inside [-1, 1] (peak 0.05): a 300 Hz tone in a decaying envelope."""
    t = np.arange(16000) / 16000
    x = 0.05 * np.sin(2 * np.pi * 300 * t) * np.exp(-3 * t)
    return (x + 0.001 * np.random.default_rng(seed).standard_normal(16000)).astype(np.float32)


def test_random_gain_spans_the_db_range_uniformly():
    x = _speech()
    rng = np.random.default_rng(1)
    gains = np.array([_db(np.mean(A.random_gain(x, 12.0, rng) ** 2) / np.mean(x**2)) for _ in range(400)])
    assert gains.min() >= -12.001 and gains.max() <= 12.001
    assert gains.min() < -11.0 and gains.max() > 11.0  # the whole range is reached
    assert abs(gains.mean()) < 1.5 and 5.5 < gains.std() < 8.3  # U(-12, 12): std 6.93 dB
    loud = A.random_gain(np.full(100, 0.9, np.float32), 12.0, np.random.default_rng(3))
    assert float(np.abs(loud).max()) <= 1.0 and loud.dtype == np.float32  # clipped to [-1, 1]


def test_noise_snr_is_relative_to_the_clip_power():
    noise = (np.random.default_rng(5).standard_normal(48000) * 3000).astype(np.int16)
    rng = np.random.default_rng(2)
    for scale in (1.0, 0.05):  # the same SNR for a loud and a 26 dB quieter clip
        x = _speech() * np.float32(scale)
        snrs, mixed = [], 0
        for _ in range(200):
            y = A.add_noise_snr(x, [noise], (5.0, 30.0), rng)
            if np.array_equal(y, x):
                continue
            mixed += 1
            snrs.append(_db(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2)))
        snrs = np.array(snrs)
        assert 0.72 < mixed / 200 < 0.88  # mixed with p 0.8, like the reference
        assert snrs.min() > 5.0 - 0.05 and snrs.max() < 30.0 + 0.05  # measured SNR within 0.05 dB of the range
        assert snrs.min() < 7.0 and snrs.max() > 28.0
    mixes = [A.add_noise_snr(_speech(), [noise], (10.0, 10.0), np.random.default_rng(s)) for s in range(8)]
    diff = next(m for m in mixes if not np.array_equal(m, _speech())).astype(np.float64) - _speech()
    assert abs(_db(np.mean(_speech().astype(np.float64) ** 2) / np.mean(diff**2)) - 10.0) < 0.01
    silent = np.zeros(16000, np.float32)
    assert np.array_equal(A.add_noise_snr(silent, [noise], (5.0, 30.0), np.random.default_rng(0)), silent)


def test_level_augmentation_is_seeded_and_independent_of_the_reference_steps(demo):
    kw = dict(augment=False, gain_db=12.0, noise_snr_db=(5.0, 30.0))
    a, b = KwsDataset(demo, "valid", seed=3, **kw), KwsDataset(demo, "valid", seed=3, **kw)
    first = a[5][0]
    assert torch.equal(first, b[5][0]) and torch.equal(first, a[5][0])
    a.set_epoch(1)
    assert not torch.equal(a[5][0], first)
    assert not torch.equal(KwsDataset(demo, "valid", seed=4, **kw)[5][0], first)
    clean = a.clip(5)
    # gain only, no reference steps: the clip keeps its shape and only its level moves (within +-12 dB)
    g = KwsDataset(demo, "valid", seed=3, gain_db=12.0)
    assert g.augments and not g.augment
    ratios = []
    for epoch in range(20):
        g.set_epoch(epoch)
        y = g[5][0].numpy()
        ratio = float(np.dot(y, clean) / np.dot(clean, clean))
        assert np.allclose(y, clean * ratio, atol=2e-6)
        ratios.append(20 * np.log10(ratio))
    assert -12.001 <= min(ratios) and max(ratios) <= 12.001 and max(ratios) - min(ratios) > 6.0


def test_reference_draws_are_unchanged_by_the_new_options_when_off(demo):
    x = KwsDataset(demo, "valid").clip(2)
    a = A.augment_waveform(x, [], np.random.default_rng([0, 0, 2]))
    rng = np.random.default_rng([0, 0, 2])
    ref = A.change_speed(A.time_shift(A.add_noise(A.pad_and_crop(x, rng), [], rng), rng), rng)
    assert np.array_equal(a, ref)


def test_off_by_default_and_in_the_reference_preset(demo):
    ds = KwsDataset(demo, "valid")
    assert ds.gain_db == 0.0 and ds.noise_snr_db is None and not ds.augments
    assert torch.equal(ds[0][0], torch.from_numpy(ds.clip(0)))
    assert TrainConfig().gain_db == 0.0 and TrainConfig().noise_snr_db is None
    assert REFERENCE.gain_db == 0.0 and REFERENCE.noise_snr_db is None and REFERENCE.augment
    assert get_preset("reference") == REFERENCE


def test_bad_level_options_are_one_line_errors(demo):
    with pytest.raises(ValueError, match="LO <= HI"):
        A.parse_snr_range("30,5")
    with pytest.raises(ValueError, match="LO,HI"):
        TrainConfig(noise_snr_db="loud")
    with pytest.raises(ValueError, match="gain_db must be >= 0"):
        TrainConfig(gain_db=-3)
    assert A.parse_snr_range("10") == (10.0, 10.0) and TrainConfig(noise_snr_db=[5, 30]).noise_snr_db == (5.0, 30.0)


def test_cli_level_options_reach_the_run_config(demo, tmp_path):
    import json

    from typer.testing import CliRunner

    from kwsdeploy.cli.main import app

    runner = CliRunner()
    base = ["train", "--preset", "reference", "--model", "tcresnet8", "--data", str(demo), "--device", "cpu",
            "--epochs", "1", "--batch-size", "64", "--threads", "1", "--no-progress", "--json", "--stop-after", "1"]
    bad = runner.invoke(app, base + ["--out", str(tmp_path / "bad"), "--noise-snr-db", "30,5"])
    assert bad.exit_code != 0 and "LO <= HI" in bad.output and "Traceback" not in bad.output
    r = runner.invoke(app, base + ["--out", str(tmp_path / "run"), "--no-augment", "--gain-db", "6",
                                   "--noise-snr-db", "5,30"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (cfg["gain_db"], cfg["noise_snr_db"], cfg["augment"], cfg["preset"]) == (6.0, [5.0, 30.0], False, "reference")
