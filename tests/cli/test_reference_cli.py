"""`kwsdeploy import-reference` + `kwsdeploy predict`: the end-to-end reference round trip and refusals."""

import argparse
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from kwsdeploy import tolerances
from kwsdeploy.cli.main import app
from kwsdeploy.labels import GSC12

runner = CliRunner()


@pytest.fixture(scope="module")
def kwm_ckpt(tmp_path_factory, reference_dir):
    out = tmp_path_factory.mktemp("imp") / "kwm"
    r = runner.invoke(app, ["import-reference", "--model", "kwm-64-12", str(reference_dir / "kwm-64-12.pt"),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_import_then_predict_json_reproduces_the_reference_logits(kwm_ckpt, reference_dir, reference_manifest):
    wavs = [str(reference_dir / c["wav"]) for c in reference_manifest["clips"]]
    r = runner.invoke(app, ["predict", "--checkpoint", str(kwm_ckpt), "--json", *wavs])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["file"] for row in rows] == wavs
    logits = np.array([row["logits"] for row in rows])
    golden = np.load(reference_dir / "kwm-64-12.logits.npy")
    rel = np.abs(logits - golden).max() / np.abs(golden).max()
    assert rel <= tolerances.REFERENCE_E2E_REL_ATOL, rel  # measured 9.2e-7
    assert (logits.argmax(1) == golden.argmax(1)).all()
    assert [row["label"] for row in rows] == [GSC12[i] for i in golden.argmax(1)]
    probs = np.array([[row["probabilities"][k] for k in GSC12] for row in rows])
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(golden), 1).numpy(), atol=1e-5)
    assert all(row["notes"] == [] for row in rows)  # 16 kHz mono, exactly 1 s: nothing done


def test_card_records_reference_frontend_and_label_order(kwm_ckpt):
    card = json.loads((kwm_ckpt / "card.json").read_text())
    assert card["labels"] == list(GSC12) and card["training"]["label_order"] == "gsc12"
    assert card["feature_config"]["log_floor"] == "clip_top_db" and card["feature_config"]["top_db"] == 80.0
    assert card["model"] == "kwm-64-12" and card["num_classes"] == 12


def test_predict_converts_stereo_8k_and_says_so(kwm_ckpt, reference_dir, tmp_path):
    x, sr = sf.read(reference_dir / "wavs" / "0_george_12_16k.wav", dtype="float32")
    path = tmp_path / "stereo8k.wav"
    sf.write(path, np.stack([x[::2], x[::2]], 1)[:6000], 8000, subtype="PCM_16")
    r = runner.invoke(app, ["predict", "--checkpoint", str(kwm_ckpt), str(path)])
    assert r.exit_code == 0, r.output
    assert "averaged 2 channels to mono" in r.stdout and "8000 Hz -> 16000 Hz" in r.stdout
    assert "0.75 s; 1 clip(s) zero-padded at the end or cut to 1 s" in r.stdout


def test_tampered_weights_and_wrong_card_are_refused(kwm_ckpt, reference_dir, tmp_path):
    import shutil

    wav = str(reference_dir / "wavs" / "1_jackson_23_16k.wav")
    bad = tmp_path / "bad"
    shutil.copytree(kwm_ckpt, bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (bad / "model.safetensors").write_bytes(bytes(data))
    r = runner.invoke(app, ["predict", "--checkpoint", str(bad), wav])
    assert r.exit_code == 2 and "does not match its card" in r.output and len(r.output.strip().splitlines()) == 1
    wrong = tmp_path / "wrong"
    shutil.copytree(kwm_ckpt, wrong)
    card = json.loads((wrong / "card.json").read_text())
    card["model"] = "kwm-128-12"
    (wrong / "card.json").write_text(json.dumps(card))
    r = runner.invoke(app, ["predict", "--checkpoint", str(wrong), wav])
    assert r.exit_code == 2 and "cls_token" in r.output and "(1, 1, 128)" in r.output


def test_pickle_with_code_is_refused_in_one_line(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "obj": argparse.Namespace(a=1)}, path)
    r = runner.invoke(app, ["import-reference", "--model", "tcresnet8", str(path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert r.output.strip().startswith("error: Refusing") and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_wrong_model_state_dict_is_refused_naming_the_model_it_looks_like(reference_dir, tmp_path):
    r = runner.invoke(app, ["import-reference", "--model", "bcresnet2", str(reference_dir / "bcresnet1.pt"),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "not a 'bcresnet2' state dict" in r.output and "looks like a 'bcresnet1'" in r.output


def test_label_list_must_match_the_class_count(reference_dir, tmp_path):
    r = runner.invoke(app, ["import-reference", "--model", "tcresnet8", str(reference_dir / "tcresnet8.pt"),
                            "--labels", "a,b,c", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "3 labels but the model has 12 outputs" in r.output
    r = runner.invoke(app, ["import-reference", "--model", "tcresnet8", str(reference_dir / "tcresnet8.pt"),
                            "--labels", ",".join(f"w{i}" for i in range(12)), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "o" / "card.json").read_text())
    assert card["labels"][0] == "w0" and card["training"]["label_order"] == "custom"


def test_import_reference_never_replaces_a_checkpoint_without_overwrite(kwm_ckpt, reference_dir, tmp_path):
    import shutil

    out = tmp_path / "ck"
    shutil.copytree(kwm_ckpt, out)
    card = (out / "card.json").read_bytes()
    args = ["import-reference", "--model", "kwm-64-12", str(reference_dir / "kwm-64-12.pt"), "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code != 0 and "--overwrite" in r.output
    assert (out / "card.json").read_bytes() == card
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "a.txt").write_text("keep")
    r = runner.invoke(app, args[:-1] + [str(foreign), "--overwrite"])
    assert r.exit_code != 0 and "not a kwsdeploy checkpoint" in r.output and (foreign / "a.txt").read_text() == "keep"
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "mine"]
