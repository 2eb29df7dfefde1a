"""The TensorRT compatibility check: every registry family's exported graphs pass for 10.3, 10.16 and
11; planted problems (unsupported op, non-zero zero point, dynamic inner axis, ...) are each caught
with the node and the first version that accepts it."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from kwsdeploy.models.registry import list_cards
from kwsdeploy.trt import parser_support as ps
from kwsdeploy.trt.compat import DECLARED_BATCH, check_model, check_path, find_issues
from kwsdeploy.trt.versions import TrtVersion, UnknownVersionError
from .planted import clean_qdq_graph, planted_graph

VERSIONS = ("10.3", "10.16", "11")


def _one_card_per_form():
    """The smallest card of every (family, streaming mode): each kind of exported graph once."""
    groups = defaultdict(list)
    for card in list_cards():
        groups[(card.family, card.streaming)].append(card)
    return [min(cards, key=lambda c: c.expected_params or 0) for cards in groups.values()]


CARDS = _one_card_per_form()
# Windowed bidirectional KWM unrolls its scan every hop: two layers show every op at a fraction of the time.
OVERRIDES = {"kwm": {"depth": 2}, "kwmt": {"depth": 2}}


def _step_graph(card, frontend=False):
    from kwsdeploy.exporters import onnx as ox
    from kwsdeploy.streaming.convert import to_streaming

    torch.manual_seed(0)
    over = OVERRIDES.get(card.family, {}) if card.streaming == "windowed" else {}
    model = card.build(num_classes=12, **over).eval()
    smodel = to_streaming(model, **({"packet_frames": 10} if card.streaming == "windowed" else {}))
    if not frontend:
        return ox.export_step(smodel, exporter="legacy"), model
    from kwsdeploy.streaming.pipeline import make_frontend

    return ox.export_step(smodel, frontend=make_frontend(smodel), exporter="legacy"), model


@pytest.mark.parametrize("card", CARDS, ids=[f"{c.name}-{c.streaming}" for c in CARDS])
def test_every_exported_step_graph_passes_for_every_target(card):
    proto, _ = _step_graph(card)
    results = check_model(proto, VERSIONS, name=card.name)
    assert [str(r.version) for r in results] == ["10.3", "10.16", "11.0"]
    for r in results:
        assert r.ok, [f.line() for f in r.findings]
        assert r.nodes == len(proto.graph.node) > 0 and r.opset == 18


def test_frontend_fp16_and_offline_graphs_pass():
    from kwsdeploy.exporters import onnx as ox

    card = next(c for c in CARDS if c.name == "tcresnet8-causal")
    step_fe, model = _step_graph(card, frontend=True)
    graphs = {
        "step+frontend": step_fe,
        "step fp16": ox.to_fp16(_step_graph(card)[0]),
        "offline": ox.export_offline(model, exporter="legacy"),
    }
    for name, proto in graphs.items():
        for r in check_model(proto, VERSIONS, name=name):
            assert r.ok, (name, [f.line() for f in r.findings])
    ops = {n.op_type for n in step_fe.graph.node}
    assert not ops & {"STFT", "DFT"}  # the in-graph MFCC is a MatMul, parsed by 10.3


def test_planted_problems_are_each_caught_with_node_and_version():
    by_version = {str(r.version): r for r in check_model(planted_graph(), VERSIONS, name="planted.onnx")}
    v103 = by_version["10.3"]
    lines = {(f.where, f.rule): f for f in v103.findings}
    # unsupported ops: STFT from 10.5, RMSNormalization from 10.15, DFT never; Einsum ellipsis from 10.12
    assert lines[("node 'stft' (STFT)", "op")].accepted_from == TrtVersion(10, 5)
    assert lines[("node 'rms' (RMSNormalization)", "op")].accepted_from == TrtVersion(10, 15)
    assert lines[("node 'dft' (DFT)", "op")].accepted_from is None
    assert lines[("node 'einsum_ellipsis' (Einsum)", "attribute")].accepted_from == TrtVersion(10, 12)
    # Q/DQ: non-zero zero point (both nodes), uint8 zero point, per-channel on an activation
    for node in ("q_nonzero_zp", "dq_nonzero_zp"):
        f = [x for x in v103.findings if x.where.startswith(f"node '{node}'")]
        assert len(f) == 1 and f[0].rule == "qdq" and "zero point is not 0 (max |zero point| = 3)" in f[0].message
    assert any("UINT8" in f.message for f in v103.findings if f.where.startswith("node 'q_uint8'"))
    assert any("per-channel" in f.message for f in v103.findings if f.where.startswith("node 'q_per_channel_act'"))
    # the dynamic inner axis of the input, and the outputs without any shape
    dyn = lines[("input 'features' axis 2", "dynamic-axis")]
    assert "'T'" in dyn.message and dyn.accepted_from is None
    assert ("output 'y'", "dynamic-axis") in lines
    assert len(v103.findings) == 13
    # newer parsers accept the new ops, never the rest
    assert {f.where for f in by_version["10.16"].findings} == {f.where for f in v103.findings} - {
        "node 'stft' (STFT)", "node 'rms' (RMSNormalization)", "node 'einsum_ellipsis' (Einsum)"}
    assert len(by_version["11.0"].findings) == len(by_version["10.16"].findings) == 10
    assert "accepted from TensorRT 10.5" in lines[("node 'stft' (STFT)", "op")].line()
    assert "no TensorRT version accepts it" in lines[("node 'dft' (DFT)", "op")].line()


def test_clean_qdq_graph_passes_and_each_qdq_rule_fires_on_its_own():
    assert all(r.ok for r in check_model(clean_qdq_graph(), VERSIONS))
    # per-channel on the weight is fine; moved onto the activation Q it is not
    g = clean_qdq_graph()
    for t in g.graph.initializer:
        if t.name == "zx":
            t.CopyFrom(onnx.numpy_helper.from_array(np.array(-2, np.int8), "zx"))
    msgs = [f.message for f in find_issues(g)]
    assert len(msgs) == 2 and all("zero point is not 0" in m for m in msgs)
    g = clean_qdq_graph()
    del g.graph.node[0].input[2:]  # no zero point: ONNX quantizes to uint8
    assert any("no zero point" in f.message and f.where == "node 'x_q' (QuantizeLinear)" for f in find_issues(g))


def test_external_data_custom_domain_and_constant_axes_are_caught():
    g = clean_qdq_graph()
    w = g.graph.initializer[2]
    w.data_location = TensorProto.EXTERNAL
    g.graph.node.append(onnx.helper.make_node("FusedConv", ["logits"], ["z"], name="ms", domain="com.microsoft"))
    g.graph.node.append(onnx.helper.make_node("CumSum", ["logits", "logits"], ["c"], name="cumsum"))
    g.graph.node.append(onnx.helper.make_node("Unsqueeze", ["logits", "logits"], ["u"], name="unsq"))
    found = {(f.where, f.rule): f for f in find_issues(g)}
    assert found[("initializer 'w_q'", "external-data")].accepted_from is None
    assert found[("node 'ms' (FusedConv)", "domain")].accepted_from is None
    assert found[("node 'cumsum' (CumSum)", "attribute")].accepted_from is None
    assert found[("node 'unsq' (Unsqueeze)", "attribute")].accepted_from == TrtVersion(10, 7)
    r103, r11 = check_model(g, ["10.3", "11"])
    assert len(r103.findings) == 4 and len(r11.findings) == 3


def test_versions_and_table_facts():
    assert TrtVersion.parse("10.3.0.30") == TrtVersion(10, 3) and str(TrtVersion.parse("11")) == "11.0"
    with pytest.raises(UnknownVersionError, match="older than 10.0"):
        TrtVersion.parse("8.6")
    with pytest.raises(UnknownVersionError, match="MAJOR"):
        TrtVersion.parse("ten")
    assert ps.op_since("Conv") == ps.BASELINE and ps.op_since("STFT") == TrtVersion(10, 5)
    assert ps.op_since("DFT") is None and ps.op_since("NoSuchOp") is None
    assert (ps.max_opset(TrtVersion(10, 3)), ps.max_opset(TrtVersion(10, 16)), ps.max_opset(TrtVersion(12, 0))) == (20, 23, 23)
    assert not SUPPORTED_AND_NEVER_OVERLAP()
    v103, v1016, v11 = (TrtVersion.parse(v) for v in VERSIONS)
    assert (v103.builds_strongly_typed, v1016.builds_strongly_typed, v11.builds_strongly_typed) == (False, True, True)
    assert (v103.has_precision_flags, v11.has_precision_flags) == (True, False)
    assert (v103.trtexec_times_transfers_by_default, v11.trtexec_times_transfers_by_default) == (True, False)


def SUPPORTED_AND_NEVER_OVERLAP():
    return (ps.SUPPORTED_BASELINE & ps.NEVER) | (set(ps.ADDED) & (ps.SUPPORTED_BASELINE | ps.NEVER))


def test_declared_batch_is_the_exporters_batch_name():
    from kwsdeploy.exporters.onnx import _BATCH

    assert DECLARED_BATCH == _BATCH


def test_check_path_reads_a_bundle_and_the_cli_names_the_node(tmp_path, tiny_bundle):
    from typer.testing import CliRunner

    from kwsdeploy.cli.main import app

    results = check_path(tiny_bundle, ["10.3", "11"])
    assert [(r.file, str(r.version), r.ok) for r in results] == [("model.onnx", "10.3", True), ("model.onnx", "11.0", True)]
    runner = CliRunner()
    ok = runner.invoke(app, ["check-trt", str(tiny_bundle), "--trt", "10.3", "--trt", "10.16"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines() == ["model.onnx: TensorRT 10.3: OK (8 nodes, opset 18)",
                                      "model.onnx: TensorRT 10.16: OK (8 nodes, opset 18)"]
    bad = tmp_path / "planted.onnx"
    onnx.save(planted_graph(), bad)
    out = runner.invoke(app, ["check-trt", str(bad), "--json"])
    assert out.exit_code == 1
    data = json.loads(out.output)
    assert data[0]["tensorrt"] == "10.3" and not data[0]["ok"] and len(data[0]["findings"]) == 13
    text = runner.invoke(app, ["check-trt", str(bad), "--trt", "10.16"]).output
    assert "node 'dft' (DFT): DFT is marked unsupported" in text and "node 'stft'" not in text
    wrong = runner.invoke(app, ["check-trt", str(bad), "--trt", "8.6"])
    assert wrong.exit_code != 0 and "older than 10.0" in wrong.output and "Traceback" not in wrong.output
