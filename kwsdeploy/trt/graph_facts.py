"""The facts of an ONNX graph the TensorRT checks read, computed once: constants (initializers and
Constant nodes), producers, consumers, the default-domain opset; node attribute and input helpers. onnx only."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STANDARD_DOMAINS = ("", "ai.onnx")


class GraphFacts:
    """A graph's constants (initializers and Constant nodes), producers, consumers and default-domain opset."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.model = model
        self.constants: dict[str, Any] = {t.name: t for t in g.initializer}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}  # tensor -> (node, input index)
        for node in g.node:
            for out in node.output:
                self.producers[out] = node
            for k, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, k))
            if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS and node.output:
                self.constants[node.output[0]] = node
        self.opset = next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 0)

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def value(self, name: str) -> np.ndarray | None:
        """The array of a constant (initializer or Constant node), None when not a constant."""
        src = self.constants.get(name)
        if src is None:
            return None
        if isinstance(src, TensorProto):
            return numpy_helper.to_array(src)
        for attr in src.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
            if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
                return np.asarray(helper.get_attribute_value(attr))
        return None

    def dtype(self, name: str) -> str | None:
        """ONNX element type name of a constant, None when unknown."""
        src = self.constants.get(name)
        if isinstance(src, TensorProto):
            return TensorProto.DataType.Name(src.data_type)
        if src is not None:
            for attr in src.attribute:
                if attr.name == "value":
                    return TensorProto.DataType.Name(attr.t.data_type)
        return None


def node_where(node: onnx.NodeProto, index: int) -> str:
    """How a finding names a node: by name, else by index."""
    return f"node {node.name!r} ({node.op_type})" if node.name else f"node #{index} ({node.op_type})"


def node_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """An attribute's value (bytes decoded), `default` when absent."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def node_input(node: onnx.NodeProto, i: int) -> str:
    """The node's i-th input name, '' when absent (optional inputs may be empty strings)."""
    return node.input[i] if len(node.input) > i else ""
