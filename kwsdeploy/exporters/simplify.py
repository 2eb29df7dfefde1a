"""Graph simplification (constant folding, dead code, algebraic rewrites) and node accounting.

Two passes, both producing standard ONNX ops only: onnxscript's optimizer + default rewrite
rules, then ONNX Runtime's *basic* offline optimisation (constant folding, redundant-node
elimination, Conv/BN/Add fusions into standard ops) saved back as a model. The smaller clean
graph wins. ORT costs about 1 us per node, so node count is what we report and minimise.
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
import warnings

import onnx

_STANDARD_DOMAINS = {"", "ai.onnx"}
log = logging.getLogger("kwsdeploy.export")
# onnxscript's pattern rewriter is super-linear: above this many nodes (an unrolled scan, say) only
# ONNX Runtime's fast basic optimisation runs.
ONNXSCRIPT_MAX_NODES = 2000


def node_count(proto: onnx.ModelProto) -> int:
    """Nodes in the main graph (Constant nodes included)."""
    return len(proto.graph.node)


def op_histogram(proto: onnx.ModelProto) -> dict[str, int]:
    """Op type -> count, most frequent first."""
    return dict(collections.Counter(n.op_type for n in proto.graph.node).most_common())


def _standard_only(proto: onnx.ModelProto) -> bool:
    return {n.domain for n in proto.graph.node} <= _STANDARD_DOMAINS and not proto.functions


def onnxscript_simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript's optimizer (folding, inlining, dead code) and its default (standard-op) rewrites."""
    import onnxscript.optimizer
    import onnxscript.rewriter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = onnxscript.optimizer.optimize(proto)
        out = onnxscript.rewriter.rewrite(out)
    return out if isinstance(out, onnx.ModelProto) else onnx.ModelProto.FromString(out.SerializeToString())


def ort_basic_optimize(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's basic (provider-independent, standard-op) graph optimisation, saved as a model."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="kwsdeploy-ortopt-") as tmp:
        out_path = os.path.join(tmp, "opt.onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = out_path
        opts.log_severity_level = 3
        ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        out = onnx.load(out_path)
    # Keep the exporter's identity and metadata; ORT leaves its own producer name.
    out.producer_name, out.producer_version = proto.producer_name, proto.producer_version
    return out


def strip_debug_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop per-node doc strings and metadata (exporter stack traces, module paths): they can triple
    a small graph's file size and compute nothing."""
    for node in proto.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    proto.graph.doc_string = ""
    return proto


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The smallest standard-op graph among: as exported, onnxscript-simplified, then ORT-basic-optimised."""
    best = proto
    try:
        if node_count(proto) > ONNXSCRIPT_MAX_NODES:
            raise RuntimeError(f"{node_count(proto)} nodes > {ONNXSCRIPT_MAX_NODES}")
        cand = onnxscript_simplify(proto)
        if _standard_only(cand) and node_count(cand) <= node_count(best):
            best = cand
    except Exception as exc:  # an optimiser bug must not block an export; the unsimplified graph is still valid
        log.warning("onnxscript simplification skipped: %s", exc)
    try:
        cand = ort_basic_optimize(best)
        if _standard_only(cand) and node_count(cand) < node_count(best):
            best = cand
    except Exception as exc:
        log.warning("ONNX Runtime offline optimisation skipped: %s", exc)
    return strip_debug_info(best)
