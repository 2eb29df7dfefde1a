"""The run directory: a new run writes config.json and refuses a directory holding a run or other
files; metrics.jsonl is rewritten whole and read back up to an epoch."""

import json

import pytest

from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.run import train
from kwsdeploy.train.run_dir import RUN, RunDir, read_jsonl


def test_a_new_run_writes_its_config_and_refuses_a_second_start(tmp_path):
    run, cfg = RunDir(tmp_path / "r"), TrainConfig(model="tcresnet8", epochs=3)
    run.start(cfg)
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == cfg.to_dict() and RUN.holds(run.out)
    assert not run.has_finished_epoch()
    run.start(cfg)  # config.json alone: a run killed before its first epoch, started again
    run.write_metrics([{"epoch": 1, "train_acc": 0.25}])
    with pytest.raises(ValueError, match="already holds a run"):
        run.start(cfg)


def test_metrics_are_rewritten_whole_and_read_up_to_an_epoch(tmp_path):
    run = RunDir(tmp_path)
    assert run.history(5) == [] and read_jsonl(tmp_path / "none.jsonl") == []
    rows = [{"epoch": e, "train_acc": e / 10} for e in (1, 2, 3)]
    run.write_metrics(rows)
    assert run.metrics.read_text().count("\n") == 3 and read_jsonl(run.metrics) == rows
    assert run.history(2) == rows[:2]
    run.write_metrics(rows[:1])
    assert run.history(3) == rows[:1]
    assert (run.best, run.last) == (tmp_path / "best", tmp_path / "last")


def test_training_into_a_foreign_directory_is_refused(tiny_prepared, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text('{"my": "settings"}')
    cfg = TrainConfig(model="tcresnet8", epochs=1, batch_size=16, augment=False, device="cpu")
    with pytest.raises(ValueError, match="not a kwsdeploy run"):
        train(cfg, tiny_prepared, tmp_path / "mine", progress=False, test=False)
    assert (tmp_path / "mine" / "config.json").read_text() == '{"my": "settings"}'
