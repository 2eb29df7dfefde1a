"""KwsDataset and augmentation: cache, determinism per (seed, epoch, index), no augmentation for eval."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kwsdeploy.data import augment as A
from kwsdeploy.data.dataset import KwsDataset, load_labels
from kwsdeploy.data.demo import demo_corpus_dir
from kwsdeploy.data.gsc import prepare_gsc
from kwsdeploy.data.wavcheck import read_int16


@pytest.fixture(scope="module")
def demo():
    return demo_corpus_dir()


def test_eval_items_are_the_decoded_clips_exactly(demo):
    ds = KwsDataset(demo, "test")
    assert len(ds) == 110 and load_labels(demo)[-1] == "_silence_"
    for i in (0, 37, 99):
        x, y = ds[i]
        e = ds.entries[i]
        assert x.dtype == torch.float32 and x.shape == (16000,) and y == ds.labels.index(e["label"])
        ref = read_int16(demo / e["path"]).astype(np.float32) / 32768
        assert torch.equal(x, torch.from_numpy(ref))
        assert torch.equal(ds[i][0], x)  # no randomness without augment


def test_augmentation_is_seeded_per_seed_epoch_and_index(demo):
    a = KwsDataset(demo, "valid", augment=True, seed=7)
    b = KwsDataset(demo, "valid", augment=True, seed=7)
    assert torch.equal(a[3][0], b[3][0]) and torch.equal(a[3][0], a[3][0])
    first = a[3][0]
    a.set_epoch(1)
    assert not torch.equal(a[3][0], first)
    c = KwsDataset(demo, "valid", augment=True, seed=8)
    assert not torch.equal(c[3][0], first)
    assert float((first - torch.from_numpy(a.clip(3))).abs().max()) > 1e-3  # it did change the clip
    assert first.shape == (16000,) and float(first.abs().max()) <= 1.0


def test_augment_steps_follow_the_recipe():
    rng = np.random.default_rng(0)
    x = np.zeros(16000, np.float32)
    x[8000] = 1.0
    moves = []
    for _ in range(200):
        y = A.pad_and_crop(x, rng)
        assert len(y) == 16000
        moves.append(int(np.argmax(y)) - 8000 if y.max() > 0 else None)
    moves = [m for m in moves if m is not None]
    assert min(moves) >= -1600 and max(moves) <= 1600 and max(moves) - min(moves) > 2000  # +-10 %
    shifted = [A.time_shift(x, rng) for _ in range(200)]
    pos = [int(np.argmax(s)) - 8000 for s in shifted]
    assert all(len(s) == 16000 for s in shifted) and min(pos) >= -1600 and max(pos) <= 1600
    assert max(float(np.abs(s[np.arange(16000) != np.argmax(s)]).max()) for s in shifted) <= 0.001
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32) * 0.5
    noises = [np.full(32000, 16384, np.int16)]  # constant 0.5 "noise" shows the volume
    added = [float(np.mean(A.add_noise(np.zeros(16000, np.float32), noises, rng))) for _ in range(2000)]
    hit = [v for v in added if v > 0]
    assert abs(len(hit) / 2000 - 0.8) < 0.04 and max(hit) <= 0.05 + 1e-6  # p 0.8, volume <= 0.1
    for _ in range(20):
        y = A.change_speed(tone, rng)
        assert len(y) == 16000
        spec = np.abs(np.fft.rfft(y[:8000]))
        peak = np.argmax(spec) * 2  # Hz (8000-sample window)
        assert 1000 / 1.15 - 10 <= peak <= 1000 / 0.85 + 10  # pitch moves with the speed


def test_spec_augment_masks_and_reproducibility():
    feats = torch.ones(16, 1, 40, 98)
    g = torch.Generator().manual_seed(0)
    out = A.spec_augment(feats, g)
    out2 = A.spec_augment(feats, torch.Generator().manual_seed(0))
    assert torch.equal(out, out2) and out.shape == feats.shape and torch.equal(feats, torch.ones(16, 1, 40, 98))
    for b in range(16):
        zero_t = int((out[b, 0].sum(dim=0) == 0).sum())
        zero_f = int((out[b, 0].sum(dim=1) == 0).sum())
        assert zero_t <= 2 * 24 and zero_f <= 2 * 6
    assert int((out == 0).sum()) > 0
    flat = A.spec_augment(torch.ones(4, 40, 98), torch.Generator().manual_seed(1))
    assert flat.shape == (4, 40, 98)


def test_disk_cache_is_memory_mapped_and_reused(tree_copy):
    out = prepare_gsc(tree_copy, class_split="sub", allow_download=False)
    mem = KwsDataset(out, "train", cache="memory")
    disk = KwsDataset(out, "train", cache="disk")
    assert isinstance(disk.clips, np.memmap) and disk.clips.shape == (108, 16000)
    files = list((out / ".cache").glob("train-*.npy"))
    assert len(files) == 1
    again = KwsDataset(out, "train", cache="disk")
    assert list((out / ".cache").glob("train-*.npy")) == files
    assert all(torch.equal(mem[i][0], again[i][0]) for i in range(0, 108, 7))


def test_disk_cache_is_0644_replaces_old_caches_and_falls_back_to_memory(tree_copy):
    import os
    import stat

    out = prepare_gsc(tree_copy, class_split="sub", allow_download=False)
    (out / ".cache").mkdir()
    stale = out / ".cache" / "train-v0-0123456789abcdef.int16.npy"
    stale.write_bytes(b"old")
    mask = os.umask(0o077)
    try:
        disk = KwsDataset(out, "train", cache="disk")
    finally:
        os.umask(mask)
    (cached,) = (out / ".cache").iterdir()  # the stale cache is gone, no temp file is left
    assert cached.name.startswith("train-v") and cached != stale and stat.S_IMODE(cached.stat().st_mode) == 0o644
    other = prepare_gsc(tree_copy, out=tree_copy.parent / "other", class_split="sub", allow_download=False)
    (other / ".cache").write_text("a file where the cache folder goes")
    mem = KwsDataset(other, "train", cache="disk")
    assert not isinstance(mem.clips, np.memmap) and np.array_equal(mem.clips, disk.clips)


def test_rebalanced_duplicates_share_one_cached_clip(tmp_path):
    from datatrees import build_tree, sub_words

    root = build_tree(tmp_path / "root", dict(list(sub_words().items())[:3]), drop={"yes": 2})
    out = prepare_gsc(root, keywords=["yes", "no"], rebalance=True, allow_download=False)
    ds = KwsDataset(out, "train")
    assert len(ds) > ds.clips.shape[0]
    counts = ds.class_counts()
    assert len(set(counts.values())) == 1
