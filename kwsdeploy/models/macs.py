"""Multiply-accumulate counts, measured by running the model once with forward hooks.

Counted: Conv1d/Conv2d (out elements x in_channels/groups x kernel), Linear (out elements x
in_features), nn.MultiheadAttention (projections + QK^T + AV), and any module that defines
`count_macs(inputs, output) -> int` for its own non-child work (e.g. attention matmuls). A model
(or step module) may also define `extra_macs(frames) -> int` for work no hook sees (a selective
scan, say); it is added once per forward. Biases, norms and activations are not counted.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn


def _conv_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return int(output.numel()) * per_output


def _linear_macs(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> int:
    return int(output.numel()) * module.in_features


def _mha_macs(module: nn.MultiheadAttention, inputs: tuple, output: Any) -> int:
    query, key, value = inputs[:3]
    if module.batch_first or query.dim() == 2:
        lq, lk = query.shape[-2], key.shape[-2]
    else:
        lq, lk = query.shape[0], key.shape[0]
    batch = query.numel() // (lq * query.shape[-1])
    e = module.embed_dim
    proj = lq * e * e + lk * module.kdim * e + lk * module.vdim * e + lq * e * e  # q, k, v, out
    matmuls = 2 * lq * lk * e  # QK^T and AV over all heads
    return batch * (proj + matmuls)


def _macs_of(module: nn.Module) -> Callable[[nn.Module, tuple, Any], int] | None:
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return _conv_macs
    if isinstance(module, nn.Linear):
        return _linear_macs
    if isinstance(module, nn.MultiheadAttention):
        return _mha_macs
    own = getattr(module, "count_macs", None)
    if callable(own):
        return lambda m, i, o: int(own(i, o))
    return None


@contextmanager
def count_macs(model: nn.Module) -> Iterator[list[int]]:
    """Within the block every forward of a counted layer adds to `total[0]` (batch included)."""
    total = [0]
    handles = []
    for module in model.modules():
        fn = _macs_of(module)
        if fn is None:
            continue

        def hook(m: nn.Module, inputs: tuple, output: Any, fn=fn) -> None:
            total[0] += fn(m, inputs, output)

        handles.append(module.register_forward_hook(hook))
    try:
        yield total
    finally:
        for h in handles:
            h.remove()


def forward_macs(model: nn.Module, *inputs: torch.Tensor, frames: int) -> int:
    """MACs of one call `model(*inputs)` (plus `model.extra_macs(frames)` if it defines it)."""
    was_training = model.training
    model.eval()
    try:
        with count_macs(model) as total, torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
    extra = getattr(model, "extra_macs", None)
    return total[0] + (int(extra(frames)) if callable(extra) else 0)


def macs_per_clip(model: nn.Module, n_mfcc: int, frames: int = 98) -> int:
    """MACs to classify one clip of `frames` feature frames: input [1, 1, n_mfcc, frames]."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, 1, n_mfcc, frames, device=device)
    return forward_macs(model, x, frames=frames)
