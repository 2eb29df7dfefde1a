"""Static TensorRT compatibility check of an ONNX graph: would this version's parser and our engine
builder accept it? Catches on the workstation what would otherwise fail on the device.

Checks: operators and their documented restrictions per parser version (`parser_support`), the
default-domain opset, custom domains, Q/DQ as TensorRT runs it (`qdq_rules`: signed INT8, zero
point 0, scale a constant, per-channel only on weights on the output-channel axis: the rule the INT8
export applies too), no dynamic axis but the declared batch
(axis 0, named `batch`) on any input or output, no external data, engine I/O types. Each finding names the node
(or input) and the first TensorRT version that would accept it, or says that none does.
Needs onnx only (no torch, no tensorrt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from kwsdeploy.trt import parser_support as ps
from kwsdeploy.trt.graph_facts import STANDARD_DOMAINS, GraphFacts, node_attr, node_input, node_where
from kwsdeploy.trt.qdq_rules import qdq_issues
from kwsdeploy.trt.versions import TrtVersion

# The name exporters give the one dynamic axis (axis 0); the manifest marks it the same way.
DECLARED_BATCH = "batch"
_CAST_TYPES = frozenset({"FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "UINT8", "BOOL", "DOUBLE"})


@dataclass(frozen=True)
class Finding:
    """One thing a TensorRT version would refuse: where, what, and the first version that accepts it."""

    rule: str  # op | attribute | qdq | dynamic-axis | external-data | opset | domain | io-type
    where: str  # "node 'conv1' (Conv)", "input 'features' axis 2", ...
    message: str
    accepted_from: TrtVersion | None  # None: no TensorRT version (that our tables know) accepts it

    def line(self) -> str:
        """One printable line."""
        fix = f"accepted from TensorRT {self.accepted_from}" if self.accepted_from else "no TensorRT version accepts it"
        return f"{self.where}: {self.message} ({fix})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"rule": self.rule, "where": self.where, "message": self.message,
                "accepted_from": str(self.accepted_from) if self.accepted_from else None}


@dataclass(frozen=True)
class CheckResult:
    """The findings of one graph against one TensorRT version."""

    file: str
    version: TrtVersion
    nodes: int
    opset: int
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when this version would accept the graph."""
        return not self.findings

    def summary(self) -> str:
        """'model.onnx: OK for TensorRT 10.3 (44 nodes, opset 18)' or the count of findings."""
        head = f"{self.file}: TensorRT {self.version}"
        if self.ok:
            return f"{head}: OK ({self.nodes} nodes, opset {self.opset})"
        return f"{head}: {len(self.findings)} problem(s) ({self.nodes} nodes, opset {self.opset})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"file": self.file, "tensorrt": str(self.version), "ok": self.ok, "nodes": self.nodes,
                "opset": self.opset, "findings": [f.to_dict() for f in self.findings]}


# -- loading ------------------------------------------------------------------------------------
def load_graph(source: str | Path | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """An ONNX model from a path, bytes or a proto, without loading external data (the check reports it)."""
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        return onnx.load_from_string(bytes(source))
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file.")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc}).") from None


# -- rules: each yields (rule, message, accepted_from) --------------------------------------------
Issue = tuple[str, str, "TrtVersion | None"]


def _op_issues(node: onnx.NodeProto, g: GraphFacts) -> Iterator[Issue]:
    if node.domain not in STANDARD_DOMAINS:
        yield ("domain", f"custom domain {node.domain!r}: TensorRT parses it only through a plugin, and the "
                         "bundle ships none; export with standard ONNX ops", None)
        return
    since = ps.op_since(node.op_type)
    if since is None:
        how = "marked unsupported in" if node.op_type in ps.NEVER else "absent from"
        yield ("op", f"{node.op_type} is {how} TensorRT's ONNX operator matrix; rewrite it with supported ops", None)
    elif since > ps.BASELINE:
        yield ("op", f"{node.op_type} is not in this version's ONNX parser", since)


def _constant_input(node: onnx.NodeProto, g: GraphFacts, i: int, what: str, lifted: TrtVersion | None) -> Iterator[Issue]:
    name = node_input(node, i)
    if name and not g.is_constant(name):
        yield ("attribute", f"`{what}` (input {i}) must be a constant (initializer or Constant node)", lifted)


