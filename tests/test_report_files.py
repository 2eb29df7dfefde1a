"""JSON/CSV/Markdown reports replace only a same-named file kwsdeploy wrote (like PNG plots); a user's
file is refused before any work, with one line naming another --out, and left untouched."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kwsdeploy.atomic import OutputError, check_report_file, json_report, write_report
from kwsdeploy.cli.main import app

KIND = json_report("test report", lambda d: isinstance(d, dict) and d.get("ours") is True)
USER_TEXT = "my own notes, not a report\n"


def test_own_report_is_replaced_a_user_file_is_refused_untouched(tmp_path):
    path = tmp_path / "r.json"
    write_report(path, json.dumps({"ours": True, "n": 1}), KIND)
    write_report(path, json.dumps({"ours": True, "n": 2}), KIND)  # a re-run into its own folder
    assert json.loads(path.read_text())["n"] == 2
    path.write_text(USER_TEXT)
    with pytest.raises(OutputError, match="not a test report kwsdeploy wrote: choose another --out"):
        write_report(path, json.dumps({"ours": True, "n": 3}), KIND)
    assert path.read_text() == USER_TEXT
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp left behind


def test_a_directory_or_link_in_the_report_place_is_refused(tmp_path):
    (tmp_path / "d.json").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        check_report_file(tmp_path / "d.json", KIND)
    target = tmp_path / "t.json"
    target.write_text(json.dumps({"ours": True}))
    (tmp_path / "l.json").symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        check_report_file(tmp_path / "l.json", KIND)


@pytest.mark.parametrize("name", ["benchmark.json", "benchmark.csv", "benchmark.md"])
def test_benchmark_refuses_a_user_file_before_timing(tmp_path, monkeypatch, name):
    import kwsdeploy.bench.run as bench_run

    monkeypatch.setattr(bench_run, "run", lambda *a, **k: pytest.fail("timed despite a foreign output file"))
    (tmp_path / name).write_text(USER_TEXT)
    r = CliRunner().invoke(app, ["benchmark", "--models", "tcresnet8-causal", "--no-peers", "--out", str(tmp_path)])
    assert r.exit_code == 2 and f"{name} exists and is not a benchmark" in r.output and "--out" in r.output, r.output
    assert "Traceback" not in r.output and (tmp_path / name).read_text() == USER_TEXT


def test_demo_refuses_a_user_summary_before_any_work(tmp_path, monkeypatch):
    import kwsdeploy.cli.demo as demo

    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: pytest.fail("ran despite a foreign summary.json"))
    (tmp_path / "summary.json").write_text(USER_TEXT)
    r = CliRunner().invoke(app, ["demo", "--models", "tcresnet8-causal", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "summary.json exists and is not a demo summary" in r.output, r.output
    assert (tmp_path / "summary.json").read_text() == USER_TEXT


def test_demo_replaces_its_own_summary(tmp_path, monkeypatch):
    import kwsdeploy.cli.demo as demo

    row = {"model": "m", "params": 1, "test_accuracy": 0.5, "stream_accuracy": 0.25, "false_alarms_per_hour": 3.0,
           "hop_ms": 10.0, "onnx_nodes": 7, "onnx_kib": 1.0, "parity_max_abs": 1e-6, "rtf": 0.01}
    (tmp_path / "summary.json").write_text(json.dumps([dict(row, model="old")]))
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: [row])
    r = CliRunner().invoke(app, ["demo", "--models", "tcresnet8-causal", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "summary.json").read_text()) == [row]


def test_eval_stream_refuses_a_user_det_json_before_streaming(tmp_path):
    from kwsdeploy.cli._detection import DET_REPORT, eval_detection_cmd

    (tmp_path / "det.json").write_text(USER_TEXT)
    with pytest.raises(OutputError, match="det.json exists and is not a detection report"):
        eval_detection_cmd(None, None, "digits", None, "test", "test", 1.0, 0, None, tmp_path)  # no source needed
    assert (tmp_path / "det.json").read_text() == USER_TEXT
    (tmp_path / "det.json").write_text(json.dumps({"source": "s", "hop_ms": 10.0, "recordings": {}}))
    check_report_file(tmp_path / "det.json", DET_REPORT)  # our own: a re-run replaces it
