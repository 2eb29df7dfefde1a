"""Checkpoint format: round trip, card contents, refusal of tampered or mismatched checkpoints."""

import json
import shutil

import pytest
import torch

from kwsdeploy.config import FeatureConfig
from kwsdeploy.models import create
from kwsdeploy.train.checkpoint import (
    CheckpointError, TrainState, demo_checkpoint_path, load_checkpoint, read_card, save_checkpoint,
)

LABELS = [f"w{i}" for i in range(5)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = create("tcresnet8", num_classes=5)
    with torch.no_grad():  # non-trivial BatchNorm statistics must survive the round trip too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    path = save_checkpoint(tmp_path_factory.mktemp("ck") / "ck", model, LABELS, FeatureConfig.deployable(),
                           training={"epochs_done": 3}, metrics={"valid_acc": 0.5}, note="hello")
    return model.eval(), path


def test_round_trip_gives_identical_tensors_and_logits(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "model.safetensors"]
    loaded = load_checkpoint(path / "model.safetensors")  # the weights file's path works too
    a, b = model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(3, 1, 40, 98)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert not loaded.model.training
    assert loaded.labels == LABELS and loaded.feature_config == FeatureConfig.deployable()


def test_card_contents(saved):
    _, path = saved
    card = read_card(path)
    assert (card["schema_version"], card["model"], card["family"], card["num_classes"], card["n_mfcc"]) == (
        1, "tcresnet8", "tcresnet", 5, 40)
    assert card["training"] == {"epochs_done": 3} and card["metrics"] == {"valid_acc": 0.5} and card["note"] == "hello"
    assert len(card["weights_sha256"]) == 64 and card["tensors"]["head.weight"] == [5, 48]
    assert {"torch", "kwsdeploy", "safetensors", "numpy", "python"} <= set(card["versions"])


def _copy(saved, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(saved[1], dst)
    return dst


def test_changed_byte_is_refused(saved, tmp_path):
    ck = _copy(saved, tmp_path)
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x40
    (ck / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its card.*modified or damaged"):
        load_checkpoint(ck)


@pytest.mark.parametrize("field,value,match", [
    ("model", "tcresnet14", "lacks tensor"),
    ("num_classes", 6, r"head.weight.*expected \(6, 48\)"),
    ("labels", ["a", "b"], "2 labels for 5 classes"),
    ("schema_version", 99, "schema version 99"),
    ("feature_config", {"n_mfcc": 64, "n_mels": 64}, "64 MFCCs but the model takes 40"),
    ("feature_config", {"n_mfcc": 64}, "n_mfcc = 64, expected at most n_mels = 40"),
    ("feature_config", {"hop_length": 0}, "hop_length = 0, expected a positive integer"),
    ("labels", ["a", "b", "a", "c", "d"], "label 'a' appears twice"),
    ("labels", ["a", "", "b", "c", "d"], "is not a non-empty string"),
    ("num_classes", -1, "expected an integer in 1..4096"),
    ("weights_file", "../../etc/passwd", "not a plain file name"),
    ("model", "tcresnet9", "Unknown model 'tcresnet9'"),
])
def test_wrong_card_is_refused(saved, tmp_path, field, value, match):
    ck = _copy(saved, tmp_path)
    card = json.loads((ck / "card.json").read_text())
    card[field] = value
    if field == "num_classes":
        card["labels"] = [f"w{i}" for i in range(6)]
    (ck / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(ck)


def test_a_model_config_key_with_a_newline_is_refused_in_one_line(saved, tmp_path):
    ck = _copy(saved, tmp_path)
    card = json.loads((ck / "card.json").read_text())
    card["model_config"] = {"bad\nkey": 1}
    (ck / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ck)
    assert "\n" not in str(info.value) and "unexpected keyword argument 'bad\\nkey'" in str(info.value)


def test_missing_or_foreign_files_are_refused(saved, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a kwsdeploy checkpoint"):
        load_checkpoint(tmp_path / "plain")
    with pytest.raises(CheckpointError, match="not a kwsdeploy checkpoint"):
        save_checkpoint(tmp_path / "plain", saved[0], LABELS, FeatureConfig())  # never clobbers other files
    assert (tmp_path / "plain" / "x.txt").exists()


def test_overwrite_is_atomic_and_leaves_no_temp_dirs(saved, tmp_path):
    model, _ = saved
    p = save_checkpoint(tmp_path / "ck", model, LABELS, FeatureConfig(), metrics={"v": 1})
    save_checkpoint(tmp_path / "ck", model, LABELS, FeatureConfig(), metrics={"v": 2},
                    train_state=TrainState(tensors={"t": torch.arange(3)}, meta={"k": 1}))
    assert read_card(p)["metrics"] == {"v": 2} and sorted(x.name for x in tmp_path.iterdir()) == ["ck"]
    st = TrainState.read(p)
    assert torch.equal(st.tensors["t"], torch.arange(3)) and st.meta["k"] == 1


def test_bad_labels_are_refused_at_save(saved, tmp_path):
    with pytest.raises(CheckpointError, match="4 labels given for a model with 5 outputs"):
        save_checkpoint(tmp_path / "x", saved[0], LABELS[:4], FeatureConfig())
    with pytest.raises(CheckpointError, match="unique"):
        save_checkpoint(tmp_path / "x", saved[0], ["a"] * 5, FeatureConfig())


def test_demo_checkpoint_path_resolves_aliases_or_says_none_ships():
    try:
        path = demo_checkpoint_path("kwm")
        assert path.name == "kwm-causal-64-4" and (path / "card.json").is_file()
    except CheckpointError as exc:
        assert "No demo checkpoint is shipped for 'kwm-causal-64-4'" in str(exc)


def test_a_checkpoint_follows_the_umask_not_0700(tmp_path):
    import os
    import stat

    import torch

    from kwsdeploy.models import create

    torch.manual_seed(0)
    old = os.umask(0o022)
    try:
        ck = save_checkpoint(tmp_path / "ck", create("tcresnet8", num_classes=3), ["a", "b", "c"],
                             FeatureConfig.deployable())
    finally:
        os.umask(old)
    assert stat.S_IMODE(ck.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in ck.iterdir()} == {0o644}


def test_same_weights_give_the_same_file_and_hash(tmp_path):
    """The card's weights_sha256 names the weights: saving them again must not change a byte (safetensors
    writes several metadata keys in a random order, so the file carries one)."""
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint, save_checkpoint

    ck = load_checkpoint(demo_checkpoint_path("tcresnet8-causal"))
    digests = set()
    for i in range(4):
        p = save_checkpoint(tmp_path / f"c{i}", ck.model, ck.labels, ck.feature_config)
        digests.add((p / "model.safetensors").read_bytes())
    assert len(digests) == 1
    import json
    import struct

    raw = next(iter(digests))
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    assert header["__metadata__"] == {"format": "pt"}  # one key: nothing left for another process to reorder
