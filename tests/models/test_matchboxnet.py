"""MatchboxNet: reference counts, 40/64-feature builds, and the reference key layout mapped strictly.

No golden logits exist for MatchboxNet, so the reference's state-dict layout is written here from
its code (networks/matchbox/: ConvASREncoder blocks registered both as `encoder.encoder.<i>` and
as named attributes, `mconv.<5*s + 0/1/2>` = depthwise / pointwise / BatchNorm of sub-block s,
`res.0.0` / `res.0.1` = residual conv / BatchNorm, `decoder.decoder_layers.0` = the head), and a
plain functional forward over those reference keys checks that the mapped model computes the same.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kwsdeploy.models import count_params, create, get_card, load_reference_weights
from kwsdeploy.models.macs import macs_per_clip
from kwsdeploy.models.reference_weights import ReferenceWeightsError

# (reference attribute name, out channels, sub-blocks, kernel, dilation, residual)
REF_BLOCKS = [
    ("conv_block_1", 128, 1, 11, 1, False),
    ("conv_res_block_1", 64, 2, 13, 1, True),
    ("conv_res_block_2", 64, 2, 15, 1, True),
    ("conv_res_block_3", 64, 2, 17, 1, True),
    ("conv_block_2", 128, 1, 29, 2, False),
    ("conv_block_3", 128, 1, 1, 1, False),
]
BN_EPS = 1e-3


def _bn(prefix: str, c: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": 1 + 0.2 * torch.randn(c, generator=gen),
        f"{prefix}.bias": 0.2 * torch.randn(c, generator=gen),
        f"{prefix}.running_mean": 0.3 * torch.randn(c, generator=gen),
        f"{prefix}.running_var": 0.5 + torch.rand(c, generator=gen),
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def reference_state_dict(n_mfcc: int = 64, num_classes: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the reference EncDecBaseModel's key layout and order (both spellings)."""
    gen = torch.Generator().manual_seed(seed)
    blocks: list[dict[str, torch.Tensor]] = []
    cin = n_mfcc
    for _, out, repeat, k, _, residual in REF_BLOCKS:
        block: dict[str, torch.Tensor] = {}
        for s in range(repeat):
            ci = cin if s == 0 else out
            block[f"mconv.{5 * s}.conv.weight"] = torch.randn(ci, 1, k, generator=gen) / k**0.5
            block[f"mconv.{5 * s + 1}.conv.weight"] = torch.randn(out, ci, 1, generator=gen) / ci**0.5
            block.update(_bn(f"mconv.{5 * s + 2}", out, gen))
        if residual:
            block["res.0.0.conv.weight"] = torch.randn(out, cin, 1, generator=gen) / cin**0.5
            block.update(_bn("res.0.1", out, gen))
        blocks.append(block)
        cin = out
    state: dict[str, torch.Tensor] = {}
    for (name, *_), block in zip(REF_BLOCKS, blocks):
        state.update({f"encoder.{name}.{k}": v for k, v in block.items()})
    for i, block in enumerate(blocks):
        state.update({f"encoder.encoder.{i}.{k}": v for k, v in block.items()})
    state["decoder.decoder_layers.0.weight"] = torch.randn(num_classes, 128, generator=gen) / 128**0.5
    state["decoder.decoder_layers.0.bias"] = 0.1 * torch.randn(num_classes, generator=gen)
    return state


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The reference's eval-mode computation, written over its own keys ('same' padding)."""
    def bn(h, p):
        return F.batch_norm(h, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"], state[f"{p}.bias"], False, 0.0, BN_EPS)

    h = x.squeeze(1)
    for i, (_, _, repeat, k, d, residual) in enumerate(REF_BLOCKS):
        p = f"encoder.encoder.{i}"
        inp, out = h, h
        for s in range(repeat):
            w = state[f"{p}.mconv.{5 * s}.conv.weight"]
            out = F.conv1d(out, w, padding=d * (k - 1) // 2, dilation=d, groups=w.shape[0])
            out = bn(F.conv1d(out, state[f"{p}.mconv.{5 * s + 1}.conv.weight"]), f"{p}.mconv.{5 * s + 2}")
            if s < repeat - 1:
                out = F.relu(out)
        if residual:
            out = out + bn(F.conv1d(inp, state[f"{p}.res.0.0.conv.weight"]), f"{p}.res.0.1")
        h = F.relu(out)
    return F.linear(h.mean(-1), state["decoder.decoder_layers.0.weight"], state["decoder.decoder_layers.0.bias"])


def test_reference_layout_has_the_reference_counts():
    state = reference_state_dict()
    assert len(state) == 164  # what the reference's model.state_dict() holds (both spellings)
    canonical = {k: v for k, v in state.items() if not k.startswith("encoder.conv_") and "running" not in k and "num_batches" not in k}
    assert sum(v.numel() for v in canonical.values()) == 90_572


def test_parameter_and_mac_counts():
    card = get_card("matchboxnet")
    assert card.n_mfcc == 64 and card.expected_params == 90_572 and card.reference_name == "matchboxnet"
    assert count_params(create("matchboxnet", n_mfcc=64)) == 90_572
    assert count_params(create("matchboxnet-causal", n_mfcc=64)) == 90_572
    assert count_params(create("matchboxnet", n_mfcc=40)) == 87_236
    assert "87,236" in card.notes
    macs = macs_per_clip(create("matchboxnet", n_mfcc=64), n_mfcc=64)
    assert macs == card.expected_macs == 8_537_728 and round(macs / 1e6, 2) == 8.54  # FACTS.md: 8.54 M


@pytest.mark.parametrize("n_mfcc,num_classes", [(64, 12), (40, 12), (40, 35)])
def test_batch_one_and_both_input_widths(n_mfcc, num_classes):
    model = create("matchboxnet", num_classes=num_classes, n_mfcc=n_mfcc).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, n_mfcc, 98))
    assert out.shape == (1, num_classes)


