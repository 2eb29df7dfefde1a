"""Multiply-accumulate counts, measured by running the model once.

Module rules (forward hooks): Conv1d/Conv2d (out elements x in_channels/groups x kernel), Linear
(out elements x in_features), nn.MultiheadAttention (projections + QK^T + AV), and any module that
defines `count_macs(inputs, output) -> int` for its own non-child work (e.g. attention matmuls).
Work outside those modules: a model (or step module) that defines `extra_macs(frames) -> int`
declares it (e.g. a selective scan); one that does not gets its convolutions and matrix products
counted at the operator level (functional step layers with folded weights, say). Biases, norms
and activations are never counted.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


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


def _numel(shape) -> int:
    return math.prod(int(d) for d in shape)


def _operator_macs(func: Any, args: tuple, out: Any) -> int:
    """MACs of one aten convolution / matrix product / fused attention; 0 for anything else."""
    name = func.__name__.split(".")[0]
    if name == "convolution":
        x, w, transposed = args[0], args[1], bool(args[6])
        return (_numel(x.shape) if transposed else _numel(out.shape)) * _numel(w.shape[1:])
    if name in ("mm", "bmm"):
        return _numel(out.shape) * int(args[0].shape[-1])
    if name in ("addmm", "baddbmm"):
        return _numel(out.shape) * int(args[1].shape[-1])
    if name.startswith("_scaled_dot_product"):
        q, k, v = args[:3]
        return _numel(q.shape[:-1]) * int(k.shape[-2]) * (int(q.shape[-1]) + int(v.shape[-1]))
    return 0


class _OperatorCounter(TorchDispatchMode):
    """Counts convolutions and matrix products that run outside every hooked module."""

    def __init__(self, total: list[int], depth: list[int]) -> None:
        super().__init__()
        self.total = total
        self.depth = depth

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.depth[0] == 0:
            self.total[0] += _operator_macs(func, args, out)
        return out


@contextmanager
def count_macs(model: nn.Module, operators: bool = False) -> Iterator[list[int]]:
    """Within the block every forward of a counted layer adds to `total[0]` (batch included).

    operators: also count convolutions / matrix products run outside the hooked modules.
    """
    total, depth = [0], [0]
    handles = []
    for module in model.modules():
        fn = _macs_of(module)
        if fn is None:
            continue

        def enter(m: nn.Module, inputs: tuple) -> None:
            depth[0] += 1

        def leave(m: nn.Module, inputs: tuple, output: Any, fn=fn) -> None:
            depth[0] -= 1
            total[0] += fn(m, inputs, output)

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        if operators:
            with _OperatorCounter(total, depth):
                yield total
        else:
            yield total
    finally:
        for h in handles:
            h.remove()


def forward_macs(model: nn.Module, *inputs: torch.Tensor, frames: int) -> int:
    """MACs of one call `model(*inputs)`: hooked layers plus `model.extra_macs(frames)` if defined,
    else plus the convolutions / matrix products that ran outside hooked layers."""
    extra = getattr(model, "extra_macs", None)
    was_training = model.training
    model.eval()
    try:
        with count_macs(model, operators=not callable(extra)) as total, torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
    return total[0] + (int(extra(frames)) if callable(extra) else 0)


def macs_per_clip(model: nn.Module, n_mfcc: int, frames: int = 98) -> int:
    """MACs to classify one clip of `frames` feature frames: input [1, 1, n_mfcc, frames]."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, 1, n_mfcc, frames, device=device)
    return forward_macs(model, x, frames=frames)
