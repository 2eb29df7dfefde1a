"""Per-checkpoint INT8 presets: applied to the settings the user did not give, keyed by weights_sha256."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kwsdeploy.calibration import presets
from kwsdeploy.calibration.passes import Int8Options
from kwsdeploy.calibration.presets import Int8Preset, apply_preset, preset_for

P = Int8Preset("m", "ab" * 32, clips=8, method="percentile", percentile=99.9, keep_float=("first",), chosen_on="valid")


def test_preset_fills_only_what_the_user_did_not_give():
    opts, got = apply_preset(Int8Options(clips=16, explicit=("clips",)), "ab" * 32, [P])
    assert got is P and opts.clips == 16 and opts.method == "percentile" and opts.percentile == 99.9
    assert opts.keep_float == ("first",) and opts.preset == P.describe()
    assert "percentile@99.9, 8 clips, keep float first; chosen on valid" in P.describe()
    same, none = apply_preset(Int8Options(), "cd" * 32, [P])
    assert none is None and same == Int8Options()
    assert preset_for("", [P]) is None and preset_for(None, [P]) is None


def test_export_applies_the_checkpoints_preset_and_records_it(tmp_path, monkeypatch):
    from kwsdeploy.cli.main import app
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, read_card

    sha = read_card(demo_checkpoint_path("tcresnet8-causal"))["weights_sha256"]
    monkeypatch.setattr(presets, "PRESETS", (Int8Preset("tcresnet8-causal", sha, clips=8, keep_float=("last",),
                                                        chosen_on="a test"),))
    runner = CliRunner()
    base = ["export", "--model", "tcresnet8-causal", "--int8", "--target", "tensorrt", "--exporter", "legacy"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "INT8 settings: tcresnet8-causal preset (minmax, 8 clips, keep float last; chosen on a test)" in r.output
    cal = json.loads((tmp_path / "a" / "manifest.json").read_text())["calibration"]
    assert cal["clips"] == 8 and cal["extra"]["keep_float"] == ["last"] and cal["extra"]["preset"].startswith("tcres")
    layers = cal["extra"]["files"]["model.int8-tensorrt.onnx"]["float_layers"]
    requested = [v for v in layers.values() if "on request" in v]
    assert len(requested) == 1 and "--keep-float): last quantizable layer" in requested[0]
    r = runner.invoke(app, [*base, "--calib-clips", "4", "--keep-float", "", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    cal = json.loads((tmp_path / "b" / "manifest.json").read_text())["calibration"]
    assert cal["clips"] == 4 and cal["extra"]["keep_float"] == []


def test_shipped_presets_are_valid_settings_of_registry_models():
    from kwsdeploy.models.registry import get_card

    assert len(presets.PRESETS) >= 1
    for p in presets.PRESETS:
        assert get_card(p.model).name == p.model and len(p.weights_sha256) == 64
        int(p.weights_sha256, 16)
        Int8Options(clips=p.clips, method=p.method, percentile=p.percentile, keep_float=p.keep_float)
        assert p.chosen_on and set(p.keep_float) <= {"first", "last"}
    assert len({p.weights_sha256 for p in presets.PRESETS}) == len(presets.PRESETS)
