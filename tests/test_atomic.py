"""kwsdeploy.atomic: outputs replaced only when ours, atomically, and leftovers of killed runs recovered."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kwsdeploy import atomic
from kwsdeploy.atomic import ArtifactKind, OutputError, check_output_dir, leftovers, recover, replace_dir, writing_dir

KIND = ArtifactKind("thing", "thing.json", lambda d: isinstance(d, dict) and d.get("kind") == "thing")
REPO = Path(__file__).resolve().parents[1]


def _ours(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "thing.json").write_text(json.dumps({"kind": "thing"}))
    (path / "payload.txt").write_text(text)
    return path


def _fill(tmp: Path, text: str) -> None:
    (tmp / "thing.json").write_text(json.dumps({"kind": "thing"}))
    (tmp / "payload.txt").write_text(text)


def test_a_foreign_directory_survives_even_with_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not a kwsdeploy thing"):
            with writing_dir(out, KIND, overwrite=overwrite) as tmp:
                _fill(tmp, "new")
    assert (out / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_foreign_file_survives_and_is_not_moved_aside(tmp_path):
    out = tmp_path / "out"
    out.write_text("notes")
    with pytest.raises(OutputError, match="is a file"):
        with writing_dir(out, KIND, overwrite=True) as tmp:
            _fill(tmp, "new")
    assert out.read_text() == "notes" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_our_artifact_needs_overwrite_then_is_replaced_whole(tmp_path):
    out = _ours(tmp_path / "out", "old")
    with pytest.raises(OutputError, match="--overwrite"):
        with writing_dir(out, KIND) as tmp:
            _fill(tmp, "new")
    assert (out / "payload.txt").read_text() == "old"
    with writing_dir(out, KIND, overwrite=True) as tmp:
        _fill(tmp, "new")
    assert (out / "payload.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("where", ["is", "is inside", "contains"])
def test_output_equal_inside_or_around_an_input_is_refused(tmp_path, where):
    data = tmp_path / "data"
    _ours(data, "input")  # even our own kind: an input is never replaced
    out = {"is": data, "is inside": data / "sub", "contains": tmp_path}[where]
    with pytest.raises(OutputError, match=f"{where} the input --src"):
        check_output_dir(out, KIND, True, [("--src", data)])
    assert (data / "payload.txt").read_text() == "input"


def test_a_symlink_output_is_refused(tmp_path):
    target = _ours(tmp_path / "real", "old")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        check_output_dir(link, KIND, True)


def test_an_error_while_building_leaves_the_old_artifact_and_no_temp(tmp_path):
    out = _ours(tmp_path / "out", "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with writing_dir(out, KIND, overwrite=True) as tmp:
            _fill(tmp, "half")
            raise RuntimeError("disk full")
    assert (out / "payload.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_two_rename_fallback_restores_the_old_tree_when_the_second_rename_fails(tmp_path, monkeypatch):
    out = _ours(tmp_path / "out", "old")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)

    def fail():
        raise OSError("simulated failure between the renames")

    monkeypatch.setattr(atomic, "_between_renames", fail)
    with pytest.raises(OSError, match="simulated"):
        with writing_dir(out, KIND, overwrite=True) as tmp:
            _fill(tmp, "new")
    assert (out / "payload.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


_KILL = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from kwsdeploy import atomic
    kind = atomic.ArtifactKind("thing", "thing.json", lambda d: d.get("kind") == "thing")
    if sys.argv[2] == "fallback":
        atomic._exchange = lambda a, b: False
        atomic._between_renames = lambda: os._exit(9)  # killed between the two renames
    else:
        real = atomic.remove_path
        atomic.remove_path = lambda p: os._exit(9)  # killed right after the exchange, before the cleanup
    with atomic.writing_dir(Path(sys.argv[1]), kind, overwrite=True) as tmp:
        (tmp / "thing.json").write_text(json.dumps({"kind": "thing"}))
        (tmp / "payload.txt").write_text("new")
""")


@pytest.mark.parametrize("path", ["fallback", "exchange"])
def test_a_kill_during_replacement_loses_nothing_and_the_next_run_cleans_up(tmp_path, path):
    out = _ours(tmp_path / "out", "old")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", _KILL, str(out), path], env=env, capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    left = leftovers(out)
    if path == "fallback":  # nothing at the final name: the old tree waits aside, named
        assert not out.exists() and sorted(w for _, w, _ in left) == ["old", "tmp"]
        actions = recover(out, KIND)
        assert (out / "payload.txt").read_text() == "old"
        assert any("restored" in a for a in actions)
    else:  # the exchange is one step: the final name holds the new tree, the old one is a leftover
        assert (out / "payload.txt").read_text() == "new" and [w for _, w, _ in left] == ["tmp"]
        recover(out, KIND)
    assert leftovers(out) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_exchange_is_used_on_linux(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux only")
    a, b = _ours(tmp_path / "a", "A"), _ours(tmp_path / "b", "B")
    assert atomic._exchange(a, b)
    assert (a / "payload.txt").read_text() == "B" and (b / "payload.txt").read_text() == "A"


def test_leftovers_of_a_live_process_are_kept(tmp_path):
    out = _ours(tmp_path / "out", "old")
    mine = tmp_path / f".out.tmp-{os.getpid()}-abc"
    mine.mkdir()
    assert recover(out, KIND) == [] and mine.exists()


def test_replace_dir_onto_an_empty_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    tmp = tmp_path / ".new"
    _ours(tmp, "new")
    replace_dir(tmp, out)
    assert (out / "payload.txt").read_text() == "new" and not tmp.exists()


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with writing_dir(tmp_path / "out", KIND) as tmp:
            _fill(tmp, "x")
        f = atomic.write_file(tmp_path / "report.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE(f.stat().st_mode) == 0o644


def test_writing_file_gives_the_asked_mode(tmp_path):
    old = os.umask(0o077)
    try:
        with atomic.writing_file(tmp_path / "cache.npy", suffix=".tmp", mode=0o644) as tmp:
            tmp.write_bytes(b"x")
        with atomic.writing_file(tmp_path / "plain.bin") as tmp:
            tmp.write_bytes(b"y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cache.npy").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npy", "plain.bin"]


def test_write_file_refuses_a_directory_and_needs_overwrite(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        atomic.write_file(tmp_path / "d", "x")
    atomic.write_file(tmp_path / "f", "1")
    with pytest.raises(OutputError, match="--overwrite"):
        atomic.write_file(tmp_path / "f", "2", overwrite=False)
    assert (tmp_path / "f").read_text() == "1"


def test_a_plot_replaces_only_a_plot_we_wrote(tmp_path):
    pytest.importorskip("matplotlib")
    from kwsdeploy.train.evaluate import plot_curves

    rows = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5}, {"epoch": 2, "train_loss": 0.5, "train_acc": 0.7}]
    ours = plot_curves(rows, tmp_path / "curves.png")
    assert atomic.is_our_png(ours)
    assert plot_curves(rows, ours) == ours  # ours: replaced
    photo = tmp_path / "holiday.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(OutputError, match="not a plot kwsdeploy wrote"):
        plot_curves(rows, photo)
    assert photo.read_bytes() == b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "holiday.png"]
