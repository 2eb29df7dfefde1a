"""One training epoch: one optimizer step (and schedule step) per global batch whatever the
micro-batching, every clip counted once, and a non-finite loss stops the run with advice."""

import pytest
import torch

from kwsdeploy.train.build import build_parts, feature_config_for
from kwsdeploy.train.distributed import World
from kwsdeploy.train.epoch import train_epoch
from kwsdeploy.train.presets import TrainConfig

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


def _run_epoch(train_set, **kw):
    cfg = TrainConfig(**{**dict(model="tcresnet8", epochs=2, batch_size=4, lr=1e-2, warmup_epochs=0, augment=False,
                                spec_augment=True, device="cpu"), **kw})
    fc = feature_config_for(cfg)
    parts = build_parts(cfg, LABELS, fc, len(train_set), World(), torch.device("cpu"), print)
    start = {k: v.clone() for k, v in parts.model.state_dict().items()}
    row = train_epoch(0, parts, cfg, train_set, fc, World(), torch.device("cpu"))
    return row, parts, start


def test_an_epoch_steps_once_per_global_batch(golden_clips):
    row, parts, start = _run_epoch(golden_clips, micro_batch=2)
    assert parts.scheduler.step_count == 2 and parts.model.training  # 8 clips, batches of 4, 2 passes each
    assert row["world_size"] == 1 and (row["train_acc"] * 8) == round(row["train_acc"] * 8)
    assert 0.5 < row["train_loss"] < 10 and row["clips_per_s"] > 0 and 0 <= row["data_wait_share"] <= 1
    end = parts.model.state_dict()
    assert max((end[k].float() - start[k].float()).abs().max().item() for k in end) > 1e-4


def test_a_non_finite_loss_says_lower_the_lr(golden_clips):
    broken = [(torch.full_like(w, float("nan")), y) for w, y in golden_clips]
    with pytest.raises(FloatingPointError, match="at epoch 1; lower --lr"):
        _run_epoch(broken)
