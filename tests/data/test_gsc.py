"""prepare-gsc on small real-speech GSC-layout trees: splits, shares, rebalance, silence, idempotence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kwsdeploy.data.dataset import KwsDataset
from kwsdeploy.data.gsc import prepare_gsc
from kwsdeploy.data.prepared import read_jsonl
from kwsdeploy.data.wavcheck import read_int16
from kwsdeploy.labels import GSC12

from datatrees import COMMANDS, build_tree, rms, sub_words, all_files


def _speakers(out, split):
    return {e["speaker"] for e in read_jsonl(out / f"{split}.jsonl") if e["speaker"]}


def test_sub_split_names_folder_orders_labels_and_keeps_speakers_apart(tree_copy):
    out = prepare_gsc(tree_copy, class_split="sub", allow_download=False)
    assert out.name == "gsc_v2_sub12"  # the reference called every split gsc_v2_35
    labels = json.loads((out / "labels.json").read_text())
    # the reference checkpoints' 12-class order, with our spelling of the two extra classes
    assert labels == COMMANDS + ["_unknown_", "_silence_"]
    assert [l.replace("_unknown_", "unknown").replace("_silence_", "silence") for l in labels] == list(GSC12)
    train, valid, test = (_speakers(out, s) for s in ("train", "valid", "test"))
    assert train == {"george", "nicolas", "yweweler"} and valid == {"theo"} and test == {"jackson"}
    assert not (train & valid or train & test or valid & test)


def test_sub_silence_and_unknown_are_a_tenth_of_the_commands(tree_copy):
    out = prepare_gsc(tree_copy, class_split="sub", allow_download=False)
    stats = json.loads((out / "stats.json").read_text())
    # train: 10 commands x 3 speakers x 3 clips = 90 -> ceil(9.0) = 9 each; valid/test: 30 -> 3 each
    assert stats["train"]["classes"]["_silence_"] == 9 and stats["train"]["classes"]["_unknown_"] == 9
    for split in ("valid", "test"):
        assert stats[split]["classes"]["_silence_"] == 3 and stats[split]["classes"]["_unknown_"] == 3
    assert stats["train"]["total"] == 108 and stats["valid"]["total"] == 36
    share = stats["train"]["classes"]["_silence_"] / stats["train"]["total"]
    assert abs(share - 1 / 12) < 1e-9  # ~8 % of the split, 10 % of the command clips
    unknown = [e for e in read_jsonl(out / "train.jsonl") if e["label"] == "_unknown_"]
    assert {e["path"].split("/")[0] for e in unknown} <= {"bed", "cat"}


def test_all_split_has_every_word_and_no_extra_classes(tree_copy):
    out = prepare_gsc(tree_copy, class_split="all", allow_download=False)
    assert out.name == "gsc_v2_all12"
    labels = json.loads((out / "labels.json").read_text())
    assert labels == COMMANDS + ["bed", "cat"]  # reference order: commands ... then bed, cat
    stats = json.loads((out / "stats.json").read_text())
    assert stats["train"]["total"] == 12 * 9 and stats["test"]["total"] == 12 * 3


def test_silence_is_cut_from_noise_scaled_and_never_zeros(tree_copy):
    out = prepare_gsc(tree_copy, class_split="sub", allow_download=False)
    entries = [e for e in read_jsonl(out / "train.jsonl") if e["label"] == "_silence_"]
    assert len({(e["path"], e["offset"]) for e in entries}) == len(entries)  # distinct cuts
    ds = KwsDataset(out, "train")
    for i, e in enumerate(ds.entries):
        if e["label"] != "_silence_":
            continue
        x = ds.clip(i)
        noise = read_int16(tree_copy / e["path"]).astype(np.float32) / 32768
        expect = noise[e["offset"]: e["offset"] + 16000] * e["gain"]
        assert np.max(np.abs(x - expect)) < 1.0 / 32768 + 1e-6
        assert 0.0 <= e["gain"] <= 1.0 and rms(x) > 0.0
    gains = [e["gain"] for e in entries]
    assert min(gains) < max(gains)  # scaled by U(0, 1), not a constant


def test_rebalance_oversamples_train_to_the_largest_class(tmp_path):
    words = dict(list(sub_words().items())[:4])
    root = build_tree(tmp_path / "root", words, drop={"yes": 2, "no": 1})  # george: 1 and 2 clips
    out = prepare_gsc(root, keywords=["yes", "no"], rebalance=True, allow_download=False)
    assert out.name == "gsc_v2_kw4_yes-no_rebalanced"
    stats = json.loads((out / "stats.json").read_text())
    # up: 9 clips, down: 9 -> unknown pool; yes 7, no 8 -> largest is... unknown ceil(1.5)=2, silence 2
    counts = stats["train"]["classes"]
    assert counts == {"yes": 8, "no": 8, "_unknown_": 8, "_silence_": 8}
    plain = json.loads((prepare_gsc(root, keywords=["yes", "no"], allow_download=False) / "stats.json").read_text())
    assert plain["train"]["classes"] == {"yes": 7, "no": 8, "_unknown_": 2, "_silence_": 2}
    assert stats["valid"] == plain["valid"]  # only the training split is oversampled


def test_running_twice_gives_byte_identical_outputs(tree_copy):
    first = all_files(prepare_gsc(tree_copy, class_split="sub", rebalance=True, allow_download=False))
    with pytest.raises(ValueError, match="--overwrite"):
        prepare_gsc(tree_copy, class_split="sub", rebalance=True, allow_download=False)
    second = all_files(prepare_gsc(tree_copy, class_split="sub", rebalance=True, allow_download=False, overwrite=True))
    assert first == second and len(first) == 6
    leftovers = [p.name for p in tree_copy.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_keywords_without_other_words_skip_unknown_with_a_warning(tmp_path, caplog):
    root = build_tree(tmp_path / "root", {"yes": "zero", "no": "one"}, per_speaker=2)
    out = prepare_gsc(root, keywords=["yes", "no"], allow_download=False)
    assert json.loads((out / "labels.json").read_text()) == ["yes", "no", "_silence_"]
    assert any("_unknown_" in r.message and "skipped" in r.message for r in caplog.records)


def test_paths_are_relative_to_the_data_root(tree_copy):
    out = prepare_gsc(tree_copy, class_split="sub", allow_download=False)
    meta = json.loads((out / "prepared.json").read_text())
    assert meta["audio_root"] == ".."
    first = read_jsonl(out / "valid.jsonl")[0]
    assert first == {"label": "yes", "path": "yes/theo_nohash_0.wav", "speaker": "theo"}
    assert all(not e["path"].startswith("/") for s in ("train", "valid", "test") for e in read_jsonl(out / f"{s}.jsonl"))
