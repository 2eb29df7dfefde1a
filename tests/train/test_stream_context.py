"""--stream-context: a causal KWM learns from clips that follow other audio, as when streaming."""

from __future__ import annotations

import pytest
import torch

from kwsdeploy.train.checkpoint import load_checkpoint
from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.trainer import train


def _cfg(**kw) -> TrainConfig:
    base = dict(model="kwm", epochs=1, batch_size=8, lr=3e-3, warmup_epochs=0, augment=False, spec_augment=False,
                device="cpu", threads=1)
    return TrainConfig(**{**base, **kw})


def test_context_changes_what_is_learned_and_stays_finite(tiny_prepared, tmp_path):
    train(_cfg(), tiny_prepared, tmp_path / "plain", progress=False, test=False)
    train(_cfg(stream_context_s=1.0), tiny_prepared, tmp_path / "ctx", progress=False, test=False)
    a = load_checkpoint(tmp_path / "plain" / "last").model.state_dict()
    b = load_checkpoint(tmp_path / "ctx" / "last").model.state_dict()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff > 1e-6  # the loss really saw the context
    assert all(torch.isfinite(v).all() for v in b.values())


def test_context_needs_a_mean_readout_model(tiny_prepared, tmp_path):
    with pytest.raises(ValueError, match="kwm-causal"):
        train(_cfg(model="tcresnet8-causal", stream_context_s=1.0), tiny_prepared, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="stream_context_s"):
        _cfg(stream_context_s=-1.0)
