"""benchmarks/record_detection_settings.py: tuned settings go into a card; test-split tunes are refused;
and every shipped card carries settings tuned on the validation split for 1 false alarm per hour."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import record_detection_settings as rds  # noqa: E402

from kwsdeploy.contract import DetectionSettings  # noqa: E402

TUNE = {"threshold": 0.625, "smoothing_seconds": 0.4, "refractory_seconds": 1.2, "min_gap_seconds": 0.5,
        "keyword_thresholds": {"one": 0.55, "two": 0.6},
        "tuned": {"target_fa_per_hour": 1.0, "recording": {"split": "valid", "speech_set": "tune"}}}


def test_settings_of_a_validation_tune_and_refusal_of_a_test_tune():
    s = rds.tuned_settings(TUNE, "x")
    assert (s.threshold, s.smoothing_seconds, s.keyword_thresholds) == (0.625, 0.4, {"one": 0.55, "two": 0.6})
    bad = json.loads(json.dumps(TUNE))
    bad["tuned"]["recording"]["split"] = "test"
    with pytest.raises(ValueError, match="tuned on split 'test', not 'valid'"):
        rds.tuned_settings(bad, "x")
    with pytest.raises(ValueError, match="tuned on split None"):
        rds.tuned_settings({"threshold": 0.5}, "x")


def test_record_writes_the_card_of_the_named_checkpoint(tmp_path, monkeypatch):
    from kwsdeploy.runtime.tuning import card_detection
    from kwsdeploy.train import checkpoint
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint, read_card

    ckpt = tmp_path / "kwm-causal-64-4"
    shutil.copytree(demo_checkpoint_path("kwm-causal-64-4"), ckpt)
    monkeypatch.setattr(checkpoint, "demo_checkpoint_path", lambda name: tmp_path / name)
    (tmp_path / "res" / "kwm").mkdir(parents=True)
    (tmp_path / "res" / "kwm" / "tune.json").write_text(json.dumps(TUNE))
    said = rds.record(tmp_path / "res", [])
    assert said == ["kwm: threshold per keyword 0.55-0.6, smoothing 0.4 s, temperature 1"]
    assert card_detection(read_card(ckpt)) == DetectionSettings.from_dict(TUNE)
    load_checkpoint(ckpt)  # the weights still match their card


def test_shipped_cards_carry_settings_tuned_on_validation_data_only():
    from kwsdeploy.runtime.tuning import card_detection
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, read_card

    for name in ("tcresnet8-causal", "kwm-causal-64-4", "matchboxnet-causal", "bcresnet1-causal", "convmixer"):
        settings = card_detection(read_card(demo_checkpoint_path(name)))
        assert settings is not None, f"{name}: run benchmarks/record_detection_settings.py"
        assert settings.tuned["recording"]["split"] == "valid", name
        assert settings.tuned["recording"]["speech_set"] == "tune", name
        assert settings.tuned["target_fa_per_hour"] == 1.0, name
