"""Numbers are range-checked where they enter, and contradictory flags are refused (exit 2, one line)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kwsdeploy.cli.main import app
from kwsdeploy.train.presets import TrainConfig

runner = CliRunner()
WAV = "x.wav"  # never read: the options are refused first


@pytest.mark.parametrize("args, option", [
    (["stream", WAV, "--model", "tcresnet8-causal", "--packet-frames", "0"], "--packet-frames"),
    (["stream", WAV, "--model", "tcresnet8-causal", "--packet-frames", "100000"], "--packet-frames"),
    (["stream", WAV, "--model", "tcresnet8-causal", "--smoothing", "-1"], "--smoothing"),
    (["stream", WAV, "--model", "tcresnet8-causal", "--threshold", "nan"], "--threshold"),
    (["stream", WAV, "--model", "tcresnet8-causal", "--threshold", "0"], "--threshold"),
    (["stream", WAV, "--model", "tcresnet8-causal", "--refractory", "inf"], "--refractory"),
    (["stream", WAV, "--model", "tcresnet8-causal", "--mode", "sideways"], "--mode"),
    (["eval-stream", "--model", "tcresnet8-causal", "--clips", "-1"], "--clips"),
    (["export", "--model", "tcresnet8-causal", "--exporter", "fast"], "--exporter"),
    (["train", "--out", "r", "--grad-clip", "-1"], "--grad-clip"),
    (["train", "--out", "r", "--threads", "-1"], "--threads"),
    (["train", "--out", "r", "--gain-db", "nan"], "--gain-db"),
    (["train", "--out", "r", "--n-mfcc", "100000"], "--n-mfcc"),
    (["train", "--out", "r", "--lr", "0"], "--lr"),
    (["train", "--out", "r", "--label-smoothing", "1"], "--label-smoothing"),
    (["train", "--out", "r", "--epochs", "0"], "--epochs"),
    (["train", "--out", "r", "--seed", "-3"], "--seed"),
    (["eval", "--model", "tcresnet8-causal", "--folder", ".", "--batch-size", "0"], "--batch-size"),
    (["data", "synth", "--words", "zero", "--out", "s", "--per-voice", "0"], "--per-voice"),
    (["engine", "build", "b", "--max-batch", "0"], "--max-batch"),
    (["engine", "build", "b", "--max-batch", "1000000"], "--max-batch"),
    (["engine", "build", "b", "--opt-batch", "-2"], "--opt-batch"),
    (["engine", "build", "b", "--workspace", "0"], "--workspace"),
    (["engine", "build", "b", "--workspace", "-256"], "--workspace"),
    (["engine", "build", "b", "--workspace", "9999999999"], "--workspace"),
])
def test_out_of_range_numbers_are_refused_naming_the_option(tmp_path, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and option in r.output and "Traceback" not in r.output, r.output
    assert list(tmp_path.iterdir()) == []


def test_min_lr_above_lr_is_refused(tmp_path):
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--lr", "0.001", "--min-lr", "0.01"])
    assert r.exit_code == 2 and "--min-lr 0.01 is above the peak --lr 0.001" in r.output
    assert not (tmp_path / "r").exists()


def test_checkpoint_and_model_together_are_refused(tmp_path):
    r = runner.invoke(app, ["stream", str(tmp_path / "x.wav"), "--checkpoint", str(tmp_path), "--model", "kwm"])
    assert r.exit_code == 2 and "--checkpoint and --model name different sources" in r.output


def test_resume_refuses_options_that_change_the_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(TrainConfig(model="tcresnet8", epochs=3, lr=1e-3).to_dict()))
    r = runner.invoke(app, ["train", "--out", str(run), "--resume", "--model", "bcresnet1", "--lr", "0.01",
                            "--threads", "1"])
    assert r.exit_code == 2 and "--model bcresnet1 (the run has tcresnet8)" in r.output
    assert "--lr 0.01 (the run has 0.001)" in r.output and "--threads" not in r.output
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
