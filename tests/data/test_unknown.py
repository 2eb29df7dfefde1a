"""The `_unknown_` class for trees without other words: extra training trees and the user's negatives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datatrees import build_tree
from typer.testing import CliRunner

from kwsdeploy.cli.main import app
from kwsdeploy.data.dataset import KwsDataset
from kwsdeploy.data.fsdd import prepare_fsdd
from kwsdeploy.data.gsc import prepare_gsc
from kwsdeploy.data.negatives import recording_windows
from kwsdeploy.data.prepared import read_jsonl

FSDD_SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "fsdd_small"


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("unk")
    fsdd = prepare_fsdd(FSDD_SMALL, root / "fsdd", noise_seconds=2)  # zero, one, two; 18 train clips
    # stands in for a `data synth` tree: one keyword and two non-keyword words, 15 clips each
    extra = build_tree(root / "extra", {"zero": "zero", "none": "nine", "tree": "three"})
    neg = root / "mine"
    neg.mkdir()
    rng = np.random.default_rng(0)
    sf.write(str(neg / "talk.wav"), (0.1 * rng.standard_normal(20000)).astype(np.float32), 8000)  # 2.5 s at 8 kHz
    sf.write(str(neg / "quiet.wav"), np.zeros(4000, np.int16), 16000)  # silent: skipped
    return fsdd, extra, neg


def test_unknown_from_extra_trees_and_negatives_with_its_share(trees, tmp_path):
    fsdd, extra, neg = trees
    out = prepare_gsc(fsdd, keywords=["zero", "one", "two"], extra_train=[extra], negatives=neg,
                      unknown_share=0.5, out=tmp_path / "prep", allow_download=False)
    labels = json.loads((out / "labels.json").read_text())
    assert labels == ["zero", "one", "two", "_unknown_", "_silence_"]
    stats = json.loads((out / "stats.json").read_text())
    train = stats["train"]["classes"]
    # speech: 18 FSDD + 15 extra 'zero'; unknown: ceil(0.5 * 33) = 17 of the 30 extra others + 3 windows
    assert train["zero"] == 6 + 15 and train["_unknown_"] == 17 + 3 and train["_silence_"] == 4
    assert stats["train"]["total"] == 57
    assert stats["train"]["unknown_share"] == round(20 / 57, 4)
    assert stats["valid"]["unknown_share"] == 0.0 and stats["test"]["unknown_share"] == 0.0
    entries = read_jsonl(out / "train.jsonl")
    negs = [e for e in entries if e["speaker"] == "negatives"]
    assert len(negs) == 3 and all(e["label"] == "_unknown_" for e in negs)
    assert len(list((out / "negatives").glob("*.wav"))) == 3
    assert {e["label"] for e in entries if "/extra/none/" in "/" + e["path"]} <= {"_unknown_"}
    ds = KwsDataset(out, "train")
    x, y = ds[[i for i, e in enumerate(entries) if e["speaker"] == "negatives"][0]]
    assert x.shape == (16000,) and labels[y] == "_unknown_" and float(x.abs().max()) > 0.1
    meta = json.loads((out / "prepared.json").read_text())
    assert meta["unknown_share"] == 0.5 and meta["negatives"]["clips"] == 3


def test_cli_prints_the_unknown_share(trees, tmp_path):
    fsdd, extra, _ = trees
    res = CliRunner().invoke(app, ["data", "prepare-gsc", "--data-root", str(fsdd), "--keywords", "zero,one,two",
                                   "--extra-train", str(extra), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    # ceil(0.1 * 33) = 4 unknown of 4 + 33 + 4 silence = 41 clips
    assert "_unknown_ 9.8%" in res.output


def test_negatives_need_audio(trees, tmp_path):
    fsdd, _, _ = trees
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .wav"):
        prepare_gsc(fsdd, keywords=["zero"], negatives=tmp_path / "empty", out=tmp_path / "p", allow_download=False)
    assert not (tmp_path / "p").exists()


def test_recording_windows():
    assert len(recording_windows(np.full(8000, 0.1, np.float32))) == 1  # short: centred
    assert len(recording_windows(np.full(40000, 0.1, np.float32))) == 3  # 2.5 s: 1 + 1 + a padded half
    assert len(recording_windows(np.full(36000, 0.1, np.float32))) == 2  # 0.25 s left over: dropped
    assert recording_windows(np.zeros(16000, np.float32)) == []


def test_cards_say_which_training_trees_are_synthetic(trees, tmp_path):
    from kwsdeploy.train.data_summary import data_sources

    fsdd, extra, _ = trees
    (extra / "kwsdeploy_corpus.json").write_text(json.dumps({"name": "synth", "source": "SYNTHETIC speech", "voices": ["a", "b"]}))
    out = prepare_gsc(fsdd, keywords=["zero", "one", "two"], extra_train=[extra], out=tmp_path / "p", allow_download=False)
    info = data_sources(out)
    assert info == {"corpus": "fsdd", "extra_train": [{"name": "synth", "source": "SYNTHETIC speech", "voices": 2}],
                    "synthetic": True}
    plain = prepare_gsc(fsdd, keywords=["zero", "one", "two"], out=tmp_path / "q", allow_download=False)
    assert data_sources(plain) == {"corpus": "fsdd"}
