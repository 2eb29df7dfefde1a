"""train() on a prepared directory: best/ is tested on the test split, a finished run is not
overwritten, and --resume takes the saved config (how to run from the command line)."""

import json

import numpy as np
import pytest

from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.run import resumed_config, train


def test_a_run_directory_is_not_overwritten_without_resume(tiny_prepared, tmp_path):
    cfg = TrainConfig(model="tcresnet8", epochs=1, batch_size=16, augment=False, device="cpu")
    train(cfg, tiny_prepared, tmp_path / "r", progress=False, test=True)
    tm = json.loads((tmp_path / "r" / "test_metrics.json").read_text())
    assert tm["n"] == 11 and np.array(tm["confusion"]).sum() == 11
    card = json.loads((tmp_path / "r" / "best" / "card.json").read_text())
    assert card["metrics"]["test_acc"] == tm["accuracy"] and card["training"]["data"]["test_clips"] == 11
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, tiny_prepared, tmp_path / "r", progress=False)


def test_resume_keeps_what_to_learn_and_takes_how_to_run(tmp_path):
    with pytest.raises(ValueError, match="holds no run to resume"):
        resumed_config(tmp_path, TrainConfig(model="tcresnet8"))
    saved = TrainConfig(model="tcresnet8", epochs=7, lr=3e-3, batch_size=16, device="cpu", threads=1, micro_batch=4)
    (tmp_path / "config.json").write_text(json.dumps(saved.to_dict()))
    given = TrainConfig(model="kwm", epochs=2, lr=0.5, batch_size=8, device="auto", threads=2, num_workers=3)
    cfg = resumed_config(tmp_path, given)
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.batch_size) == ("tcresnet8", 7, 3e-3, 16)
    assert (cfg.device, cfg.threads, cfg.num_workers, cfg.micro_batch) == ("auto", 2, 3, None)
