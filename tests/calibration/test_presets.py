"""Per-checkpoint INT8 presets: applied to the settings the user did not give, keyed by weights_sha256."""

from __future__ import annotations

import json

import pytest

from typer.testing import CliRunner

from kwsdeploy.calibration import presets
from kwsdeploy.calibration.passes import Int8Options
from kwsdeploy.calibration.presets import Int8Preset, apply_preset, preset_for
from kwsdeploy.calibration.qdq import QuantizeError, keep_float_alias

P = Int8Preset("m", "ab" * 32, clips=8, method="percentile", percentile=99.9, keep_float=("first",), chosen_on="valid")


def test_preset_fills_only_what_the_user_did_not_give():
    opts, got = apply_preset(Int8Options(clips=16, explicit=("clips",)), "ab" * 32, [P])
    assert got is P and opts.clips == 16 and opts.method == "percentile" and opts.percentile == 99.9
    assert opts.keep_float == ("first",) and opts.preset == P.describe()
    assert "percentile@99.9, 8 clips, keep float first; chosen on valid" in P.describe()
    same, none = apply_preset(Int8Options(), "cd" * 32, [P])
    assert none is None and same == Int8Options()
    assert preset_for("", [P]) is None and preset_for(None, [P]) is None


def test_the_presets_cpu_settings_reach_the_cpu_recipe_only_unless_the_user_gave_them():
    cpu = Int8Preset("m", "ab" * 32, keep_float=("first", "last"),
                     cpu={"clips": 256, "method": "percentile", "keep_float": ("first:2",)}, cpu_chosen_on="theo")
    opts, _ = apply_preset(Int8Options(), "ab" * 32, [cpu])
    assert opts.keep_float == ("first", "last") and opts.clips == 64 and opts.method == "minmax"
    assert opts.cpu == {"clips": 256, "method": "percentile", "keep_float": ("first:2",)}
    assert opts.preset.endswith("; cpu recipe: percentile@99.999, 256 clips, keep float first:2, chosen on theo)")
    given, _ = apply_preset(Int8Options(keep_float=("last",), clips=8, explicit=("clips", "keep_float")), "ab" * 32, [cpu])
    assert given.keep_float == ("last",) and given.cpu == {"method": "percentile"}  # a flag binds both recipes
    plain, _ = apply_preset(Int8Options(), "ab" * 32, [P])
    assert plain.cpu == {} and "cpu recipe" not in plain.preset
    trt, _ = apply_preset(Int8Options(("tensorrt",)), "ab" * 32, [cpu])  # no cpu graph: no cpu settings recorded
    assert trt.cpu == {} and trt.clips == 64 and trt.keep_float == ("first", "last")
    alone, _ = apply_preset(Int8Options(("cpu",)), "ab" * 32, [cpu])  # the cpu graph alone: its settings are the record's
    assert alone.cpu == {} and (alone.clips, alone.method, alone.keep_float) == (256, "percentile", ("first:2",))
    alone, _ = apply_preset(Int8Options(("cpu",), clips=8, explicit=("clips",)), "ab" * 32, [cpu])
    assert (alone.clips, alone.method) == (8, "percentile")
    with pytest.raises(QuantizeError, match="--calib-clips must be >= 1"):
        Int8Options(cpu={"clips": 0})
    with pytest.raises(QuantizeError, match=r"cpu recipe settings \['seed'\] are not among"):
        Int8Options(cpu={"seed": 1})


def test_cpu_pass_takes_its_own_settings_and_clips_and_the_record_names_them(tc_graph, tc_calib, monkeypatch):
    from types import SimpleNamespace

    from kwsdeploy.calibration import cpu as cpu_mod
    from kwsdeploy.calibration.data import load_calibration_clips
    from kwsdeploy.calibration.passes import CalibrationSource, cpu_pass
    from kwsdeploy.calibration.qdq import name_nodes, quantizable_layers
    from kwsdeploy.hashing import sha256_bytes

    proto = name_nodes(tc_graph[0])
    todo = quantizable_layers(proto, "cpu")
    fc = tc_graph[1].feature_config
    own = load_calibration_clips(None, tc_graph[1].labels, fc.sample_rate, fc.clip_samples, clips=4)
    src = CalibrationSource(tc_calib.clips, fc, keep_float=("first:3",), cpu={"keep_float": ("first:2",)}, cpu_clips=own)
    src.sets[sha256_bytes(proto.SerializeToString())] = tc_calib  # the shared tuples, already collected
    speed = {"fp32": 1.0, "static-qoperator-u8s8-rr": 2.0}

    def timer(graphs):  # injected timings: no timed tests
        return {n: cpu_mod.Timing(n, {1: 1e-3 / speed[n], 64: 1e-2 / speed[n]}) for n in graphs}

    seen = {}
    real = cpu_mod.cpu_recipe

    def recipe(p, calib, **k):
        seen["calib"] = calib
        return real(p, calib, candidates=("static-qoperator-u8s8-rr",), timer=timer, **k)

    monkeypatch.setattr(cpu_mod, "cpu_recipe", recipe)
    ctx = SimpleNamespace(mode="step", calibration=src, record=None)
    cpu_pass(proto, ctx)
    r = src.results["model.int8-cpu.onnx"]
    assert r.settings["chosen"] == "static-qoperator-u8s8-rr" and r.settings["keep_float"] == sorted(todo[:2])
    assert todo[2] in r.quantized and not set(todo[:2]) & set(r.quantized)  # the shared first:3 not used
    assert seen["calib"] is not tc_calib and len(seen["calib"].clips.indices) == 4 < len(tc_calib.clips.indices)
    rec = ctx.record
    assert rec["clips"] == len(tc_calib.clips.indices) and rec["extra"]["keep_float"] == ["first:3"]
    assert rec["ranges_sha256"] == tc_calib.record()["input_ranges_sha256"]  # the shared set's, not the cpu one's
    cpu = rec["extra"]["cpu"]
    assert cpu["clips"] == 4 and cpu["keep_float"] == ["first:2"] and len(cpu["ranges_sha256"]) == 64
    assert cpu["ranges_sha256"] != rec["ranges_sha256"]


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
        cpu = p.cpu_settings()
        Int8Options(clips=cpu["clips"], method=cpu["method"], percentile=cpu["percentile"], keep_float=cpu["keep_float"])
        assert p.chosen_on and all(keep_float_alias(k) for k in (*p.keep_float, *cpu["keep_float"]))
        assert bool(p.cpu) == bool(p.cpu_chosen_on)
    assert len({p.weights_sha256 for p in presets.PRESETS}) == len(presets.PRESETS)


def test_every_shipped_checkpoint_has_a_preset_for_its_exact_weights():
    """A checkpoint replaced without re-choosing its INT8 settings silently falls back to the library
    defaults (session 12's convmixer did): each shipped card's weights_sha256 must have a preset."""
    from kwsdeploy.cli.demo import shipped_demo_models
    from kwsdeploy.hashing import sha256_file
    from kwsdeploy.train.checkpoint import WEIGHTS_FILE, demo_checkpoint_path, read_card

    shipped = shipped_demo_models()
    assert len(shipped) >= 5
    for name in shipped:
        ckpt = demo_checkpoint_path(name)
        sha = sha256_file(ckpt / WEIGHTS_FILE)
        assert read_card(ckpt)["weights_sha256"] == sha, name
        got = preset_for(sha)
        assert got is not None and got.model == name, f"{name}: no INT8 preset for weights {sha[:12]}"
