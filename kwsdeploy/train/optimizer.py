"""The reference recipe's optimizer: AdamW with warm-up + cosine per iteration, and mixed precision
(bfloat16 where the GPU has it, else float16 with a grad scaler; none on CPU)."""

from __future__ import annotations

import torch

from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.schedule import WarmupCosine


def recipe_optimizer(model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """(AdamW, WarmupCosine) for `cfg.epochs` epochs of `steps_per_epoch` iterations."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = WarmupCosine(optimizer, cfg.lr, cfg.min_lr, round(cfg.warmup_epochs * steps_per_epoch),
                             cfg.epochs * steps_per_epoch)
    return optimizer, scheduler


def mixed_precision(amp: bool, device: torch.device):
    """(autocast dtype or None, GradScaler): the scaler is enabled for float16 only."""
    amp_dtype = None
    if amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return amp_dtype, torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
