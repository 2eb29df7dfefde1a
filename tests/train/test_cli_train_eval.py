"""`kwsdeploy train` and `kwsdeploy eval` through the CLI (typer's CliRunner)."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kwsdeploy.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tiny_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    r = runner.invoke(app, ["train", "--preset", "demo", "--model", "TC-ResNet8", "--data", str(tiny_prepared),
                            "--out", str(out), "--epochs", "2", "--batch-size", "11", "--augment",
                            "--device", "cpu", "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def test_train_cli_writes_best_last_metrics_and_honours_overrides(run_dir):
    out, summary = run_dir
    assert summary["epochs_run"] == 2 and summary["best_epoch"] in (1, 2)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "valid_acc", "valid_macro_f1", "clips_per_s", "lr"} <= set(rows[0])
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["preset"], cfg["model"], cfg["epochs"], cfg["batch_size"], cfg["augment"], cfg["lr"]) == (
        "demo", "tcresnet8", 2, 11, True, 1e-2)
    card = json.loads((out / "best" / "card.json").read_text())
    assert card["labels"][-1] == "_silence_" and card["feature_config"]["log_floor"] == "fixed"
    assert summary["test_acc"] == card["metrics"]["test_acc"]
    assert (out / "last" / "train_state.safetensors").is_file()


def test_eval_on_a_prepared_split_matches_the_training_record(run_dir, tiny_prepared):
    out, summary = run_dir
    r = runner.invoke(app, ["eval", "--checkpoint", str(out / "best"), "--data", str(tiny_prepared),
                            "--split", "valid", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    card = json.loads((out / "best" / "card.json").read_text())
    assert m["n"] == 11 and sum(map(sum, m["confusion"])) == 11
    assert m["accuracy"] == pytest.approx(card["metrics"]["valid_acc"])
    assert m["macro_f1"] == pytest.approx(card["metrics"]["valid_macro_f1"])
    text = runner.invoke(app, ["eval", "--checkpoint", str(out / "best"), "--data", str(tiny_prepared)]).stdout
    assert "per-class recall" in text and "confusion matrix" in text and "_silence_" in text


def test_eval_on_a_folder_any_rate_and_length_agrees_with_predict(run_dir, reference_dir, tmp_path):
    out, _ = run_dir
    wavs = sorted((reference_dir / "wavs").glob("*.wav"))
    (tmp_path / "f" / "zero").mkdir(parents=True)
    (tmp_path / "f" / "one").mkdir()
    shutil.copy(wavs[0], tmp_path / "f" / "zero" / "a.wav")
    shutil.copy(wavs[1], tmp_path / "f" / "one" / "b.wav")
    x, _ = sf.read(wavs[1], dtype="float32")
    long8k = np.concatenate([x[::2], x[::2], x[::2]])  # 1.5 s at 8 kHz: resampled, then placed in 1 s
    sf.write(tmp_path / "f" / "one" / "c.wav", long8k, 8000, subtype="PCM_16")
    r = runner.invoke(app, ["eval", "--checkpoint", str(out / "best"), "--folder", str(tmp_path / "f"), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["n"] == 3 and m["per_class"]["one"]["support"] == 2 and m["per_class"]["zero"]["support"] == 1
    assert any("resampled" in n for n in m["notes"]) and any("; 1 longer than 1 s" in n for n in m["notes"])
    files = [tmp_path / "f" / "one" / "b.wav", tmp_path / "f" / "one" / "c.wav", tmp_path / "f" / "zero" / "a.wav"]
    p = json.loads(runner.invoke(app, ["predict", "--checkpoint", str(out / "best"), "--json",
                                       *map(str, files)]).stdout)
    hits = [row["label"] == t for row, t in zip(p, ["one", "one", "zero"])]
    assert m["accuracy"] == pytest.approx(sum(hits) / 3)


def test_eval_folder_with_an_unknown_label_lists_the_models_labels(run_dir, reference_dir, tmp_path):
    out, _ = run_dir
    (tmp_path / "f" / "banana").mkdir(parents=True)
    shutil.copy(sorted((reference_dir / "wavs").glob("*.wav"))[0], tmp_path / "f" / "banana" / "a.wav")
    r = runner.invoke(app, ["eval", "--checkpoint", str(out / "best"), "--folder", str(tmp_path / "f")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "['banana']" in r.output and "zero, one, two" in r.output and "_silence_" in r.output


def test_cli_argument_errors_are_one_line(run_dir, tiny_prepared, tmp_path):
    out, _ = run_dir
    r = runner.invoke(app, ["eval", "--checkpoint", str(out / "best")])
    assert r.exit_code == 2 and "exactly one of --data" in r.output
    r = runner.invoke(app, ["train", "--model", "tcresnet8", "--data", str(tiny_prepared), "--out", str(out)])
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = runner.invoke(app, ["train", "--model", "tcresnet8", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not a prepared directory" in r.output
    r = runner.invoke(app, ["train", "--model", "tcresnt8", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "Did you mean 'tcresnet8'" in r.output
