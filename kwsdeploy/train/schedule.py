"""Learning-rate schedule of the reference recipe: linear warm-up, then cosine decay, per iteration.

Unlike the reference, the warm-up length comes from the config (not hard-coded), and the
schedule's whole state is one integer, so `--resume` restores it exactly.
"""

from __future__ import annotations

import math


def warmup_cosine_lr(step: int, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """LR for iteration `step` (0-based): linear from base/warmup to base, then cosine to `min_lr`."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))


class WarmupCosine:
    """Sets the optimizer's LR before every iteration; `state_dict()` is just the step counter."""

    def __init__(self, optimizer, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        self.optimizer = optimizer
        self.base_lr, self.min_lr = float(base_lr), float(min_lr)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.step_count = 0
        self._apply()

    @property
    def lr(self) -> float:
        return warmup_cosine_lr(self.step_count, self.base_lr, self.min_lr, self.warmup_steps, self.total_steps)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        """Advance one iteration (call after optimizer.step())."""
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
