"""Bad input: each a one-line error naming the file and what to do; nothing half-written."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kwsdeploy.cli.main import app
from kwsdeploy.data.gsc import prepare_gsc


def _prepare_fails(root, match):
    with pytest.raises(ValueError, match=match) as err:
        prepare_gsc(root, class_split="sub", allow_download=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert [p.name for p in root.iterdir() if p.name.startswith((".", "gsc_"))] == []  # nothing half-written
    return msg


def test_corrupt_wav(tree_copy):
    bad = tree_copy / "yes" / "george_nohash_0.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    msg = _prepare_fails(tree_copy, "cannot read")
    assert str(bad) in msg and "replace it" in msg


def test_wrong_sample_rate(tree_copy):
    bad = tree_copy / "no" / "theo_nohash_1.wav"
    sf.write(str(bad), np.zeros(8000, np.int16), 8000)
    msg = _prepare_fails(tree_copy, "8000 Hz, expected 16000 Hz")
    assert str(bad) in msg and "resample" in msg


def test_stereo(tree_copy):
    bad = tree_copy / "up" / "jackson_nohash_2.wav"
    sf.write(str(bad), np.zeros((16000, 2), np.int16), 16000)
    msg = _prepare_fails(tree_copy, "2 channels, expected mono")
    assert str(bad) in msg


def test_missing_list_file(tree_copy):
    (tree_copy / "testing_list.txt").unlink()
    msg = _prepare_fails(tree_copy, "testing_list.txt is missing")
    assert "re-extract" in msg


def test_empty_class(tree_copy):
    for f in (tree_copy / "stop").iterdir():
        f.unlink()
    msg = _prepare_fails(tree_copy, "class 'stop' is empty")
    assert str(tree_copy / "stop") in msg


def test_unknown_keyword(tree_copy):
    with pytest.raises(ValueError, match="keyword 'marvin' has no clips"):
        prepare_gsc(tree_copy, keywords=["yes", "marvin"], allow_download=False)


def test_class_without_training_clips(tree_copy):
    for f in (tree_copy / "go").glob("george_*"):
        f.unlink()
    for f in (tree_copy / "go").glob("nicolas_*"):
        f.unlink()
    for f in (tree_copy / "go").glob("yweweler_*"):
        f.unlink()
    _prepare_fails(tree_copy, "class 'go' has no training clips")


def test_failed_rerun_keeps_the_previous_output(tree_copy):
    out = prepare_gsc(tree_copy, class_split="sub", allow_download=False)
    before = (out / "train.jsonl").read_bytes()
    sf.write(str(tree_copy / "yes" / "george_nohash_0.wav"), np.zeros((100, 2), np.int16), 16000)
    with pytest.raises(ValueError):
        prepare_gsc(tree_copy, class_split="sub", allow_download=False)
    assert (out / "train.jsonl").read_bytes() == before


def test_cli_prints_one_line_and_exits_1(tree_copy):
    (tree_copy / "validation_list.txt").unlink()
    res = CliRunner().invoke(app, ["data", "prepare-gsc", "--data_root", str(tree_copy), "--class_split", "sub"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "validation_list.txt is missing" in lines[0]


def test_cli_underscore_and_dash_spellings_agree(tree_copy, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tree_copy, other)
    a = CliRunner().invoke(app, ["data", "prepare-gsc", "--data_root", str(tree_copy), "--class_split", "sub", "--data_version", "1"])
    b = CliRunner().invoke(app, ["data", "prepare-gsc", "--data-root", str(other), "--class-split", "sub", "--data-version", "1"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert (tree_copy / "gsc_v1_sub12" / "train.jsonl").read_bytes() == (other / "gsc_v1_sub12" / "train.jsonl").read_bytes()
    assert "train 108 clips, 3 speakers" in " ".join(a.output.split())
