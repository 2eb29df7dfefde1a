"""The plain-torch Mamba mixer: scan vs an independent float64 recurrence, chunk and step forms vs
the parallel form, the reference's initialisation, and mamba-ssm's kernels where a GPU has them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kwsdeploy import tolerances
from kwsdeploy.models._mamba_mixer import MambaMixer, causal_depthwise_conv, selective_scan
from kwsdeploy.models._mamba_ssm_bridge import mamba_ssm_available


def _scan_inputs(batch=2, d=24, n=16, length=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, d, length, generator=g)
    delta = torch.randn(batch, d, length, generator=g)
    A = -torch.exp(torch.log(torch.arange(1, n + 1.0)).repeat(d, 1) + 0.1 * torch.randn(d, n, generator=g))
    B = torch.randn(batch, n, length, generator=g)
    C = torch.randn(batch, n, length, generator=g)
    D = 1 + 0.1 * torch.randn(d, generator=g)
    z = torch.randn(batch, d, length, generator=g)
    bias = torch.randn(d, generator=g) - 2
    h0 = 0.5 * torch.randn(batch, d, n, generator=g)
    return u, delta, A, B, C, D, z, bias, h0


def _scan_float64(u, delta, A, B, C, D, z, bias, h0):
    """h_t = exp(dt A) h + dt B_t u_t; y = C_t h + D u; y *= silu(z), element by element in float64."""
    u, delta, A, B, C, D, z, bias, h = (t.double() for t in (u, delta, A, B, C, D, z, bias, h0))
    dt = F.softplus(delta + bias[:, None])
    ys = []
    for t in range(u.shape[-1]):
        dtt = dt[:, :, t, None]
        h = torch.exp(dtt * A) * h + dtt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    y = torch.stack(ys, -1) * F.silu(z)
    return y, h


def test_scan_matches_an_independent_float64_recurrence():
    args = _scan_inputs()
    u, delta, A, B, C, D, z, bias, h0 = args
    y, h = selective_scan(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, initial_state=h0)
    y64, h64 = _scan_float64(*args)
    assert (y.double() - y64).abs().max().item() <= tolerances.SCAN_PARITY_ATOL
    assert (h.double() - h64).abs().max().item() <= tolerances.SCAN_PARITY_ATOL
    assert y.shape == u.shape and h.shape == h0.shape


def test_scan_in_two_pieces_with_carried_state_equals_one_scan():
    u, delta, A, B, C, D, z, bias, h0 = _scan_inputs(length=50)
    whole, h_whole = selective_scan(u, delta, A, B, C, D, z, bias, True, h0)
    k = 21
    first, h_mid = selective_scan(u[..., :k], delta[..., :k], A, B[..., :k], C[..., :k], D, z[..., :k], bias, True, h0)
    second, h_end = selective_scan(u[..., k:], delta[..., k:], A, B[..., k:], C[..., k:], D, z[..., k:], bias, True, h_mid)
    assert (torch.cat([first, second], -1) - whole).abs().max().item() <= tolerances.SCAN_PARITY_ATOL
    assert (h_end - h_whole).abs().max().item() <= tolerances.SCAN_PARITY_ATOL


def test_causal_depthwise_conv_equals_padded_conv1d_and_carries_its_state():
    conv = torch.nn.Conv1d(8, 8, 4, groups=8, padding=3)
    x = torch.randn(2, 8, 30)
    want = conv(x)[..., :30]
    got, state = causal_depthwise_conv(x, conv.weight, conv.bias)
    assert (got - want).abs().max().item() < 1e-6
    assert torch.equal(state, x[..., -3:])
    a, s = causal_depthwise_conv(x[..., :11], conv.weight, conv.bias)
    b, _ = causal_depthwise_conv(x[..., 11:], conv.weight, conv.bias, s)
    assert (torch.cat([a, b], -1) - want).abs().max().item() < 1e-6


def test_reference_initialisation():
    torch.manual_seed(0)
    mixer = MambaMixer(192)
    assert (mixer.d_inner, mixer.dt_rank, mixer.d_state, mixer.d_conv) == (384, 12, 16, 4)
    assert torch.allclose(mixer.A_log, torch.log(torch.arange(1, 17.0)).repeat(384, 1))
    assert torch.equal(mixer.A_b_log, mixer.A_log) and torch.equal(mixer.D, torch.ones(384))
    dt = F.softplus(mixer.dt_proj.bias)  # the inverse-softplus bias gives dt in [0.001, 0.1]
    assert dt.min().item() >= 0.001 * (1 - 1e-4) and dt.max().item() <= 0.1 * (1 + 1e-4)
    assert torch.equal(mixer.dt_proj_b.bias, torch.zeros(384))  # the reference zeroes it
    assert mixer.dt_proj.weight.abs().max().item() <= 12**-0.5
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None
    names = {n for n, _ in mixer.named_parameters()}
    assert names == {
        "A_log", "D", "A_b_log", "D_b", "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
        "dt_proj.weight", "dt_proj.bias", "conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight",
        "dt_proj_b.weight", "dt_proj_b.bias", "out_proj.weight",
    }
    causal = MambaMixer(64, bidirectional=False)
    assert not any(n.endswith("_b") or "_b." in n or n.startswith("A_b") for n, _ in causal.named_parameters())


def _randomise(mixer: MambaMixer, seed: int = 1) -> MambaMixer:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return mixer


def test_bidirectional_mixer_is_time_symmetric_when_both_branches_share_weights():
    """With the backward branch a copy of the forward one, reversing the input reverses the output:
    the backward branch runs on time-reversed x and z and its output is flipped back."""
    torch.manual_seed(0)
    mixer = _randomise(MambaMixer(32)).eval()
    with torch.no_grad():
        for f, b in (("conv1d", "conv1d_b"), ("x_proj", "x_proj_b"), ("dt_proj", "dt_proj_b")):
            getattr(mixer, b).load_state_dict(getattr(mixer, f).state_dict())
        mixer.A_b_log.copy_(mixer.A_log)
        mixer.D_b.copy_(mixer.D)
        h = torch.randn(2, 25, 32)
        out, out_rev = mixer(h), mixer(h.flip(1))
    assert (out_rev.flip(1) - out).abs().max().item() < 1e-5
    assert (out - out.flip(1)).abs().max().item() > 1e-3  # and the output is not trivially symmetric


def test_bidirectional_output_is_the_mean_of_gated_branches():
    torch.manual_seed(0)
    mixer = _randomise(MambaMixer(32)).eval()
    h = torch.randn(2, 19, 32)
    with torch.no_grad():
        x, z = mixer.in_proj(h).transpose(1, 2).chunk(2, dim=1)
        y_f, _, _ = mixer._branch(x, z, backward=False)
        y_b, _, _ = mixer._branch(x.flip(-1), z.flip(-1), backward=True)
        want = mixer.out_proj(((y_f + y_b.flip(-1)) / 2).transpose(1, 2))
        assert (mixer(h) - want).abs().max().item() < 1e-6
        # The SiLU(z) gate is inside each branch: gating z to zero silences the SSM output.
        zero_gate, _, _ = mixer._branch(x, torch.full_like(z, -1e4), backward=False)
    assert zero_gate.abs().max().item() < 1e-6


@pytest.mark.parametrize("batch", [1, 3])
def test_step_recurrence_equals_the_parallel_forward_at_every_step(batch):
    torch.manual_seed(0)
    mixer = _randomise(MambaMixer(48, bidirectional=False)).eval()
    h = torch.randn(batch, 40, 48)
    conv_shape, ssm_shape = mixer.state_shapes()
    conv, ssm = torch.zeros(batch, *conv_shape), torch.zeros(batch, *ssm_shape)
    with torch.no_grad():
        want = mixer(h)
        steps = []
        for t in range(h.shape[1]):
            out, conv, ssm = mixer.step(h[:, t], conv, ssm)
            steps.append(out)
        chunk_out, c_conv, c_ssm = mixer.forward_with_state(h, torch.zeros_like(conv), torch.zeros_like(ssm))
    assert (torch.stack(steps, 1) - want).abs().max().item() <= tolerances.SCAN_PARITY_ATOL
    assert (chunk_out - want).abs().max().item() <= tolerances.SCAN_PARITY_ATOL
    assert (c_ssm - ssm).abs().max().item() <= tolerances.SCAN_PARITY_ATOL
    assert (c_conv - conv).abs().max().item() <= tolerances.SCAN_PARITY_ATOL


def test_bidirectional_mixer_refuses_to_step():
    mixer = MambaMixer(16)
    with pytest.raises(RuntimeError, match="windowed"):
        mixer.step(torch.zeros(1, 16), torch.zeros(1, 32, 3), torch.zeros(1, 32, 16))


def test_extra_macs_count_conv_taps_and_three_per_scan_element():
    assert MambaMixer(64, bidirectional=False).extra_macs(1) == 128 * 4 + 3 * 128 * 16
    assert MambaMixer(192).extra_macs(99) == 2 * 99 * (384 * 4 + 3 * 384 * 16)


@pytest.mark.skipif(not mamba_ssm_available(), reason="mamba-ssm with CUDA is not available")
def test_scan_and_step_agree_with_mamba_ssm_kernels():
    from kwsdeploy.models._mamba_ssm_bridge import load_mamba_ssm

    ops = load_mamba_ssm()
    dev = torch.device("cuda")
    u, delta, A, B, C, D, z, bias, _ = (t.to(dev) for t in _scan_inputs(batch=2, d=64, length=99))
    ours, _ = selective_scan(u, delta, A, B, C, D, z, bias, True)
    theirs = ops.selective_scan_fn(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    assert (ours - theirs).abs().max().item() <= tolerances.SCAN_PARITY_ATOL

    torch.manual_seed(0)
    mixer = _randomise(MambaMixer(32, bidirectional=False)).to(dev).eval()
    hidden = torch.randn(3, 32, device=dev)
    conv = torch.randn(3, mixer.d_inner, mixer.d_conv - 1, device=dev)
    ssm = torch.randn(3, mixer.d_inner, mixer.d_state, device=dev)
    with torch.no_grad():
        out, _, new_ssm = mixer.step(hidden, conv, ssm)
        x, zz = mixer.in_proj(hidden).chunk(2, dim=-1)
        window = torch.cat([conv, x.unsqueeze(-1)], -1)
        xc = F.silu((window * mixer.conv1d.weight[:, 0]).sum(-1) + mixer.conv1d.bias)
        dt, Bm, Cm = torch.split(mixer.x_proj(xc), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
        state = ssm.clone()
        y = ops.selective_state_update(
            state, xc, dt @ mixer.dt_proj.weight.t(), -torch.exp(mixer.A_log), Bm, Cm, mixer.D,
            z=zz, dt_bias=mixer.dt_proj.bias, dt_softplus=True,
        )
        theirs_out = mixer.out_proj(y)
    assert (out - theirs_out).abs().max().item() <= tolerances.SCAN_PARITY_ATOL
    assert (new_ssm - state).abs().max().item() <= tolerances.SCAN_PARITY_ATOL
    assert math.isfinite(out.abs().max().item())
