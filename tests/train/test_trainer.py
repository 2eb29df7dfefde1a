"""The training loop: a tiny real-speech set is overfitted, --resume gives the uninterrupted run's weights,
and a run killed in its first epoch can be restarted or resumed."""

import json

import pytest
import torch
from safetensors.torch import load_file

from kwsdeploy.train import trainer
from kwsdeploy.train.checkpoint import load_checkpoint
from kwsdeploy.train.evaluate import evaluate_dataset
from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.throughput import TIMING_KEYS
from kwsdeploy.train.run import train
from kwsdeploy.train.trainer import Trainer

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


def test_few_steps_overfit_a_tiny_real_speech_set(golden_clips, tmp_path):
    cfg = TrainConfig(model="tcresnet8", epochs=16, batch_size=4, lr=1e-2, min_lr=1e-4, warmup_epochs=1,
                      weight_decay=0.0, label_smoothing=0.0, augment=False, spec_augment=False, device="cpu")
    result = Trainer(cfg, golden_clips, golden_clips, DIGITS, tmp_path / "run", progress=False).fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 17))
    best = load_checkpoint(result.best_dir)
    m = evaluate_dataset(best.model, best.feature_config, golden_clips, DIGITS)
    assert m["accuracy"] >= 0.95, m["accuracy"]  # eval mode, on the 8 training clips
    assert best.card["metrics"]["valid_acc"] == result.best_valid_acc >= 0.95
    assert best.card["training"]["epochs_done"] == result.best_epoch
    assert rows[0]["train_loss"] > 2 * rows[-1]["train_loss"]


def _weights(run):
    return load_file(str(run / "last" / "model.safetensors"))


def test_resume_gives_the_uninterrupted_runs_weights_bitwise(tiny_prepared, tmp_path):
    cfg = TrainConfig(model="tcresnet8", epochs=3, batch_size=8, lr=3e-3, warmup_epochs=1, augment=True,
                      spec_augment=True, device="cpu", seed=5)
    full = train(cfg, tiny_prepared, tmp_path / "full", progress=False, test=False)
    train(cfg, tiny_prepared, tmp_path / "cut", progress=False, stop_after=1, test=False)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = train(cfg.with_overrides(lr=1.0), tiny_prepared, tmp_path / "cut", resume=True, progress=False,
                    test=False)  # the saved config wins over a changed one on --resume
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    diffs = [float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a]
    assert max(diffs) == 0.0 and all(torch.equal(a[k], b[k]) for k in a)
    s1 = load_file(str(tmp_path / "full" / "last" / "train_state.safetensors"))
    s2 = load_file(str(tmp_path / "cut" / "last" / "train_state.safetensors"))
    assert all(torch.equal(s1[k], s2[k]) for k in s1 if k.startswith("optimizer."))
    drop = TIMING_KEYS
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(full.history) == strip(resumed.history)
    assert json.loads((tmp_path / "cut" / "last" / "card.json").read_text())["training"]["epochs_done"] == 3


def test_a_run_killed_in_its_first_epoch_can_be_restarted_or_resumed(tiny_prepared, tmp_path, monkeypatch):
    cfg = TrainConfig(model="tcresnet8", epochs=1, batch_size=16, augment=False, device="cpu")
    real = trainer.train_epoch

    def killed(*a, **k):
        raise KeyboardInterrupt  # as a kill or a full disk would, before the first checkpoint

    monkeypatch.setattr(trainer, "train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_prepared, tmp_path / "r", progress=False, test=False)
    assert (tmp_path / "r" / "config.json").is_file() and not (tmp_path / "r" / "last").exists()
    monkeypatch.setattr(trainer, "train_epoch", real)
    resumed = train(cfg, tiny_prepared, tmp_path / "r", resume=True, progress=False, test=False)
    assert [r["epoch"] for r in resumed.history] == [1]
    monkeypatch.setattr(trainer, "train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_prepared, tmp_path / "s", progress=False, test=False)
    monkeypatch.setattr(trainer, "train_epoch", real)
    restarted = train(cfg, tiny_prepared, tmp_path / "s", progress=False, test=False)
    assert [r["epoch"] for r in restarted.history] == [1] and (tmp_path / "s" / "last" / "card.json").is_file()
