"""Keyword Mamba: the reference golden, KWMT through an independent float64 re-implementation of
the reference's fast-path equations, strict key mapping, init facts, and the causal variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kwsdeploy import tolerances
from kwsdeploy.models import count_params, create, get_card, load_reference_weights
from kwsdeploy.models.reference_weights import ReferenceWeightsError
from kwsdeploy.models.registry import kws_info

PARAMS = {
    "kwm-64-12": 499_084, "kwm-128-12": 1_637_132, "kwm-192-12": 3_414_156,
    "kwmt-64-12": 698_764, "kwmt-128-12": 2_429_708, "kwmt-192-12": 5_192_844,
}


# --- an independent float64 reading of the reference (TorchKWS kwm.py / kwmt.py, fast path) ------

def _reference_layout(dim: int, depth: int, ffn: bool, classes: int = 12, n_mfcc: int = 40) -> dict:
    """Key -> shape of the reference's state dict, written from FACTS.md and the reference code."""
    di, r, n = 2 * dim, math.ceil(dim / 16), 16
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, 99, dim), "to_patch_embedding.1.weight": (dim, n_mfcc),
              "to_patch_embedding.1.bias": (dim,), "norm_f.weight": (dim,), "head.weight": (classes, dim),
              "head.bias": (classes,)}
    for i in range(depth):
        p = f"layers.{i}."
        shapes.update({p + "norm.weight": (dim,), p + "mixer.in_proj.weight": (2 * di, dim),
                       p + "mixer.out_proj.weight": (dim, di)})
        for s in ("", "_b"):
            shapes.update({
                p + f"mixer.conv1d{s}.weight": (di, 1, 4), p + f"mixer.conv1d{s}.bias": (di,),
                p + f"mixer.x_proj{s}.weight": (r + 2 * n, di), p + f"mixer.dt_proj{s}.weight": (di, r),
                p + f"mixer.dt_proj{s}.bias": (di,), p + ("mixer.A_log" if not s else "mixer.A_b_log"): (di, n),
                p + f"mixer.D{s}": (di,),
            })
        if ffn:
            shapes.update({p + "norm2.weight": (dim,), p + "fn.net.0.weight": (2 * dim, dim),
                           p + "fn.net.0.bias": (2 * dim,), p + "fn.net.3.weight": (dim, 2 * dim),
                           p + "fn.net.3.bias": (dim,)})
    return shapes


def _random_reference_state(dim: int, depth: int, ffn: bool, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _reference_layout(dim, depth, ffn).items():
        if key.endswith(("A_log", "A_b_log")):
            value = torch.log(torch.arange(1, 17.0)).expand(shape) + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith(("norm.weight", "norm2.weight", "norm_f.weight", ".D", ".D_b")):
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        elif "dt_proj" in key and key.endswith("bias"):
            value = torch.log(torch.expm1(0.001 + 0.1 * torch.rand(shape, generator=g)))
        else:
            value = torch.randn(shape, generator=g) / math.sqrt(shape[-1])
        state[key] = value.contiguous()
    return state


def _rms(x, w):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-5) * w


def _ssm_branch(sd, p, s, x, z):
    """One direction: causal conv + SiLU, x_proj -> dt/B/C, recurrence, D skip, SiLU(z). x, z: [B, L, di]."""
    w, b = sd[p + f"conv1d{s}.weight"][:, 0], sd[p + f"conv1d{s}.bias"]
    k = w.shape[-1]
    xp = F.pad(x, (0, 0, k - 1, 0))
    xc = F.silu(sum(xp[:, j : j + x.shape[1]] * w[:, j] for j in range(k)) + b)
    A = -torch.exp(sd[p + ("A_log" if not s else "A_b_log")])
    r, n = sd[p + f"dt_proj{s}.weight"].shape[1], A.shape[1]
    x_dbl = xc @ sd[p + f"x_proj{s}.weight"].T
    dt = F.softplus(x_dbl[..., :r] @ sd[p + f"dt_proj{s}.weight"].T + sd[p + f"dt_proj{s}.bias"])
    Bm, Cm = x_dbl[..., r : r + n], x_dbl[..., r + n :]
    h = torch.zeros(x.shape[0], x.shape[2], n, dtype=x.dtype)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * xc[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + sd[p + f"D{s}"] * xc[:, t])
    return torch.stack(ys, 1) * F.silu(z)


