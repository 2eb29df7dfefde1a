"""BC-ResNet: parameter counts, MACs, shapes, causality, and the reference golden (bcresnet1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kwsdeploy import tolerances
from kwsdeploy.models import count_params, create, get_card, load_reference_weights
from kwsdeploy.models.reference_weights import ReferenceWeightsError

# FACTS.md (12 classes, 40 MFCC), reference groups=20 head kept
REFERENCE_COUNTS = {"bcresnet1": 9_160, "bcresnet2": 28_152, "bcresnet3": 56_976, "bcresnet6": 202_440, "bcresnet8": 348_576}
FACTS_MACS = {"bcresnet1": 2.41e6, "bcresnet2": 7.2e6, "bcresnet3": 14.4e6, "bcresnet6": 50.3e6, "bcresnet8": 86.1e6}
CARDS = [*REFERENCE_COUNTS, "bcresnet1-causal", "bcresnet8-causal"]


def _conv_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    total = [0]

    def hook(m, inputs, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * int(np.prod(m.kernel_size))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total[0]


@pytest.mark.parametrize("name", CARDS)
def test_parameter_count_equals_reference(name):
    base = name.removesuffix("-causal")
    model = create(name)
    assert count_params(model) == REFERENCE_COUNTS[base] == get_card(name).expected_params


@pytest.mark.parametrize("name", ["bcresnet1", "bcresnet8", "bcresnet8-causal"])
def test_macs_match_facts(name):
    macs = _conv_macs(create(name), torch.zeros(1, 1, 40, 98))
    base = name.removesuffix("-causal")
    assert abs(macs - FACTS_MACS[base]) / FACTS_MACS[base] < 0.005  # FACTS gives 3 significant digits
    assert get_card(name).expected_macs == int(FACTS_MACS[base])


def test_paper_counts_in_card_notes():
    assert "27,152" in get_card("bcresnet2").notes and "groups=20" in get_card("bcresnet2").notes
    assert "320,576" in get_card("bcresnet8").notes


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("num_classes", [12, 35])
def test_output_shape_any_batch_and_classes(batch, num_classes):
    model = create("bcresnet2", num_classes=num_classes).eval()
    with torch.no_grad():
        y = model(torch.randn(batch, 1, 40, 98))
    assert y.shape == (batch, num_classes)  # the reference's squeeze() gave [num_classes] for batch 1
    assert count_params(model) == 28_152 + (num_classes - 12) * 64  # conv4: 32*scale weights per class


def test_unsupported_feature_width_is_a_clear_error():
    with pytest.raises(ValueError, match="n_mfcc=64"):
        create("bcresnet1", n_mfcc=64)


def _first_changed_frame(model: torch.nn.Module, edit_from: int) -> int:
    """Index of the first frame of conv3's (pre-pooling) output that changes when inputs >= edit_from change."""
    captured = []
    handle = model.conv3.register_forward_hook(lambda m, i, o: captured.append(o))
    torch.manual_seed(0)
    x = torch.randn(1, 1, 40, 98)
    x2 = x.clone()
    x2[..., edit_from:] += 1.0
    with torch.no_grad():
        model.eval()(x), model(x2)
    handle.remove()
    diff = (captured[0] - captured[1]).abs().amax(dim=(0, 1, 2))
    return int(torch.nonzero(diff > 0)[0])


def test_causal_config_never_looks_ahead_and_reference_does():
    assert _first_changed_frame(create("bcresnet1-causal"), 60) == 60
    # 'same' padding: up to 58 frames of look-ahead (ReLUs may cut the very longest paths)
    assert 60 - 58 <= _first_changed_frame(create("bcresnet1"), 60) < 60 - 16


def test_reference_golden_bcresnet1(reference_dir):
    state = torch.load(reference_dir / "bcresnet1.pt", weights_only=True)
    model = load_reference_weights(create("bcresnet1"), state).eval()
    features = torch.from_numpy(np.load(reference_dir / "features.npy"))[:, None]
    golden = np.load(reference_dir / "bcresnet1.logits.npy")
    with torch.no_grad():
        logits = model(features).numpy()
    err = float(np.abs(logits - golden).max())
    assert err <= tolerances.REFERENCE_LOGIT_REL_ATOL * float(np.abs(golden).max()), err
    assert (logits.argmax(1) == golden.argmax(1)).all()


def test_reference_weights_load_into_causal_config(reference_dir):
    state = torch.load(reference_dir / "bcresnet1.pt", weights_only=True)
    model = load_reference_weights(create("bcresnet1-causal"), state)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_reference_dataparallel_prefix_is_accepted(reference_dir):
    state = torch.load(reference_dir / "bcresnet1.pt", weights_only=True)
    model = load_reference_weights(create("bcresnet1"), {f"module.{k}": v for k, v in state.items()})
    assert torch.equal(model.block4_4.conv1x1.weight, state["block4_4.conv1x1.weight"])


def test_wrong_width_or_missing_tensor_is_one_line_error(reference_dir):
    state = torch.load(reference_dir / "bcresnet1.pt", weights_only=True)
    with pytest.raises(ReferenceWeightsError, match=r"'conv1\.weight' has shape \(16, 1, 5, 5\)") as err:
        load_reference_weights(create("bcresnet2"), state)
    assert "\n" not in str(err.value)
    del state["block2_1.ssn.bn.running_var"]
    with pytest.raises(ReferenceWeightsError, match="block2_1.ssn.bn.running_var") as err:
        load_reference_weights(create("bcresnet1"), state)
    assert "\n" not in str(err.value)
