"""TC-ResNet: reference parameter/MAC counts, the reference golden logits, strict key mapping, causality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kwsdeploy.models import count_params, create, get_card, load_reference_weights
from kwsdeploy.models.macs import macs_per_clip
from kwsdeploy.models.reference_weights import ReferenceWeightsError
from kwsdeploy.models.registry import kws_info
from kwsdeploy.tolerances import REFERENCE_LOGIT_REL_ATOL

# FACTS.md, 12 classes, 40 MFCC.
FACTS_PARAMS = {"tcresnet8": 65_148, "tcresnet14": 135_836, "tcresnet8-1.5": 144_228, "tcresnet14-1.5": 302_964}
FACTS_MACS_M = {"tcresnet8": 1.52, "tcresnet14": 3.03}


@pytest.mark.parametrize("name", list(FACTS_PARAMS))
def test_parameter_count_matches_reference(name):
    card = get_card(name)
    model = create(name)
    assert count_params(model) == FACTS_PARAMS[name] == card.expected_params
    assert card.reference_name == name and card.streaming == "windowed"
    causal = name + "-causal"
    if name in ("tcresnet8", "tcresnet14"):
        assert count_params(create(causal)) == FACTS_PARAMS[name] == get_card(causal).expected_params
        assert get_card(causal).streaming == "exact"


@pytest.mark.parametrize("name", ["tcresnet8", "tcresnet14", "tcresnet8-1.5", "tcresnet14-1.5", "tcresnet8-causal"])
def test_macs_per_clip_match_card_and_facts(name):
    macs = macs_per_clip(create(name), n_mfcc=40)
    assert macs == get_card(name).expected_macs
    base = name.replace("-causal", "")
    if base in FACTS_MACS_M:
        assert round(macs / 1e6, 2) == FACTS_MACS_M[base]


@pytest.mark.parametrize("num_classes", [1, 12, 35])
def test_batch_one_gives_batch_axis_and_any_class_count(num_classes):
    model = create("tcresnet8", num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 40, 98))
    assert out.shape == (1, num_classes)
    assert kws_info(model).family == "tcresnet" and kws_info(model).num_classes == num_classes


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\[B, 1, 40, T\]"):
        create("tcresnet8")(torch.randn(2, 1, 64, 98))


def test_reference_golden_logits(reference_dir):
    state = torch.load(reference_dir / "tcresnet8.pt", weights_only=True)
    model = load_reference_weights(create("tcresnet8"), state).eval()
    features = torch.from_numpy(np.load(reference_dir / "features.npy"))[:, None]
    golden = np.load(reference_dir / "tcresnet8.logits.npy")
    with torch.no_grad():
        logits = model(features).numpy()
    err = np.abs(logits - golden).max()
    assert err <= REFERENCE_LOGIT_REL_ATOL * np.abs(golden).max()
    assert err < 5e-6  # measured 8.0e-7
    assert (logits.argmax(1) == golden.argmax(1)).all()


def test_reference_map_is_strict(reference_dir):
    state = torch.load(reference_dir / "tcresnet8.pt", weights_only=True)
    missing = {k: v for k, v in state.items() if k != "layers.1.bn2.running_var"}
    with pytest.raises(ReferenceWeightsError, match=r"blocks\.1\.bn2\.running_var"):
        load_reference_weights(create("tcresnet8"), missing)
    bad = dict(state)
    bad["layers.0.conv2.weight"] = torch.zeros(24, 24, 1, 7)
    with pytest.raises(ReferenceWeightsError, match=r"blocks\.0\.conv2\.weight.*\(24, 24, 7\)"):
        load_reference_weights(create("tcresnet8"), bad)
    with pytest.raises(ReferenceWeightsError, match="head.weight"):  # 12-class weights into a 30-class model
        load_reference_weights(create("tcresnet8", num_classes=30), state)
    extra = dict(state, **{"layers.2.extra.weight": torch.zeros(1)})
    with pytest.raises(ReferenceWeightsError, match="unexpected tensor 'blocks.2.extra.weight'"):
        load_reference_weights(create("tcresnet8"), extra)


def test_causal_variant_never_looks_ahead():
    torch.manual_seed(0)
    model = create("tcresnet8-causal").eval()
    x = torch.randn(1, 1, 40, 98)
    y = x.clone()
    y[..., 81:] += 5.0  # change every frame after 80
    def trunk(inp):
        out = model.stem(inp.flatten(1, 2))
        for block in model.blocks:
            out = block(out)
        return out
    with torch.no_grad():
        a, b = trunk(x), trunk(y)
    # last-block frame t reads input frames <= 8t: frames 0..10 are unchanged, frame 11 changes
    assert (a[..., :11] - b[..., :11]).abs().max().item() == 0.0
    assert (a[..., 11:] - b[..., 11:]).abs().max().item() > 1e-3
    same = create("tcresnet8").eval()
    same.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (same(x) - model(x)).abs().max().item() > 1e-4  # the padding really differs
