"""One CPU thread unless told otherwise: ONNX Runtime sessions and torch, for every command."""

from __future__ import annotations

import subprocess
import sys

from kwsdeploy.threads import ENV, default_threads, set_default_threads


def test_default_is_one_and_the_env_changes_it(monkeypatch):
    from kwsdeploy.bench.roofline import _gemm_graph
    from kwsdeploy.runtime.ort import make_session

    monkeypatch.delenv(ENV, raising=False)
    assert default_threads() == 1
    assert make_session(_gemm_graph(False)).get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv(ENV, "3")
    assert make_session(_gemm_graph(False)).get_session_options().intra_op_num_threads == 3
    assert make_session(_gemm_graph(False), threads=2).get_session_options().intra_op_num_threads == 2
    monkeypatch.setenv(ENV, "zero")
    assert default_threads() == 1


def test_root_option_sets_torch_and_runtime_threads():
    code = ("import sys, torch; from kwsdeploy.cli.main import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--threads', '2', 'models', '--json']); "
            "from kwsdeploy.threads import default_threads; print(r.exit_code, default_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["0", "2"], out.stderr[-500:]


def test_set_default_rejects_zero():
    import pytest

    with pytest.raises(ValueError):
        set_default_threads(0)
