"""ONNX export of step forms and offline models: stable names, dynamic batch, standard ops only.

`export_step(smodel)` writes the step contract as a graph (`features` or `audio`, `state.*` ->
`logits`, `new_state.*`); `export_offline(model)` the [B, 1, n_mfcc, 98] classifier. Both go
through `torch.onnx.export` (the dynamo exporter by default, the TorchScript one on request), then
`kwsdeploy.exporters.simplify`, and `check_graph` (full checker, no custom domains, no
Sequence/Loop/If, no external data). `to_fp16` turns a graph's arithmetic to fp16, keeping fp32 I/O.
"""

from __future__ import annotations

import inspect
import io
import logging
import warnings
from typing import Sequence

import numpy as np
import onnx
import onnx.compose
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from kwsdeploy.contract import AUDIO, CLIP_FRAMES, DEFAULT_FEATURES, FEATURES, LOGITS, StateSpec, packet_samples
from kwsdeploy.streaming.frontend import FRONTEND_STATE

DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "legacy")
# "auto" exports with both torch.onnx paths and keeps the graph with fewer nodes (then smaller file).
DEFAULT_EXPORTER = "auto"
EXPORTER_KEY = "kwsdeploy.exporter"
_FORBIDDEN_OPS = {"Loop", "Scan", "If", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
                  "SequenceInsert", "SequenceLength", "SequenceMap", "SplitToSequence", "ConcatFromSequence"}
_BATCH = "batch"


class ExportError(RuntimeError):
    """The graph could not be exported, or is not a clean, standard-ops, self-contained ONNX model."""


