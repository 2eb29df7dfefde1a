"""The sequential selective scan as one autograd Function with a hand-written backward (CPU training).

Forward: the same values as `_mamba_mixer._scan_sequential_ref`, bitwise (the same elementwise
operations, each rounded once, and the same readout matmul), with the states written into one
preallocated [L, B, d, n] buffer instead of being stacked. Backward: one reverse loop for the state
gradient g_{t-1} = C_{t-1} gy_{t-1} + exp(delta_t A) * g_t, then the gradients of delta, u, A, B, C
as a few batched matmuls over all steps (autograd records 2 ops per step and stacks their grads).
A fresh [L, B, d, n] tensor costs more in page faults than the maths on it, so there are two: the
backward writes its gradients over the buffers the forward saved, then hands them to the next forward
(`_BufferPool`). A second backward through the same graph therefore raises PyTorch's "modified by an
inplace operation" error; `reuse_buffers=False` works on copies (same maths; gradcheck, retain_graph).
"""

from __future__ import annotations

import threading

import torch

POOL_MAX_BYTES = 1 << 30  # at most this much of freed state buffers is kept for reuse


class _BufferPool:
    """The [L, B, d, n] buffers a backward is done with, kept for the next forward on CPU (a fresh
    52 MB tensor is page-faulted in on first touch, which costs more than the maths on it)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._free: list[torch.Tensor] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        with self._lock:
            for i, t in enumerate(self._free):
                if t.shape == shape and t.dtype == like.dtype and t.device == like.device:
                    return self._free.pop(i)
        return like.new_empty(shape)

    def give(self, *tensors: torch.Tensor) -> None:
        with self._lock:
            self._free.extend(t for t in tensors if t.device.type == "cpu" and t.is_contiguous())
            while sum(f.numel() * f.element_size() for f in self._free) > self.max_bytes:
                self._free.pop(0)  # the oldest first: shapes in use now stay

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


_POOL = _BufferPool(POOL_MAX_BYTES)


def release_buffers() -> None:
    """Drop the state buffers kept for reuse (memory goes back once nothing else holds them)."""
    _POOL.clear()


class SelectiveScanFn(torch.autograd.Function):
    """(delta, u [L, B, d], A [d, n], B, C [L, B, n], h0 [B, d, n], reuse_buffers) -> (y [L, B, d],
    h_L [B, d, n]), with h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t and y_t = h_t . C_t."""

    @staticmethod
    def forward(ctx, delta_t, u_t, A, B_t, C_t, h0, reuse_buffers=True):  # type: ignore[override]
        length, batch, dim = delta_t.shape
        shape = (length, batch, dim, A.shape[1])
        deltaA = _POOL.take(shape, delta_t) if reuse_buffers else delta_t.new_empty(shape)
        torch.mul(delta_t.unsqueeze(-1), A, out=deltaA).exp_()
        du = delta_t * u_t
        hs = _POOL.take(shape, delta_t) if reuse_buffers else delta_t.new_empty(shape)
        dBu = deltaA.new_empty(deltaA.shape[1:])
        h = h0
        for t in range(length):
            torch.mul(du[t].unsqueeze(-1), B_t[t].unsqueeze(1), out=dBu)
            h = torch.addcmul(dBu, deltaA[t], h, out=hs[t])
        y = torch.matmul(hs, C_t.unsqueeze(-1)).squeeze(-1)  # [L, B, d]
        ctx.save_for_backward(delta_t, u_t, A, B_t, C_t, h0, du, deltaA, hs)
        ctx.reuse_buffers = bool(reuse_buffers)
        return y, hs[length - 1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gh):  # type: ignore[override]
        delta_t, u_t, A, B_t, C_t, h0, du, deltaA, hs = ctx.saved_tensors
        need_delta, need_u, need_A, need_B, need_C, need_h0 = ctx.needs_input_grad[:6]
        if not ctx.reuse_buffers:
            deltaA, hs = deltaA.clone(), hs.clone()
        length, batch, dim, n = hs.shape
        lb = length * batch
        gy = torch.zeros_like(du) if gy is None else gy.contiguous()
        g_C = g_B = g_A = g_h0 = g_delta = g_u = None
        # The contractions as batched row-vector x matrix products ([1, k] @ [k, m]): on CPU several
        # times faster than the matrix x column-vector form of the same sums.
        if need_C:  # before hs is overwritten
            g_C = torch.bmm(gy.view(lb, 1, dim), hs.view(lb, dim, n)).view(length, batch, n)
        # Reverse loop. g_t = dL/dh_t goes into hs[t] (h_t is no longer needed once g_t exists), and
        # gP_t = dL/d(delta_t A) = g_t * exp(delta_t A) * h_{t-1} into deltaA[t].
        gy4, C4 = gy.unsqueeze(-1), C_t.unsqueeze(2)
        q = hs.new_empty(hs.shape[1:])  # q_t = exp(delta_t A) * g_t, the share of h_{t-1}
        if gh is None:
            torch.mul(gy4[-1], C4[-1], out=hs[-1])
        else:
            torch.addcmul(gh, gy4[-1], C4[-1], out=hs[-1])
        for t in range(length - 1, 0, -1):
            torch.mul(deltaA[t], hs[t], out=q)
            torch.mul(q, hs[t - 1], out=deltaA[t])
            torch.addcmul(q, gy4[t - 1], C4[t - 1], out=hs[t - 1])
        torch.mul(deltaA[0], hs[0], out=q)
        if need_h0:
            g_h0 = q.clone()
        torch.mul(q, h0, out=deltaA[0])
        gs, gP = hs.view(lb, dim, n), deltaA.view(lb, dim, n)
        if need_A:  # sum over L, B of gP * delta, in blocks of rows that stay in cache
            g_A = _sum_rows_scaled(gP, delta_t.reshape(lb, dim))
        if need_delta:  # sum over n of gP * A
            g_delta = torch.bmm(A.unsqueeze(1), gP.permute(1, 2, 0)).view(dim, lb).t().reshape(length, batch, dim)
        if need_B:
            g_B = torch.bmm(du.reshape(lb, 1, dim), gs).view(length, batch, n)
        if need_delta or need_u:
            g_du = torch.bmm(B_t.reshape(lb, 1, n), gs.transpose(1, 2)).view(length, batch, dim)
            if need_delta:
                g_delta = g_delta + g_du * u_t if g_delta is not None else g_du * u_t
            if need_u:
                g_u = g_du * delta_t
        if ctx.reuse_buffers:  # no gradient above is a view of them
            _POOL.give(deltaA, hs)
        return g_delta, g_u, g_A, g_B, g_C, g_h0, None


def _sum_rows_scaled(x: torch.Tensor, w: torch.Tensor, block: int = 256) -> torch.Tensor:
    """sum over k of x[k, d, n] * w[k, d, None] -> [d, n], block by block (no large temporary)."""
    out = x.new_zeros(x.shape[1:])
    tmp = x.new_empty((min(block, x.shape[0]),) + tuple(x.shape[1:]))
    for i in range(0, x.shape[0], block):
        xs = x[i:i + block]
        prod = torch.mul(xs, w[i:i + block].unsqueeze(-1), out=tmp[: xs.shape[0]])
        out += prod.sum(0)
    return out
