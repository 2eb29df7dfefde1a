"""train --init: a shipped checkpoint's weights start a run with another label set."""

from __future__ import annotations

import pytest
import torch

from kwsdeploy.config import FeatureConfig
from kwsdeploy.models import create
from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint
from kwsdeploy.train.warm_start import warm_start


def test_rows_follow_the_labels_and_a_new_class_stays_fresh():
    path = demo_checkpoint_path("tcresnet8-causal")
    old = load_checkpoint(path)
    assert "marvin" not in old.labels
    labels = [lab for lab in old.labels if lab != "_silence_"] + ["marvin", "_silence_"]  # a class it never had
    torch.manual_seed(0)
    model = create("tcresnet8-causal", num_classes=len(labels), n_mfcc=40)
    fresh_new = model.head.weight[labels.index("marvin")].clone()
    info = warm_start(model, path, labels, old.feature_config)
    assert info["head_rows"] == 2 * len(old.labels)  # weight and bias rows of every shared label
    assert info["skipped"] == []
    for lab in old.labels:
        torch.testing.assert_close(model.head.weight[labels.index(lab)], old.model.head.weight[old.labels.index(lab)])
    torch.testing.assert_close(model.head.weight[labels.index("marvin")], fresh_new)
    first = next(iter(old.model.state_dict()))
    torch.testing.assert_close(model.state_dict()[first], old.model.state_dict()[first])


def test_other_model_or_features_refused():
    path = demo_checkpoint_path("tcresnet8-causal")
    with pytest.raises(ValueError, match="not bcresnet1-causal"):
        warm_start(create("bcresnet1-causal", num_classes=11), path, ["a"] * 11, FeatureConfig.deployable(40))
    old = load_checkpoint(path)
    with pytest.raises(ValueError, match="other features"):
        warm_start(create("tcresnet8-causal", num_classes=11), path, old.labels, FeatureConfig.reference(40))
