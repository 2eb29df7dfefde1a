"""`kwsdeploy export` and `kwsdeploy verify`: a checkpoint to a verified bundle, and the one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from kwsdeploy import tolerances
from kwsdeploy.cli.main import app
from kwsdeploy.config import FeatureConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from kwsdeploy.models import create
    from kwsdeploy.train.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = create("tcresnet8-causal", num_classes=3).eval()
    ckpt = save_checkpoint(tmp / "ckpt", model, ["yes", "no", "up"], FeatureConfig.deployable(),
                           metrics={"test_top1": 0.5})
    out = tmp / "bundle"
    r = runner.invoke(app, ["export", "--model", "tcresnet8-causal", "--checkpoint", str(ckpt), "--out", str(out),
                            "--exporter", "legacy"])
    assert r.exit_code == 0, r.output
    assert "model.onnx" in r.output and "parity on:" in r.output
    assert "TensorRT 10.3 parser check: model.onnx OK" in r.output  # every export runs the check
    return out


def test_export_writes_a_bundle_that_verify_accepts(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["labels"] == ["yes", "no", "up"] and m["model"]["name"] == "tcresnet8-causal"
    assert m["files"][0]["parity_max_abs"] <= tolerances.ONNX_PARITY_ATOL
    assert m["accuracy"]["checkpoint_metrics"] == {"test_top1": 0.5}
    r = runner.invoke(app, ["verify", str(bundle)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ok model.onnx: golden parity") and "bundle OK: tcresnet8-causal" in r.output


def test_verify_names_a_changed_file_in_one_line(bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    r = runner.invoke(app, ["verify", str(copy)])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "model.onnx: sha256 mismatch" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--int8", "--calib-clips", "0"], "--calib-clips must be >= 1"),
        (["--mode", "sideways"], "--mode must be step, offline or both"),
        (["--model", "kwt-3"], "No demo checkpoint is shipped for 'kwt-3'"),
    ],
)
def test_export_refusals_are_one_line(args, message, tmp_path):
    base = ["export", "--out", str(tmp_path / "x")] + ([] if "--model" in args else ["--model", "tcresnet8-causal"])
    r = runner.invoke(app, base + args)
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "x").exists()


def test_export_overwrite_never_deletes_a_directory_that_is_not_a_bundle(bundle, tmp_path):
    ckpt = bundle.parent / "ckpt"
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    for out, why in ((foreign, "not a kwsdeploy bundle"), (ckpt, "is the input --checkpoint"),
                     (bundle.parent, "contains the input --checkpoint")):
        r = runner.invoke(app, ["export", "--model", "tcresnet8-causal", "--checkpoint", str(ckpt), "--out", str(out),
                                "--overwrite", "--exporter", "legacy"])
        assert r.exit_code != 0 and why in r.output, r.output
    assert (foreign / "cat.jpg").read_bytes() == b"\xff\xd8 a cat" and (ckpt / "card.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
