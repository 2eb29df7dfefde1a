"""The tensorrt recipe's gate: its graph must pass the one Q/DQ rule (`kwsdeploy.trt.qdq_rules`, the rule
check-trt applies) in its strict form (weights stored int8, state and other inputs/outputs float).
Torch-free, onnx only.
"""

from __future__ import annotations

import onnx

from kwsdeploy.trt.graph_facts import GraphFacts
from kwsdeploy.trt.qdq_rules import QDQ_OPS, graph_qdq_issues, qdq_issues


class QDQError(ValueError):
    """A Q/DQ graph TensorRT would reject or misread; the message lists what is wrong."""


def qdq_problems(proto: onnx.ModelProto) -> list[str]:
    """Every violation found, one line each (empty list: the graph is clean)."""
    g = GraphFacts(proto)
    problems = [f"{n.op_type} {n.name or n.output[0]!r}: {msg}"
                for n in proto.graph.node for _, msg, _ in qdq_issues(n, g, strict=True)]
    return problems + [f"{where}: {msg}" for where, msg in graph_qdq_issues(g)]


def validate_tensorrt_qdq(proto: onnx.ModelProto) -> int:
    """Raise QDQError listing the problems; returns the number of Q/DQ nodes checked."""
    problems = qdq_problems(proto)
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise QDQError("tensorrt Q/DQ check failed: " + "; ".join(problems[:5]) + more)
    return sum(n.op_type in QDQ_OPS for n in proto.graph.node)