def _reference_forward(state: dict, features: torch.Tensor, depth: int, ffn: bool) -> torch.Tensor:
    """The reference model's eval forward in float64 from its own state dict. features: [B, 40, 98]."""
    sd = {k: v.double() for k, v in state.items()}
    x = features.double().transpose(1, 2) @ sd["to_patch_embedding.1.weight"].T + sd["to_patch_embedding.1.bias"]
    x = torch.cat([x[:, :49], sd["cls_token"].expand(x.shape[0], 1, -1), x[:, 49:]], 1) + sd["pos_embed"]
    hidden, residual = x, None
    for i in range(depth):
        p = f"layers.{i}."
        residual = hidden if residual is None else residual + hidden
        h = _rms(residual, sd[p + "norm.weight"])
        xx, zz = (h @ sd[p + "mixer.in_proj.weight"].T).chunk(2, dim=-1)
        y_f = _ssm_branch(sd, p + "mixer.", "", xx, zz)
        y_b = _ssm_branch(sd, p + "mixer.", "_b", xx.flip(1), zz.flip(1)).flip(1)
        hidden = ((y_f + y_b) / 2) @ sd[p + "mixer.out_proj.weight"].T
        if ffn:
            residual = residual + hidden
            h2 = _rms(residual, sd[p + "norm2.weight"])
            h2 = F.gelu(h2 @ sd[p + "fn.net.0.weight"].T + sd[p + "fn.net.0.bias"])
            hidden = h2 @ sd[p + "fn.net.3.weight"].T + sd[p + "fn.net.3.bias"]
    out = _rms(residual + hidden, sd["norm_f.weight"])
    return out[:, 49] @ sd["head.weight"].T + sd["head.bias"]


@pytest.fixture(scope="module")
def features(reference_dir):
    return torch.from_numpy(np.load(reference_dir / "features.npy"))


@pytest.fixture(scope="module")
def kwm64_state(reference_dir):
    return torch.load(reference_dir / "kwm-64-12.pt", weights_only=True)


# --- tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_counts_equal_the_reference(name):
    assert count_params(create(name)) == PARAMS[name] == get_card(name).expected_params


def test_kwm64_reproduces_reference_logits(features, kwm64_state, reference_dir):
    model = load_reference_weights(create("kwm-64-12").eval(), kwm64_state)
    golden = np.load(reference_dir / "kwm-64-12.logits.npy")
    with torch.no_grad():
        logits = model(features[:, None]).numpy()
    err = np.abs(logits - golden).max()
    assert err <= tolerances.REFERENCE_LOGIT_REL_ATOL * np.abs(golden).max(), err
    np.testing.assert_array_equal(logits.argmax(1), golden.argmax(1))


def test_reference_layout_written_from_facts_is_the_reference_checkpoints(kwm64_state):
    layout = _reference_layout(64, 12, ffn=False)
    assert set(layout) == set(kwm64_state)
    assert all(tuple(kwm64_state[k].shape) == s for k, s in layout.items())


def test_independent_float64_reference_reproduces_the_golden(features, kwm64_state, reference_dir):
    """Validates the test's own re-implementation before it judges KWMT (3 clips keep it fast)."""
    golden = np.load(reference_dir / "kwm-64-12.logits.npy")[:3]
    with torch.no_grad():
        ref = _reference_forward(kwm64_state, features[:3], depth=12, ffn=False).numpy()
    assert np.abs(ref - golden).max() <= tolerances.REFERENCE_LOGIT_REL_ATOL * np.abs(golden).max()


def test_kwmt_reference_state_dict_loads_and_matches_the_reference_equations(features):
    state = _random_reference_state(64, 12, ffn=True)
    assert sum(v.numel() for v in state.values()) == PARAMS["kwmt-64-12"]
    model = load_reference_weights(create("kwmt-64-12").eval(), state)
    # Every reference tensor landed where the key map says (spot checks of each renamed kind).
    assert torch.equal(model.patch_embed.weight, state["to_patch_embedding.1.weight"])
    assert torch.equal(model.layers[5].ffn.fc1.bias, state["layers.5.fn.net.0.bias"])
    assert torch.equal(model.layers[11].ffn.fc2.weight, state["layers.11.fn.net.3.weight"])
    assert torch.equal(model.layers[3].norm2.weight, state["layers.3.norm2.weight"])
    assert torch.equal(model.layers[7].mixer.A_b_log, state["layers.7.mixer.A_b_log"])
    with torch.no_grad():
        ours = model(features[:2, None]).double()
        ref = _reference_forward(state, features[:2], depth=12, ffn=True)
    err = (ours - ref).abs().max().item()
    assert err <= tolerances.REFERENCE_LOGIT_REL_ATOL * ref.abs().max().item(), err


def test_swapped_forward_and_backward_branches_are_caught_by_the_golden(features, kwm64_state, reference_dir):
    """The golden is sensitive to the architecture details a parameter count cannot see."""
    golden = np.load(reference_dir / "kwm-64-12.logits.npy")
    swapped = dict(kwm64_state)
    for i in range(12):
        for f, b in (("conv1d.weight", "conv1d_b.weight"), ("x_proj.weight", "x_proj_b.weight"), ("A_log", "A_b_log")):
            swapped[f"layers.{i}.mixer.{f}"], swapped[f"layers.{i}.mixer.{b}"] = (
                kwm64_state[f"layers.{i}.mixer.{b}"], kwm64_state[f"layers.{i}.mixer.{f}"])
    model = load_reference_weights(create("kwm-64-12").eval(), swapped)
    with torch.no_grad():
        err = np.abs(model(features[:, None]).numpy() - golden).max()
    assert err > 100 * tolerances.REFERENCE_LOGIT_REL_ATOL * np.abs(golden).max()


