"""The recipe's optimizer: AdamW with the config's decay, warm-up + cosine over the run's iterations;
no mixed precision on CPU."""

import pytest
import torch

from kwsdeploy.train.optimizer import mixed_precision, recipe_optimizer
from kwsdeploy.train.presets import TrainConfig


def test_adamw_with_warmup_and_cosine_over_the_run():
    cfg = TrainConfig(model="tcresnet8", lr=1e-2, min_lr=1e-4, weight_decay=0.05, warmup_epochs=1.5, epochs=3)
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = recipe_optimizer(model, cfg, steps_per_epoch=4)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["weight_decay"] == 0.05
    assert (scheduler.warmup_steps, scheduler.total_steps) == (6, 12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 6)
    for _ in range(6):
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)
    for _ in range(6):
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_no_mixed_precision_on_cpu_or_when_off():
    for amp, device in [(True, "cpu"), (False, "cpu"), (False, "cuda")]:
        dtype, scaler = mixed_precision(amp, torch.device(device))
        assert dtype is None and not scaler.is_enabled()
