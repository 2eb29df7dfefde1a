"""The physical bound counts the bytes a call must move: weights, plus the state read and written."""

from __future__ import annotations

import pytest

from kwsdeploy.bench.roofline import Machine
from kwsdeploy.bench.run import add_bound
from kwsdeploy.bench.subjects import SubjectKey, prepare

MACHINE = Machine(bandwidth={1 << 20: 100e9, 16 << 20: 50e9, 64 << 20: 20e9}, peak_macs={"fp32": 100e9, "int8": 400e9},
                  threads=1)


def test_state_bytes_join_the_weights_and_choose_the_bandwidth():
    b = MACHINE.bound_seconds(10_000_000, 1_000_000, "fp32", state_bytes=40_000_000)
    assert b["bytes"] == 50_000_000 and b["bound_kind"] == "memory"
    assert b["memory_s"] == pytest.approx(50e6 / 20e9)  # 50 MB: the 64 MiB figure
    assert b["compute_s"] == pytest.approx(1e6 / 100e9)
    w = MACHINE.bound_seconds(10_000_000, 1_000_000, "fp32")
    assert w["bytes"] == 10_000_000 and w["memory_s"] == pytest.approx(10e6 / 50e9)


def test_row_bound_moves_the_state_of_every_stream_in_and_out():
    row = {"status": "ok", "weight_bytes": 12_000_000, "state_bytes": 350_000, "macs_per_call": 3_000_000,
           "batch": 64, "precision": "fp32", "p50_us": 10_000.0}
    add_bound(row, MACHINE)
    assert row["bound_bytes"] == 12_000_000 + 2 * 350_000 * 64
    assert row["bound_us"] == pytest.approx(row["bound_bytes"] / 20e9 * 1e6)
    assert row["compute_bound_us"] == pytest.approx(64 * 3e6 / 100e9 * 1e6)
    assert row["weights_only_bound_us"] == pytest.approx(max(12e6 / 50e9, 64 * 3e6 / 100e9) * 1e6)
    assert row["measured_over_bound"] == pytest.approx(10_000 / row["bound_us"])


def test_kwm_step_state_bytes():
    # causal KWM 64-4: per layer conv [3, 128] + ssm [16, 128]; the logits window [classes, 97]
    s = prepare(SubjectKey("kwm-causal-64-4", "step", 1, False))
    assert s.state_bytes == 4 * (4 * (3 + 16) * 128 + len(s.labels) * 97)
    assert prepare(SubjectKey("kwm-causal-64-4", "offline", None, False)).state_bytes == 0
