"""prepare-fsdd on 30 real FSDD recordings, and the embedded demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from kwsdeploy.data.dataset import KwsDataset
from kwsdeploy.data.demo import demo_corpus_dir
from kwsdeploy.data.fsdd import centre_clip, prepare_fsdd, synth_noise
from kwsdeploy.data.gsc import prepare_gsc
from kwsdeploy.data.prepared import read_jsonl

FSDD_SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "fsdd_small"


def test_prepare_fsdd_writes_a_16k_gsc_tree_split_by_speaker(tmp_path):
    tree = prepare_fsdd(FSDD_SMALL, tmp_path / "fsdd", noise_seconds=2)
    clips = sorted(tree.glob("*/*_nohash_*.wav"))
    assert len(clips) == 30 and {c.parent.name for c in clips} == {"zero", "one", "two"}
    for c in clips[:6]:
        info = sf.info(str(c))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
    valid = (tree / "validation_list.txt").read_text().split()
    test = (tree / "testing_list.txt").read_text().split()
    assert len(valid) == 6 and all("theo_" in v for v in valid)
    assert len(test) == 6 and all("jackson_" in t for t in test)
    x, _ = sf.read(str(tree / "one" / "george_nohash_5.wav"), dtype="float64")
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(16000, 1 / 16000)
    above = spec[freqs > 4200].sum() / spec.sum()
    assert above < 1e-4  # band-limited: an 8 kHz source has nothing above 4 kHz
    noise = sorted((tree / "_background_noise_").glob("*.wav"))
    assert [n.stem for n in noise] == ["brown_noise", "hum_noise", "pink_noise", "white_noise"]
    for n in noise:
        y, _ = sf.read(str(n))
        assert len(y) == 32000 and abs(np.sqrt(np.mean(y**2)) - 0.1) < 0.01
    out = prepare_gsc(tree, keywords=["zero", "one", "two"], allow_download=False)
    stats = json.loads((out / "stats.json").read_text())
    assert out.name == "fsdd_kw4_zero-one-two"
    assert stats["train"]["total"] == 18 + 2 and stats["valid"]["classes"]["_silence_"] == 1


def test_centre_clip_and_noise_are_deterministic():
    x = np.ones(4000, np.float32)
    y = centre_clip(x)
    assert len(y) == 16000 and y[6000:10000].min() == 1 and y[:6000].max() == 0
    long = np.zeros(20000, np.float32)
    long[15000:16000] = 1
    assert centre_clip(long).sum() == 1000
    assert np.array_equal(synth_noise("pink", 1, seed=3), synth_noise("pink", 1, seed=3))
    assert not np.array_equal(synth_noise("pink", 1, seed=3), synth_noise("pink", 1, seed=4))


def test_demo_corpus_is_small_real_prepared_and_speaker_disjoint():
    demo = demo_corpus_dir()
    labels = json.loads((demo / "labels.json").read_text())
    assert labels == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "_silence_"]
    speakers = {s: {e["speaker"] for e in read_jsonl(demo / f"{s}.jsonl") if e["speaker"]} for s in ("train", "valid", "test")}
    assert speakers == {"train": {"george", "nicolas", "yweweler"}, "valid": {"theo"}, "test": {"jackson"}}
    stats = json.loads((demo / "stats.json").read_text())
    assert [stats[s]["total"] for s in ("train", "valid", "test")] == [528, 88, 110]
    size = sum(p.stat().st_size for p in demo.rglob("*") if p.is_file())
    assert size < 4.2e6
    assert "CC BY-SA 4.0" in (demo / "LICENSE").read_text() and "Zohar Jackson" in (demo / "LICENSE").read_text()
    assert json.loads((demo / "prepared.json").read_text())["audio_root"] == "."
    ds = KwsDataset(demo, "valid")
    assert not (demo / ".cache").exists()  # small sets stay in memory: nothing written into the package
    peaks = [float(ds[i][0].abs().max()) for i in range(0, 80, 8)]
    assert min(peaks) > 0.01  # real speech (theo records quietly: peaks 0.016-0.045)