def test_reference_weights_give_the_reference_computation():
    state = reference_state_dict(seed=1)
    model = load_reference_weights(create("matchboxnet", n_mfcc=64), state).eval()
    x = torch.randn(3, 1, 64, 98, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, ref = model(x), reference_forward(state, x)
    assert (ours - ref).abs().max().item() < 1e-5
    assert torch.equal(model.blocks[1].layers[1].depthwise.weight, state["encoder.encoder.1.mconv.5.conv.weight"])
    assert torch.equal(model.blocks[3].res_bn.running_var, state["encoder.encoder.3.res.0.1.running_var"])


def test_either_spelling_alone_loads_and_round_trips():
    state = reference_state_dict(seed=3)
    named = {k: v for k, v in state.items() if not k.startswith("encoder.encoder.")}
    indexed = {k: v for k, v in state.items() if not k.startswith("encoder.conv_")}
    a = load_reference_weights(create("matchboxnet", n_mfcc=64), named).state_dict()
    b = load_reference_weights(create("matchboxnet", n_mfcc=64), indexed).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # every one of our tensors came from the reference dict, and every reference value landed somewhere
    ref_values = list(indexed.values())
    assert all(any(v.shape == r.shape and torch.equal(v, r) for r in ref_values) for v in a.values())
    assert len(a) == len(indexed)


def test_missing_misshaped_and_conflicting_tensors_are_named():
    state = reference_state_dict()
    indexed = {k: v for k, v in state.items() if not k.startswith("encoder.conv_")}
    missing = {k: v for k, v in indexed.items() if k != "encoder.encoder.2.mconv.6.conv.weight"}
    with pytest.raises(ReferenceWeightsError, match=r"lacks tensor 'blocks\.2\.layers\.1\.pointwise\.weight'") as e:
        load_reference_weights(create("matchboxnet", n_mfcc=64), missing)
    assert "\n" not in str(e.value)
    bad = dict(indexed, **{"encoder.encoder.4.mconv.0.conv.weight": torch.zeros(64, 1, 27)})
    with pytest.raises(ReferenceWeightsError, match=r"blocks\.4\.layers\.0\.depthwise\.weight.*\(64, 1, 29\)"):
        load_reference_weights(create("matchboxnet", n_mfcc=64), bad)
    with pytest.raises(ReferenceWeightsError, match=r"blocks\.0\.layers\.0\.depthwise\.weight"):
        load_reference_weights(create("matchboxnet", n_mfcc=40), indexed)  # 64-feature weights, 40-feature model
    conflict = dict(state)
    conflict["encoder.conv_block_2.mconv.1.conv.weight"] = conflict["encoder.conv_block_2.mconv.1.conv.weight"] + 1
    with pytest.raises(ReferenceWeightsError, match="conv_block_2.mconv.1.conv.weight"):
        load_reference_weights(create("matchboxnet", n_mfcc=64), conflict)
