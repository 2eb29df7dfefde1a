"""simplify: optional passes that are missing or fail leave the graph valid; a missing optional
package is not worth a warning, a failing optimiser is."""

from __future__ import annotations

import builtins
import logging

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from kwsdeploy.exporters import simplify as simplify_module
from kwsdeploy.runtime.ort import make_session


def _model():
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["xi"]), helper.make_node("MatMul", ["xi", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], initializer=[w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def _hide_module(monkeypatch, missing: str, when_importing: str = ""):
    """Imports of `when_importing` (default: `missing` itself) fail as if `missing` were not installed."""
    real_import = builtins.__import__
    trigger = when_importing or missing

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == trigger:
            raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def _y(m, x):
    return make_session(m.SerializeToString()).run(["y"], {"x": x})[0]


def test_missing_onnxscript_is_silent_and_the_graph_still_simplifies(monkeypatch, caplog):
    _hide_module(monkeypatch, "onnxscript")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="kwsdeploy.export"):
        out = simplify_module.simplify(_model())
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    assert [n.op_type for n in out.graph.node] == ["MatMul"]  # ONNX Runtime's pass still dropped the Identity
    np.testing.assert_allclose(_y(out, x), x @ np.arange(12, dtype=np.float32).reshape(3, 4), rtol=1e-6)


def test_a_module_missing_inside_onnxscript_is_a_warning(monkeypatch, caplog):
    _hide_module(monkeypatch, "ml_dtypes", when_importing="onnxscript")  # a broken install, not an absent one
    with caplog.at_level(logging.WARNING, logger="kwsdeploy.export"):
        out = simplify_module.simplify(_model())
    assert any("ml_dtypes" in r.getMessage() for r in caplog.records)
    assert [n.op_type for n in out.graph.node] == ["MatMul"]


def test_a_failing_optimiser_is_a_warning(monkeypatch, caplog):
    def broken(proto):
        raise RuntimeError("rewrite rule crashed")

    monkeypatch.setattr(simplify_module, "onnxscript_simplify", broken)
    with caplog.at_level(logging.WARNING, logger="kwsdeploy.export"):
        out = simplify_module.simplify(_model())
    assert any("rewrite rule crashed" in r.getMessage() for r in caplog.records)
    assert [n.op_type for n in out.graph.node] == ["MatMul"]


def test_graphs_over_the_node_cap_skip_onnxscript_with_a_warning(monkeypatch, caplog):
    count = simplify_module.ONNXSCRIPT_MAX_NODES + 1
    monkeypatch.setattr(simplify_module, "node_count", lambda proto: count)
    with caplog.at_level(logging.WARNING, logger="kwsdeploy.export"):
        simplify_module.simplify(_model())
    assert any(f"{count} nodes" in r.getMessage() for r in caplog.records)