class FrontendStep(nn.Module):
    """The MFCC frontend step and the model step as one step: `audio, frontend cache, *state`."""

    def __init__(self, frontend: nn.Module, smodel: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.smodel = smodel

    def forward(self, audio: torch.Tensor, cache: torch.Tensor, *state: torch.Tensor):
        frames, new_cache = self.frontend(audio, cache)
        logits, *new_state = self.smodel(frames, *state)
        return (logits, new_cache, *new_state)


class FrontendOffline(nn.Module):
    """The offline MFCC and the offline model as one graph: audio [B, samples] -> logits."""

    def __init__(self, mfcc: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.mfcc = mfcc
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model(self.mfcc(audio).unsqueeze(1))


def frontend_state_spec(frontend: nn.Module, feature_config) -> StateSpec:
    """The frontend's sample cache: the last (n_fft - hop_length) samples, as the step frontends keep."""
    samples = int(getattr(frontend, "cache_samples", feature_config.n_fft - feature_config.hop_length))
    return StateSpec(FRONTEND_STATE, (samples,))


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int,
    exporter: str,
) -> onnx.ModelProto:
    """torch.onnx.export with a dynamic batch axis on every input and output."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS} or 'auto', got {exporter!r}.")
    module = module.eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            if exporter == "dynamo":
                batch = torch.export.Dim(_BATCH, min=1, max=65536)
                prog = torch.onnx.export(
                    module, args, None, dynamo=True, input_names=list(input_names),
                    output_names=list(output_names), dynamic_shapes=_dynamic_shapes(module, len(args), batch),
                    opset_version=opset, optimize=True, verbose=False, report=False,
                )
                proto = prog.model_proto
            else:
                buf = io.BytesIO()
                axes = {n: {0: _BATCH} for n in (*input_names, *output_names)}
                torch.onnx.export(
                    module, args, buf, dynamo=False, input_names=list(input_names),
                    output_names=list(output_names), dynamic_axes=axes, opset_version=opset,
                    do_constant_folding=True,
                )
                proto = onnx.load_from_string(buf.getvalue())
        except Exception as exc:  # the exporters raise many types; name the step that failed
            raise ExportError(f"torch.onnx.export ({exporter}) failed: {type(exc).__name__}: {str(exc)[:400]}") from exc
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    _name_batch_axis(proto)
    with torch.no_grad():
        outs = module(*args)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    _static_inner_axes(proto, [tuple(a.shape) for a in args], [tuple(o.shape) for o in outs])
    return proto


def _dynamic_shapes(module: nn.Module, n_args: int, batch) -> tuple:
    """Axis 0 dynamic for every argument, structured like forward's signature (`*state` is one tuple)."""
    params = list(inspect.signature(module.forward).parameters.values())
    fixed = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return (*({0: batch} for _ in fixed), tuple({0: batch} for _ in range(n_args - len(fixed))))
    return tuple({0: batch} for _ in range(n_args))


def _name_batch_axis(proto: onnx.ModelProto) -> None:
    """Call the dynamic leading axis of every graph input/output 'batch' (exporters name it variously)."""
    for vi in (*proto.graph.input, *proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = _BATCH


def _static_inner_axes(proto: onnx.ModelProto, in_shapes: Sequence[tuple], out_shapes: Sequence[tuple]) -> None:
    """Every axis but the batch gets the example's size where the exporter left a symbol (the legacy
    path names, e.g., a windowed stream's concatenated state axis): TensorRT profiles and the
    manifest need static inner axes."""
    for values, shapes in ((proto.graph.input, in_shapes), (proto.graph.output, out_shapes)):
        for vi, shape in zip(values, shapes):
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != len(shape):
                continue
            for d, size in list(zip(dims, shape))[1:]:
                if not d.HasField("dim_value"):
                    d.dim_value = int(size)


class _FrontendOnly(nn.Module):
    """The streaming frontend alone, as a graph: audio, cache -> features, new cache."""

    def __init__(self, frontend: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend

    def forward(self, audio: torch.Tensor, cache: torch.Tensor):
        return self.frontend(audio, cache)


class _OfflineFrontendOnly(nn.Module):
    """The offline MFCC as a graph: audio [B, samples] -> features [B, 1, n_mfcc, frames]."""

    def __init__(self, mfcc: nn.Module) -> None:
        super().__init__()
        self.mfcc = mfcc

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.mfcc(audio).unsqueeze(1)


def export_step(
    smodel: nn.Module,
    frontend: nn.Module | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = DEFAULT_EXPORTER,
    example_batch: int = 2,
) -> onnx.ModelProto:
    """The step graph of `smodel` (optionally behind the streaming MFCC `frontend`), simplified and checked."""
    spec = smodel.stream_spec
    states = smodel.init_state(example_batch)
    if len(states) != len(spec.states):
        raise ExportError(f"init_state() gave {len(states)} tensors but stream_spec lists {len(spec.states)} states.")
    x = torch.randn(example_batch, spec.n_mfcc, spec.packet_frames)
    inputs = [FEATURES, *(s.name for s in spec.states)]
    outputs = [LOGITS, *(s.output_name for s in spec.states)]
    core = _best_graph(smodel, (x, *states), inputs, outputs, opset, exporter)
    if frontend is None:
        return core
    return attach_frontend(export_frontend_step(frontend, spec, opset, exporter, example_batch), core)


def export_frontend_step(
    frontend: nn.Module, spec, opset: int = DEFAULT_OPSET, exporter: str = DEFAULT_EXPORTER, example_batch: int = 2
) -> onnx.ModelProto:
    """The streaming frontend's graph: `audio`, `state.frontend.samples` -> `features`, `new_state.frontend.samples`."""
    cfg = spec.feature_config
    fs = frontend_state_spec(frontend, cfg)
    audio = 0.1 * torch.randn(example_batch, packet_samples(spec.packet_frames, cfg))
    args = (audio, torch.zeros(example_batch, *fs.shape))
    return _best_graph(_FrontendOnly(frontend), args, [AUDIO, fs.name], [FEATURES, fs.output_name], opset, exporter)


def export_offline(
    model: nn.Module,
    mfcc: nn.Module | None = None,
    clip_frames: int = CLIP_FRAMES,
    clip_samples: int = DEFAULT_FEATURES.clip_samples,
    opset: int = DEFAULT_OPSET,
    exporter: str = DEFAULT_EXPORTER,
    example_batch: int = 2,
) -> onnx.ModelProto:
    """The offline graph: `features` [B, 1, n_mfcc, frames] (or `audio` [B, samples] with `mfcc`) -> `logits`."""
    from kwsdeploy.models.registry import kws_info

    x = torch.randn(example_batch, 1, kws_info(model).n_mfcc, clip_frames)
    core = _best_graph(model, (x,), [FEATURES], [LOGITS], opset, exporter)
    if mfcc is None:
        return core
    return attach_frontend(export_frontend_offline(mfcc, clip_samples, opset, exporter, example_batch), core)


def export_frontend_offline(
    mfcc: nn.Module, clip_samples: int = DEFAULT_FEATURES.clip_samples, opset: int = DEFAULT_OPSET, exporter: str = DEFAULT_EXPORTER,
    example_batch: int = 2,
) -> onnx.ModelProto:
    """The offline MFCC's graph: `audio` [B, samples] -> `features` [B, 1, n_mfcc, frames]."""
    audio = 0.1 * torch.randn(example_batch, clip_samples)
    return _best_graph(_OfflineFrontendOnly(mfcc), (audio,), [AUDIO], [FEATURES], opset, exporter)


def attach_frontend(front: onnx.ModelProto, core: onnx.ModelProto) -> onnx.ModelProto:
    """One graph: the frontend's `features` output feeds the core's `features` input. Kept as two
    graphs until here so that an fp16 core can sit behind an fp32 frontend (MFCC values reach
    hundreds of dB-scaled units, where fp16 steps are ~0.25)."""
    paths = {exporter_of(front), exporter_of(core)}
    front = onnx.compose.add_prefix(front, "frontend/", rename_inputs=False, rename_outputs=False)
    core = onnx.compose.add_prefix(core, "model/", rename_inputs=False, rename_outputs=False)
    # The two graphs may come from different torch.onnx paths: merge_models refuses differing
    # metadata, so drop it here and record both paths on the merged graph below.
    del front.metadata_props[:]
    del core.metadata_props[:]
    ir = max(front.ir_version, core.ir_version)
    front.ir_version = core.ir_version = ir
    outputs = [o.name for o in core.graph.output if o.name == LOGITS]
    outputs += [o.name for o in front.graph.output if o.name != FEATURES]
    outputs += [o.name for o in core.graph.output if o.name != LOGITS]
    merged = onnx.compose.merge_models(
        front, core, io_map=[(FEATURES, FEATURES)], outputs=outputs, producer_name=core.producer_name,
        producer_version=core.producer_version,
    )
    by_name = {o.name: o for o in merged.graph.output}  # merge_models puts the frontend's first
    ordered = [by_name[n] for n in outputs]
    del merged.graph.output[:]
    merged.graph.output.extend(ordered)
    del merged.metadata_props[:]
    helper.set_model_props(merged, {EXPORTER_KEY: "+".join(sorted(p for p in paths if p))})
    check_graph(merged)
    return merged


def _best_graph(module, args, inputs, outputs, opset: int, exporter: str) -> onnx.ModelProto:
    """Export (with one path, or with both for 'auto'), simplify, check; the smallest clean graph wins.

    The path used is recorded in the graph's metadata under EXPORTER_KEY.
    """
    from kwsdeploy.exporters.simplify import node_count, simplify

    paths = EXPORTERS if exporter == "auto" else (exporter,)
    best, errors = None, []
    for path in paths:
        try:
            proto = simplify(_export(module, args, inputs, outputs, opset, path))
            check_graph(proto)
        except ExportError as exc:
            errors.append(str(exc))
            continue
        key = (node_count(proto), proto.ByteSize())
        if best is None or key < best[0]:
            best = (key, proto, path)
    if best is None:
        raise ExportError(" / ".join(errors))
    proto = best[1]
    helper.set_model_props(proto, {EXPORTER_KEY: best[2]})
    return proto


def exporter_of(proto: onnx.ModelProto) -> str:
    """Which torch.onnx path produced a graph of `export_step`/`export_offline`."""
    return next((p.value for p in proto.metadata_props if p.key == EXPORTER_KEY), "")


def check_graph(proto: onnx.ModelProto) -> None:
    """Full onnx.checker, standard domain only, no Sequence/Loop/If ops, no external data."""
    for init in proto.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            raise ExportError(f"initializer {init.name!r} uses external data; the bundle needs one self-contained file.")
    domains = {n.domain for n in proto.graph.node} - {"", "ai.onnx"}
    if domains:
        raise ExportError(f"graph uses non-standard op domain(s) {sorted(domains)}; TensorRT cannot parse them.")
    bad = sorted({n.op_type for n in proto.graph.node} & _FORBIDDEN_OPS)
    if bad:
        raise ExportError(f"graph uses {bad}; step graphs must be straight-line (no Sequence/Loop/If ops).")
    if proto.functions:
        raise ExportError(f"graph still has local functions {[f.name for f in proto.functions]}; inline them.")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the graph: {str(exc)[:400]}") from exc


def opset_of(proto: onnx.ModelProto) -> int:
    """The default-domain opset the graph declares."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def io_info(proto: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs as dicts (name, shape with 'batch', dtype) for the manifest."""
    def one(vi) -> dict:
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return {"name": vi.name, "shape": shape, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    inits = {i.name for i in proto.graph.initializer}
    return [one(v) for v in proto.graph.input if v.name not in inits], [one(v) for v in proto.graph.output]


# -- fp16 -----------------------------------------------------------------------------------
_F32, _F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def fp16_pass(proto: onnx.ModelProto, ctx: object = None) -> onnx.ModelProto:
    """The fp16 entry of the precision table (`kwsdeploy.precisions`): `to_fp16`."""
    return to_fp16(proto)


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 arithmetic with fp32 inputs/outputs: float initializers and constants become fp16, a Cast
    sits after every fp32 input and before every fp32 output."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    for init in g.initializer:
        if init.data_type == _F32:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == _F32:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == _F32:
                attr.i = _F16
            elif node.op_type in ("EyeLike", "RandomNormal", "RandomUniform") and attr.name == "dtype" and attr.i == _F32:
                attr.i = _F16
    new_nodes = []
    renames: dict[str, str] = {}
    for vi in g.input:
        if vi.type.tensor_type.elem_type == _F32:
            renames[vi.name] = vi.name + ".fp16"
            new_nodes.append(helper.make_node("Cast", [vi.name], [renames[vi.name]], to=_F16, name=f"cast_in/{vi.name}"))
    out_names = {vi.name for vi in g.output if vi.type.tensor_type.elem_type == _F32}
    out_renames = {o: o + ".fp16" for o in out_names if o not in renames}
    for node in g.node:
        node.input[:] = [renames.get(i, out_renames.get(i, i)) for i in node.input]
        node.output[:] = [o + ".fp16" if o in out_names else o for o in node.output]
    tail = [helper.make_node("Cast", [o + ".fp16"], [o], to=_F32, name=f"cast_out/{o}") for o in sorted(out_names)]
    # A graph output that is also a graph input (pass-through) needs its fp16 copy to exist.
    produced = {o for n in g.node for o in n.output} | set(renames.values())
    for o in sorted(out_names):
        if o + ".fp16" not in produced:
            new_nodes.append(helper.make_node("Identity", [renames.get(o, o)], [o + ".fp16"]))
    nodes = new_nodes + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return model