def test_reference_loading_is_strict_and_names_the_tensor(kwm64_state):
    missing = dict(kwm64_state)
    del missing["layers.4.mixer.D_b"]
    with pytest.raises(ReferenceWeightsError, match=r"layers\.4\.mixer\.D_b"):
        load_reference_weights(create("kwm-64-12"), missing)
    extra = dict(kwm64_state, **{"layers.0.mixer.layernorm.weight": torch.ones(128)})
    with pytest.raises(ReferenceWeightsError, match=r"layers\.0\.mixer\.layernorm\.weight"):
        load_reference_weights(create("kwm-64-12"), extra)
    with pytest.raises(ReferenceWeightsError, match=r"lacks tensor .layers\.0\.norm2\.weight"):
        load_reference_weights(create("kwmt-64-12"), kwm64_state)
    with pytest.raises(ReferenceWeightsError, match=r"shape"):
        load_reference_weights(create("kwm-128-12"), kwm64_state)
    with pytest.raises(ReferenceWeightsError, match="causal"):
        load_reference_weights(create("kwm-causal-64-4"), kwm64_state)


def test_reference_init_and_stochastic_depth_schedule():
    torch.manual_seed(0)
    model = create("kwm-192-12")
    rates = [layer.drop_path.p for layer in model.layers]
    assert rates[0] == 0.0 and rates[1] == 0.0
    assert rates[11] == pytest.approx(0.1 * 10 / 11) and model.drop_path.p == pytest.approx(0.1)
    for name, p in model.named_parameters():
        if name.endswith("bias") and "conv1d" not in name and not name.endswith("mixer.dt_proj.bias"):
            assert torch.count_nonzero(p) == 0, name  # every Linear bias but the forward dt_proj's
    bound = 1 / math.sqrt(384) / math.sqrt(12)  # out_proj: kaiming-uniform / sqrt(depth)
    w = model.layers[0].mixer.out_proj.weight
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.9 * bound
    assert model.pos_embed.shape == (1, 99, 192) and model.pos_embed.std().item() == pytest.approx(0.02, rel=0.05)


def test_dropout_paths_are_identity_in_eval_and_active_in_training(features):
    torch.manual_seed(0)
    model = create("kwm-64-12")
    x = features[:2, None]
    with torch.no_grad():
        a, b = model.eval()(x), model(x)
        assert torch.equal(a, b)
        torch.manual_seed(1)
        c = model.train()(x)
    assert (a - c).abs().max().item() > 0


def test_bidirectional_model_needs_a_full_second():
    with pytest.raises(ValueError, match="exactly 98 frames"):
        create("kwm-64-12")(torch.zeros(1, 1, 40, 90))
    with pytest.raises(ValueError, match="40 MFCC"):
        create("kwm-64-12")(torch.zeros(1, 1, 20, 98))


@pytest.mark.parametrize("classes", [10, 35])
def test_any_number_of_classes(classes):
    model = create("kwmt-64-12", num_classes=classes).eval()
    assert count_params(model) == PARAMS["kwmt-64-12"] + 65 * (classes - 12)
    assert model(torch.randn(1, 1, 40, 98)).shape == (1, classes)


def test_causal_model_is_causal_and_its_last_step_is_the_offline_output():
    torch.manual_seed(0)
    model = create("kwm", readout="last").eval()
    assert kws_info(model).name == "kwm-causal-64-4" and count_params(model) == 134_284
    x = torch.randn(2, 1, 40, 98)
    late = x.clone()
    late[..., 60:] += torch.randn(2, 1, 40, 38)
    with torch.no_grad():
        seq, seq_late = model.forward_sequence(x), model.forward_sequence(late)
        assert (model(x) - seq[:, -1]).abs().max().item() < 1e-6
    assert torch.equal(seq[:, :60], seq_late[:, :60])  # frames after t never change step t
    assert (seq[:, 60:] - seq_late[:, 60:]).abs().max().item() > 1e-4
    assert not hasattr(model, "pos_embed") and not hasattr(model, "cls_token")


def test_causal_cards_read_the_mean_of_the_per_frame_logits():
    torch.manual_seed(0)
    model = create("kwm").eval()
    assert model.readout == "mean"
    x = torch.randn(2, 1, 40, 98)
    with torch.no_grad():
        assert (model(x) - model.forward_sequence(x).mean(1)).abs().max().item() < 1e-6
    with pytest.raises(ValueError, match="readout"):
        create("kwm-64-12", readout="mean")


def test_extra_macs_bring_hooked_counts_to_the_reference_figures():
    """Linear MACs (what hooks see) plus extra_macs land within 0.2 % of FACTS.md's figures."""
    for name in ("kwm-64-12", "kwmt-64-12"):
        model, card = create(name).eval(), get_card(name)
        linear = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
        patch_head = 40 * 64 + 64 * 12
        hooked = (linear - patch_head) * 99 + 40 * 64 * 98 + 64 * 12
        total = hooked + model.extra_macs(98)
        assert abs(total - card.expected_macs) / card.expected_macs < 2e-3, (name, total)
    assert create("kwm-causal-64-4").extra_macs(1) == 4 * (128 * 4 + 3 * 128 * 16)
