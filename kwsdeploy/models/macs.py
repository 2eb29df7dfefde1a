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
from torch.overrides import TorchFunctionMode

from kwsdeploy.contract import CLIP_FRAMES


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


def _einsum_macs(equation: str, operands: tuple, out: torch.Tensor) -> int:
    """Output elements x sizes of the summed-over indices; 0 for a pure elementwise (outer) product."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    sizes: dict[str, int] = {}
    for term, op in zip(lhs.split(","), operands):
        head, _, tail = term.partition("...")
        for letter, size in zip(head, op.shape):
            sizes[letter] = int(size)
        for letter, size in zip(tail, op.shape[len(op.shape) - len(tail):] if tail else ()):
            sizes[letter] = int(size)
    if not arrow:  # implicit output: the letters that occur once
        rhs = "".join(c for c in sizes if lhs.count(c) == 1)
    summed = [sizes[c] for c in sizes if c not in rhs]
    return _numel(out.shape) * math.prod(summed) if summed else 0


_MATMULS = {"matmul", "__matmul__", "mm", "bmm"}


def _operator_macs(name: str, args: tuple, kwargs: dict, out: Any) -> int:
    """MACs of one functional convolution / linear / matrix product / attention; 0 for anything else."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if name.startswith("conv_transpose"):
        return _numel(tensors[0].shape) * _numel(tensors[1].shape[1:])
    if name in ("conv1d", "conv2d", "conv3d"):
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return _numel(out.shape) * _numel(weight.shape[1:])
    if name == "linear":
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return _numel(out.shape) * int(weight.shape[-1])
    if name in _MATMULS:
        return _numel(out.shape) * int(tensors[0].shape[-1])
    if name == "__rmatmul__":
        return _numel(out.shape) * int(tensors[1].shape[-1])
    if name in ("addmm", "baddbmm"):
        return _numel(out.shape) * int(tensors[1].shape[-1])
    if name == "einsum":
        operands = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        return _einsum_macs(args[0], tuple(operands), out)
    if name == "scaled_dot_product_attention":
        q, k, v = tensors[:3]
        return _numel(q.shape[:-1]) * int(k.shape[-2]) * (int(q.shape[-1]) + int(v.shape[-1]))
    return 0


class _OperatorCounter(TorchFunctionMode):
    """Counts functional convolutions and matrix products that run outside every hooked module."""

    def __init__(self, total: list[int], depth: list[int]) -> None:
        super().__init__()
        self.total = total
        self.depth = depth

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth[0] == 0 and isinstance(out, torch.Tensor):
            self.total[0] += _operator_macs(getattr(func, "__name__", ""), args, kwargs, out)
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


def macs_per_clip(model: nn.Module, n_mfcc: int, frames: int = CLIP_FRAMES) -> int:
    """MACs to classify one clip of `frames` feature frames: input [1, 1, n_mfcc, frames]."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, 1, n_mfcc, frames, device=device)
    return forward_macs(model, x, frames=frames)