def _attribute_issues(node: onnx.NodeProto, g: GraphFacts) -> Iterator[Issue]:
    op = node.op_type
    if node.domain not in STANDARD_DOMAINS:
        return
    if op in ("Slice", "Pad"):
        yield from _constant_input(node, g, 3, "axes", ps.LIFTED[(op, "axes")])
    elif op in ("Squeeze", "Unsqueeze"):
        yield from _constant_input(node, g, 1, "axes", ps.LIFTED[(op, "axes")])
    elif op in ps.REDUCE_OPS:
        yield from _constant_input(node, g, 1, "axes", None)
    elif op == "CumSum":
        yield from _constant_input(node, g, 1, "axis", None)
    elif op == "OneHot":
        yield from _constant_input(node, g, 1, "depth", None)
    elif op in ps.POOL_OPS:
        kernel = node_attr(node, "kernel_shape", [])
        if op != "LpPool" and len(kernel) not in (2, 3):
            yield ("attribute", f"{len(kernel)}D pooling: the parser documents 2D or 3D pooling only", None)
        if any(d != 1 for d in node_attr(node, "dilations", [])):
            yield ("attribute", "`dilations` must be empty or all ones", None)
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            yield ("attribute", "the `Indices` output is unsupported", None)
    elif op == "Einsum":
        eq = str(node_attr(node, "equation", "")).replace(" ", "")
        lhs = eq.split("->")[0]
        if "..." in eq:
            yield ("attribute", f"Einsum ellipsis in {eq!r}", ps.LIFTED[("Einsum", "ellipsis")])
        if any(len(set(t.replace("...", ""))) < len(t.replace("...", "")) for t in lhs.split(",")):
            yield ("attribute", f"Einsum diagonal (an index repeated in one operand) in {eq!r}", ps.LIFTED[("Einsum", "diagonal")])
    elif op == "Dropout":
        name = node_input(node, 2)
        if name:
            v = g.value(name)
            if v is None or bool(np.any(v)):
                yield ("attribute", "`training_mode` must be a constant False", None)
    elif op == "Constant":
        for a in node.attribute:
            if a.name in ("sparse_value", "value_string", "value_strings"):
                yield ("attribute", f"Constant `{a.name}` is unsupported", None)
    elif op == "LayerNormalization":
        if any(o for o in node.output[1:]):
            yield ("attribute", "only the first output `Y` is supported", None)
    elif op == "LSTM":
        if node_attr(node, "input_forget", 0) != 0 or node_attr(node, "layout", 0) != 0:
            yield ("attribute", "`input_forget` and `layout` must be 0", None)
    elif op == "TopK":
        if node_attr(node, "sorted", 1) != 1:
            yield ("attribute", "`sorted` must be 1", None)
    elif op == "Resize":
        mode = node_attr(node, "mode", "nearest")
        ctm = node_attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest = node_attr(node, "nearest_mode", "round_prefer_floor")
        if mode not in ps.RESIZE_MODES:
            yield ("attribute", f"Resize mode {mode!r} (supported: nearest, linear)", None)
        if ctm not in ps.RESIZE_COORDINATE_MODES:
            yield ("attribute", f"Resize coordinate_transformation_mode {ctm!r}", None)
        if mode == "nearest" and nearest not in ps.RESIZE_NEAREST_MODES:
            yield ("attribute", f"Resize nearest_mode {nearest!r}", None)
        if node_attr(node, "antialias", 0):
            yield ("attribute", "Resize antialiasing is unsupported", None)
        if node_attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            yield ("attribute", "Resize keep_aspect_ratio_policy must be 'stretch'", None)
    elif op == "Cast":
        to = TensorProto.DataType.Name(node_attr(node, "to", TensorProto.FLOAT))
        if to not in _CAST_TYPES:
            yield ("attribute", f"Cast to {to} (supported: {', '.join(sorted(_CAST_TYPES))})", None)


