"""What a run is built from: the device, the frontend, the seeded model and its optimizer parts."""

import pytest
import torch

from kwsdeploy.config import FeatureConfig
from kwsdeploy.train.build import build_parts, feature_config_for, resolve_device
from kwsdeploy.train.distributed import World
from kwsdeploy.train.presets import TrainConfig


def test_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use --device cpu"):
            resolve_device("cuda:0")


def test_frontend_is_deployable_unless_told_otherwise():
    assert feature_config_for(TrainConfig(model="tcresnet8")) == FeatureConfig.deployable(40)
    assert feature_config_for(TrainConfig(model="tcresnet8", n_mfcc=20)) == FeatureConfig.deployable(20)
    assert feature_config_for(TrainConfig(model="tcresnet8", features="reference")) == FeatureConfig.reference(40)


def test_parts_of_a_cpu_run_are_seeded_and_sized_by_the_set():
    cfg = TrainConfig(model="tcresnet8", epochs=3, batch_size=4, warmup_epochs=1, lr=2e-3, device="cpu", seed=4)
    fc = feature_config_for(cfg)
    a, b = (build_parts(cfg, ["x", "y", "z"], fc, 9, World(), torch.device("cpu"), print) for _ in range(2))
    assert (a.scheduler.warmup_steps, a.scheduler.total_steps) == (2, 6)  # 9 clips of 4: 2 steps an epoch
    assert a.micro_batch == 4 and a.amp_dtype is None and a.net is a.model and not a.scaler.is_enabled()
    assert a.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # the first warm-up step: half the peak
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the same seed: the same initial weights
    assert a.model.eval()(torch.zeros(2, 1, 40, fc.clip_frames)).shape == (2, 3)  # one logit per label
    c = build_parts(cfg.with_overrides(seed=5, micro_batch=3), ["x", "y", "z"], fc, 9, World(), torch.device("cpu"),
                    print)
    assert c.micro_batch == 3 and not all(torch.equal(sa[k], c.model.state_dict()[k]) for k in sa)
