"""`kwsdeploy export --int8` and `kwsdeploy eval --bundle --precision`: INT8 graphs beside fp32, the
calibration record and accuracy report in the manifest and report.md, one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kwsdeploy import tolerances
from kwsdeploy.cli.main import app

runner = CliRunner()
MODEL = "tcresnet8-causal"


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "bundle"
    r = runner.invoke(app, ["export", "--model", MODEL, "--int8", "--calib-clips", "16", "--out", str(out),
                            "--exporter", "legacy"])
    assert r.exit_code == 0, r.output
    assert "accuracy by precision" in r.output and "model.int8-tensorrt.onnx" in r.output
    return out


def test_bundle_keeps_fp32_beside_both_int8_graphs_and_verifies(int8_bundle):
    names = {p.name for p in int8_bundle.iterdir()}
    assert {"model.onnx", "model.fp16.onnx", "model.int8-tensorrt.onnx", "model.int8-cpu.onnx", "report.md",
            "manifest.json", "golden.npz"} <= names
    m = json.loads((int8_bundle / "manifest.json").read_text())
    precisions = {f["path"]: f["precision"] for f in m["files"]}
    assert precisions["model.int8-tensorrt.onnx"] == "int8-tensorrt" and precisions["model.int8-cpu.onnx"] == "int8-cpu"
    r = runner.invoke(app, ["verify", str(int8_bundle)])
    assert r.exit_code == 0, r.output
    assert "model.int8-tensorrt.onnx" in r.output


def test_tensorrt_graph_in_the_bundle_passes_the_qdq_check(int8_bundle):
    from kwsdeploy.calibration.validate import validate_tensorrt_qdq

    assert validate_tensorrt_qdq(onnx.load(str(int8_bundle / "model.int8-tensorrt.onnx"))) > 0


def test_calibration_record_and_report_round_trip_through_the_manifest(int8_bundle):
    from kwsdeploy.manifest import Manifest

    text = (int8_bundle / "manifest.json").read_text()
    m = Manifest.from_json(text)
    assert json.loads(m.to_json()) == json.loads(text)
    cal = m.calibration
    assert cal.clips == 16 and cal.method == "minmax" and cal.seed == 0 and cal.data == "demo corpus"
    assert cal.extra["split"] == "train" and len(cal.ranges_sha256) == 64 and cal.extra["tuples"] > 0
    assert cal.extra["files"]["model.int8-tensorrt.onnx"]["recipe"] == "tensorrt"
    assert {f.path: f.recipe for f in m.files}["model.int8-cpu.onnx"] == "cpu"
    rows = {r["precision"]: r for r in m.accuracy["precisions"]["step"]["rows"]}
    assert set(rows) == {"fp32", "fp16", "int8-tensorrt", "int8-cpu"}
    assert rows["fp32"]["clips"] == 110 and rows["fp32"]["agreement_with_fp32"] == 1.0
    for r in rows.values():
        assert 0.0 <= r["top1"] <= 1.0 and 0.0 <= r["stream"]["accuracy"] <= 1.0 and r["bytes"] > 0
    assert rows["fp32"]["top1"] - rows["int8-tensorrt"]["top1"] <= tolerances.INT8_MAX_ACCURACY_DROP
    assert rows["int8-tensorrt"]["size_vs_fp32"] < 0.35
    md = (int8_bundle / "report.md").read_text()
    assert f"{100 * rows['int8-tensorrt']['top1']:.1f} %" in md and "layers kept float" in md
    for layer in rows["int8-tensorrt"]["float_layers"]:
        assert f"`{layer}`" in md


def test_eval_data_names_the_held_out_split_of_the_report(tmp_path):
    from kwsdeploy.cli._export_int8 import explicit_eval_data
    from kwsdeploy.data.demo import demo_corpus_dir
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint

    out = tmp_path / "b"
    r = runner.invoke(app, ["export", "--model", MODEL, "--int8", "--target", "tensorrt", "--calib-clips", "8",
                            "--eval-data", str(demo_corpus_dir()), "--eval-split", "valid", "--eval-stream-clips", "12",
                            "--out", str(out), "--exporter", "legacy"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "manifest.json").read_text())["accuracy"]["precisions"]["step"]
    assert rep["data"].endswith("[valid], 88 clips") and rep["stream_recording"].startswith("12 valid clips")
    rows = {x["precision"]: x for x in rep["rows"]}
    assert set(rows) == {"fp32", "fp16", "int8-tensorrt"} and rows["fp32"]["clips"] == 88
    ck = load_checkpoint(demo_checkpoint_path(MODEL))
    data = explicit_eval_data(demo_corpus_dir(), ck.labels, 16000, "valid", 12)
    keywords = [e for e in data.events if not e.label.startswith("_")]
    assert len(data.audio) == 88 and len(data.events) == 12
    assert rows["fp32"]["stream"]["keyword_events"] == len(keywords) > 0
    assert data.targets.tolist() == [ck.labels.index(x) for x in _split_labels("valid")]


def _split_labels(split):
    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.demo import demo_corpus_dir

    ds = KwsDataset(demo_corpus_dir(), split)
    return [ds.labels[t] for t in ds.targets]


def _folder(tmp_path, rate=16000, labels=("one", "two")):
    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.demo import demo_corpus_dir

    ds = KwsDataset(demo_corpus_dir(), "test")
    for lab in labels:
        (tmp_path / lab).mkdir(parents=True, exist_ok=True)
    picks = [i for i in range(len(ds)) if ds.labels[ds.targets[i]] in labels][:6]
    for i in picks:
        x = ds.clip(i)
        if rate != 16000:
            x = x[:: 16000 // rate]
        sf.write(tmp_path / ds.labels[ds.targets[i]] / f"c{i}.wav", x, rate)
    return tmp_path, picks


def test_eval_bundle_precision_on_a_folder(int8_bundle, tmp_path):
    folder, picks = _folder(tmp_path / "f")
    r = runner.invoke(app, ["eval", "--bundle", str(int8_bundle), "--precision", "int8-tensorrt", "--folder",
                            str(folder), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["n"] == len(picks) and got["precision"] == "int8-tensorrt" and 0.0 <= got["accuracy"] <= 1.0
    assert 0.0 <= got["agreement_with_fp32"] <= 1.0
    r = runner.invoke(app, ["eval", "--bundle", str(int8_bundle), "--precision", "fp32", "--folder", str(folder)])
    assert r.exit_code == 0 and "precision fp32" in r.output and "top-1 accuracy" in r.output


def test_eval_bundle_refuses_a_precision_the_bundle_lacks(tmp_path):
    out = tmp_path / "plain"
    assert runner.invoke(app, ["export", "--model", MODEL, "--out", str(out), "--exporter", "legacy"]).exit_code == 0
    r = runner.invoke(app, ["eval", "--bundle", str(out), "--precision", "int8-cpu", "--folder", str(tmp_path)])
    assert r.exit_code == 2 and "bundle has no step model in int8-cpu" in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("case, match", [
    ("empty", "holds no audio files"),
    ("rate", "is at 8000 Hz but the model's card expects 16000 Hz"),
    ("labels", "that the model does not know"),
    ("target", "--target must be tensorrt, cpu or both"),
    ("method", "--calib-method must be one of minmax, percentile, entropy"),
    ("state", "--quantize-state: this model has no SSM state"),
    ("state_cpu", "--quantize-state applies to the tensorrt recipe"),
    ("percentile", "--calib-percentile must be between 50 and 100"),
    ("keep_float", "--keep-float 'nope' is not a layer this recipe quantizes"),
    ("eval_split", "--eval-split must be train, valid or test"),
    ("eval_not_prepared", "is not a prepared directory (no labels.json)"),
    ("eval_no_split", "has no clips in its test split"),
    ("eval_rate", "is at 8000 Hz but the model's card expects 16000 Hz"),
])
def test_bad_int8_requests_are_one_line_errors_and_write_nothing(tmp_path, case, match):
    calib = tmp_path / "calib"
    extra: list[str] = []
    if case == "empty":
        (calib / "one").mkdir(parents=True)
    elif case == "rate":
        _folder(calib, rate=8000)
    elif case == "labels":
        _folder(calib, labels=("one",))
        (calib / "maybe").mkdir()
        sf.write(calib / "maybe" / "x.wav", np.zeros(16000, np.float32), 16000)
    elif case == "target":
        extra = ["--target", "gpu"]
    elif case == "method":
        extra = ["--calib-method", "kl"]
    elif case == "state":
        extra = ["--quantize-state", "--calib-clips", "4"]
    elif case == "state_cpu":
        extra = ["--quantize-state", "--target", "cpu"]
    elif case == "percentile":
        extra = ["--calib-method", "percentile", "--calib-percentile", "100"]
    elif case == "keep_float":
        extra = ["--keep-float", "first,nope", "--target", "tensorrt", "--calib-clips", "8"]
    elif case == "eval_split":
        extra = ["--eval-data", str(calib), "--eval-split", "dev"]
    elif case.startswith("eval_"):
        calib.mkdir()
        if case != "eval_not_prepared":
            from kwsdeploy.data.demo import demo_corpus_dir

            demo = demo_corpus_dir()
            (calib / "labels.json").write_text((demo / "labels.json").read_text())
            meta = json.loads((demo / "prepared.json").read_text())
            (calib / "prepared.json").write_text(json.dumps({**meta, "sample_rate": 8000 if case == "eval_rate" else 16000}))
            (calib / "test.jsonl").write_text("" if case == "eval_no_split" else (demo / "test.jsonl").read_text())
        extra = ["--eval-data", str(calib)]
    args = ["export", "--model", MODEL, "--int8", "--out", str(tmp_path / "out"), "--exporter", "legacy", *extra]
    if case in ("empty", "rate", "labels"):
        args += ["--calib-data", str(calib)]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and match in errors[0] and r.output.strip().endswith(errors[0])
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == (["calib"] if calib.exists() else [])


def test_eval_data_without_int8_is_refused(tmp_path):
    r = runner.invoke(app, ["export", "--model", MODEL, "--eval-data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--eval-data needs --int8" in r.output and not (tmp_path / "o").exists()