def _io_issues(model: onnx.ModelProto, batch: str) -> Iterator[tuple[str, Issue]]:
    inits = {t.name for t in model.graph.initializer}
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if vi.name in inits:
                continue
            where = f"{kind} {vi.name!r}"
            t = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                yield where, ("io-type", "not a tensor (sequence/map/optional); engines take tensors only", None)
                continue
            dtype = TensorProto.DataType.Name(t.elem_type)
            if dtype not in ps.IO_TYPES:
                yield where, ("io-type", f"element type {dtype} cannot be an engine input/output", None)
            if not t.HasField("shape"):
                yield where, ("dynamic-axis", "no shape: every axis but the batch must be static", None)
                continue
            for axis, d in enumerate(t.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    continue
                if axis == 0 and d.dim_param == batch:
                    continue
                label = repr(d.dim_param) if d.dim_param else "unknown"
                hint = (f"only axis 0 may be dynamic, and it must be named {batch!r}" if axis == 0
                        else f"only the batch (axis 0, {batch!r}) may be dynamic; export with a fixed size")
                yield f"{where} axis {axis}", ("dynamic-axis", f"dynamic axis ({label}): {hint}", None)


def _external_issues(model: onnx.ModelProto) -> Iterator[tuple[str, Issue]]:
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            yield f"initializer {t.name!r}", ("external-data", "weights stored in an external file; ship one "
                                                               "self-contained .onnx", None)
    for i, node in enumerate(model.graph.node):
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == TensorProto.EXTERNAL:
                yield node_where(node, i), ("external-data", f"attribute {a.name!r} stored in an external file", None)


def find_issues(model: onnx.ModelProto, batch: str = DECLARED_BATCH) -> list[Finding]:
    """Every finding of any TensorRT version, each with the first version accepting it (or None)."""
    g = GraphFacts(model)
    out: list[Finding] = []
    if g.opset < ps.MIN_OPSET:
        out.append(Finding("opset", "graph", f"opset {g.opset} is below {ps.MIN_OPSET}, the oldest TensorRT parses", None))
    elif g.opset > ps.max_opset(ps.BASELINE):
        out.append(Finding("opset", "graph", f"opset {g.opset} is above what older parsers read", ps.opset_since(g.opset)))
    for where, (rule, msg, since) in _io_issues(model, batch):
        out.append(Finding(rule, where, msg, since))
    for where, (rule, msg, since) in _external_issues(model):
        out.append(Finding(rule, where, msg, since))
    for i, node in enumerate(model.graph.node):
        for rule, msg, since in (*_op_issues(node, g), *_attribute_issues(node, g), *qdq_issues(node, g)):
            out.append(Finding(rule, node_where(node, i), msg, since))
    return out


def _rejects(finding: Finding, version: TrtVersion) -> bool:
    """Whether `version` refuses what `finding` describes (tables only grow with the version)."""
    return finding.accepted_from is None or ps.effective(version) < finding.accepted_from


def check_model(
    source: str | Path | bytes | onnx.ModelProto,
    versions: Sequence[str | TrtVersion] = ("10.3",),
    name: str | None = None,
    batch: str = DECLARED_BATCH,
) -> list[CheckResult]:
    """Check one graph against each version; one CheckResult per version."""
    model = load_graph(source)
    label = name or (Path(source).name if isinstance(source, (str, Path)) else "graph")
    issues = find_issues(model, batch)
    opset = GraphFacts(model).opset
    results = []
    for v in sorted({TrtVersion.parse(x) for x in versions}):
        kept = tuple(f for f in issues if _rejects(f, v))
        results.append(CheckResult(label, v, len(model.graph.node), opset, kept))
    return results


def bundle_graphs(bundle_dir: str | Path) -> list[Path]:
    """The ONNX files a bundle's manifest lists (engines and other formats skipped)."""
    from kwsdeploy.manifest import Manifest

    root = Path(bundle_dir)
    manifest = Manifest.read(root)
    files = []
    for mf in manifest.files:
        if getattr(mf, "format", "onnx") != "onnx" or not mf.path.endswith(".onnx"):
            continue
        path = root / mf.path
        if not path.is_file():
            raise FileNotFoundError(f"{mf.path}: listed in the manifest but missing from {root}; re-export the bundle.")
        files.append(path)
    return files


def check_path(target: str | Path, versions: Iterable[str | TrtVersion] = ("10.3",)) -> list[CheckResult]:
    """Check a bundle directory (every ONNX file it lists) or one .onnx file."""
    path = Path(target)
    versions = list(versions)
    if path.is_dir():
        graphs = bundle_graphs(path)
        if not graphs:
            raise ValueError(f"{path}: the bundle lists no ONNX graph to check.")
        return [r for p in graphs for r in check_model(p, versions)]
    if path.suffix.lower() != ".onnx" and path.is_file():
        raise ValueError(f"{path}: expected a bundle directory or a .onnx file.")
    return check_model(path, versions)
