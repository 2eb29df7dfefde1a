"""Training presets: the reference recipe's numbers, the demo preset, overrides."""

import pytest

from kwsdeploy.train.presets import DEMO, REFERENCE, get_preset


def test_reference_preset_is_the_reference_recipe():
    r = get_preset("reference")
    assert (r.lr, r.weight_decay, r.batch_size, r.warmup_epochs, r.min_lr, r.epochs, r.label_smoothing) == (
        1e-3, 0.1, 128, 10, 1e-8, 200, 0.1)
    assert r.augment and r.spec_augment and r.features == "deployable" and r is REFERENCE
    assert get_preset("demo") is DEMO and DEMO.with_overrides(epochs=3, lr=None).epochs == 3
    with pytest.raises(ValueError, match="Unknown preset"):
        get_preset("fast")
    with pytest.raises(ValueError, match="Unknown training option"):
        DEMO.with_overrides(epoch=3)
