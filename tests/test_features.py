"""MFCC frontend: float64 NumPy reference, torchaudio (if importable), reference goldens, per-clip clamp, ONNX."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kwsdeploy.audio import fit_clip, load_audio
from kwsdeploy.config import FeatureConfig
from kwsdeploy.features import MFCC, compute_features
from kwsdeploy.tolerances import MFCC_MAX_REL_ERROR, MFCC_REFERENCE_ATOL, ONNX_PARITY_ATOL

FIXTURES = Path(__file__).parent / "fixtures"
REF_WAVS = sorted((FIXTURES / "reference" / "wavs").glob("*.wav"))
FSDD = sorted((FIXTURES / "fsdd").glob("*.wav"))


# ---------------------------------------------------------------- independent float64 reference
def numpy_mfcc(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """MFCC of one 1-D clip, float64, written from the definitions (rfft on explicit frames)."""
    x = np.asarray(wave, dtype=np.float64)
    n_fft, hop, win = cfg.n_fft, cfg.hop_length, cfg.win_length
    frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    hann = np.zeros(n_fft)
    off = (n_fft - win) // 2
    hann[off : off + win] = np.sin(np.pi * np.arange(win) / win) ** 2  # periodic Hann = sin^2(pi n / N)
    power = np.abs(np.fft.rfft(x[idx] * hann, axis=1)) ** 2  # [frames, n_freq]
    n_freq = n_fft // 2 + 1
    freqs = np.arange(n_freq) * (cfg.sample_rate / 2) / (n_freq - 1)
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    edges_mel = mel(cfg.f_min) + (mel(cfg.f_max) - mel(cfg.f_min)) * np.arange(cfg.n_mels + 2) / (cfg.n_mels + 1)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    fb = np.zeros((n_freq, cfg.n_mels))
    for m in range(cfg.n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (c - lo)
        falling = (hi - freqs) / (hi - c)
        fb[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    db = 10.0 * np.log10(np.maximum(power @ fb, cfg.amin)).T  # [n_mels, frames]
    if cfg.log_floor == "clip_top_db":
        db = np.maximum(db, db.max() - cfg.top_db)
    else:
        db = np.maximum(db, cfg.floor_db)
    n = np.arange(cfg.n_mels)
    basis = np.array(
        [np.cos(np.pi * k * (2 * n + 1) / (2 * cfg.n_mels)) * math.sqrt((1 if k else 0.5) * 2 / cfg.n_mels)
         for k in range(cfg.n_mfcc)]
    )
    return basis @ db  # [n_mfcc, frames]


def read_int16(path: Path) -> np.ndarray:
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="int16")
    assert rate == 16000
    return data.astype(np.float32) / np.float32(32768.0)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def ref_waves() -> np.ndarray:
    return np.stack([read_int16(p) for p in REF_WAVS])


@pytest.fixture(scope="module")
def mixed_batch() -> np.ndarray:
    """A loud clip, a quiet one (30x softer tone + noise) and a chirp, 1 s each."""
    g = np.random.default_rng(0)
    t = np.arange(16000) / 16000.0
    loud = 0.5 * np.sin(2 * np.pi * 440 * t) * np.hanning(16000) + 0.01 * g.standard_normal(16000)
    quiet = 0.003 * np.sin(2 * np.pi * 1200 * t) + 1e-4 * g.standard_normal(16000)
    quiet[8000:] = 0.0  # exact zeros: the floor decides those frames
    chirp = 0.2 * np.sin(2 * np.pi * (100 + 3000 * t) * t)
    return np.stack([loud, quiet, chirp]).astype(np.float32)


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("preset", ["reference", "deployable"])
def test_matches_float64_numpy(preset, mixed_batch, ref_waves):
    cfg = getattr(FeatureConfig, preset)()
    waves = np.concatenate([mixed_batch, ref_waves[:3]])
    ours = MFCC(cfg)(torch.from_numpy(waves)).numpy()
    assert ours.shape == (len(waves), 40, 98)
    errs = [rel_err(ours[i], numpy_mfcc(w, cfg)) for i, w in enumerate(waves)]
    print(f"{preset}: max rel err vs float64 numpy {max(errs):.2e}")
    assert max(errs) <= MFCC_MAX_REL_ERROR


def test_reference_preset_reproduces_golden_features(ref_waves):
    golden = np.load(FIXTURES / "reference" / "features.npy")
    ours = MFCC(FeatureConfig.reference())(torch.from_numpy(ref_waves)).numpy()
    err = float(np.abs(ours - golden).max())
    print(f"reference preset vs features.npy: max abs {err:.2e} (max |value| {np.abs(golden).max():.1f})")
    assert ours.shape == golden.shape == (8, 40, 98)
    assert err <= MFCC_REFERENCE_ATOL
    # the golden was made clip by clip; our batch must clamp per clip, so the same holds one at a time
    one = MFCC(FeatureConfig.reference())(torch.from_numpy(ref_waves[5])).numpy()
    assert float(np.abs(one - golden[5]).max()) <= MFCC_REFERENCE_ATOL


def test_top_db_clamps_per_clip_not_per_batch(mixed_batch):
    cfg = FeatureConfig.reference()
    m = MFCC(cfg)
    batched = m(torch.from_numpy(mixed_batch))
    single = torch.stack([m(torch.from_numpy(w)) for w in mixed_batch])
    diff = float((batched - single).abs().max())
    print(f"batched vs clip-by-clip: max abs {diff:.2e}")
    assert diff <= 1e-4 * float(single.abs().max())
    # a batch-wide clamp (what torchaudio does on [B, T]) would change the quiet clip a lot
    db = m.log_mel_db(torch.from_numpy(mixed_batch))
    batch_clamped = torch.matmul(m.dct, torch.maximum(db, db.max() - cfg.top_db))
    assert float((batch_clamped[1] - single[1]).abs().max()) > 10.0


def test_fixed_floor_is_absolute(mixed_batch):
    cfg = FeatureConfig.deployable()
    m = MFCC(cfg)
    db = m.log_mel_db(torch.from_numpy(mixed_batch))
    assert float(db.min()) == pytest.approx(-100.0)  # the exact-zero half: 10*log10(amin)
    silent = m(torch.zeros(1, 16000))
    # all bands at -80 dB: only c0 is non-zero, -80 * sqrt(n_mels)
    assert float(silent[0, 0, 0]) == pytest.approx(-80.0 * math.sqrt(40), rel=1e-6)
    assert float(silent[0, 1:].abs().max()) < 1e-3


def test_log_mel_split_composes_to_forward(mixed_batch):
    for cfg in (FeatureConfig.reference(), FeatureConfig.deployable()):
        m = MFCC(cfg)
        x = torch.from_numpy(mixed_batch)
        assert torch.equal(m.from_log_mel_db(m.log_mel_db(x)), m(x))


def test_shapes_and_input_forms():
    cfg = FeatureConfig()
    m = MFCC(cfg)
    x = torch.randn(2, 16000) * 0.1
    assert m(x).shape == (2, 40, cfg.clip_frames) == (2, 40, 98)
    assert m(x[0]).shape == (40, 98)
    assert float((m(x[0]) - m(x)[0]).abs().max()) <= 1e-6 * float(m(x).abs().max())  # batch-size blocking only
    assert m(torch.randn(1, 480)).shape == (1, 40, 1)
    assert m(torch.randn(1, 8000)).shape == (1, 40, cfg.frames(8000))
    np_out = compute_features(x.numpy(), cfg)
    assert float((np_out - m(x)).abs().max()) == 0.0
    m13 = MFCC(FeatureConfig(n_mfcc=13))
    assert m13(x).shape == (2, 13, 98)
    with pytest.raises(ValueError, match="fewer than one window"):
        m(torch.zeros(1, 479))
    with pytest.raises(ValueError, match=r"\[B, samples\]"):
        m(torch.zeros(1, 1, 16000))
    with pytest.raises(ValueError, match="n_mfcc"):
        MFCC(FeatureConfig(n_mfcc=64, n_mels=40))


def test_real_fsdd_clip_resampled():
    assert len(FSDD) >= 3
    wave, info = load_audio(FSDD[0])
    assert info.original_rate == 8000 and len(wave) == 2 * info.frames
    clip = fit_clip(wave, 16000)
    cfg = FeatureConfig.reference()
    ours = MFCC(cfg)(torch.from_numpy(clip)).numpy()
    err = rel_err(ours, numpy_mfcc(clip, cfg))
    print(f"FSDD {FSDD[0].name}: max rel err {err:.2e}")
    assert err <= MFCC_MAX_REL_ERROR
    # speech is louder than the zero padding: c0 of the first frames well above the padded tail
    assert ours[0, :5].mean() > ours[0, -5:].mean() + 50.0


def test_matches_torchaudio_when_available(mixed_batch, ref_waves):
    torchaudio = pytest.importorskip("torchaudio")
    ta = torchaudio.transforms.MFCC(
        sample_rate=16000, n_mfcc=40,
        melkwargs={"n_fft": 480, "win_length": 480, "hop_length": 160, "n_mels": 40, "center": False},
    )
    ours = MFCC(FeatureConfig.reference())
    for w in np.concatenate([mixed_batch, ref_waves[:2]]):
        x = torch.from_numpy(w)
        assert rel_err(ours(x).numpy(), ta(x).numpy()) <= MFCC_MAX_REL_ERROR


# ---------------------------------------------------------------- export
@pytest.mark.parametrize("preset", ["reference", "deployable"])
def test_onnx_export_dynamo(preset, tmp_path, mixed_batch):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    cfg = getattr(FeatureConfig, preset)()
    m = MFCC(cfg).eval()
    path = tmp_path / "mfcc.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        m, (torch.from_numpy(mixed_batch),), str(path), dynamo=True, opset_version=18,
        input_names=["audio"], output_names=["features"], dynamic_shapes={"wave": {0: batch}}, verbose=False,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (mixed_batch, mixed_batch[1:2]):  # the batch axis is dynamic
        got = sess.run(["features"], {"audio": x})[0]
        want = m(torch.from_numpy(x)).detach().numpy()
        err = rel_err(got, want)
        print(f"onnx {preset} batch {len(x)}: max rel err {err:.2e}")
        assert err <= ONNX_PARITY_ATOL
