"""prepare-fsdd and prepare-gsc never destroy what they did not write (issue: hostile --out values)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kwsdeploy.cli.main import app

FSDD_SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "fsdd_small"
runner = CliRunner()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def fsdd(tmp_path) -> Path:
    root = tmp_path / "fsdd"
    shutil.copytree(FSDD_SMALL, root / "recordings")
    return root


def _fsdd(*args: str):
    return runner.invoke(app, ["data", "prepare-fsdd", *args])


@pytest.mark.parametrize("where", ["root", "recordings", "inside", "parent"])
def test_prepare_fsdd_out_equal_inside_or_around_the_input_is_refused(fsdd, where):
    before = _snapshot(fsdd.parent)
    out = {"root": fsdd, "recordings": fsdd / "recordings", "inside": fsdd / "gsc", "parent": fsdd.parent}[where]
    r = _fsdd("--fsdd-root", str(fsdd), "--out", str(out), "--overwrite")
    assert r.exit_code != 0 and "input --fsdd-root" in r.output and "Traceback" not in r.output
    assert _snapshot(fsdd.parent) == before


def test_prepare_fsdd_refuses_a_foreign_directory_and_a_file(fsdd, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    afile = tmp_path / "afile"
    afile.write_text("keep me too")
    for out in (foreign, afile):
        r = _fsdd("--fsdd-root", str(fsdd), "--out", str(out), "--overwrite")
        assert r.exit_code != 0 and "kwsdeploy" in r.output, r.output
    assert (foreign / "notes.txt").read_text() == "keep me" and afile.read_text() == "keep me too"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing moved to a hidden name


def test_prepare_fsdd_replaces_its_own_tree_only_with_overwrite(fsdd, tmp_path):
    out = tmp_path / "gsc"
    assert _fsdd("--fsdd-root", str(fsdd), "--out", str(out)).exit_code == 0
    n_clips = len(list(out.glob("*/*_nohash_*.wav")))
    r = _fsdd("--fsdd-root", str(fsdd), "--out", str(out))
    assert r.exit_code != 0 and "--overwrite" in r.output
    assert _fsdd("--fsdd-root", str(fsdd), "--out", str(out), "--overwrite").exit_code == 0
    assert n_clips == 30 and len(list(out.glob("*/*_nohash_*.wav"))) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fsdd", "gsc"]


def test_prepare_fsdd_with_an_unknown_speaker_refuses_or_reports(fsdd, tmp_path):
    src = fsdd / "recordings" / "0_george_5.wav"
    for i in range(3):
        shutil.copyfile(src, fsdd / "recordings" / f"{i}_lucas_{i}.wav")
    r = _fsdd("--fsdd-root", str(fsdd), "--out", str(tmp_path / "a"))
    assert r.exit_code != 0 and "lucas (3 clips)" in r.output and "--extra-speakers" in r.output
    assert not (tmp_path / "a").exists()
    r = _fsdd("--fsdd-root", str(fsdd), "--out", str(tmp_path / "b"), "--extra-speakers", "train")
    assert r.exit_code == 0 and "lucas" in r.output
    assert len(list((tmp_path / "b").glob("*/lucas_nohash_*.wav"))) == 3
    r = _fsdd("--fsdd-root", str(fsdd), "--out", str(tmp_path / "c"), "--extra-speakers", "skip")
    assert r.exit_code == 0 and "skipped (--extra-speakers skip): 3 clips of lucas" in r.output
    assert list((tmp_path / "c").glob("*/lucas_*")) == []


def test_prepare_gsc_out_refusals_keep_the_tree(gsc_tree, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(gsc_tree, root)
    before = _snapshot(root)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out, why in ((root, "is the input"), (tmp_path, "contains the input"), (root / "yes", "not a kwsdeploy"),
                     (foreign, "not a kwsdeploy"), (afile, "is a file")):
        r = runner.invoke(app, ["data", "prepare-gsc", "--data-root", str(root), "--no-download", "--out", str(out),
                                "--overwrite"])
        assert r.exit_code != 0 and why in r.output, (out, r.output)
    assert _snapshot(root) == before
    assert (foreign / "notes.txt").read_text() == "keep me" and afile.read_text() == "keep"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
