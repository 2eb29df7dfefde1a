"""`kwsdeploy benchmark` end to end on two small models with few calls: every output file with its
documented columns, failing or missing runtimes as rows with their reason, the bound and the
environment filled. No speed targets (timings on a shared CPU are noise): numbers must be
consistent with each other, positive and finite."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kwsdeploy.bench import backends
from kwsdeploy.bench.report import COLUMN_NAMES
from kwsdeploy.bench.run import Settings, run
from kwsdeploy.tolerances import ONNX_PARITY_ATOL

ROOT = Path(__file__).resolve().parents[2]
MODELS = "tcresnet8-causal,bcresnet1-causal"
FAST = ["--calls", "5", "--warmup", "1", "--max-seconds", "0.05", "--audio-seconds", "2"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "kwsdeploy.cli.main", "benchmark", "--models", MODELS, "--runtimes",
           "torch,ort,tensorrt", "--modes", "step,offline", "--batch", "1,3", "--no-peers", *FAST, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "benchmark.json").read_text())


def test_one_row_per_combination(cli_run):
    _, result = cli_run
    keys = [(r["model"], r["mode"], r["runtime"], r["batch"]) for r in result["rows"]]
    want = [(m, mode, rt, b) for m in MODELS.split(",") for mode in ("step", "offline")
            for rt in ("torch", "ort", "tensorrt") for b in (1, 3)]
    assert keys == want


def test_ok_rows_are_consistent(cli_run):
    _, result = cli_run
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    assert {(r["runtime"]) for r in ok} == {"torch", "ort"} and len(ok) == 16
    for r in ok:
        for k in ("p50_us", "p90_us", "p99_us", "cpu_ms_per_s", "rtf", "streams_per_core", "macs_per_call",
                  "macs_per_second", "params", "weight_bytes", "bound_us", "measured_over_bound"):
            assert isinstance(r[k], (int, float)) and math.isfinite(r[k]) and r[k] > 0, (r["model"], k)
        assert r["p50_us"] <= r["p90_us"] <= r["p99_us"]
        assert r["calls"] == 5 and r["weights"] == "demo checkpoint"
        audio_s = r["audio_ms_per_call"] / 1e3
        assert r["macs_per_second"] == pytest.approx(r["macs_per_call"] / audio_s)
        assert r["rtf"] == pytest.approx(r["mean_us"] * 1e-6 / audio_s)
        assert r["measured_over_bound"] == pytest.approx(r["p50_us"] / r["bound_us"])
        assert r["cpu_over_bound"] == pytest.approx(r["cpu_us_per_call"] / r["bound_us"])
        per_s_of_audio = r["cpu_us_per_call"] / 1e3 / (audio_s * r["batch"])  # one call streams batch x audio_s
        assert r["cpu_ms_per_s"] == pytest.approx(per_s_of_audio)
        assert r["bound_kind"] in ("memory", "compute")
        if r["runtime"] == "ort":
            assert r["nodes"] > 5 and r["file_bytes"] > r["weight_bytes"] > 0.9 * 4 * r["params"]
            if r["batch"] == 1:
                assert 0 <= r["max_abs_diff_vs_torch"] <= ONNX_PARITY_ATOL
    step = {r["model"]: r["macs_per_call"] for r in ok if r["mode"] == "step"}
    offline = {r["model"]: r["macs_per_call"] for r in ok if r["mode"] == "offline"}
    # TC-ResNet8: 152k MACs per 100 ms hop in 8-frame packets, against 1.52M per 1 s clip
    assert 100_000 < step["tcresnet8-causal"] < 130_000 and 1.4e6 < offline["tcresnet8-causal"] < 1.6e6


def test_missing_runtime_is_a_row_with_its_reason(cli_run):
    _, result = cli_run
    trt = [r for r in result["rows"] if r["runtime"] == "tensorrt"]
    assert trt and all(r["status"] == "skipped" and r["reason"] == "TensorRT needs --device cuda" for r in trt)


def test_every_output_file_has_the_documented_columns(cli_run):
    out, result = cli_run
    with open(out / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == COLUMN_NAMES and len(rows) == len(result["rows"])
    assert rows[0]["model"] == "tcresnet8-causal" and float(rows[0]["p50_us"]) == pytest.approx(result["rows"][0]["p50_us"])
    md = (out / "benchmark.md").read_text().splitlines()
    head = md.index("| " + " | ".join(COLUMN_NAMES) + " |")
    body = [line for line in md[head + 2:head + 2 + len(result["rows"]) + 1] if line.startswith("|")]
    assert len(body) == len(result["rows"]) and all(line.count("|") == len(COLUMN_NAMES) + 1 for line in body)
    for name in COLUMN_NAMES:
        assert f"- `{name}`:" in "\n".join(md)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert not [p.name for p in out.iterdir() if "tmp-" in p.name]  # plots and reports went through temp files
    try:
        import matplotlib  # noqa: F401
        assert "step_vs_window.png" not in pngs  # no windowed rows were asked for
        assert any("skipped" in n for n in result["notes"])
    except ImportError:
        assert not pngs and any("matplotlib" in n for n in result["notes"])


def test_environment_and_bound_fields_are_filled(cli_run):
    out, result = cli_run
    env, machine = result["environment"], result["machine"]
    assert env["cpu"] and isinstance(env["cpu_flags"], list) and env["threads"] == 1 and env["usable_cpus"] >= 1
    assert env["libraries"]["onnxruntime"] and env["libraries"]["torch"] and env["libraries"]["numpy"]
    assert "gpu" in env and env["load_average_at_end"]
    assert len(machine["bandwidth"]) >= 5 and all(v > 1e8 for v in machine["bandwidth"].values())
    assert machine["peak_macs"]["fp32"] > 1e8 and machine["peak_macs"]["int8"] > 1e8
    text = json.dumps(result) + (out / "benchmark.md").read_text()
    assert "/work" not in text and "/tmp" not in text and "/home" not in text


def test_failing_runtime_and_impossible_mode_are_rows(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("planted\nfailure")

    monkeypatch.setattr(backends, "ort_runner", boom)
    s = Settings(models=("tcresnet8-causal", "bcresnet1"), runtimes=("torch", "ort"), modes=("step",),
                 calls=3, warmup=0, max_seconds=0.01, audio_seconds=1.0, peers=False)
    rows = run(s).rows
    by = {(r["model"], r["runtime"]): r for r in rows}
    assert by[("tcresnet8-causal", "torch")]["status"] == "ok"
    assert by[("tcresnet8-causal", "ort")]["status"] == "failed"
    assert by[("tcresnet8-causal", "ort")]["reason"] == "RuntimeError: planted failure"
    for rt in ("torch", "ort"):
        assert by[("bcresnet1", rt)]["status"] == "skipped"
        assert by[("bcresnet1", rt)]["reason"] == "bcresnet1 has no exact step form (its card streams windowed)"


def test_unknown_model_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kwsdeploy.cli.main", "benchmark", "--models", "tcresnet9",
                           "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "Unknown model 'tcresnet9'" in proc.stderr and not (tmp_path / "o").exists()


def test_runner_defaults_to_one_thread():
    from kwsdeploy.bench.roofline import _gemm_graph
    from kwsdeploy.runtime.ort import make_session

    sess = make_session(_gemm_graph(False))
    assert sess.get_session_options().intra_op_num_threads == 1


def test_peers_row_when_pymicro_wakeword_is_installed():
    pytest.importorskip("pymicro_wakeword")
    s = Settings(models=("tcresnet8-causal",), runtimes=("ort",), modes=("step",), calls=4, warmup=1,
                 max_seconds=0.05, rounds=2, audio_seconds=1.0, peers=True)
    rows = run(s).rows
    assert [r["runtime"] for r in rows] == ["ort", "pymicro-wakeword"]
    peer = rows[-1]
    assert peer["status"] == "ok" and peer["calls"] == 4 and peer["audio_ms_per_call"] == 10.0
    assert peer["cpu_ms_per_s"] > 0 and peer["p50_us"] > 0 and peer["version"]


def test_data_gives_each_row_its_accuracy_and_false_alarms():
    from kwsdeploy.data.demo import demo_corpus_dir

    s = Settings(models=("tcresnet8-causal",), runtimes=("torch", "ort"), modes=("step", "offline"), calls=3,
                 warmup=0, max_seconds=0.01, audio_seconds=1.0, peers=False, data=demo_corpus_dir(), data_clips=4)
    rows = run(s).rows
    assert [r["status"] for r in rows] == ["ok"] * 4
    step = [r for r in rows if r["mode"] == "step"]
    offline = [r for r in rows if r["mode"] == "offline"]
    for r in step:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["fa_per_hour"] >= 0.0
    # the ONNX graph computes the torch step form, so both hear the same recording alike
    assert step[0]["accuracy"] == step[1]["accuracy"] and step[0]["fa_per_hour"] == step[1]["fa_per_hour"]
    for r in offline:
        assert r["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0) and r["fa_per_hour"] is None


def test_natural_packet_equal_to_a_listed_one_is_one_row():
    s = Settings(models=("tcresnet8-causal",), runtimes=("ort",), modes=("step",), packet_frames=(None, 8, 16),
                 calls=2, warmup=0, max_seconds=0.01, rounds=1, audio_seconds=1.0, peers=False)
    rows = run(s).rows
    assert [(r["packet_frames"], r["status"]) for r in rows] == [(8, "ok"), (16, "ok")]
    assert rows[1]["macs_per_call"] == pytest.approx(2 * rows[0]["macs_per_call"], rel=0.01)


def test_int8_rows_carry_a_quantized_graph():
    s = Settings(models=("kwm",), runtimes=("ort",), precisions=("fp32", "int8"), modes=("step",), calls=2,
                 warmup=0, max_seconds=0.01, rounds=1, audio_seconds=1.0, peers=False)
    fp32, int8 = run(s).rows
    assert fp32["status"] == int8["status"] == "ok" and int8["precision"] == "int8"
    assert int8["weight_bytes"] < 0.6 * fp32["weight_bytes"]  # int8 MatMul weights
    assert 0 < int8["max_abs_diff_vs_torch"] < 0.05 and int8["bound_kind"] in ("memory", "compute")


def test_model_without_checkpoint_is_timed_with_random_weights():
    s = Settings(models=("tcresnet14-causal",), runtimes=("torch",), modes=("step",), calls=2, warmup=0,
                 max_seconds=0.01, rounds=1, audio_seconds=1.0, peers=False)
    (row,) = run(s).rows
    assert row["status"] == "ok" and row["params"] > 100_000
    assert row["weights"] == "random init"


def test_rerun_into_its_own_folder_replaces_its_reports(cli_run, tmp_path):
    import copy
    import shutil

    from kwsdeploy.bench import report

    out, result = cli_run
    again = shutil.copytree(out, tmp_path / "again")
    second = copy.deepcopy(result)
    second["notes"].append("second run")
    report.write(second, again)
    assert "- second run" in (again / "benchmark.md").read_text()
    assert json.loads((again / "benchmark.json").read_text())["notes"][-1] == "second run"


def test_int8_recipe_row_of_a_model_without_checkpoint_runs():
    """The int8-cpu recipe calibrates random weights on the demo corpus, whose words are not the
    model's placeholder classes (it used to fail with "labels that the model does not know")."""
    s = Settings(models=("tcresnet14-causal",), runtimes=("ort-int8",), modes=("step",), calls=2, warmup=0,
                 max_seconds=0.01, rounds=1, audio_seconds=1.0, peers=False)
    (row,) = run(s).rows
    assert row["weights"] == "random init"
    assert row["status"] == "ok", row["reason"]
    assert row["precision"] == "int8-cpu" and row["int8_recipe"] and row["p50_us"] > 0


@pytest.mark.parametrize("flags, slug", [("fpu sse4_2 avx avx2 fma", "amd-epyc-avx2-2c"),
                                         ("fpu avx avx2 avx512f avx512_vnni", "amd-epyc-2c"),
                                         ("fpu sse4_2", "amd-epyc-2c")])
def test_machine_slug_tells_avx2_from_avx512_cpus_of_one_name(monkeypatch, flags, slug):
    from kwsdeploy.bench import environment

    monkeypatch.setattr(environment, "_cpuinfo", lambda: {"model name": "AMD EPYC", "flags": flags})
    monkeypatch.setattr(environment, "usable_cpus", lambda: 2)
    assert environment.machine_slug() == slug
