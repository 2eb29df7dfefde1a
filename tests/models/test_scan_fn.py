"""The training scan (SelectiveScanFn, hand-written backward) against the plain-autograd scan it
replaces: forward bit for bit, gradients by float64 gradcheck and within SCAN_GRAD_REL_ATOL in fp32,
and the model's training forward goes through it."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from kwsdeploy import tolerances
from kwsdeploy.models import _mamba_mixer, _scan_fn
from kwsdeploy.models._mamba_mixer import _scan_sequential, _scan_sequential_ref
from kwsdeploy.models._scan_fn import SelectiveScanFn
from kwsdeploy.models.kwm import KeywordMamba

NAMES = ("u", "delta", "A", "B", "C", "h0")


def _inputs(batch, d, n, length, dtype=torch.float32, seed=0):
    """Scan inputs laid out as the mixer makes them: delta from a [B, L, d] Linear output, B and C
    split from one [B, L, r + 2n] projection, u a contiguous [B, d, L] conv output."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, d, length, generator=g, dtype=dtype)
    delta = F.softplus(torch.randn(batch, length, d, generator=g, dtype=dtype) - 1).transpose(1, 2)
    A = -torch.exp(torch.randn(d, n, generator=g, dtype=dtype))
    x_dbl = torch.randn(batch, length, 3 + 2 * n, generator=g, dtype=dtype)
    B, C = x_dbl[..., 3:3 + n].transpose(1, 2), x_dbl[..., 3 + n:].transpose(1, 2)
    h0 = torch.randn(batch, d, n, generator=g, dtype=dtype)
    return [t.detach().requires_grad_() for t in (u, delta, A, B, C, h0)]


def _run(scan, inputs, with_state, seed=1):
    """y, h and the gradients of <y, gy> + <h, gh> (random gy, gh) w.r.t. every input."""
    u, delta, A, B, C, h0 = inputs
    h0 = h0 if with_state else torch.zeros_like(h0)
    y, h = scan(u, delta, A, B, C, h0)
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    loss = loss + (h * torch.randn(h.shape, generator=g, dtype=h.dtype)).sum()
    wrt = inputs if with_state else inputs[:5]
    return y, h, torch.autograd.grad(loss, wrt)


def _graph_names(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        names.add(type(f).__name__)
        todo.extend(g for g, _ in f.next_functions)
    return names


@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("size", [(4, 128, 16, 200), (3, 5, 3, 7)], ids=["kwm64-size", "odd-size"])
def test_forward_is_the_reference_bit_for_bit_and_gradients_agree(size, with_state):
    inputs = _inputs(*size)
    y, h, grads = _run(_scan_sequential, inputs, with_state)
    y_ref, h_ref, grads_ref = _run(_scan_sequential_ref, inputs, with_state)
    assert torch.equal(y, y_ref) and torch.equal(h, h_ref)
    assert "SelectiveScanFnBackward" in _graph_names(y) and "SelectiveScanFnBackward" not in _graph_names(y_ref)
    for name, got, want in zip(NAMES, grads, grads_ref):
        assert got.shape == want.shape
        err = (got - want).abs().max().item() / want.abs().max().item()
        assert err <= tolerances.SCAN_GRAD_REL_ATOL, (name, err)


def test_gradcheck_float64():
    u, delta, A, B, C, h0 = _inputs(2, 3, 4, 6, dtype=torch.float64)
    args = (delta.permute(2, 0, 1), u.permute(2, 0, 1), A, B.permute(2, 0, 1), C.permute(2, 0, 1), h0)
    assert torch.autograd.gradcheck(lambda *a: SelectiveScanFn.apply(*a, False), args)


def test_reused_buffers_give_the_same_gradients_and_a_second_backward_is_refused():
    u, delta, A, B, C, h0 = _inputs(2, 6, 4, 9)
    args = (delta.permute(2, 0, 1), u.permute(2, 0, 1), A, B.permute(2, 0, 1), C.permute(2, 0, 1), h0)
    grads = {}
    for reuse in (True, False):
        y, h = SelectiveScanFn.apply(*args, reuse)
        loss = y.square().sum() + h.sum()
        grads[reuse] = torch.autograd.grad(loss, (u, delta, A, B, C, h0), retain_graph=True)
        if reuse:
            with pytest.raises(RuntimeError, match="inplace"):
                torch.autograd.grad(loss, (u, delta, A, B, C, h0))
        else:  # on copies, the graph can be walked again
            again = torch.autograd.grad(loss, (u, delta, A, B, C, h0))
            assert all(torch.equal(a, b) for a, b in zip(again, grads[False]))
    assert all(torch.equal(a, b) for a, b in zip(grads[True], grads[False]))


def test_the_training_forward_uses_the_function_and_matches_plain_autograd():
    torch.manual_seed(0)
    model = KeywordMamba(num_classes=5, n_mfcc=10, embed_dim=16, depth=2, causal=True, drop_path_rate=0.0,
                         readout="mean").train()
    x = torch.randn(3, 1, 10, 40)
    with torch.no_grad():
        want = model(x)  # no gradient: the plain scan
    logits = model(x)
    assert torch.equal(logits, want)
    assert "SelectiveScanFnBackward" in _graph_names(logits)
    grads = torch.autograd.grad(logits.square().sum(), list(model.parameters()))
    with mock.patch.object(_mamba_mixer, "_scan_sequential", _scan_sequential_ref):
        logits_ref = model(x)
        assert "SelectiveScanFnBackward" not in _graph_names(logits_ref)
        grads_ref = torch.autograd.grad(logits_ref.square().sum(), list(model.parameters()))
    assert torch.equal(logits_ref, logits)
    for (name, _), got, ref in zip(model.named_parameters(), grads, grads_ref):
        err = (got - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
        assert err <= tolerances.SCAN_GRAD_REL_ATOL, (name, err)


def test_buffers_go_back_to_the_pool_and_dirty_buffers_give_the_same_results():
    _scan_fn.release_buffers()
    inputs = _inputs(2, 8, 4, 11)
    first = _run(_scan_sequential, inputs, True)
    assert len(_scan_fn._POOL._free) == 2  # deltaA and the states, holding gradients now
    second = _run(_scan_sequential, inputs, True)  # forward on the reused (dirty) buffers
    assert len(_scan_fn._POOL._free) == 2
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert all(torch.equal(a, b) for a, b in zip(first[2], second[2]))
    _scan_fn.release_buffers()
    assert not _scan_fn._POOL._free
