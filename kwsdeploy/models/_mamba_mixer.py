"""The Mamba (selective SSM) mixer in plain torch, with mamba-ssm's parameter names.

Three forms share one set of weights and one set of equations (those of mamba-ssm's GPU fast
path, `mamba_inner_fn_no_out_proj` + `selective_scan_ref`, SiLU(z) gate included):
- `selective_scan`: the parallel form over a whole sequence (optionally from a carried state);
- `MambaMixer.forward_with_state`: a chunk of frames, carrying conv and SSM state across calls;
- `MambaMixer.step`: one frame, the unrolled recurrence (no loop, exportable to ONNX).
The bidirectional mixer of Keyword Mamba (Vim style) shares in_proj/out_proj and runs a second
branch (conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b) on the time-reversed x and z.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy.models._scan_fn import SelectiveScanFn


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective scan: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t h_t + D u_t, y *= SiLU(z).

    u, delta, z: [B, d, L]; A: [d, n]; B, C: [B, n, L]; D, delta_bias: [d];
    initial_state: [B, d, n] (zeros if None). Returns (y [B, d, L], last state [B, d, n]), fp32 math,
    in the order of operations of mamba-ssm's `selective_scan_ref`. The time loop is sequential (one
    fused multiply-add over [B, d, n] per step; the rest is batched over time): on CPU this beats
    log-space or associative parallel scans at these sizes, and it has no overflow cases.
    """
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    h0 = u.new_zeros((batch, dim, A.shape[1])) if initial_state is None else initial_state.float()
    y, h = _scan_sequential(u, delta, A.float(), B.float(), C.float(), h0)
    if D is not None:
        y = y + D.float()[:, None] * u
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in), h


