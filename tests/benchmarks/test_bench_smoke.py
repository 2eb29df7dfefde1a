"""Smoke test of benchmarks/bench_step_latency.py: one small model, a few calls, the output's shape.

No speed targets: timings on a shared CPU are noise. Numbers must be positive and finite, the ORT
graph must compute the torch step form, and the Markdown table must have one row per JSON row.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kwsdeploy.tolerances import ONNX_PARITY_ATOL

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_step_latency.py"
MODEL = "tcresnet8-causal"
POSITIVE = ("mean_ms", "p50_ms", "p99_ms", "ms_per_100ms_audio", "rtf", "weight_bytes", "bound_us",
            "macs_per_hop", "macs_per_step", "params", "packet_frames")


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_step_latency", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(SCRIPT), "--models", MODEL, "--repeats", "5", "--max-seconds", "0.2",
           "--exporter", "legacy", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "step_latency_cpu.json").read_text()), (out / "step_latency_cpu.md").read_text()


def test_rows_cover_mode_x_runtime(run):
    result, _ = run
    keys = [(r["model"], r["mode"], r["runtime"]) for r in result["rows"]]
    assert keys == [(MODEL, m, rt) for m in ("step", "windowed") for rt in ("torch", "ort")]


def test_numbers_positive_and_finite(run):
    result, _ = run
    for r in result["rows"]:
        for k in POSITIVE:
            assert isinstance(r[k], (int, float)) and math.isfinite(r[k]) and r[k] > 0, (r["mode"], r["runtime"], k)
        assert r["p50_ms"] <= r["p99_ms"]
        assert r["calls_timed"] == 5
        assert r["rtf"] == pytest.approx(r["mean_ms"] / (r["packet_frames"] * 10))
        assert r["ms_per_100ms_audio"] == pytest.approx(r["mean_ms"] * 10 / r["packet_frames"])
    assert result["settings"]["bandwidth_gb_s"] > 0.1


def test_step_is_cheaper_than_windowed_in_macs(run):
    result, _ = run
    macs = {r["mode"]: r["macs_per_hop"] for r in result["rows"]}
    # TC-ResNet8: step 152k MACs per 100 ms vs 1.52M for a 98-frame recompute (costs.py, FACTS.md).
    assert macs["step"] * 5 < macs["windowed"]


def test_ort_rows_describe_the_graph(run):
    result, _ = run
    for r in (r for r in result["rows"] if r["runtime"] == "ort"):
        assert 10 <= r["nodes"] <= 200
        assert r["onnx_bytes"] > r["weight_bytes"] > 0.9 * r["params"] * 4
        assert sum(r["top_ops"].values()) <= r["nodes"] and "Conv" in r["top_ops"]
        assert 0 <= r["max_abs_diff_vs_torch"] <= ONNX_PARITY_ATOL
        assert r["us_per_node"] > 0


def test_machine_is_described_without_paths(run):
    result, md = run
    machine = result["machine"]
    assert machine["cpu"] and machine["logical_cpus"] >= 1
    assert all(machine[k] for k in ("torch", "onnxruntime", "onnx", "numpy"))
    text = json.dumps(result) + md
    assert "/work" not in text and "/tmp" not in text and "/home" not in text


def test_markdown_table_matches_json(run):
    result, md = run
    lines = md.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| model | mode | runtime"))
    body = []
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        body.append(line)
    assert len(body) == len(result["rows"])
    n_cols = lines[head].count("|")
    assert all(line.count("|") == n_cols for line in body)
    assert body[0].startswith(f"| {MODEL} | step | torch |")


def test_selection_all_exact():
    from kwsdeploy.models.registry import list_cards

    rows = _load_script().select_rows("all-exact", ("step", "windowed"))
    exact = [c.name for c in list_cards() if c.streaming == "exact"]
    assert [n for n, m in rows if m == "step"] == exact
    assert [n for n, m in rows if m == "windowed"] == exact + ["tcresnet8", "kwt-1", "kwm-64-12"]


def test_unknown_model_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "tcresnet9", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Unknown model 'tcresnet9'" in proc.stderr
    assert not list(tmp_path.iterdir())
