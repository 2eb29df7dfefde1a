"""benchmarks/record_checkpoint.py --annotate: a shipped card's training config names no machine path
(--init and --teacher said in words)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import record_checkpoint  # noqa: E402

from kwsdeploy.train.checkpoint import demo_checkpoint_path  # noqa: E402


def test_init_and_teacher_paths_become_words(tmp_path):
    other = tmp_path / "runs" / "soup" / "best"
    other.mkdir(parents=True)
    (other / "card.json").write_text(json.dumps({"model": "kwm-causal-64-4"}))
    shipped = str(demo_checkpoint_path("tcresnet8-causal"))
    cfg = {"init_from": str(tmp_path / "run.stage1" / "best"), "teacher": shipped, "lr": 0.01}
    got = record_checkpoint.portable_config(cfg)
    assert got == {"init_from": "stage 1 of benchmarks/train_shipped_checkpoints.sh (its best checkpoint)",
                   "teacher": "the shipped tcresnet8-causal checkpoint (--teacher)", "lr": 0.01}
    assert cfg["teacher"] == shipped  # the input is not changed
    got = record_checkpoint.portable_config({"init_from": str(other), "teacher": str(other)})
    assert got == {"init_from": "the checkpoint shipped before (--init)",
                   "teacher": "a kwm-causal-64-4 checkpoint (--teacher)"}
    assert record_checkpoint.portable_config({"teacher": str(tmp_path / "gone")})["teacher"] == "a checkpoint (--teacher)"
    got = record_checkpoint.portable_config({"init_from": str(tmp_path / "convmixer.stage2" / "best"),
                                             "teacher": [shipped, str(other), "rel/ckpt"]})  # a third stage, an ensemble
    assert got == {"init_from": "stage 2 of benchmarks/train_shipped_checkpoints.sh (its best checkpoint)",
                   "teacher": ["the shipped tcresnet8-causal checkpoint (--teacher)",
                               "a kwm-causal-64-4 checkpoint (--teacher)", "rel/ckpt"]}
    assert record_checkpoint.portable_config({"teacher": None, "init_from": "rel/best"}) == {"teacher": None,
                                                                                           "init_from": "rel/best"}