def _scan_sequential(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan of `_scan_sequential_ref`, bitwise equal forward; when a gradient is needed (and not
    while exporting), through `SelectiveScanFn`, whose hand-written backward batches over time."""
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, h))):
        return _scan_sequential_ref(u, delta, A, B, C, h)
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or u.shape[-1] == 0:
        return _scan_sequential_ref(u, delta, A, B, C, h)
    y, h = SelectiveScanFn.apply(
        delta.permute(2, 0, 1), u.permute(2, 0, 1), A, B.permute(2, 0, 1), C.permute(2, 0, 1), h
    )
    return y.permute(1, 2, 0), h


def _scan_sequential_ref(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """L steps of h = exp(dt A) * h + dt u B over [B, d, n]; readout by one batched matmul. Plain
    autograd (two recorded ops per step): the reference the fast Function is tested against."""
    delta_t = delta.permute(2, 0, 1)  # [L, B, d], a view (layouts follow the inputs' strides)
    deltaA = torch.exp(delta_t.unsqueeze(-1) * A)  # [L, B, d, n]
    deltaB_u = (delta_t * u.permute(2, 0, 1)).unsqueeze(-1) * B.permute(2, 0, 1).unsqueeze(2)
    states = []
    for dA_t, dBu_t in zip(deltaA.unbind(0), deltaB_u.unbind(0)):
        h = torch.addcmul(dBu_t, dA_t, h)
        states.append(h)
    hs = torch.stack(states, dim=0)  # [L, B, d, n]
    y = torch.matmul(hs, C.permute(2, 0, 1).unsqueeze(-1)).squeeze(-1)  # [L, B, d]
    return y.permute(1, 2, 0), h


def causal_depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal depthwise conv1d: x [B, d, L] with `state` [B, d, k-1] (the previous k-1 inputs,
    zeros at the start) as left context. Returns (y [B, d, L], new state [B, d, k-1])."""
    k = weight.shape[-1]
    if state is None:
        state = x.new_zeros((x.shape[0], x.shape[1], k - 1))
    xp = torch.cat([state.to(x.dtype), x], dim=-1)
    y = F.conv1d(xp, weight, bias, groups=x.shape[1])
    # a constant negative start: one Slice node when exported (a start computed from the shape costs 5)
    return y, (xp[..., -(k - 1):] if k > 1 else xp[..., :0])


class MambaMixer(nn.Module):
    """Mamba mixer [B, L, d_model] -> [B, L, d_model]; `bidirectional` adds Vim's backward branch.

    Defaults are the reference's: d_state 16, d_conv 4, expand 2, dt_rank ceil(d_model/16),
    dt in [0.001, 0.1] (inverse-softplus bias), S4D-real A = 1..d_state, D = 1, conv bias,
    no in_proj/out_proj bias.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bidirectional = bidirectional
        di, n = self.d_inner, d_state

        self.in_proj = nn.Linear(d_model, 2 * di, bias=bias)
        self.conv1d = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(di, self.dt_rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, di, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        if bidirectional:
            self.A_b_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
            self.conv1d_b = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=conv_bias)
            self.x_proj_b = nn.Linear(di, self.dt_rank + 2 * n, bias=False)
            self.dt_proj_b = nn.Linear(self.dt_rank, di, bias=True)
            self.D_b = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d_model, bias=bias)
        for p in (self.A_log, self.D) + ((self.A_b_log, self.D_b) if bidirectional else ()):
            p._no_weight_decay = True  # type: ignore[attr-defined]

        # dt_proj: weights U(-r^-0.5, r^-0.5); bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max].
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        if bidirectional:
            # As in the reference: the backward dt_proj keeps torch's default weight init and its
            # bias is zeroed by the model-level init (softplus(0) = 0.69), unlike the forward one.
            nn.init.zeros_(self.dt_proj_b.bias)

    # -- one direction ------------------------------------------------------------------------
    def _branch(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        backward: bool,
        conv_state: torch.Tensor | None = None,
        ssm_state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conv + SiLU, x_proj -> dt/B/C, selective scan with D skip and SiLU(z) gate. x, z: [B, d, L]."""
        conv = self.conv1d_b if backward else self.conv1d
        x_proj = self.x_proj_b if backward else self.x_proj
        dt_proj = self.dt_proj_b if backward else self.dt_proj
        A_log = self.A_b_log if backward else self.A_log
        D = self.D_b if backward else self.D
        xc, conv_state = causal_depthwise_conv(x, conv.weight, conv.bias, conv_state)
        xc = F.silu(xc)
        x_dbl = x_proj(xc.transpose(1, 2))  # [B, L, r + 2n]
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = dt_proj(dt).transpose(1, 2)  # [B, d, L], bias included (added before softplus)
        A = -torch.exp(A_log.float())
        y, ssm_state = selective_scan(
            xc, delta, A, Bm.transpose(1, 2), Cm.transpose(1, 2), D, z, delta_softplus=True,
            initial_state=ssm_state,
        )
        return y, conv_state, ssm_state

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Whole sequence from the zero state: [B, L, d_model] -> [B, L, d_model]."""
        xz = self.in_proj(hidden).transpose(1, 2)  # [B, 2d, L]
        x, z = xz.split(self.d_inner, dim=1)  # one Split node (chunk exports as Shape arithmetic + 2 Slices)
        y, _, _ = self._branch(x, z, backward=False)
        if self.bidirectional:
            y_b, _, _ = self._branch(x.flip(-1), z.flip(-1), backward=True)
            y = (y + y_b.flip(-1)) / 2
        return self.out_proj(y.transpose(1, 2))

    def forward_with_state(
        self, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A chunk [B, L, d_model] continuing from (conv_state [B, d_inner, d_conv-1],
        ssm_state [B, d_inner, d_state]); returns (out, new conv_state, new ssm_state). Causal only."""
        self._require_causal()
        xz = self.in_proj(hidden).transpose(1, 2)
        x, z = xz.split(self.d_inner, dim=1)  # one Split node (chunk exports as Shape arithmetic + 2 Slices)
        y, conv_state, ssm_state = self._branch(x, z, False, conv_state, ssm_state)
        return self.out_proj(y.transpose(1, 2)), conv_state, ssm_state

    def step(
        self, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame of the recurrence: hidden [B, d_model] -> (out [B, d_model], conv_state, ssm_state)."""
        self._require_causal()
        xz = self.in_proj(hidden)
        x, z = xz.split(self.d_inner, dim=-1)  # [B, d_inner] each, one Split node
        window = torch.cat([conv_state, x.unsqueeze(-1)], dim=-1)  # [B, d_inner, d_conv]
        xc = (window * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            xc = xc + self.conv1d.bias
        xc = F.silu(xc)
        dt, Bm, Cm = torch.split(self.x_proj(xc), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # [B, d_inner]
        A = -torch.exp(self.A_log.float())  # [d_inner, d_state]
        dA = torch.exp(dt.unsqueeze(-1) * A)  # [B, d_inner, d_state]
        dBu = torch.matmul((dt * xc).unsqueeze(-1), Bm.unsqueeze(1))  # outer product as MatMul
        h = dA * ssm_state + dBu
        y = torch.matmul(h, Cm.unsqueeze(-1)).squeeze(-1) + self.D * xc
        y = y * F.silu(z)
        return self.out_proj(y), window[:, :, 1:], h

    def state_shapes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Per-sample shapes of (conv_state, ssm_state)."""
        return (self.d_inner, self.d_conv - 1), (self.d_inner, self.d_state)

    def extra_macs(self, tokens: int) -> int:
        """MACs that Linear hooks cannot see: the depthwise conv (called functionally) and the scan
        (about 3 per state element and token: decay, input and readout), per direction."""
        per_token = self.d_inner * self.d_conv + 3 * self.d_inner * self.d_state
        return per_token * tokens * (2 if self.bidirectional else 1)

    def _require_causal(self) -> None:
        if self.bidirectional:
            raise RuntimeError(
                "A bidirectional Mamba mixer needs the whole sequence; it has no step form. "
                "Stream it in 'windowed' mode or use a causal (unidirectional) model."
            )
