"""KWT: the reference golden, strict reference loading, the architecture's reference quirks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kwsdeploy import tolerances
from kwsdeploy.models import count_params, create, load_reference_weights
from kwsdeploy.models.reference_weights import ReferenceWeightsError


@pytest.fixture(scope="module")
def reference_state(reference_dir):
    return torch.load(reference_dir / "kwt-1.pt", weights_only=True)


def test_kwt1_reproduces_reference_logits(reference_dir, reference_state):
    model = load_reference_weights(create("kwt-1").eval(), reference_state)
    features = torch.from_numpy(np.load(reference_dir / "features.npy"))[:, None]
    golden = np.load(reference_dir / "kwt-1.logits.npy")
    with torch.no_grad():
        logits = model(features).numpy()
    err = np.abs(logits - golden).max()
    assert err <= tolerances.REFERENCE_LOGIT_REL_ATOL * np.abs(golden).max(), err
    np.testing.assert_array_equal(logits.argmax(1), golden.argmax(1))


def test_kwt1_batch_of_one_matches_the_batch(reference_dir, reference_state):
    model = load_reference_weights(create("kwt-1").eval(), reference_state)
    features = torch.from_numpy(np.load(reference_dir / "features.npy"))[:, None]
    with torch.no_grad():
        whole = model(features)
        single = torch.cat([model(features[i : i + 1]) for i in range(3)])
    assert single.shape == (3, 12)
    assert (whole[:3] - single).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "name, params, has_proj", [("kwt-1", 557_516, False), ("kwt-2", 2_394_508, True)]
)
def test_output_projection_only_with_several_heads(name, params, has_proj):
    model = create(name)
    assert count_params(model) == params
    assert isinstance(model.blocks[0].attn.proj, torch.nn.Linear) is has_proj


def test_wrong_size_reference_weights_are_refused_naming_the_tensor(reference_state):
    with pytest.raises(ReferenceWeightsError, match=r"lacks tensor .blocks\.0\.attn\.proj\.weight"):
        load_reference_weights(create("kwt-2"), reference_state)


def test_missing_and_unexpected_reference_tensors_are_named(reference_state):
    missing = dict(reference_state)
    del missing["transformer.layers.3.1.norm.bias"]
    with pytest.raises(ReferenceWeightsError, match=r"blocks\.3\.norm2\.bias"):
        load_reference_weights(create("kwt-1"), missing)
    extra = dict(reference_state)
    extra["transformer.layers.0.0.fn.to_out.0.weight"] = torch.zeros(64, 64)
    with pytest.raises(ReferenceWeightsError, match=r"blocks\.0\.attn\.proj\.weight"):
        load_reference_weights(create("kwt-1"), extra)


def test_shorter_inputs_use_leading_positions_and_longer_inputs_fail():
    torch.manual_seed(0)
    model = create("kwt-1").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 40, 50)).shape == (2, 12)
    with pytest.raises(ValueError, match="at most 98 frames"):
        model(torch.randn(1, 1, 40, 99))
    with pytest.raises(ValueError, match=r"\[B, 1, n_mfcc, frames\]"):
        model(torch.randn(1, 40, 98))


def test_kwt_streams_windowed_only_and_says_why():
    from kwsdeploy.models import get_card
    from kwsdeploy.streaming.convert import to_streaming

    card = get_card("KWT_1")
    assert card.streaming == "windowed" and "whole" in card.notes
    with pytest.raises(ValueError, match="windowed"):
        to_streaming(create("kwt-1"), mode="exact")
