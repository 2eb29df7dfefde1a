"""Warm-up + cosine schedule: exact values at the ends and the join."""

import math

import pytest
import torch

from kwsdeploy.train.schedule import WarmupCosine, warmup_cosine_lr


def test_warmup_is_linear_and_cosine_reaches_min_lr():
    lrs = [warmup_cosine_lr(s, 1e-3, 1e-8, 10, 110) for s in range(111)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)  # last warm-up step reaches the base LR
    assert lrs[10] == pytest.approx(1e-3)  # cosine starts at the base LR
    assert lrs[60] == pytest.approx(1e-8 + 0.5 * (1e-3 - 1e-8))  # half way down
    assert lrs[110] == pytest.approx(1e-8)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_scheduler_state_round_trip_sets_the_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    s = WarmupCosine(opt, 1e-3, 1e-8, 4, 20)
    for _ in range(7):
        s.step()
    s2 = WarmupCosine(torch.optim.AdamW([p], lr=1.0), 1e-3, 1e-8, 4, 20)
    s2.load_state_dict(s.state_dict())
    expected = 1e-8 + 0.5 * (1e-3 - 1e-8) * (1 + math.cos(math.pi * 3 / 16))
    assert s2.optimizer.param_groups[0]["lr"] == pytest.approx(expected) == opt.param_groups[0]["lr"]
