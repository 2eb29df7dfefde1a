"""The sequential selective scan as one autograd Function with a hand-written backward (CPU training).

Forward: the same values as `_mamba_mixer._scan_sequential_ref`, bitwise (the same elementwise
operations, each rounded once, and the same readout matmul), with the states written into one
preallocated [L, B, d, n] buffer instead of being stacked. Backward: one reverse loop for the state
gradient g_{t-1} = C_{t-1} gy_{t-1} + exp(delta_t A) * g_t, then the gradients of delta, u, A, B, C
as a few batched matmuls over all steps (autograd records 2 ops per step and stacks their grads).
Large [L, B, d, n] tensors are few: a fresh one costs more in page faults than the maths on it, so the
backward writes its gradients over the two buffers the forward saved, so a second backward through
the same graph raises PyTorch's "modified by an inplace operation" error; `reuse_buffers=False` works
on copies instead (same maths, for gradcheck and retain_graph).
"""

from __future__ import annotations

import torch


class SelectiveScanFn(torch.autograd.Function):
    """(delta, u [L, B, d], A [d, n], B, C [L, B, n], h0 [B, d, n], reuse_buffers) -> (y [L, B, d],
    h_L [B, d, n]), with h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t and y_t = h_t . C_t."""

    @staticmethod
    def forward(ctx, delta_t, u_t, A, B_t, C_t, h0, reuse_buffers=True):  # type: ignore[override]
        length, batch, dim = delta_t.shape
        deltaA = delta_t.new_empty((length, batch, dim, A.shape[1]))
        torch.mul(delta_t.unsqueeze(-1), A, out=deltaA).exp_()
        du = delta_t * u_t
        hs = torch.empty_like(deltaA)
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
        if need_C:  # before hs is overwritten
            g_C = torch.bmm(hs.view(lb, dim, n).transpose(1, 2), gy.view(lb, dim, 1)).view(length, batch, n)
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
        gs, gP = hs.view(lb, dim, n), deltaA.view(lb, dim, n).transpose(0, 1)  # [LB, d, n], [d, LB, n]
        if need_A:  # sum over L, B of gP * delta
            g_A = torch.bmm(delta_t.reshape(lb, dim).t().unsqueeze(1), gP).squeeze(1)
        if need_delta:  # sum over n of gP * A
            g_delta = torch.bmm(gP, A.unsqueeze(-1)).squeeze(-1).t().reshape(length, batch, dim)
        if need_B:
            g_B = torch.bmm(gs.transpose(1, 2), du.reshape(lb, dim, 1)).view(length, batch, n)
        if need_delta or need_u:
            g_du = torch.bmm(gs, B_t.reshape(lb, n, 1)).view(length, batch, dim)
            if need_delta:
                g_delta = g_delta + g_du * u_t if g_delta is not None else g_du * u_t
            if need_u:
                g_u = g_du * delta_t
        return g_delta, g_u, g_A, g_B, g_C, g_h0, None
